"""The scoring worker: inputs of concurrent requests scored together, the event loop never blocked.

HTTP handlers (on the event loop) hand the worker a request's inputs and await a future. The
worker takes every request waiting, up to a token budget (a *round*), and hands it to
`Guard.pipeline` as one group, or, when the round is more than one forward pass, as groups of
requests of similar length, shortest first (`sizing.py`): on a CPU, padding a short prompt to a
long one's length costs more than scoring them together saves, and short requests are not kept
waiting behind long ones. On a GPU the pipeline tokenises the next round while the model runs
this one and builds the last one's answers meanwhile, so the host's work never leaves the device
idle: the next round is gathered from what arrived while the device worked. On a CPU, where the
model's threads use every core, the worker scores each round in its own thread, in turn.

Gathering never delays an idle server: a lone request is scored at once. The worker waits (at
most `batch_wait_ms`) only when more is on its way: requests whose bodies are being received,
or fewer requests than the last round held (concurrent clients come back together).

A request is never split between groups, and each request keeps the `Guard` (the rules) in force
when it was accepted: a pipeline scores one Guard's requests only, and a rules reload (done by the
worker between pipelines) can never give one request a mix of rule sets. The queue is bounded in
inputs: a full queue refuses at once (`QueueFull`, with a retry estimate from the measured rate).
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
from typing import Any

from crossguard_cli.api import Guard
from crossguard_cli.records.inputs import Record, record_from_text
from crossguard_cli.serve.jobs import Job, QueueFull, ScoringFailed, Ticket, Unavailable, deliver
from crossguard_cli.serve.reload import reloaded
from crossguard_cli.serve.sizing import estimate_tokens, passes, round_budget

log = logging.getLogger("crossguard_cli.serve")
POLL = 0.1  # seconds: how often a waiting worker looks at the pipeline's stop event
WARM_UP = "warm-up"


class MicroBatcher:
    """Owns the Guard and the scoring thread; see the module docstring for the policy.

    Args:
        guard: the loaded Guard; `with_rules` makes the reloaded ones.
        batch_wait_ms: the most the worker waits for requests on their way.
        batch_tokens: budget of one round in estimated pair tokens; None: four forward passes of the device.
        max_queue: inputs allowed to wait.
        rules_path: the file a reload reads (None: the packaged rules).
        metrics: a `Metrics`, or None.
        warm_up: score one prompt through the pipeline before `start` returns, so lazy
            initialisation is paid before the first request.
        overlap: `Guard.pipeline`'s: tokenise the next round while the model runs this one
            (None: unless the model runs on the CPU).

    Torch runs in the pipeline's device thread only, warm-up included: a second thread that has
    run torch's OpenMP kernels (the main thread warming up, say) keeps a second OpenMP team
    alive, and with more OpenMP threads than cores libgomp stops spinning between parallel
    regions: measured on a 2-core CPU, one short pass took 34 ms instead of 18 ms
    (benchmarks/RESULTS.md, issue 18).
    """

    def __init__(self, guard: Guard, *, batch_wait_ms: float = 5.0, batch_tokens: int | None = None,
                 max_queue: int = 512, rules_path: str | None = None, metrics: Any = None,
                 warm_up: bool = False, overlap: bool | None = None) -> None:
        self.guard = guard
        self.overlap = overlap
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
        self._answered_at = 0.0  # perf_counter of the last answer
        self._broken: BaseException | None = None  # a bug in gathering: the worker ends with it
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
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a bug in the worker: fail every waiting request closed
            log.error("the scoring worker failed: %s: %s; restart the service", type(exc).__name__,
                      " ".join(str(exc).split()))
            with self._cond:
                self._died = True
                waiting, self._queue = list(self._queue), collections.deque()
                self._queued = self._scoring = 0
            for job in waiting:
                deliver(job, error=Unavailable("the scoring worker failed"))
        finally:
            self._warmed.set()  # `start` never waits for a worker that is gone

    def _loop(self) -> None:
        warm = self.warm_up
        while True:
            with self._cond:
                while not self._queue and not self._reload_pending and not self._stopping and not warm:
                    self._cond.wait()
                reload = self._reload_pending
                self._reload_pending = False
                if not reload and not self._queue and not warm:
                    return  # stopping, and nothing left to score
                guard = self._queue[0].guard if self._queue and not reload else self.guard
            if reload:
                self._reload()
                continue
            self._pipeline(guard, warm)
            warm = False
            if self._broken is not None:
                raise self._broken

    def _pipeline(self, guard: Guard, warm: bool) -> None:
        """Score `guard`'s rounds through one `Guard.pipeline` until they end (a reload is due, the
        next request has other rules, or the worker stops with nothing left)."""
        inflight: collections.deque[tuple[list[Job] | None, float]] = collections.deque()
        stop = threading.Event()
        try:
            for results in guard.pipeline(self._rounds(guard, inflight, stop, warm), stop, self.overlap):
                with self._cond:
                    jobs, started = inflight.popleft()
                    self._cond.notify()  # one group fewer in flight: the next round may be taken
                if jobs is None:  # the warm-up: torch's lazy set-up paid in the pipeline's own threads
                    self._warmed.set()
                    continue
                try:
                    self._answer(jobs, results, started)
                except Exception as exc:  # noqa: BLE001 - a bug after scoring: fail closed, keep serving
                    log.error("internal error in the scoring worker: %s: %s", type(exc).__name__, exc)
                    self._fail(jobs, ScoringFailed(f"internal error: {type(exc).__name__}"))
        except Exception as exc:  # noqa: BLE001 - scoring raised: what is in flight fails closed, keep serving
            log.error("scoring failed: %s: %s", type(exc).__name__, " ".join(str(exc).split()))
            while inflight:
                jobs, _ = inflight.popleft()
                if jobs is not None:
                    self._fail(jobs, ScoringFailed(f"scoring failed: {type(exc).__name__}"))
        finally:
            self._warmed.set()

    def _rounds(self, guard: Guard, inflight: collections.deque, stop: threading.Event, warm: bool
                ) -> Iterator[list[Record]]:
        """The pipeline's groups (read by its prepare thread, or by the worker itself in turn on a
        CPU): each round's requests, noted in `inflight` in the order they are yielded, so answers
        find their requests."""
        try:
            if warm:
                inflight.append((None, time.perf_counter()))
                yield [record_from_text(WARM_UP, None, None)]
            jobs: list[Job] = []
            while True:
                with self._cond:
                    # Requests gather while the device has work: the next round is taken when at
                    # most one group is still in flight (the one the device runs), so it is
                    # tokenised while that pass runs, and holds what arrived meanwhile.
                    while ((not self._queue or len(inflight) > 1) and not self._reload_pending
                           and not self._stopping and not stop.is_set()):
                        self._cond.wait(POLL)
                    if (stop.is_set() or self._reload_pending or not self._queue
                            or self._queue[0].guard is not guard):
                        return
                    jobs = self._gather()
                groups = passes(jobs, guard.batch_tokens)
                now = time.perf_counter()
                inflight.extend((group, now) for group in groups)  # all before the first yield: none is lost
                jobs = []
                for group in groups:
                    yield [rec for job in group for rec in job.records]
        except GeneratorExit:
            raise
        except BaseException as exc:  # noqa: BLE001 - a bug in gathering: the worker ends, failing closed
            self._broken = exc
            self._fail(jobs, Unavailable("the scoring worker failed"))

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

    def _answer(self, jobs: Sequence[Job], results: list, started: float) -> None:
        now = time.perf_counter()
        # The rate counts from the later of the group's start and the last answer: with rounds
        # overlapping in the pipeline, that is the time this group added.
        seconds = now - max(started, self._answered_at)
        self._answered_at = now
        rate = len(results) / max(seconds, 1e-6)
        self._rate = rate if self._rate is None else 0.7 * self._rate + 0.3 * rate
        self._release(jobs)  # before the counts and answers: scoring + scored never counts an input twice
        if self.metrics is not None:
            self.metrics.observe_pass(len(jobs), len(results), now - started, results)
        at = 0
        for job in jobs:
            deliver(job, value=(job.guard, results[at: at + len(job.records)]))
            at += len(job.records)

    def _fail(self, jobs: Sequence[Job], error: BaseException) -> None:
        self._release(jobs)
        for job in jobs:
            deliver(job, error=error)

    def _release(self, jobs: Sequence[Job]) -> None:
        """Jobs leave `scoring` (once each)."""
        with self._cond:
            for job in jobs:
                if job.taken:
                    job.taken = False
                    self._scoring -= len(job.records)

    def _reload(self) -> None:
        new = reloaded(self.guard, self.rules_path)
        if new is not None:
            self.guard = new  # one assignment: a request sees the old Guard or the new, never a mix
            self.loaded_at = time.time()
        if self.metrics is not None:
            self.metrics.reloads.labels(result="error" if new is None else "ok").inc()


__all__ = ["Job", "MicroBatcher", "QueueFull", "ScoringFailed", "Ticket", "Unavailable"]
