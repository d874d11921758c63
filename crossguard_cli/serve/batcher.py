"""The one scoring worker: inputs of concurrent requests scored together, the event loop never blocked.

One thread owns the model. HTTP handlers (on the event loop) hand it a request's inputs and
await a future. The worker takes every request waiting, up to a token budget (a *round*), and
scores them in *passes*: one `Guard.check_many` call per group of requests of similar length
(`sizing.py`), shortest first.
`check_many` sorts a pass's (prompt, hypothesis) pairs by length and cuts them into forward
passes. On a GPU that is the difference between one request per forward pass and dozens; on a
CPU, padding a short prompt to a long one's length costs more than scoring them together saves
(measured: benchmarks/RESULTS.md), hence passes of similar length, and short requests are not
kept waiting behind long ones.

Gathering never delays an idle server: a lone request is scored at once. The worker waits (at
most `batch_wait_ms`) only when more is on its way: requests whose bodies are being received,
or fewer requests than the last round held (concurrent clients come back together).

A request is never split between passes, and each request keeps the `Guard` (the rules) in force
when it was accepted, so a rules reload, done by this same thread between rounds, can never give
one request a mix of rule sets. The queue is bounded in inputs: a full queue refuses at once
(`QueueFull`, with a retry estimate from the measured rate), it never grows without end.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from crossguard_cli.api import Guard
from crossguard_cli.errors import CrossguardError
from crossguard_cli.records.inputs import Record
from crossguard_cli.serve.sizing import estimate_tokens, passes, round_budget

log = logging.getLogger("crossguard_cli.serve")


class QueueFull(Exception):
    """The queue holds `--max-queue` inputs: refuse now, and say when to retry."""

    def __init__(self, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(f"the queue is full; retry in {retry_after} s")


class Unavailable(Exception):
    """The worker is not running (stopping, or it failed): nothing can be scored."""


class ScoringFailed(Exception):
    """A scoring pass raised instead of giving error records: its requests fail closed (503)."""


@dataclass(eq=False)
class Job:
    """One request's inputs, the Guard in force when it was accepted, and where its answer goes."""

    records: list[Record]
    guard: Guard
    tokens: int  # estimated pair tokens of all its inputs
    width: int  # estimated tokens of its longest pair
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    taken: bool = False  # off the queue and counted in `scoring` until answered


class Ticket:
    """An announced request: while it is open, the worker knows one more request is on its way."""

    def __init__(self, batcher: MicroBatcher) -> None:
        self._batcher = batcher
        self.open = True

    def submit(self, records: list[Record]) -> asyncio.Future:
        """Queue the request's inputs; the future gives `(guard, results)`.

        Raises:
            QueueFull: no room for these inputs now.
            Unavailable: the worker is not running.
        """
        return self._batcher._submit(records, self)


