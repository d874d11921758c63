"""The host side of scoring: vectorised pair assembly, the private tokenizer, and the pipeline.

Assembly is checked cell by cell against the model's own tokenizer (and the per-pair template
it replaced); the pipeline against plain group-by-group scoring on a real model, and with a
slow fake device for what only threads can show: overlap, order, failures, stopping early.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from crossguard_cli.engine.pairs import window_spans
from crossguard_cli.engine.scorer import Scorer, token_encoder
from crossguard_cli.engine.stream import score_records, stream
from crossguard_cli.records.inputs import Record
from crossguard_cli.rules import parse_rules

RULES = parse_rules("""
version: 1
rules:
  - name: weapons
    hypotheses: [The prompt asks for instructions to build a weapon., The prompt is about explosives.]
  - name: polite
    hypothesis: The prompt is rude.
    label: contradiction
""", "test.yaml")


@pytest.fixture(scope="module")
def models(model_dirs):
    from crossguard_cli.engine.models.loader import load_model

    return {name: load_model(str(folder), device="cpu", dtype="float32", max_length=64)
            for name, folder in model_dirs.items()}


@pytest.mark.parametrize("name", ["bert-ENC", "deberta-CEN", "modernbert-NCE"])
def test_token_encoder_equals_the_tokenizer(models, moderation_records, name):
    tok = models[name].tokenizer
    texts = [r["prompt"] for r in moderation_records[:200]] + ["", "[SEP] inside", "caf\u00e9 \u2014 \u00fcber"]
    for split in (True, False):
        assert token_encoder(tok, split_special_tokens=split)(texts) == list(
            tok(texts, add_special_tokens=False, split_special_tokens=split)["input_ids"])
    # Prompts are read with split_special_tokens: "[SEP]" typed in a prompt is never the control token.
    sep = tok.sep_token_id
    assert sep in token_encoder(tok, split_special_tokens=False)(["a [SEP] b"])[0]
    assert sep not in token_encoder(tok, split_special_tokens=True)(["a [SEP] b"])[0]


@pytest.mark.parametrize("name", ["bert-ENC", "deberta-CEN", "modernbert-NCE"])
@pytest.mark.parametrize("long_input", ["window", "truncate"])
def test_batches_hold_exactly_the_tokenizers_pairs(models, moderation_records, name, long_input):
    """Every padded row is the tokenizer's own pair encoding of its window and hypothesis, then pads."""
    model = models[name]
    tok = model.tokenizer
    scorer = Scorer(model, RULES, long_input=long_input, batch_size=7)
    prompts = [r["prompt"] for r in moderation_records[:25]] + [""]
    prepared = scorer.prepare(prompts)
    encode = token_encoder(tok, split_special_tokens=False)
    ids_of = token_encoder(tok, split_special_tokens=True)(list(prepared.unique))
    expect = []  # (ids, types) per pair, in the plan's pair order: prompt, hypothesis, window
    for ids in ids_of:
        for h in scorer.hypotheses:
            hyp = encode([h])[0]
            spans = window_spans(len(ids), 64 - scorer.template.n_special - len(hyp))
            for start, end in spans[:1] if long_input == "truncate" else spans:
                expect.append(scorer.template.build(ids[start:end], hyp))
    if long_input == "window":  # some prompts needed more than one window
        assert len(expect) > len(ids_of) * len(scorer.hypotheses)
    else:
        assert prepared.plan.cut.any()
    seen = 0
    for batch in scorer.batches(prepared):
        assert len(batch) <= 7
        for row, pair in enumerate(prepared.plan.order[batch.start : batch.start + len(batch)]):
            want_ids, want_types = expect[pair]
            n = len(want_ids)
            assert batch.ids[row, :n].tolist() == want_ids
            assert batch.mask[row].tolist() == [1] * n + [0] * (batch.ids.shape[1] - n)
            assert (batch.ids[row, n:] == (tok.pad_token_id or 0)).all()
            if model.uses_token_types:
                assert batch.types[row, :n].tolist() == want_types
            assert not batch.types[row, n:].any()
            seen += 1
        assert batch.ids.shape[1] == batch.lengths.max()  # as wide as its longest row, no wider
    assert seen == len(expect)
    # And the template is the tokenizer's: a short prompt's pair, straight from the tokenizer.
    first = tok(prompts[0][:60], RULES.hypotheses[0], return_token_type_ids=True)
    assert scorer.template.build(encode([prompts[0][:60]])[0], encode([RULES.hypotheses[0]])[0])[0] == \
        list(first["input_ids"])


