"""A model with learned-abstention heads in records: `abstain` beside E/N/C, and rules that abstain.

The heads model is the random-weight one `crossguard_cli.testing_heads` builds (a tiny
ModernBERT encoder, card-shaped heads); the reference is the model card's own code on one pair
(`card_reference` in test_heads_model.py), computed here.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_heads_model import card_reference

from crossguard_cli import Guard
from crossguard_cli.errors import RulesError
from crossguard_cli.records.text import normalize_text
from crossguard_cli.rules import parse_rules
from crossguard_cli.testing_heads import build_heads_model

HYPS = ("The prompt asks for instructions to build a weapon.", "The prompt is polite and friendly.")


@pytest.fixture(scope="module")
def heads(tmp_path_factory, wordpiece, moderation_records):
    texts = [r["prompt"] for r in moderation_records[:200]]
    return build_heads_model(tmp_path_factory.mktemp("abstain") / "heads", tokenizer=wordpiece, texts=texts, seed=7)


@pytest.fixture(scope="module")
def prompts(moderation_records):
    return [r["prompt"] for r in moderation_records[:14] if len(r["prompt"]) < 600]


def rules(abstain_line: str = "", threshold: float = 0.0) -> str:
    return f"""\
version: 1
defaults: {{threshold: {threshold}{abstain_line}}}
rules:
  - name: weapons
    hypothesis: {HYPS[0]}
  - name: rude
    hypothesis: {HYPS[1]}
    label: contradiction
