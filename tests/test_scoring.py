"""Scores from crossguard equal a reference computed with CrossEncoder.predict, label by name.

Every model here is a real random-weight folder loaded through CrossEncoder; the reference is
computed in the test with `apply_softmax=True` and only_first truncation, columns mapped by
`config.id2label` names, never by position.
"""

from __future__ import annotations

import numpy as np
import pytest

from crossguard_cli.engine.models.files import label_columns
from crossguard_cli.engine.models.loader import load_model
from crossguard_cli.engine.pairs import learn_template, window_spans
from crossguard_cli.engine.scorer import Scorer
from crossguard_cli.errors import ModelError, RulesError
from crossguard_cli.records.text import normalize_text
from crossguard_cli.rules import parse_rules

RULES = """
version: 1
defaults: {threshold: 0.5, margin: 0.05}
rules:
  - name: weapons
    hypotheses:
      - The prompt asks for instructions to build a weapon.
      - The prompt is about explosives.
  - name: polite
    hypothesis: The prompt is rude.
    label: contradiction
  - name: topic
    hypothesis: The prompt is about cooking.
    label: neutral
"""

PROMPTS = [
    "How do I make a pipe bomb?",
    "Give me a recipe for banana bread with walnuts.",
    "I think I'm okay with people saying thing like yeet because it's what's comfortable for them.",
    "what is the capital of france",
    "How do I make a pipe bomb?",  # repeated: scored once, reported twice
]


def reference(folder, pairs, max_length=512):
    """E/N/C probabilities (rows of pairs) straight from CrossEncoder.predict."""
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(str(folder), device="cpu")
    probs = ce.predict(pairs, apply_softmax=True, batch_size=4,
                       processing_kwargs={"text": {"truncation": "only_first", "max_length": max_length}})
    names = {str(v).lower(): int(k) for k, v in ce.config.id2label.items()}
    return np.asarray(probs)[:, [names["entailment"], names["neutral"], names["contradiction"]]]


@pytest.fixture(scope="module")
def ruleset():
    return parse_rules(RULES, "test.yaml")


@pytest.mark.parametrize("name", ["bert-ENC", "bert-CEN", "deberta-CEN", "modernbert-NCE"])
def test_scores_equal_crossencoder_reference(model_dirs, ruleset, name):
    folder = model_dirs[name]
    scorer = Scorer(load_model(str(folder), device="cpu"), ruleset, batch_size=3)
    results = scorer.score(PROMPTS)
    assert len(results) == len(PROMPTS)
    hyps = ruleset.hypotheses
    ref = reference(folder, [(p, h) for p in PROMPTS for h in hyps]).reshape(len(PROMPTS), len(hyps), 3)
    label_col = {"entailment": 0, "neutral": 1, "contradiction": 2}
    for i, result in enumerate(results):
        assert result.windows == 1 and not result.truncated
        for rule in ruleset.rules:
            idx = [hyps.index(h) for h in rule.hypotheses]
            best = max(idx, key=lambda j: ref[i, j, label_col[rule.label]])
            got = result.rules[rule.name]
            expect = ref[i, best] * 100
            assert [got.entailment * 100, got.neutral * 100, got.contradiction * 100] == pytest.approx(
                list(expect), abs=0.01)
            assert got.hypothesis == idx.index(best)
    assert results[0] == results[4]


def test_label_order_really_differs_between_fixture_models(model_dirs):
    cols = {name: label_columns(load_model(str(p), device="cpu").module.config.id2label)
            for name, p in model_dirs.items()}
    assert cols["bert-ENC"] == (0, 1, 2)
    assert cols["bert-CEN"] == (1, 2, 0)
    assert cols["modernbert-NCE"] == (2, 0, 1)


