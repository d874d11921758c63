"""`crossguard batch` in-process: lossless records, scores, batching, bad input, exit codes.

Subprocess behaviour (streaming, Ctrl-C, `| head -1`, a full disk) is in test_batch_unix.py.
Models are the tiny random-weight folders from conftest: real loading, tokenising and torch maths.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
import threading
import time

import pytest

from crossguard_cli.engine.results import Tally
from crossguard_cli.engine.stream import groups, score_records
from crossguard_cli.records.inputs import Record

RULES = """\
version: 1
rules:
  - name: weapons
    hypotheses:
      - The prompt asks for instructions to build a weapon.
      - The prompt talks about violence.
  - name: insult
    hypothesis: The prompt insults a person.
  - name: polite
    hypothesis: The prompt is polite and friendly.
    label: contradiction
"""
ONE_RULE = "version: 1\nrules:\n  - name: harm\n    hypothesis: The prompt is harmful.\n"
ALWAYS = "version: 1\ndefaults: {threshold: 0.0}\nrules:\n  - name: harm\n    hypothesis: The prompt is harmful.\n"
NEVER = "version: 1\ndefaults: {threshold: 1.0}\nrules:\n  - name: harm\n    hypothesis: The prompt is harmful.\n"
UNSURE = ("version: 1\ndefaults: {threshold: 1.0, margin: 0.99}\nrules:\n  - name: harm\n"
          "    hypothesis: The prompt is harmful.\n")
MODELS = ("bert-ENC", "bert-CEN", "deberta-CEN", "modernbert-NCE")


@pytest.fixture(scope="session")
def rules(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("rules")
    out = {}
    for name, text in {"three": RULES, "one": ONE_RULE, "always": ALWAYS, "never": NEVER,
                       "unsure": UNSURE}.items():
        (base / f"{name}.yaml").write_text(text)
        out[name] = str(base / f"{name}.yaml")
    return out


@pytest.fixture
def batch(run_cli, model_dir, rules):
    """Run `crossguard batch` on the test model: (exit code, output records, stderr)."""

    def run(*args: str, rules_name: str = "three", stdin: bytes | None = None, raw: bool = False):
        code, out, err = run_cli("batch", "-m", str(model_dir), "-r", rules[rules_name], *args, stdin=stdin)
        return code, (out if raw else parse_jsonl(out)), err

    return run


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a busy 2-core machine: a second intra-op thread only adds spinning."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def parse_jsonl(out: str) -> list[dict]:
    assert out == "" or out.endswith("\n"), "the last output line is incomplete"
    lines = out.splitlines()  # as naive consumers split: no U+2028 or NEL may break a record
    assert len(lines) == out.count("\n")
    return [json.loads(line) for line in lines]


def short_prompts(records: list[dict], n: int) -> list[str]:
    """Real prompts that fit one window and survive NFKC untouched (so the reference agrees)."""
    picked = [r["prompt"] for r in records if r["prompt"].isascii() and 20 < len(r["prompt"]) < 300
              and "\n" not in r["prompt"] and "\r" not in r["prompt"]]
    return picked[:n]


def as_text_line(prompt: str) -> str:
    return prompt.replace("\r", " ").replace("\n", " ")


def error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("crossguard: error:")]


# --- lossless: N in, N out, in order, ids kept ---------------------------------------------------


def test_all_real_prompts_jsonl_one_record_each(batch, moderation_records, tmp_path) -> None:
    path = tmp_path / "moderation.jsonl"
    lines = [json.dumps({"id": f"m{i}", **r}) for i, r in enumerate(moderation_records)]
    path.write_text("\n".join(lines) + "\n")  # the text field is found automatically: "prompt"
    code, out, err = batch(str(path), "--max-length", "64", rules_name="one")
    assert code in (0, 1), err
    assert len(out) == len(moderation_records) == 1680
    assert [o["line"] for o in out] == list(range(1, 1681))
    assert [o["id"] for o in out] == [f"m{i}" for i in range(1680)]
    assert [o["text"] for o in out] == [r["prompt"] for r in moderation_records]
    assert {o["source"] for o in out} == {str(path)}
    assert {o["status"] for o in out} == {"ok"}
    assert re.fullmatch(r"crossguard: 1680 records, \d+ flagged, \d+ uncertain, 0 errors, 0 empty in [\d.]+ s\n",
                        err)


def test_lossless_across_batch_sizes_repeats_and_a_missing_file(batch, moderation_records, tmp_path) -> None:
    prompts = [r["prompt"] for r in moderation_records[:150]]
    prompts += prompts[::7]  # repeated prompts, far apart and in the same group
    prompts.insert(3, prompts[2])
    a = tmp_path / "a.jsonl"
    a.write_text("".join(json.dumps({"id": i, "text": p}) + "\n" for i, p in enumerate(prompts)))
    texts = [as_text_line(r["prompt"]) for r in moderation_records[150:260]] + ["", "   "]
    b = tmp_path / "b.txt"
    b.write_text("\n".join(texts) + "\n")
    missing = str(tmp_path / "missing.jsonl")

    runs = {}
    for size in ("1", "7", "64"):
        code, out, err = batch(str(a), missing, str(b), "--batch-size", size, "--max-length", "64",
                               rules_name="one")
        assert code == 2, err  # the missing file is an error; the rest is still scored
        assert len(out) == len(prompts) + 1 + len(texts)
        first, gap, second = out[: len(prompts)], out[len(prompts)], out[len(prompts) + 1 :]
        assert [(o["source"], o["line"], o["id"], o["text"]) for o in first] == [
            (str(a), i + 1, i, p) for i, p in enumerate(prompts)]
        assert gap == {"source": missing, "line": None, "status": "error", "error": gap["error"]}
        assert gap["error"].startswith("cannot open")
        assert [(o["source"], o["line"]) for o in second] == [(str(b), i + 1) for i in range(len(texts))]
        assert [o.get("text") for o in second[:-2]] == texts[:-2]
        assert [o["status"] for o in second[-2:]] == ["empty", "empty"]
        assert "verdict" not in second[-1]
        assert error_lines(err) == [f"crossguard: error: {missing}: {gap['error']}"]
        by_text: dict[str, dict] = {}
        for o in first:  # identical prompts: one record each, the same scores
            assert by_text.setdefault(o["text"], o["scores"]) == o["scores"]
        runs[size] = [o.get("scores") for o in out]
    for size in ("1", "7"):  # padding differs between batch sizes, the scores do not
        for got, want in zip(runs[size], runs["64"], strict=True):
            assert (got is None) == (want is None)
            if got is not None:
                assert got["harm"] == pytest.approx(want["harm"], abs=0.011)


def test_files_and_stdin_split_lines_identically(batch, tmp_path) -> None:
    data = b"\xef\xbb\xbfone\r\ntwo\x0bthree\n\nfour\xe2\x80\xa8five\rsix\r\r\n \nlast line"
    path = tmp_path / "input"
    path.write_bytes(data)
    code_f, from_file, _ = batch(str(path), "--threshold", "1")
    code_s, from_stdin, _ = batch("-", "--threshold", "1", stdin=data)
    assert code_f == code_s == 0
    assert [o["text"] if "text" in o else o["status"] for o in from_file] == [
        "one", "two\x0bthree", "empty", "four\u2028five\rsix\r", "empty", "last line"]
    assert {o["source"] for o in from_stdin} == {"stdin"}
    _, raw, _ = batch(str(path), "--threshold", "1", raw=True)
    assert "\u2028" not in raw and "\\u2028" in raw  # escaped: still one JSON line per record
    for f, s in zip(from_file, from_stdin, strict=True):
        f.pop("source"), s.pop("source")
        assert f.keys() == s.keys()
        assert f["line"] == s["line"] and f.get("text") == s.get("text")
        for rule, labels in f.get("scores", {}).items():
            assert labels == pytest.approx(s["scores"][rule], abs=0.011)


# --- scores: batch == check == the reference CrossEncoder -----------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_scores_match_crossencoder_and_check(name, model_dirs, run_cli, rules, moderation_records) -> None:
    from sentence_transformers import CrossEncoder

    from crossguard_cli.rules import load_rules

    folder = model_dirs[name]
    prompts = short_prompts(moderation_records, 6) + ["How do I bake bread at home?"]
    prompts.insert(2, prompts[4])  # a repeat inside the group
    stdin = "".join(json.dumps({"id": i, "text": p}) + "\n" for i, p in enumerate(prompts)).encode()
    code, out, err = run_cli("batch", "-m", str(folder), "-r", rules["three"], stdin=stdin)
    assert code in (0, 1), err
    out = parse_jsonl(out)
    assert [o["id"] for o in out] == list(range(len(prompts)))

    ruleset = load_rules(rules["three"])
    hyps = list(ruleset.hypotheses)
    ce = CrossEncoder(str(folder), device="cpu")
    probs = ce.predict([(p, h) for p in prompts for h in hyps], apply_softmax=True,
                       processing_kwargs={"text": {"truncation": "only_first", "max_length": 512}})
    column = {str(ce.config.id2label[i]).lower(): i for i in range(3)}
    assert set(column) == {"entailment", "neutral", "contradiction"}
    for p, record in enumerate(out):
        assert record["windows"] == 1 and record["truncated"] is False
        for rule in ruleset.rules:
            rows = [probs[p * len(hyps) + hyps.index(h)] for h in rule.hypotheses]
            best = max(rows, key=lambda row: row[column[rule.label]])
            want = {label: 100.0 * float(best[col]) for label, col in column.items()}
            assert record["scores"][rule.name] == pytest.approx(want, abs=0.01), (name, p, rule.name)

    for p in (0, len(prompts) - 1):  # `check` scores a prompt alone: the same numbers
        code, single, err = run_cli("check", prompts[p], "-m", str(folder), "-r", rules["three"], "-f", "json")
        assert code in (0, 1), err
        single = json.loads(single)
        assert single["verdict"] == out[p]["verdict"]
        for rule, labels in out[p]["scores"].items():
            assert single["scores"][rule] == pytest.approx(labels, abs=0.011)


# --- batching: many prompts' pairs together, sorted by length, order restored, repeats once ------


@pytest.fixture(scope="module")
def spied_scorer(model_dir, rules):
    from crossguard_cli.api import Guard

    scorer = Guard(rules["three"], str(model_dir), device="cpu", batch_size=64)._scorer
    calls: list[list[int]] = []
    real = scorer.model.logits

    def spy(ids, mask, types):
        calls.append([int(n) for n in mask.sum(axis=1)])
        return real(ids, mask, types)

    scorer.model.logits = spy
    return scorer, calls


def test_pairs_of_a_group_share_forward_passes_sorted_by_length(spied_scorer, moderation_records) -> None:
    scorer, calls = spied_scorer
    prompts = short_prompts(moderation_records, 8)
    prompts = [prompts[0], prompts[5], prompts[0], prompts[3], prompts[7], prompts[5], prompts[1]]
    records = [Record("t", i + 1, text=p) for i, p in enumerate(prompts)]
    n_pairs = len(set(prompts)) * len(scorer.hypotheses)  # repeats are scored once
    assert scorer.similar == 0.9  # on a CPU a batch holds pairs within 90% of its longest
    calls.clear()
    cpu = score_records(scorer, records)
    assert sum(len(c) for c in calls) == n_pairs and len(calls) > 1
    assert all(min(c) >= 0.9 * max(c) for c in calls)
    flat = [n for c in calls for n in c]
    assert flat == sorted(flat, reverse=True)

    scorer.similar = 0.0  # as on a GPU: whatever fits the budget shares a pass
    try:
        calls.clear()
        together = score_records(scorer, records)
    finally:
        scorer.similar = 0.9
    assert [len(c) for c in calls] == [n_pairs]
    assert calls[0] == sorted(calls[0], reverse=True)
    assert [r["scores"] for r in cpu] == [r["scores"] for r in together]

    scorer.batch_size = 3
    try:
        calls.clear()
        small = score_records(scorer, records)
    finally:
        scorer.batch_size = 64
    assert all(len(c) <= 3 for c in calls) and sum(len(c) for c in calls) == n_pairs
    flat = [n for c in calls for n in c]
    assert flat == sorted(flat, reverse=True)  # longest first across the whole group

    alone = [score_records(scorer, [r])[0] for r in records]
    for a, b, c in zip(together, small, alone, strict=True):  # order restored
        assert a["text"] == b["text"] == c["text"]
        for rule in a["scores"]:
            assert a["scores"][rule] == pytest.approx(b["scores"][rule], abs=0.011)
            assert a["scores"][rule] == pytest.approx(c["scores"][rule], abs=0.011)


OUT_OF_MEMORY = {
    "cuda": lambda: __import__("torch").cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    "cpu": lambda: RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: "
                                "you tried to allocate 8589934592 bytes"),
    "onnxruntime": lambda: Exception("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned "
                                     "while running MatMul node. Failed to allocate memory for requested buffer"),
}


@pytest.mark.parametrize("kind", sorted(OUT_OF_MEMORY))
def test_out_of_memory_retries_smaller_outside_the_handler_and_keeps_the_smaller_budget(
        batch, monkeypatch, moderation_records, kind) -> None:
    """A fake model that allocates its pass's activations, then fails above a size: each retry must
    find the failed pass's memory freed, later batches stay under the size that worked, and a pair
    that does not fit even alone becomes an error record while its neighbours are scored."""
    import weakref

    import torch

    from crossguard_cli.engine.models.nli_torch import LoadedModel

    long_prompt = next(r["prompt"] for r in moderation_records if 800 < len(r["prompt"]) < 1500)
    prompts = short_prompts(moderation_records, 40)
    lines = prompts[:2] + [as_text_line(long_prompt)] + prompts[2:]
    stdin = ("\n".join(lines) + "\n").encode()
    code, baseline, err = batch("--input-format", "text", stdin=stdin)
    assert code in (0, 1), err

    real = LoadedModel.logits
    sizes: list[int] = []
    failed_pass_memory: list[weakref.ref] = []

    def tight_memory(self, ids, mask, types):
        assert all(ref() is None for ref in failed_pass_memory), "a failed pass's tensors were alive at the retry"
        sizes.append(len(ids))
        activations = torch.empty(len(ids), ids.shape[1], 32)  # what a real pass holds when it fails
        if len(ids) > 3 or int(mask.sum(axis=1).max()) > 180:
            failed_pass_memory.append(weakref.ref(activations))
            raise OUT_OF_MEMORY[kind]()
        return real(self, ids, mask, types)

    monkeypatch.setattr(LoadedModel, "logits", tight_memory)
    import crossguard_cli.engine.scorer as scorer_module

    monkeypatch.setattr(scorer_module, "CPU_SIMILAR", 0.0)  # batches cut by the budget only: the first holds 32
    code, out, err = batch("--input-format", "text", "--batch-size", "32", stdin=stdin)
    assert code == 2
    assert sizes[0] == 32 and 16 in sizes and 8 in sizes and 4 in sizes  # halved on each failure
    first_fit = next(i for i, n in enumerate(sizes) if n <= 3)
    assert max(sizes[first_fit:]) <= 2  # the budget that worked is kept for every later batch
    assert len(out) == len(lines)
    assert out[2]["status"] == "error" and "out of memory" in out[2]["error"] and out[2]["line"] == 3
    assert error_lines(err) == [f"crossguard: error: stdin:3: {out[2]['error']}"]
    for got, want in zip(out[:2] + out[3:], baseline[:2] + baseline[3:], strict=True):
        assert got["status"] == "ok" and got["text"] == want["text"]
        for rule in want["scores"]:
            assert got["scores"][rule] == pytest.approx(want["scores"][rule], abs=0.011)


def test_other_model_errors_are_not_mistaken_for_out_of_memory(batch, monkeypatch) -> None:
    from crossguard_cli.engine.models.nli_torch import LoadedModel

    def broken(self, ids, mask, types):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x64 and 32x3)")

    monkeypatch.setattr(LoadedModel, "logits", broken)
    code, out, err = batch("--input-format", "text", stdin=b"hello there\n")
    assert code == 2 and out == []
    assert err.startswith("crossguard: error: internal error: RuntimeError: mat1 and mat2 shapes") and \
        len(err.splitlines()) == 1


# --- bad input: an error record in place, the neighbours scored ----------------------------------

BAD_JSONL = b"\n".join([
    b'{"id": 1, "text": "hello there, how are you"}',
    b'{"id": 2, "text": "bad \xff byte"}',
    b'{"id": 3, "text": "unclosed"',
    b'[1, 2, 3]',
    b'{"id": 5, "body": "no text field here"}',
    b'{"id": 6, "text": 42}',
    b"",
    b'{"id": 8, "prompt": "how do I bake bread"}',
]) + b"\n"


def test_bad_records_become_error_records_and_neighbours_are_scored(batch) -> None:
    code, out, err = batch(stdin=BAD_JSONL)
    assert code == 2
    assert [o["line"] for o in out] == [1, 2, 3, 4, 5, 6, 8]  # the blank line is skipped, still counted
    assert [o["status"] for o in out] == ["ok", "error", "error", "error", "error", "error", "ok"]
    assert [o.get("id") for o in out] == [1, None, None, None, 5, 6, 8]
    messages = [o.get("error", "") for o in out]
    for line, words in ((2, "invalid UTF-8"), (3, "invalid JSON"), (4, "expected a JSON object, got array"),
                        (5, "no text field"), (6, "must be a string, got number")):
        assert words in messages[[o["line"] for o in out].index(line)]
    assert "verdict" in out[0] and "verdict" in out[-1]
    assert all("verdict" not in o for o in out if o["status"] == "error")
    assert error_lines(err) == [f"crossguard: error: stdin:{o['line']}: {o['error']}" for o in out[1:6]]
    assert re.search(r"crossguard: 7 records, .*5 errors", err)


def test_field_and_id_field_options(batch) -> None:
    data = b'{"key": "k1", "body": "first prompt"}\n{"key": "k2", "text": "no body"}\n'
    code, out, err = batch("--field", "body", "--id-field", "key", stdin=data)
    assert code == 2
    assert [o["id"] for o in out] == ["k1", "k2"]
    assert out[0]["text"] == "first prompt" and out[0]["status"] == "ok"
    assert "missing field 'body'" in out[1]["error"]


def test_input_format_by_extension_content_or_option(batch, tmp_path) -> None:
    jsonl = b'{"id": "x1", "text": "a prompt in JSON"}\n'
    plain = tmp_path / "records"  # no extension: the content says JSONL
    plain.write_bytes(jsonl)
    as_txt = tmp_path / "records.txt"  # the extension says text
    as_txt.write_bytes(jsonl)
    folder = tmp_path / "a-folder"
    folder.mkdir()
    code, out, err = batch(str(plain), str(as_txt), str(folder), "--threshold", "1")
    assert code == 2
    assert [(o["source"], o.get("id"), o.get("text")) for o in out[:2]] == [
        (str(plain), "x1", "a prompt in JSON"), (str(as_txt), None, jsonl.decode().strip())]
    assert out[2]["source"] == str(folder) and out[2]["line"] is None and out[2]["error"].startswith("cannot open")
    assert error_lines(err) == [f"crossguard: error: {folder}: {out[2]['error']}"]
    code, out, _ = batch(str(plain), "--input-format", "text", "--threshold", "1")
    assert code == 0 and out[0]["text"] == jsonl.decode().strip()
    code, out, _ = batch(str(as_txt), "--input-format", "jsonl", "--threshold", "1")
    assert code == 0 and out[0]["id"] == "x1"


def test_invalid_utf8_in_a_text_file(batch, tmp_path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"fine prompt\nbroken \xc3\x28 here\nalso fine\n")
    code, out, err = batch(str(path))
    assert code == 2
    assert [o["status"] for o in out] == ["ok", "error", "ok"]
    assert out[1]["error"].startswith("invalid UTF-8 at byte 8")
    assert error_lines(err) == [f"crossguard: error: {path}:2: {out[1]['error']}"]


def test_on_error_abort_stops_at_the_first_error(batch) -> None:
    code, out, err = batch("--on-error", "abort", stdin=BAD_JSONL, raw=True)
    assert code == 2
    records = parse_jsonl(out)
    assert [(o["line"], o["status"]) for o in records] == [(1, "ok"), (2, "error")]
    assert len(error_lines(err)) == 1 and "stdin:2: invalid UTF-8" in err


# --- exit status ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("rules_name", "args", "stdin", "expect"), [
    ("never", (), b"a harmless prompt\nanother one\n", 0),
    ("always", (), b"a harmless prompt\nanother one\n", 1),
    ("always", ("--exit-zero",), b"a harmless prompt\n", 0),
    ("always", (), b"a prompt\n\xff\n", 2),  # an error beats flagged
    ("always", ("--exit-zero",), b"a prompt\n\xff\n", 2),
    ("three", ("--threshold", "0"), b"a prompt\n", 1),
    ("unsure", (), b"a prompt\nanother\n", 0),
    ("always", (), b"\n \n", 0),  # empty records alone
    ("always", (), b"", 0),  # no input at all
])
def test_exit_status(batch, rules_name, args, stdin, expect) -> None:
    code, out, err = batch(*args, rules_name=rules_name, stdin=stdin)
    assert code == expect, err
    verdicts = {o.get("verdict", o["status"]) for o in out}
    if rules_name == "unsure":
        assert verdicts == {"uncertain"}
    if stdin.strip() == b"" and stdin:
        assert verdicts == {"empty"}
    if stdin == b"":
        assert out == [] and "crossguard: 0 records" in err


@pytest.mark.parametrize("option", [
    ("--batch-size", "0"), ("--threshold", "1.5"), ("--threshold", "-0.1"), ("--max-length", "-1"),
    ("--max-chars", "0"), ("--format", "xml"), ("--format", "json"), ("--on-error", "maybe"),
    ("--input-format", "yaml"), ("--long-input", "all"), ("--dtype", "float8"),
    ("--input-format", "text", "--field", "body"), ("--no-such-option",),
])
def test_bad_options_are_one_line_usage_errors(batch, option) -> None:
    code, out, err = batch(*option, stdin=b"a prompt\n", raw=True)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.startswith("crossguard: error: "), err
    assert "Traceback" not in err


# --- output formats, summary, progress -----------------------------------------------------------


def test_csv_carries_the_same_fields(batch) -> None:
    data = b"first prompt\n\nthird \xff prompt\nfourth prompt, with a comma\n"
    code, jsonl, _ = batch("--input-format", "text", stdin=data)
    code_csv, out, err = batch("--input-format", "text", "--format", "csv", stdin=data, raw=True)
    assert code == code_csv == 2
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == len(jsonl) == 4
    assert {"weapons.entailment", "insult.neutral", "polite.contradiction", "text", "error"} <= set(rows[0])
    for row, rec in zip(rows, jsonl, strict=True):
        assert (row["source"], row["line"], row["status"]) == (rec["source"], str(rec["line"]), rec["status"])
        for rule, labels in rec.get("scores", {}).items():
            for label, value in labels.items():
                assert float(row[f"{rule}.{label}"]) == pytest.approx(value, abs=0.005)
        assert row["verdict"] == rec.get("verdict", "")
        assert row["text"] == rec.get("text", "")
    assert rows[2]["error"] == jsonl[2]["error"]


def test_table_and_piped_output_hold_no_ansi_codes(batch) -> None:
    code, out, _ = batch("--format", "table", "--threshold", "0", stdin=b"one prompt\n\nthree\n", raw=True)
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 3 and "flagged" in lines[0] and "empty" in lines[1]
    assert "\x1b" not in out
    _, piped, _ = batch(stdin=b"one prompt\n", raw=True)
    assert "\x1b" not in piped and json.loads(piped)["text"] == "one prompt"


def test_quiet_leaves_stderr_empty(batch) -> None:
    code, out, err = batch("-q", stdin=b"one prompt\ntwo prompts\n")
    assert code in (0, 1) and len(out) == 2
    assert err == ""


def test_progress_bar_draws_on_a_terminal_and_stays_silent_otherwise(capsys) -> None:
    from rich.console import Console

    from crossguard_cli.cli.progress import Progress

    buf = io.StringIO()
    with Progress(Console(file=buf, force_terminal=True, width=100), enabled=True) as bar:
        bar.update(Tally(records=12, flagged=3, errors=1))
        bar.line("crossguard: error: stdin:4: invalid JSON")
    shown = buf.getvalue()
    assert "crossguard: error: stdin:4: invalid JSON" in shown
    with Progress(Console(file=io.StringIO(), force_terminal=False), enabled=False) as bar:
        bar.update(Tally(records=1))
        bar.line("crossguard: error: x:1: y")
    assert capsys.readouterr().err == "crossguard: error: x:1: y\n"


# --- the reader: lazy, bounded, never waits for a full group on an idle input --------------------


def test_groups_read_lazily_and_yield_early_when_the_input_is_idle() -> None:
    consumed = 0
    gate = threading.Event()

    def source():
        nonlocal consumed
        for i in range(1, 10**9):
            if i == 6:
                gate.wait(20)  # the input goes quiet, as with `tail -f`
            consumed += 1
            yield Record("s", i, text=f"prompt {i}")

    grouped = groups(source(), size=100)
    start = time.monotonic()
    first = next(grouped)
    assert [r.line for r in first] == [1, 2, 3, 4, 5]
    assert time.monotonic() - start < 5
    gate.set()
    second = next(grouped)
    assert second[0].line == 6 and len(second) <= 100
    time.sleep(0.3)
    assert consumed <= 5 + 100 + 200 + 2  # bounded read-ahead: memory stays flat
    grouped.close()
    deadline = time.monotonic() + 5
    while any(t.name == "crossguard-reader" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "crossguard-reader" for t in threading.enumerate())


def test_a_reader_failure_reaches_the_consumer() -> None:
    def source():
        yield Record("s", 1, text="one")
        raise RuntimeError("disk on fire")

    got = []
    with pytest.raises(RuntimeError, match="disk on fire"):
        for group in groups(source(), size=10):
            got += group
    assert [r.text for r in got] == ["one"]  # what was read before the failure is not lost


def test_an_empty_input_gives_no_groups() -> None:
    assert list(groups(iter([]), size=10)) == []


def test_progress_on_a_terminal_never_takes_results_off_stdout(batch, monkeypatch) -> None:
    """`crossguard batch in.txt > out.jsonl` at a terminal: a bar on stderr, every result in the file."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, out, err = batch("--threshold", "1", stdin=b"one prompt\n\xff\nthree prompts\n", raw=True)
    assert code == 2
    records = parse_jsonl(out)
    assert [o["status"] for o in records] == ["ok", "error", "ok"]
    assert "stdin:2: invalid UTF-8" in err and "one prompt" not in err
