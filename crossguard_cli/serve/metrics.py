"""Prometheus metrics of the service, on a registry of its own (nothing global, so two services
or a test in one process never share counts).

What an operator watches: requests by endpoint and status, latency, how well requests batch
(inputs and requests per scoring pass, time per pass), the queue, verdicts and flags per rule,
and rules reloads.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from crossguard_cli.engine.results import Result

ENDPOINTS = ("/v1/moderations", "/v1/check", "/v1/rules", "/healthz", "/readyz", "/metrics", "/openapi.json")
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The service's metrics; `render()` gives the text `/metrics` serves."""

    def __init__(self, queued: Callable[[], float], model: str, scoring: Callable[[], float] | None = None) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry = CollectorRegistry()
        self.requests = Counter("crossguard_requests", "HTTP requests by endpoint and status code.",
                                ["endpoint", "status"], registry=registry)
        self.latency = Histogram("crossguard_request_duration_seconds", "HTTP request latency by endpoint.",
                                 ["endpoint"], buckets=LATENCY_BUCKETS, registry=registry)
        self.batch_requests = Histogram("crossguard_batch_requests", "Requests scored together in one pass.",
                                        buckets=SIZE_BUCKETS, registry=registry)
        self.batch_inputs = Histogram("crossguard_batch_inputs", "Inputs scored together in one pass.",
                                      buckets=SIZE_BUCKETS, registry=registry)
        self.pass_seconds = Histogram("crossguard_batch_duration_seconds", "Time to score one pass.",
                                      buckets=LATENCY_BUCKETS, registry=registry)
        self.queue = Gauge("crossguard_queue_inputs", "Inputs waiting to be scored.", registry=registry)
        self.queue.set_function(queued)
        self.scoring = Gauge("crossguard_scoring_inputs", "Inputs being scored (off the queue, not yet answered).",
                             registry=registry)
        if scoring is not None:
            self.scoring.set_function(scoring)
        self.inputs = Counter("crossguard_inputs", "Inputs scored, by verdict (error: not scored).", ["verdict"],
                              registry=registry)
        self.flags = Counter("crossguard_flags", "Inputs on which a rule fired, by rule.", ["rule"], registry=registry)
        self.reloads = Counter("crossguard_rules_reloads", "Rules reloads by result (ok, error).", ["result"],
                               registry=registry)
        self.info = Gauge("crossguard_model_info", "The model being served (always 1).", ["model"], registry=registry)
        self.info.labels(model=model).set(1)
        for result in ("ok", "error"):
            self.reloads.labels(result=result)
        self._series: dict[tuple[str, int], tuple] = {}

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """One answered request (on the event loop: the labelled series are looked up once each)."""
        key = (path if path in ENDPOINTS else "other", status)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = (self.requests.labels(endpoint=key[0], status=str(status)),
                                          self.latency.labels(endpoint=key[0]))
        series[0].inc()
        series[1].observe(seconds)

    def observe_pass(self, requests: int, inputs: int, seconds: float, results: Sequence[Result]) -> None:
        """One scoring pass (called by the worker thread; prometheus-client is thread-safe)."""
        self.batch_requests.observe(requests)
        self.batch_inputs.observe(inputs)
        self.pass_seconds.observe(seconds)
        for result in results:
            self.inputs.labels(verdict=result.verdict or "error").inc()
            for rule in result.flagged:
                self.flags.labels(rule=rule).inc()

    def render(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


__all__ = ["ENDPOINTS", "Metrics"]
