"""What a request costs and what is scored together: estimates made without tokenising.

The worker must size its rounds and passes before the model sees a prompt, on the event loop's
budget of microseconds, so a token is taken as 4 characters. A pass groups requests whose
longest pair is within `SIMILAR` of the pass's longest: on a CPU, padding a short prompt to a
long one's length costs more than scoring them together saves (benchmarks/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from crossguard_cli.records.inputs import Record

if TYPE_CHECKING:
    from crossguard_cli.api import Guard


class Sized(Protocol):
    """What sizing needs of a request (the batcher's `Job`): estimated tokens of all its pairs and
    of its longest pair."""

    tokens: int
    width: int


J = TypeVar("J", bound=Sized)
ROUND_PASSES = 4  # a round holds this many forward passes' worth of pair tokens

SIMILAR = 0.75  # a pass holds requests whose longest pair is at least this share of the pass's longest


def passes(jobs: Sequence[J], pass_tokens: int | None = None) -> list[list[J]]:
    """A round's jobs as groups of similar width, shortest first (a job is never split).

    A round that fits in one forward pass (`pass_tokens`: the scorer's budget) stays whole: on
    a GPU, where a pass costs much the same for one request as for dozens, splitting it would
    only add passes."""
    if pass_tokens is not None and sum(j.tokens for j in jobs) <= pass_tokens:
        return [list(jobs)] if jobs else []
    out: list[list[J]] = []
    for job in sorted(jobs, key=lambda j: j.width, reverse=True):
        if out and job.width >= SIMILAR * out[-1][0].width:
            out[-1].append(job)
        else:
            out.append([job])
    return out[::-1]


def estimate_tokens(guard: Guard, records: Sequence[Record]) -> tuple[int, int]:
    """(pair tokens of all these inputs, tokens of the longest pair), estimated without tokenising:
    4 characters a token; a pair is at most the model's max length (longer prompts are windows)."""
    hyps = guard.rules.hypotheses
    hyp_tokens = sum(len(h) // 4 + 3 for h in hyps)
    cap, limit = guard.options.max_chars, guard.model.max_length
    prompt = [min(len(rec.text or ""), cap) // 4 for rec in records]
    width = min(limit, max(prompt, default=0) + hyp_tokens // max(1, len(hyps)))
    return sum(len(hyps) * p + hyp_tokens for p in prompt), width


def round_budget(guard: Guard) -> int:
    """Four forward passes' worth of pair tokens: the scorer's own budget per pass, read each round,
    so a budget the scorer lowered after running out of memory holds for the rounds too."""
    return ROUND_PASSES * guard.batch_tokens


__all__ = ["ROUND_PASSES", "SIMILAR", "Sized", "estimate_tokens", "passes", "round_budget"]