"""


def test_records_carry_the_deciding_pairs_abstain_as_the_card_computes_it(heads, prompts):
    guard = Guard(parse_rules(rules(), "<t>"), str(heads), device="cpu", dtype="float32")
    assert guard.abstains
    for prompt, result in zip(prompts, guard.check_many(prompts), strict=True):
        rec = result.to_dict()
        for name, hyp in zip(("weapons", "rude"), HYPS, strict=True):
            enc, uncertain = card_reference(heads, heads / "encoder", normalize_text(prompt), hyp)
            got = rec["scores"][name]
            assert [got["entailment"], got["neutral"], got["contradiction"]] == pytest.approx(list(enc), abs=0.02)
            assert got["abstain"] == pytest.approx(uncertain, abs=0.02)


@pytest.mark.parametrize("where", ["defaults", "rule"])
def test_a_rule_whose_deciding_pair_abstains_is_uncertain_never_flagged(heads, prompts, where):
    base = Guard(parse_rules(rules(), "<t>"), str(heads), device="cpu", dtype="float32")
    values = [r.scores["weapons"]["abstain"] for r in base.check_many(prompts)]
    cut = float(np.median(values)) / 100
    text = rules(f", abstain: {cut}") if where == "defaults" else rules().replace(
        f"hypothesis: {HYPS[0]}\n", f"hypothesis: {HYPS[0]}\n    abstain: {cut}\n")
    guard = Guard(parse_rules(text, "<t>"), str(heads), device="cpu", dtype="float32")
    seen = set()
    for result in guard.check_many(prompts):
        rec = result.to_dict()
        abstained = rec["scores"]["weapons"]["abstain"] >= round(cut * 100, 6)
        seen.add(abstained)
        assert ("weapons" in rec["uncertain"]) == abstained  # threshold 0: it fires unless it abstains
        assert ("weapons" in rec["flagged"]) == (not abstained)
        rude_abstains = rec["scores"]["rude"]["abstain"] >= (cut * 100 if where == "defaults" else 50)
        assert ("rude" in rec["uncertain"]) == rude_abstains
        assert rec["verdict"] == ("flagged" if rec["flagged"] else "uncertain" if rec["uncertain"] else "allowed")
    assert seen == {True, False}
    default = Guard(parse_rules(rules(), "<t>"), str(heads), device="cpu", dtype="float32")  # abstain: 0.5
    for result in default.check_many(prompts):
        rec = result.to_dict()
        assert ("weapons" in rec["uncertain"]) == (rec["scores"]["weapons"]["abstain"] >= 50)


def test_abstain_for_a_model_without_heads_is_an_error_at_load(model_dir, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(rules().replace(f"hypothesis: {HYPS[1]}\n", f"hypothesis: {HYPS[1]}\n    abstain: 0.4\n"))
    with pytest.raises(RulesError, match=r"rules\[1\]\.abstain: model .* has no abstention heads") as info:
        Guard(path, str(model_dir), device="cpu")
    assert info.value.where == f"{path}:8"  # the rule's abstain line
    path.write_text(rules(", abstain: 0.4"))
    with pytest.raises(RulesError, match=r"rules\[0\]\.abstain") as info:
        Guard(path, str(model_dir), device="cpu")
    assert info.value.where == f"{path}:2"  # set under defaults:


def test_abstain_in_csv_table_and_check(run_cli, heads, tmp_path):
    path = tmp_path / "rules.yaml"
    path.write_text(rules(threshold=0.5))
    code, out, err = run_cli("check", "-m", str(heads), "-r", str(path), "hello there", "--format", "json")
    assert code in (0, 1), err
    rec = json.loads(out)
    assert set(rec["scores"]["weapons"]) == {"entailment", "neutral", "contradiction", "abstain"}
    code, out, _ = run_cli("check", "-m", str(heads), "-r", str(path), "hello there", "--format", "csv")
    header, row = out.splitlines()[:2]
    cols = header.split(",")
    assert "weapons.abstain" in cols and "rude.abstain" in cols
    assert float(row.split(",")[cols.index("weapons.abstain")]) == rec["scores"]["weapons"]["abstain"]
    code, out, _ = run_cli("check", "-m", str(heads), "-r", str(path), "hello there", "--format", "table")
    assert "abstain %" in out


def test_serve_check_carries_abstain(heads, tmp_path):
    pytest.importorskip("uvicorn")
    from conftest import cli_env

    from crossguard_cli.serve.testing import ServerProcess

    path = tmp_path / "rules.yaml"
    path.write_text(rules(threshold=0.5))
    want = Guard(path, str(heads), device="cpu").check("hello there").to_dict()
    with ServerProcess(["-m", str(heads), "-r", str(path)], env=cli_env()) as srv:
        status, _, body = srv.post("/v1/check", {"input": "hello there"})
    assert status == 200, body
    assert body["results"][0]["scores"] == want["scores"] and "abstain" in want["scores"]["rude"]


def test_abstain_rides_with_the_deciding_window_and_hypothesis():
    """A long prompt's rule takes its best window (per deciding label) and best hypothesis; the
    abstention probability in the record is that same pair's, never another window's."""
    from crossguard_cli.engine.reduce import best_scores

    ruleset = parse_rules("version: 1\nrules:\n  - name: a\n    hypotheses: [h one, h two]\n"
                          "  - name: b\n    hypothesis: h one\n    label: contradiction\n", "<t>")
    # One prompt, hypotheses h one (3 windows) then h two (3 windows); columns E, N, C, uncertain.
    prompt = np.zeros(6, dtype=np.int64)
    hypothesis = np.array([0, 0, 0, 1, 1, 1])
    probs = np.array([[0.2, 0.1, 0.7, 0.11],
                      [0.6, 0.1, 0.3, 0.12],  # h one's best entailment window
                      [0.1, 0.1, 0.8, 0.13],  # h one's best contradiction window
                      [0.5, 0.2, 0.3, 0.21],
                      [0.9, 0.0, 0.1, 0.22],  # the best entailment of all: rule a decides here
                      [0.9, 0.05, 0.05, 0.23]])  # a tie, later window: the earlier one wins
    (scores,) = best_scores(ruleset, 1, prompt, hypothesis, probs, np.zeros(6, dtype=bool),
                            np.zeros(1, dtype=bool), "float32")
    a, b = scores.rules["a"], scores.rules["b"]
    assert (a.entailment, a.hypothesis, a.abstain) == (0.9, 1, 0.22)
    assert (b.contradiction, b.hypothesis, b.abstain) == (0.8, 0, 0.13)
    assert scores.windows == 3
