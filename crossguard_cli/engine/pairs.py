"""Turning prompts and hypotheses into model inputs: token pairs and windows.

Each prompt is tokenised once and each hypothesis once (not once per pair, as a plain
`CrossEncoder.predict` would), then pairs are assembled from token ids with the special-token
template the model's own tokenizer uses. The hypothesis is never cut: a prompt longer than the
tokens left beside it is split into overlapping windows that together cover every token.
"""

from __future__ import annotations

from dataclasses import dataclass

from crossguard_cli.errors import ModelError

_PROBES = (("hello there", "a world"), ("The quick brown fox, 42 times!", "Jumps over it."))


@dataclass(frozen=True)
class PairTemplate:
    """Where special tokens go around a (prompt, hypothesis) pair, e.g. `[CLS] A [SEP] B [SEP]`."""

    prefix: tuple[int, ...]
    middle: tuple[int, ...]
    suffix: tuple[int, ...]
    prefix_types: tuple[int, ...]
    a_type: int
    middle_types: tuple[int, ...]
    b_type: int
    suffix_types: tuple[int, ...]

    @property
    def n_special(self) -> int:
        return len(self.prefix) + len(self.middle) + len(self.suffix)

    def build(self, a: list[int], b: list[int]) -> tuple[list[int], list[int]]:
        """Input ids and token type ids of the pair (a, b)."""
        ids = [*self.prefix, *a, *self.middle, *b, *self.suffix]
        types = [
            *self.prefix_types,
            *([self.a_type] * len(a)),
            *self.middle_types,
            *([self.b_type] * len(b)),
            *self.suffix_types,
        ]
        return ids, types


def _find(seq: list[int], sub: list[int], start: int) -> int:
    for i in range(start, len(seq) - len(sub) + 1):
        if seq[i : i + len(sub)] == sub:
            return i
    return -1


def learn_template(tokenizer) -> PairTemplate:
    """Learn the pair template from the tokenizer itself, then check it on a second pair.

    transformers 5 no longer exposes `build_inputs_with_special_tokens` on fast tokenizers,
    and hard-coding `[CLS] A [SEP] B [SEP]` would be wrong for RoBERTa-style `<s> A </s></s> B
    </s>`; asking the tokenizer with a probe pair works for any of them.
    """
    (pa, pb), check = _PROBES
    full = tokenizer(pa, pb, return_token_type_ids=True)
    ids, types = list(full["input_ids"]), list(full.get("token_type_ids") or [0] * len(full["input_ids"]))
    a = tokenizer(pa, add_special_tokens=False)["input_ids"]
    b = tokenizer(pb, add_special_tokens=False)["input_ids"]
    i = _find(ids, a, 0)
    j = _find(ids, b, i + len(a)) if i >= 0 else -1
    if i < 0 or j < 0:
        raise ModelError("cannot find how the model's tokenizer joins a pair of texts; is it an NLI model?")
    template = PairTemplate(
        prefix=tuple(ids[:i]),
        middle=tuple(ids[i + len(a) : j]),
        suffix=tuple(ids[j + len(b) :]),
        prefix_types=tuple(types[:i]),
        a_type=types[i] if a else 0,
        middle_types=tuple(types[i + len(a) : j]),
        b_type=types[j] if b else 1,
        suffix_types=tuple(types[j + len(b) :]),
    )
    ca, cb = check
    expect = tokenizer(ca, cb, return_token_type_ids=True)
    got_ids, got_types = template.build(
        tokenizer(ca, add_special_tokens=False)["input_ids"], tokenizer(cb, add_special_tokens=False)["input_ids"]
    )
    expect_types = list(expect.get("token_type_ids") or got_types)
    if got_ids != list(expect["input_ids"]) or got_types != expect_types:
        raise ModelError("the model's tokenizer joins pairs in a way crossguard cannot reproduce")
    return template


def min_window(max_length: int) -> int:
    """The fewest prompt tokens a window may hold: a hypothesis may not leave less room than this."""
    return max(8, max_length // 4)


def window_spans(n_tokens: int, window: int) -> list[tuple[int, int]]:
    """Overlapping (start, end) spans of at most `window` tokens that cover `n_tokens` tokens.

    Windows overlap by a quarter of a window (at most 64 tokens), so a phrase cut by one
    window boundary is whole in the next; the last window ends exactly at the prompt's end.
    """
    if n_tokens <= window:
        return [(0, n_tokens)]
    overlap = min(64, window // 4)
    stride = max(1, window - overlap)
    spans = [(start, start + window) for start in range(0, n_tokens - window, stride)]
    spans.append((n_tokens - window, n_tokens))
    return spans
