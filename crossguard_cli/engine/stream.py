"""The streaming engine: records in, one output record per input record out, in order.

A reader thread pulls records from the (lazy) input into a bounded queue, so reading a file
overlaps with the model and memory stays flat however large the input. The scoring loop takes
as many records as are ready, up to a group size; when the input goes quiet (`tail -f`) it
scores what it has after a few milliseconds instead of waiting for a full group.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from crossguard_cli.engine.decide import decide
from crossguard_cli.engine.results import empty_record, error_record, scored_record
from crossguard_cli.engine.scorer import Scorer
from crossguard_cli.records.inputs import Record

_END = object()


@dataclass
class _Failure:
    exc: BaseException


def _put(q: queue.Queue, item: object, stop: threading.Event) -> bool:
    """Put `item` unless the consumer has gone away (then the reader must not block forever)."""
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _reader(records: Iterable[Record], q: queue.Queue, stop: threading.Event) -> None:
    try:
        for rec in records:
            if not _put(q, rec, stop):
                break
        else:
            _put(q, _END, stop)
    except BaseException as exc:  # handed to the consumer, which raises it in its own thread
        _put(q, _Failure(exc), stop)
    finally:
        close = getattr(records, "close", None)
        if close is not None:  # a generator stopped early: close the file it reads
            close()


def groups(records: Iterable[Record], size: int, idle: float = 0.02) -> Iterator[list[Record]]:
    """Group records as they arrive: up to `size`, or fewer once the input has been idle `idle` s."""
    q: queue.Queue = queue.Queue(maxsize=max(2 * size, 64))
    stop = threading.Event()
    thread = threading.Thread(target=_reader, args=(records, q, stop), daemon=True, name="crossguard-reader")
    thread.start()
    try:
        done = False
        while not done:
            item = q.get()
            group: list[Record] = []
            while True:
                if item is _END:
                    done = True
                    break
                if isinstance(item, _Failure):
                    if group:  # the records read before the failure still get their results
                        yield group
                    raise item.exc
                group.append(item)
                if len(group) >= size:
                    break
                try:
                    item = q.get(timeout=idle)
                except queue.Empty:
                    break
            if group:
                yield group
    finally:
        stop.set()


def score_records(scorer: Scorer, group: list[Record]) -> list[dict[str, Any]]:
    """Output records for one group, in order; only `ok` records reach the model."""
    ok = [r for r in group if r.status == "ok"]
    results = iter(scorer.score([r.text for r in ok]) if ok else [])
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
            probs = {rule.name: scores.rules[rule.name].prob(rule.label) for rule in scorer.ruleset.rules}
            out.append(scored_record(rec, scorer.ruleset, scores, decide(scorer.ruleset, probs)))
    return out


def group_size_for(scorer: Scorer) -> int:
    """Records scored together: enough pairs to fill several model batches, bounded for latency."""
    return max(64, min(1024, scorer.batch_size * 4))


def stream(scorer: Scorer, records: Iterable[Record], group_size: int | None = None
           ) -> Iterator[list[dict[str, Any]]]:
    """Output records, a group at a time (write and flush each group before the next)."""
    group_size = group_size or group_size_for(scorer)
    with closing(groups(records, group_size)) as grouped:  # stops the reader when we stop early
        for group in grouped:
            yield score_records(scorer, group)