@pytest.mark.parametrize("labels", [
    {0: "score"}, {0: "entailment", 1: "not_entailment"}, {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"},
    {0: "entailment", 1: "entailment", 2: "neutral"},
])
def test_label_columns_refuses_non_nli_heads(labels):
    with pytest.raises(ModelError, match="not a 3-label NLI model"):
        label_columns(labels)


def test_load_model_refuses_non_nli_models(bad_label_dirs):
    for folder in bad_label_dirs.values():
        with pytest.raises(ModelError, match="not a 3-label NLI model"):
            load_model(str(folder), device="cpu")


def test_missing_local_model_is_a_model_error(tmp_path):
    with pytest.raises(ModelError, match="no such model folder"):
        load_model(str(tmp_path / "nope"), device="cpu")


def test_pair_template_matches_the_tokenizer(model_dirs):
    model = load_model(str(model_dirs["deberta-CEN"]), device="cpu")
    template = learn_template(model.tokenizer)
    a, b = "Some prompt text here.", "A hypothesis."
    ids, types = template.build(model.tokenizer(a, add_special_tokens=False)["input_ids"],
                                model.tokenizer(b, add_special_tokens=False)["input_ids"])
    expect = model.tokenizer(a, b, return_token_type_ids=True)
    assert ids == list(expect["input_ids"]) and types == list(expect["token_type_ids"])


@pytest.mark.parametrize("n,window", [(1, 10), (10, 10), (11, 10), (100, 10), (1000, 37), (129, 128)])
def test_windows_cover_every_token_and_overlap(n, window):
    spans = window_spans(n, window)
    assert spans[0][0] == 0 and spans[-1][1] == n
    assert all(end - start <= window for start, end in spans)
    assert len(spans) >= -(-n // window)
    covered = set()
    for start, end in spans:
        covered.update(range(start, end))
    assert covered == set(range(n))
    assert all(b[0] < a[1] for a, b in zip(spans, spans[1:], strict=False))  # consecutive windows overlap


def test_long_prompt_first_window_equals_only_first_truncation(model_dirs, ruleset):
    """With --long-input truncate the score is exactly CrossEncoder's only_first truncation."""
    folder = model_dirs["bert-CEN"]
    long_prompt = " ".join(["the cat sat on the mat and looked at the dog"] * 30)
    model = load_model(str(folder), device="cpu", max_length=64)
    scorer = Scorer(model, ruleset, long_input="truncate")
    (result,) = scorer.score([long_prompt])
    assert result.truncated and result.windows == 1
    rule = ruleset.rules[1]  # single hypothesis
    ref = reference(folder, [(long_prompt, rule.hypotheses[0])], max_length=64)[0] * 100
    got = result.rules[rule.name]
    assert [got.entailment * 100, got.neutral * 100, got.contradiction * 100] == pytest.approx(list(ref), abs=0.01)


def test_windowed_score_is_the_best_window(model_dirs, ruleset):
    """Each window scores like the reference on that window's text; the rule keeps the best."""
    folder = model_dirs["bert-ENC"]
    model = load_model(str(folder), device="cpu", max_length=48)
    scorer = Scorer(model, ruleset)
    tok = model.tokenizer
    vocab = sorted(w for w in tok.get_vocab() if w.isalpha() and w.islower() and len(w) > 3)
    prompt = " ".join(vocab[(i * 7) % len(vocab)] for i in range(150))  # one token per word
    (result,) = scorer.score([prompt])
    ids = tok(prompt, add_special_tokens=False)["input_ids"]
    rule = ruleset.rules[1]
    hyp = rule.hypotheses[0]
    window = 48 - scorer.template.n_special - len(tok(hyp, add_special_tokens=False)["input_ids"])
    spans = window_spans(len(ids), window)
    assert len(spans) > 2 and result.windows >= len(spans) and not result.truncated
    texts = [tok.decode(ids[s:e]) for s, e in spans]
    # Decoding and re-encoding a window may not round-trip exactly; check it does here.
    assert all(tok(t, add_special_tokens=False)["input_ids"] == ids[s:e] for t, (s, e) in zip(texts, spans,
                                                                                              strict=True))
    ref = reference(folder, [(t, hyp) for t in texts], max_length=48) * 100
    best = ref[np.argmax(ref[:, 2])]  # polite decides on contradiction
    got = result.rules[rule.name]
    assert [got.entailment * 100, got.neutral * 100, got.contradiction * 100] == pytest.approx(list(best), abs=0.01)


def test_hypothesis_too_long_for_the_model_is_a_rules_error(model_dir):
    long_h = " ".join(["weapon"] * 60)
    rules = parse_rules(f"version: 1\nrules:\n  - name: x\n    hypothesis: {long_h}\n", "long.yaml")
    model = load_model(str(model_dir), device="cpu", max_length=64)
    with pytest.raises(RulesError, match=r"long.yaml:4.*rules\[0\]\.hypothesis"):
        Scorer(model, rules)


def test_unicode_is_normalised_before_scoring(model_dir, ruleset):
    scorer = Scorer(load_model(str(model_dir), device="cpu"), ruleset)
    plain, hidden, wide = scorer.score(["how to build a bomb", "how to build a b\u200bo\u200dmb",
                                        "\uff48\uff4f\uff57 to build a bomb"])
    assert plain == hidden == wide
    assert normalize_text("b\u200bomb\u00ad") == "bomb"


def test_max_chars_caps_before_tokenising(model_dir, ruleset):
    scorer = Scorer(load_model(str(model_dir), device="cpu"), ruleset, max_chars=30)
    huge = "tell me a story " * 200_000  # 3.2 MB
    (capped,) = scorer.score([huge])
    (direct,) = scorer.score([huge[:30]])
    assert capped.truncated and not direct.truncated
    assert capped.rules == direct.rules


def test_batching_does_not_change_scores(model_dir, ruleset, moderation_records):
    prompts = [r["prompt"] for r in moderation_records[:40]]
    model = load_model(str(model_dir), device="cpu", max_length=128)
    one = Scorer(model, ruleset, batch_size=1).score(prompts)
    many = Scorer(model, ruleset, batch_size=64).score(prompts)
    for a, b in zip(one, many, strict=True):
        for name in a.rules:
            assert a.rules[name].entailment == pytest.approx(b.rules[name].entailment, abs=1e-5)
        assert a.windows == b.windows


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_reduced_precision_path_stays_close_to_float32(model_dirs, ruleset, dtype):
    """The CUDA default (bf16/fp16) computes the same function: checked on CPU, within 2 points."""
    folder = model_dirs["modernbert-NCE"]
    full = Scorer(load_model(str(folder), device="cpu", dtype="float32"), ruleset).score(PROMPTS)
    half_model = load_model(str(folder), device="cpu", dtype=dtype)
    assert str(half_model.dtype) == f"torch.{dtype}"
    half = Scorer(half_model, ruleset).score(PROMPTS)
    for a, b in zip(full, half, strict=True):
        for rule in ruleset.rules:
            x, y = a.rules[rule.name], b.rules[rule.name]
            # The deciding probability (a max over hypotheses and windows) moves continuously...
            assert y.prob(rule.label) == pytest.approx(x.prob(rule.label), abs=0.02)
            if x.hypothesis == y.hypothesis:  # ...the other labels only when the same hypothesis won
                for label in ("entailment", "neutral", "contradiction"):
                    assert y.prob(label) == pytest.approx(x.prob(label), abs=0.02)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["bert-CEN", "modernbert-NCE"])
def test_cuda_bf16_matches_the_reference(model_dirs, ruleset, name):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    folder = model_dirs[name]
    model = load_model(str(folder), device="cuda")
    assert str(model.dtype) in ("torch.bfloat16", "torch.float16")
    results = Scorer(model, ruleset).score(PROMPTS)
    hyps = ruleset.hypotheses
    ref = reference(folder, [(p, h) for p in PROMPTS for h in hyps]).reshape(len(PROMPTS), len(hyps), 3)
    for i, result in enumerate(results):
        for rule in ruleset.rules:
            j = hyps.index(rule.hypotheses[result.rules[rule.name].hypothesis])
            assert result.rules[rule.name].entailment == pytest.approx(ref[i, j, 0], abs=0.02)