@pytest.mark.parametrize("overlap", [True, False], ids=["pipelined", "in-turn"])
def test_stream_equals_group_by_group_scoring(models, moderation_records, overlap):
    model = models["bert-CEN"]
    prompts = [r["prompt"] for r in moderation_records[:60]]
    records = [Record("t", i + 1, text=p) for i, p in enumerate(prompts)] + [Record("t", 61, text="  ")]
    scorer = Scorer(model, RULES, batch_size=16)
    expect = [out for i in range(0, len(records), 8) for out in score_records(scorer, records[i : i + 8])]
    got = [out for group in stream(Scorer(model, RULES, batch_size=16), iter(records), group_size=8, overlap=overlap)
           for out in group]
    assert [{k: v for k, v in g.items() if k != "scores"} for g in got] == \
        [{k: v for k, v in e.items() if k != "scores"} for e in expect]
    for g, e in zip(got, expect, strict=True):  # batches may differ if the reader split groups otherwise
        for rule, labels in e.get("scores", {}).items():
            assert g["scores"][rule] == pytest.approx(labels, abs=0.011)


class SlowDevice:
    """A fake device: each forward pass sleeps (releasing the GIL, as a GPU pass does) and is logged."""

    def __init__(self, model, seconds: float = 0.03, fail_on_call: int | None = None) -> None:
        self.inner, self.seconds, self.fail_on_call = model, seconds, fail_on_call
        self.passes: list[tuple[float, float]] = []
        self.tokenizer, self.max_length = model.tokenizer, model.max_length
        self.label_columns, self.input_names = model.label_columns, model.input_names
        self.device, self.dtype, self.uses_token_types = "cpu", "float32", model.uses_token_types

    def logits(self, ids, mask, types):
        if self.fail_on_call is not None and len(self.passes) == self.fail_on_call:
            raise RuntimeError("device fell over")
        start = time.perf_counter()
        time.sleep(self.seconds)
        self.passes.append((start, time.perf_counter()))
        return np.zeros((len(ids), 3), dtype=np.float32)


def _records(moderation_records, n):
    return [Record("t", i + 1, text=r["prompt"]) for i, r in enumerate(moderation_records[:n])]


def test_the_next_group_is_prepared_while_the_device_runs(models, moderation_records):
    device = SlowDevice(models["bert-ENC"])
    scorer = Scorer(device, RULES, batch_size=8)
    prepares: list[tuple[float, float, str]] = []
    real_prepare = scorer.prepare

    def timed_prepare(texts):
        start = time.perf_counter()
        out = real_prepare(texts)
        prepares.append((start, time.perf_counter(), threading.current_thread().name))
        return out

    scorer.prepare = timed_prepare
    groups = list(stream(scorer, iter(_records(moderation_records, 40)), group_size=10, overlap=True))
    assert [len(g) for g in groups] == [10, 10, 10, 10]
    assert {name for *_, name in prepares} == {"crossguard-prepare"}
    # Groups after the first are prepared while forward passes run (one after another, none would
    # be). Which ones exactly depends on how the threads are scheduled on a busy machine.
    overlapping = [any(a < end and start < b for a, b in device.passes) for start, end, _ in prepares[1:]]
    assert any(overlapping), (prepares, device.passes)