class MicroBatcher:
    """Owns the Guard and the scoring thread; see the module docstring for the policy.

    Args:
        guard: the loaded Guard; `with_rules` makes the reloaded ones.
        batch_wait_ms: the most the worker waits for requests on their way.
        batch_tokens: budget of one round in estimated pair tokens; None: four forward passes of the device.
        max_queue: inputs allowed to wait.
        rules_path: the file a reload reads (None: the packaged rules).
        metrics: a `Metrics`, or None.
        warm_up: score one prompt in the worker thread before `start` returns, so lazy
            initialisation is paid before the first request.

    Torch runs in the worker thread only: a second thread that has run torch's OpenMP kernels
    (the main thread warming up, say) keeps a second OpenMP team alive, and with more OpenMP
    threads than cores libgomp stops spinning between parallel regions: measured on a 2-core
    CPU, one short pass took 34 ms instead of 18 ms (benchmarks/RESULTS.md, issue 18).
    """

    def __init__(self, guard: Guard, *, batch_wait_ms: float = 5.0, batch_tokens: int | None = None,
                 max_queue: int = 512, rules_path: str | None = None, metrics: Any = None,
                 warm_up: bool = False) -> None:
        self.guard = guard
        self.warm_up = warm_up
        self._warmed = threading.Event()
        self.rules_path = rules_path
        self.batch_wait = batch_wait_ms / 1000.0
        self.batch_tokens = batch_tokens
        self.max_queue = max_queue
        self.metrics = metrics
        self.loaded_at = time.time()
        self._cond = threading.Condition()
        self._queue: collections.deque[Job] = collections.deque()
        self._queued = 0  # inputs waiting
        self._scoring = 0  # inputs taken off the queue, not yet answered
        self._arriving = 0  # requests announced, not yet submitted
        self._concurrency = 1  # requests in the last round: how many to expect back together
        self._reload_pending = False
        self._stopping = False
        self._died = False
        self._rate: float | None = None  # inputs per second, smoothed
        self._thread = threading.Thread(target=self._run, name="crossguard-scorer", daemon=True)

    # -- the event loop's side -------------------------------------------------------------

    def start(self) -> None:
        """Start the worker; with `warm_up`, return once it has scored its warm-up prompt."""
        self._thread.start()
        if self.warm_up:
            self._warmed.wait()

    @property
    def ready(self) -> bool:
        return self._thread.is_alive() and not self._stopping

    @property
    def budget(self) -> int:
        """Estimated pair tokens of one round: `batch_tokens`, else four of the scorer's passes now."""
        return self.batch_tokens or round_budget(self.guard)

    @property
    def queued(self) -> int:
        return self._queued

    @property
    def scoring(self) -> int:
        """Inputs the worker has taken off the queue and not yet answered (its round)."""
        return self._scoring

    @contextlib.contextmanager
    def arrival(self) -> Iterator[Ticket]:
        """Announce a request while its body is read and parsed; submit through the ticket."""
        with self._cond:
            self._arriving += 1
        ticket = Ticket(self)
        try:
            yield ticket
        finally:
            if ticket.open:
                with self._cond:
                    ticket.open = False
                    self._arriving -= 1
                    self._cond.notify()

    def _submit(self, records: list[Record], ticket: Ticket | None = None) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        guard = self.guard  # the rules in force now are the rules of this request
        job = Job(records, guard, *estimate_tokens(guard, records), loop.create_future(), loop)
        with self._cond:
            if ticket is not None and ticket.open:
                ticket.open = False
                self._arriving -= 1
            if not self.ready:
                self._cond.notify()
                raise Unavailable("the service is shutting down")
            if self._queued and self._queued + len(records) > self.max_queue:
                self._cond.notify()
                raise QueueFull(self._retry_after())
            self._queue.append(job)
            self._queued += len(records)
            self._cond.notify()
        return job.future

    def request_reload(self) -> None:
        """Reload the rules file between two rounds (thread-safe; not from a signal handler)."""
        with self._cond:
            self._reload_pending = True
            self._cond.notify()

    def stop(self, timeout: float | None = None) -> None:
        """Score what is queued, then end the worker."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _retry_after(self) -> int:
        rate = self._rate or 1.0
        return max(1, min(60, math.ceil(self._queued / rate)))

    # -- the worker thread -------------------------------------------------------------------

    @property
    def failed(self) -> bool:
        """The worker ended without being asked to: the service cannot score until restarted."""
        return self._died

    def _run(self) -> None:
        try:
            if self.warm_up:
                try:
                    self.guard.check_many(["warm-up"])
                finally:
                    self._warmed.set()
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a bug in the worker: fail every waiting request closed
            log.error("the scoring worker failed: %s: %s; restart the service", type(exc).__name__,
                      " ".join(str(exc).split()))
            with self._cond:
                self._died = True
                waiting, self._queue = list(self._queue), collections.deque()
                self._queued = self._scoring = 0
            for job in waiting:
                _deliver(job, error=Unavailable("the scoring worker failed"))

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._reload_pending and not self._stopping:
                    self._cond.wait()
                reload = self._reload_pending
                self._reload_pending = False
                if not reload and not self._queue:
                    return  # stopping, and nothing left to score
                jobs = [] if reload else self._gather()
            if reload:
                self._reload()
                continue
            for group in passes(jobs):
                try:
                    self._score(group)
                except Exception as exc:  # noqa: BLE001 - a bug after scoring: fail closed, keep serving
                    log.error("internal error in the scoring worker: %s: %s", type(exc).__name__, exc)
                    for job in group:
                        _deliver(job, error=ScoringFailed(f"internal error: {type(exc).__name__}"))
                finally:
                    self._release(group)

    def _gather(self) -> list[Job]:
        """Jobs for one round (the lock is held; waiting releases it)."""
        first = self._queue.popleft()
        jobs, tokens = [first], first.tokens
        budget = self.budget
        deadline = time.monotonic() + self.batch_wait
        while True:
            while (self._queue and self._queue[0].guard is first.guard
                   and tokens + self._queue[0].tokens <= budget):
                job = self._queue.popleft()
                jobs.append(job)
                tokens += job.tokens
            if self._queue or tokens >= budget or self._stopping:
                break  # full, or the next request has other rules: it starts the next round
            expecting = self._arriving > 0 or len(jobs) < self._concurrency
            remaining = deadline - time.monotonic()
            if not expecting or remaining <= 0:
                break
            self._cond.wait(remaining)
        taken = sum(len(job.records) for job in jobs)
        self._queued -= taken
        self._scoring += taken
        for job in jobs:
            job.taken = True
        self._concurrency = len(jobs)
        return jobs

    def _score(self, jobs: Sequence[Job]) -> None:
        guard = jobs[0].guard
        records = [rec for job in jobs for rec in job.records]
        start = time.perf_counter()
        try:
            results = guard.check_many(records)
        except Exception as exc:  # noqa: BLE001 - fail these requests closed, keep serving
            log.error("scoring failed: %s: %s", type(exc).__name__, " ".join(str(exc).split()))
            self._release(jobs)
            for job in jobs:
                _deliver(job, error=ScoringFailed(f"scoring failed: {type(exc).__name__}"))
            return
        seconds = time.perf_counter() - start
        rate = len(records) / max(seconds, 1e-6)
        self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
        self._release(jobs)  # before the counts and answers: scoring + scored never counts an input twice
        if self.metrics is not None:
            self.metrics.observe_pass(len(jobs), len(records), seconds, results)
        at = 0
        for job in jobs:
            _deliver(job, value=(job.guard, results[at: at + len(job.records)]))
            at += len(job.records)

    def _release(self, jobs: Sequence[Job]) -> None:
        """Jobs leave `scoring` (once each)."""
        with self._cond:
            for job in jobs:
                if job.taken:
                    job.taken = False
                    self._scoring -= len(job.records)

    def _reload(self) -> None:
        where = self.rules_path or "the packaged rules"
        try:
            new = self.guard.with_rules(self.rules_path)
        except CrossguardError as exc:
            log.error("rules reload refused: %s; the rules in force stay", exc)
            self._count_reload("error")
            return
        except Exception as exc:  # noqa: BLE001 - a reload must never take the service down
            log.error("rules reload refused: %s: %s; the rules in force stay", type(exc).__name__,
                      " ".join(str(exc).split()))
            self._count_reload("error")
            return
        if not self.guard.options.model:  # the model came from the rules file: has its `model:` changed?
            from crossguard_cli.engine.models.loader import model_name

            wanted = model_name(None, new.rules, self.rules_path)
            if wanted != self.guard.model_name:
                log.warning("the rules file now names model %r; the service keeps %r until it is restarted",
                            wanted, self.guard.model_name)
        self.guard = new  # one assignment: a request sees the old Guard or the new, never a mix
        self.loaded_at = time.time()
        count = len(new.rules.rules)
        log.info("rules reloaded from %s: %d rule%s", where, count, "" if count == 1 else "s")
        self._count_reload("ok")

    def _count_reload(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.reloads.labels(result=result).inc()


def _deliver(job: Job, value: Any = None, error: BaseException | None = None) -> None:
    def settle() -> None:
        if job.future.done():  # the handler went away (cancelled)
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(value)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting any more
        job.loop.call_soon_threadsafe(settle)


__all__ = ["Job", "MicroBatcher", "QueueFull", "ScoringFailed", "Ticket", "Unavailable"]
