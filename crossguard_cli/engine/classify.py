"""Scoring prompts with a trained classifier: one forward pass per distinct prompt window.

A classifier reads the prompt alone (its own special tokens around it, no hypothesis), so a
row is a window of the prompt; every rule that names the classifier reads its own column of
that one pass. Windows, length-sorted batches, the token budget, out-of-memory halving and
the pipeline's overlap are the NLI scorer's own (`WindowScorer`); only the row's template and
the activation differ. A prompt longer than the window is read in overlapping windows and each
rule takes its column's highest probability over them, as an NLI rule takes its best window.
"""

from __future__ import annotations

import numpy as np

from crossguard_cli.engine.pairs import PairTemplate
from crossguard_cli.engine.reduce import PromptScores, best_classes, sigmoid, softmax
from crossguard_cli.engine.scorer import Prepared, WindowScorer
from crossguard_cli.errors import ModelError
from crossguard_cli.rules import RuleSet

_PROBES = ("hello there", "The quick brown fox, 42 times!")


def learn_single_template(tokenizer) -> PairTemplate:
    """The special tokens the tokenizer puts around one text (`[CLS] A [SEP]`, `<s> A </s>`, or
    none for a decoder), learned by asking it, then checked on a second text."""
    def encode(text: str, special: bool):
        out = tokenizer(text, add_special_tokens=special, return_token_type_ids=True)
        ids = list(out["input_ids"])
        return ids, list(out.get("token_type_ids") or [0] * len(ids))

    ids, types = encode(_PROBES[0], True)
    a, _ = encode(_PROBES[0], False)
    at = next((i for i in range(len(ids) - len(a) + 1) if ids[i : i + len(a)] == a), -1)
    if at < 0:
        raise ModelError("cannot find how the classifier's tokenizer frames a text")
    template = PairTemplate(prefix=tuple(ids[:at]), middle=(), suffix=tuple(ids[at + len(a):]),
                            prefix_types=tuple(types[:at]), a_type=types[at] if a else 0, middle_types=(),
                            b_type=types[at] if a else 0, suffix_types=tuple(types[at + len(a):]))
    want_ids, want_types = encode(_PROBES[1], True)
    got_ids, got_types = template.build(encode(_PROBES[1], False)[0], [])
    if got_ids != want_ids or got_types != want_types:
        raise ModelError("the classifier's tokenizer frames texts in a way crossguard cannot reproduce")
    return template


class ClassifierScorer(WindowScorer):
    """Scores prompts with one classifier for the rules that name it.

    Args:
        model: a `ClassifierModel`.
        ruleset: the rules file's rules that use this classifier (with the file's source).
        columns: per rule of `ruleset`, the output column it decides on.
        long_input, max_chars, batch_size, batch_tokens: as for the NLI scorer.
    """

    def __init__(self, model, ruleset: RuleSet, columns: list[int], *, long_input: str = "window",
                 max_chars: int = 50_000, batch_size: int | None = None, batch_tokens: int | None = None) -> None:
        super().__init__(model, ruleset, template=learn_single_template(model.tokenizer), hypotheses=[[]],
                         n_outputs=len(model.labels), long_input=long_input, max_chars=max_chars,
                         batch_size=batch_size, batch_tokens=batch_tokens)
        self.columns = list(columns)
        self.hypotheses = ()

    def reduce(self, prepared: Prepared, logits: np.ndarray, failed: np.ndarray) -> list[PromptScores]:
        """The activation over every column, then each rule's column at its best window."""
        plan = prepared.plan
        probs = sigmoid(logits) if self.model.activation == "sigmoid" else softmax(logits)
        windows = np.bincount(plan.prompt, minlength=len(prepared.unique))
        return best_classes([r.name for r in self.ruleset.rules], self.columns, len(prepared.unique), plan.prompt,
                            probs, failed, windows, plan.cut, self.model.dtype)


__all__ = ["ClassifierScorer", "learn_single_template"]
