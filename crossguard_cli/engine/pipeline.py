"""Keeping the device busy: the host's work for the next batches runs while the model runs.

A stream of groups is scored by four threads joined by small bounded queues:

    prepare thread: group -> normalise, tokenise (GIL released), plan the pairs; two groups ahead
    build thread:   planned group -> padded batches, a few ahead of the device
    device thread:  batches -> model, one group after another; one copy back per group
    caller:         finish (softmax, best windows) -> output records, as `stream` yields them

The model's forward pass releases the GIL (torch's CUDA and CPU kernels, ONNX Runtime,
OpenVINO all do), and so does the tokenizer, so while the model runs the other threads
tokenise the next group, pad the next batch and write the last group's records; the device
thread only has to pick up a ready batch. The next group is tokenised while this one's
batches run, not after, so no group waits for its own tokenising.
The queues hold a few batches at most, so memory stays flat; groups come out in order. Any
failure in a thread reaches the caller as the same exception, after the groups before it.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from crossguard_cli.engine.handoff import END, Failure, put, take
from crossguard_cli.engine.pairs import REUSE_AFTER
from crossguard_cli.engine.scorer import Prepared, Scorer
from crossguard_cli.records.inputs import Record

JOIN_TIMEOUT = 120.0  # seconds to wait for a thread's current step (one forward pass, one group's tokenising)
THREADS = ("crossguard-prepare", "crossguard-build", "crossguard-device")  # names, so the CLI can find them
AHEAD = 3  # padded batches the build thread may have ready before the device takes them
# The build thread reuses a batch's buffers REUSE_AFTER builds later: by then the batch must have
# left the queue and been run (queued, plus one being built, plus one in the model).
assert AHEAD + 2 < REUSE_AFTER, "a batch's buffers would be rewritten while it waits for the model"


_GROUP_END = object()


def _prepare(scorer: Scorer, groups: Iterator[list[Record]], out: queue.Queue, stop: threading.Event) -> None:
    """Stage 1: normalise, tokenise and plan whole groups, up to two ahead of the batches."""
    try:
        for group in groups:
            prepared = scorer.prepare([r.text for r in group if r.status == "ok"])
            if not put(out, (group, prepared), stop):
                return
        put(out, END, stop)
    except BaseException as exc:  # handed on, raised in the caller's thread
        put(out, Failure(exc), stop)
    finally:
        close = getattr(groups, "close", None)
        if close is not None:  # stops the reader thread behind `groups`
            close()


def _build(scorer: Scorer, source: queue.Queue, out: queue.Queue, stop: threading.Event) -> None:
    """Stage 2: pad each group's batches, a few ahead of the device; group starts and ends marked."""
    try:
        while True:
            item = take(source, stop)
            if item is END or isinstance(item, Failure):
                put(out, item, stop)
                return
            if not put(out, item, stop):
                return
            for batch in scorer.batches(item[1]):
                if not put(out, batch, stop):
                    return
            if not put(out, _GROUP_END, stop):
                return
    except BaseException as exc:
        put(out, Failure(exc), stop)


def _device(scorer: Scorer, source: queue.Queue, out: queue.Queue, stop: threading.Event,
            lock: AbstractContextManager) -> None:
    try:
        while True:
            item = take(source, stop)
            if item is END or isinstance(item, Failure):
                put(out, item, stop)
                return
            group, prepared = item
            while (batch := take(source, stop)) is not _GROUP_END:
                if batch is END or isinstance(batch, Failure):
                    put(out, batch, stop)
                    return
                with lock:  # one forward pass at a time on a shared model; never held while waiting
                    scorer.run_batch(prepared, batch)
            with lock:
                scorer.collect(prepared)
            if not put(out, (group, prepared), stop):
                return
    except BaseException as exc:
        put(out, Failure(exc), stop)


def pipelined(scorer: Scorer, groups: Iterable[list[Record]], finish: Callable[[list[Record], Prepared], Any],
              lock: AbstractContextManager | None = None, stop: threading.Event | None = None) -> Iterator[Any]:
    """`finish(group, prepared)` for each group in order, with prep and model work in threads.

    Args:
        scorer: the scorer; `prepare` and `batches` run in their own threads, `run_batch` and
            `collect` in the device thread, under `lock`.
        groups: groups of records (only records with status "ok" are scored).
        finish: builds the caller's result for a group from its scored `Prepared`.
        lock: taken around each forward pass (a Guard's lock: other callers share the model).
        stop: set when the pipeline ends; pass the same event as `groups`' `cancel`, so that a
            prepare thread waiting on a quiet input ends too.

    When the caller stops early (an exception, `close()`), the threads are joined before this
    returns: each ends after its current step. A thread left inside a forward pass or the
    tokenizer while the interpreter exits aborts the process ("terminate called ...").
    """
    stop = stop or threading.Event()
    prepared: queue.Queue = queue.Queue(maxsize=2)
    batches: queue.Queue = queue.Queue(maxsize=AHEAD)
    scored: queue.Queue = queue.Queue(maxsize=2)
    threads = [
        threading.Thread(target=_prepare, args=(scorer, iter(groups), prepared, stop), daemon=True,
                         name=THREADS[0]),
        threading.Thread(target=_build, args=(scorer, prepared, batches, stop), daemon=True, name=THREADS[1]),
        threading.Thread(target=_device, args=(scorer, batches, scored, stop, lock or nullcontext()), daemon=True,
                         name=THREADS[2]),
    ]
    for thread in threads:
        thread.start()
    try:
        while True:
            item = scored.get()
            if item is END:
                return
            if isinstance(item, Failure):
                raise item.exc
            group, prepared = item
            yield finish(group, prepared)
    finally:
        stop.set()
        _join(threads)


def _join(threads: list[threading.Thread]) -> None:
    """Wait for each thread's current step; a second Ctrl-C or SIGTERM meanwhile does not cut the wait
    short (it is raised once all are joined)."""
    deadline = time.monotonic() + JOIN_TIMEOUT
    signalled: BaseException | None = None
    for thread in threads:
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                thread.join(timeout=0.1)
            except BaseException as exc:  # noqa: BLE001 - a signal handler's exception; raised below
                signalled = signalled or exc
    if signalled is not None:
        raise signalled


__all__ = ["THREADS", "pipelined"]
