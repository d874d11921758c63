"""The streaming engine: records in, one output record per input record out, in order.

A reader thread pulls records from the (lazy) input into a bounded queue, so reading a file
overlaps with the model and memory stays flat however large the input; `pipelined` then
overlaps tokenising, padding and writing with the model's forward passes. The scoring loop takes
as many records as are ready, up to a group size; when the input goes quiet (`tail -f`) it
scores what it has after a few milliseconds instead of waiting for a full group.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import closing, nullcontext
from typing import Any

from crossguard_cli.engine.decide import decide
from crossguard_cli.engine.handoff import END, Failure, put, take
from crossguard_cli.engine.pipeline import pipelined
from crossguard_cli.engine.reduce import PromptScores
from crossguard_cli.engine.results import empty_record, error_record, scored_record
from crossguard_cli.engine.scorer import Scorer
from crossguard_cli.records.inputs import Record

FIRST_GROUP = 64  # records in a stream's first group; each next group doubles, up to the group size


def _reader(records: Iterable[Record], q: queue.Queue, stop: threading.Event) -> None:
    try:
        for rec in records:
            if not put(q, rec, stop):
                break
        else:
            put(q, END, stop)
    except BaseException as exc:  # handed to the consumer, which raises it in its own thread
        put(q, Failure(exc), stop)
    finally:
        close = getattr(records, "close", None)
        if close is not None:  # a generator stopped early: close the file it reads
            close()


def groups(records: Iterable[Record], size: int, idle: float = 0.02, first: int | None = None,
           cancel: threading.Event | None = None) -> Iterator[list[Record]]:
    """Group records as they arrive: up to `size`, or fewer once the input has been idle `idle` s.

    With `first`, the first group holds at most `first` records and each next one twice as many,
    up to `size`: the first results (and the device's first batch) come sooner. Setting `cancel`
    ends the groups even while the input is quiet (the iterating thread must not wait forever).

    A record that arrives after the input was quiet for longer than `idle` (a lone line of a
    `tail -f`) is grouped with what is already queued and yielded at once: waiting `idle` for
    company that is not coming would only add `idle` to its latency (issue 18). The first group
    always waits, so the start of a file is never cut into a group of one.
    """
    limit = min(size, first or size)
    q: queue.Queue = queue.Queue(maxsize=max(2 * size, 64))
    stop = threading.Event()
    thread = threading.Thread(target=_reader, args=(records, q, stop), daemon=True, name="crossguard-reader")
    thread.start()
    try:
        done, started = False, False
        while not done:
            waited = time.monotonic()
            item = take(q, cancel)
            wait = 0.0 if started and time.monotonic() - waited > idle else idle  # quiet: no waiting
            started = True
            group: list[Record] = []
            while True:
                if item is END:
                    done = True
                    break
                if isinstance(item, Failure):
                    if group:  # the records read before the failure still get their results
                        yield group
                    raise item.exc
                group.append(item)
                if len(group) >= limit:
                    break
                try:
                    item = q.get(timeout=wait) if wait else q.get_nowait()
                except queue.Empty:
                    break
            if group:
                yield group
                limit = min(size, 2 * limit)
    finally:
        stop.set()


def score_records(scorer: Scorer, group: list[Record]) -> list[dict[str, Any]]:
    """Output records for one group, in order; only `ok` records reach the model."""
    ok = [r.text for r in group if r.status == "ok"]
    return records_for(scorer, group, scorer.score(ok) if ok else [])


def records_for(scorer: Scorer, group: list[Record], scores: list[PromptScores]) -> list[dict[str, Any]]:
    """Output records for one group, given the scores of its `ok` records in order."""
    results = iter(scores)
    out = []
    for rec in group:
        if rec.status == "error":
            out.append(error_record(rec))
        elif rec.status == "empty":
            out.append(empty_record(rec))
        else:
            scores = next(results)
            if scores.error:
                out.append(error_record(rec, scores.error))
                continue
            rules = scorer.ruleset.rules
            probs = {rule.name: scores.rules[rule.name].prob(rule.score_field) for rule in rules}
            heads = {rule.name: getattr(scores.rules[rule.name], "abstain", None) for rule in rules}
            decision = decide(scorer.ruleset, probs, heads if any(v is not None for v in heads.values()) else None)
            out.append(scored_record(rec, scorer.ruleset, scores, decision))
    return out


def group_size_for(scorer: Scorer) -> int:
    """Records scored together: enough pairs to fill several model batches, bounded for latency."""
    return max(64, min(1024, scorer.batch_size * 4))


def overlaps(scorer: Scorer) -> bool:
    """Whether host work should run beside the model: yes unless every model runs on the CPU.

    On a CPU the model's own threads use every core: tokenising or padding beside a forward pass
    only slows it, and torch run from a second thread costs every pass more (measured: a lone
    record of a stream, and the service at 32 clients, benchmarks/RESULTS.md, issue 18), while
    the host's share of the work there is under 1%. A GPU runs while the host prepares the next
    batch, so there the overlap is the point.
    """
    models = getattr(scorer, "models", None) or [scorer.model]
    return not all(str(getattr(m, "device", "cpu")).startswith("cpu") for m in models)


def stream(scorer: Scorer, records: Iterable[Record], group_size: int | None = None, lock=None,
           overlap: bool | None = None) -> Iterator[list[dict[str, Any]]]:
    """Output records, a group at a time (write and flush each group before the next).

    With `overlap` (None: `overlaps(scorer)`), groups go through `pipelined`: the next groups are
    tokenised and padded, and the model runs, while the caller writes this one; else each group
    is scored in the caller's thread in turn. `lock` is taken around each forward pass.
    """
    size = group_size or group_size_for(scorer)
    cancel = threading.Event()
    grouped = groups(records, size, first=min(size, FIRST_GROUP), cancel=cancel)
    # Closing stops (and joins) the threads when the caller stops early.
    with closing(score_groups(scorer, grouped, lock, stop=cancel, overlap=overlap)) as scored:
        yield from scored


def score_groups(scorer: Scorer, grouped: Iterable[list[Record]], lock=None, stop: threading.Event | None = None,
                 overlap: bool | None = None) -> Iterator[list[dict[str, Any]]]:
    """Output records for each group the caller forms, in order. With `overlap` (None:
    `overlaps(scorer)`) through `pipelined`, the next groups tokenised and padded while the model
    runs this one; else in the caller's thread, in turn. `stream` forms groups from a reader; the
    service forms them from the requests waiting. `stop` is set when the groups end."""
    if overlap is None:
        overlap = overlaps(scorer)
    if overlap:
        def finish(group: list[Record], prepared) -> list[dict[str, Any]]:
            return records_for(scorer, group, scorer.finish(prepared))

        return pipelined(scorer, grouped, finish, lock, stop=stop)
    return _in_turn(scorer, grouped, lock, stop)


def _in_turn(scorer: Scorer, grouped: Iterable[list[Record]], lock, stop: threading.Event | None
             ) -> Iterator[list[dict[str, Any]]]:
    try:
        for group in grouped:
            with lock or nullcontext():
                out = score_records(scorer, group)
            yield out
    finally:
        if stop is not None:
            stop.set()
        close = getattr(grouped, "close", None)
        if close is not None:  # stops the reader thread behind `grouped`
            close()