def test_a_device_failure_reaches_the_caller_after_the_groups_before_it(models, moderation_records):
    device = SlowDevice(models["bert-ENC"], seconds=0.0, fail_on_call=3)
    scorer = Scorer(device, RULES, batch_size=8)
    got = []
    with pytest.raises(RuntimeError, match="device fell over"):
        for group in stream(scorer, iter(_records(moderation_records, 40)), group_size=2, overlap=True):
            got.append(group)
    assert len(got) >= 1 and [r["line"] for g in got for r in g] == list(range(1, 2 * len(got) + 1))


@pytest.mark.parametrize("overlap", [True, False], ids=["pipelined", "in-turn"])
def test_stopping_early_ends_the_pipeline_threads(models, moderation_records, overlap):
    quiet = threading.Event()

    def source():
        yield from _records(moderation_records, 20)
        quiet.wait(30)  # an input that goes quiet (tail -f)
        yield from _records(moderation_records, 3)

    def alive(*names):
        return [t.name for t in threading.enumerate() if t.name in names]

    scorer = Scorer(SlowDevice(models["bert-ENC"], seconds=0.01), RULES)
    scored = stream(scorer, source(), group_size=5, overlap=overlap)
    assert len(next(scored)) == 5
    scored.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive("crossguard-device", "crossguard-build"):
        time.sleep(0.05)
    assert not alive("crossguard-device", "crossguard-build")  # they stop while the input is quiet
    quiet.set()  # once the input speaks again, the prepare thread sees the stop and closes the reader
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and alive("crossguard-prepare", "crossguard-reader"):
        time.sleep(0.05)
    assert not alive("crossguard-prepare", "crossguard-reader")


def test_a_guard_can_check_inside_its_own_stream(model_dir):
    """The device thread never holds the Guard's lock while it waits: no deadlock."""
    from crossguard_cli.api import Guard

    guard = Guard(model=str(model_dir), device="cpu", batch_size=4)
    seen = []
    for result in guard.stream(f"prompt {i} about bread" for i in range(30)):
        seen.append((result.verdict, guard.check("hello there").verdict))
    assert len(seen) == 30


def test_normalising_looks_each_distinct_character_up_once(moderation_records):
    """The fast normalisation equals the character-by-character definition (NFKC, then no Cf)."""
    import unicodedata

    from crossguard_cli.records.text import normalize_text

    def by_character(text):
        folded = unicodedata.normalize("NFKC", text)
        return "".join(ch for ch in folded if unicodedata.category(ch) != "Cf")

    texts = [r["prompt"] for r in moderation_records] + [
        "b\u200bomb\u00ad", "\ufeffx\u202ey\u2066z", "\uff48\uff4f\uff57 \u2014 caf\u00e9", "\U000e0041tag",
        "".join(chr(c) for c in range(0x80, 0x3000))]
    assert sum(not t.isascii() for t in texts) > 100
    assert [normalize_text(t) for t in texts] == [by_character(t) for t in texts]


def test_a_lone_record_after_a_quiet_spell_is_grouped_at_once():
    """`tail -f`: the first group waits `idle` for company; a record that comes after the input was
    quiet for longer than `idle` is yielded at once, not `idle` later (issue 18)."""
    from crossguard_cli.engine.stream import groups

    idle = 1.0
    sent: list[float] = []

    def source():
        sent.append(time.monotonic())
        yield Record("t", 1, text="first")
        time.sleep(idle * 1.5)  # quiet for longer than idle
        sent.append(time.monotonic())
        yield Record("t", 2, text="lone")

    got = []
    for group in groups(source(), size=64, idle=idle):
        got.append(([r.text for r in group], time.monotonic()))
    assert [texts for texts, _ in got] == [["first"], ["lone"]]
    assert got[0][1] - sent[0] >= idle * 0.9  # the start of a stream waits for company
    assert got[1][1] - sent[1] < idle / 2  # the lone record does not
