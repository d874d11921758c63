"""The service's parts without a server: request parsing, response shapes, the micro-batcher's policy,
the key check. The batcher runs here on a fake Guard that records its calls (front-end fakes are
fine); every scoring path is also tested over real HTTP against a real model in test_serve.py."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

pytest.importorskip("starlette")

from crossguard_cli.engine.options import EngineOptions  # noqa: E402
from crossguard_cli.engine.results import Result  # noqa: E402
from crossguard_cli.errors import UsageError  # noqa: E402
from crossguard_cli.records.inputs import Record  # noqa: E402
from crossguard_cli.rules import parse_rules  # noqa: E402
from crossguard_cli.serve.batcher import MicroBatcher  # noqa: E402
from crossguard_cli.serve.jobs import QueueFull, ScoringFailed, Unavailable  # noqa: E402
from crossguard_cli.serve.options import ServeOptions  # noqa: E402
from crossguard_cli.serve.protocol import ApiError, moderation_response, parse_request, unscored  # noqa: E402
from crossguard_cli.serve.security import authorized, is_loopback  # noqa: E402

RULES = parse_rules("version: 1\nrules:\n  - name: weapons\n    hypothesis: It is about weapons.\n"
                    "  - name: polite\n    hypothesis: It is polite.\n    label: contradiction\n"
                    "    threshold: 0.3\n", "r.yaml")
OTHER = parse_rules("version: 1\nrules:\n  - name: other\n    hypothesis: It is other.\n", "o.yaml")


def parse(data, max_inputs=8, max_chars=100):
    body = data if isinstance(data, bytes) else json.dumps(data).encode()
    return parse_request(body, max_inputs=max_inputs, max_chars=max_chars)


def refusal(data, **kw) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(data, **kw)
    return info.value


# -- requests ---------------------------------------------------------------------------------

def test_inputs_become_request_records_in_order():
    records = parse({"input": ["a", {"type": "text", "text": "b", "id": 7}, "c"], "model": "omni-moderation-latest"})
    assert [(r.source, r.line, r.text, r.id) for r in records] == [
        ("request", 1, "a", None), ("request", 2, "b", 7), ("request", 3, "c", None)]
    assert [(r.source, r.line, r.text) for r in parse({"input": "just one"})] == [("request", 1, "just one")]


@pytest.mark.parametrize(("data", "status", "code", "words"), [
    (b"{not json", 400, "invalid_json", "not valid JSON"),
    (b"\xff\xfe{", 400, "invalid_json", ""),
    (b"[" * 100_000, 400, "invalid_json", ""),
    ([1, 2], 422, "invalid_input", "JSON object"),
    ({"text": "hi"}, 422, "invalid_input", "missing field 'input'"),
    ({"input": 3}, 422, "invalid_input", "got number"),
    ({"input": []}, 422, "invalid_input", "empty array"),
    ({"input": ["ok", None]}, 422, "invalid_input", "input[1] must be a string, got null"),
    ({"input": "hi", "model": 5}, 422, "invalid_input", "'model' must be a string"),
    ({"input": [{"type": "image_url", "image_url": {"url": "x"}}]}, 422, "invalid_input", "not supported"),
    ({"input": ["a"] * 9}, 413, "too_many_inputs", "at most 8"),
    ({"input": ["fine", "\u200b\u200d "]}, 400, "empty_input", "input[1] is empty"),
    ({"input": "   "}, 400, "empty_input", "input is empty"),
    ({"input": "\u200b" * 150 + "x"}, 400, "empty_input", "first 100 characters"),
    ({"input": ["a", "b\ud800c"]}, 400, "invalid_text", "input[1]: invalid UTF-8 at character 2"),
])
def test_bad_requests_are_refused_with_one_line(data, status, code, words):
    err = refusal(data)
    assert (err.status, err.code) == (status, code)
    assert words in err.message and "\n" not in err.message
    body = err.body()["error"]
    assert set(body) == {"message", "type", "code", "param"}


def test_moderation_response_uses_the_deciding_label_and_printed_percentages():
    record = {"status": "ok", "verdict": "flagged", "flagged": ["polite"], "uncertain": [],
              "scores": {"weapons": {"entailment": 12.34, "neutral": 50.0, "contradiction": 37.66},
                         "polite": {"entailment": 1.0, "neutral": 29.0, "contradiction": 70.0}}}
    out = moderation_response([Result(record)], RULES, "m")
    (result,) = out["results"]
    assert out["id"].startswith("modr-") and out["model"] == "m"
    assert result["flagged"] is True
    assert result["categories"] == {"weapons": False, "polite": True}
    assert result["category_scores"] == {"weapons": 0.1234, "polite": 0.7}


def test_an_unscored_input_fails_the_request_closed():
    records = [Record("request", 1, text="a"), Record("request", 2, text="b")]
    ok = Result({"status": "ok", "verdict": "allowed"})
    err = unscored([ok, Result({"status": "error", "error": "out of memory"})], records)
    assert err is not None and err.status == 503 and "input[1] could not be scored: out of memory" in err.message
    assert unscored([ok, ok], records) is None


def test_options_and_key_and_loopback():
    assert ServeOptions().check() == ServeOptions()
    for bad in (ServeOptions(port=70000), ServeOptions(max_queue=0), ServeOptions(log_format="xml"),
                ServeOptions(api_key=" "), ServeOptions(batch_wait_ms=-1)):
        with pytest.raises(UsageError, match="--"):
            bad.check()
    with pytest.raises(UsageError, match="--watch"):
        ServeOptions(watch=True).check(None)
    assert authorized(b"Bearer s3cret", b"s3cret") and authorized(b"bearer  s3cret ", b"s3cret")
    assert not authorized(b"Bearer s3cre", b"s3cret") and not authorized(None, b"k")
    assert not authorized(b"s3cret", b"s3cret")
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost") and is_loopback("127.8.0.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("::") and not is_loopback("10.1.2.3")


# -- the micro-batcher on a fake Guard ----------------------------------------------------------

class FakeModel:
    device = "cpu"
    max_length = 512


class FakeGuard:
    """Records every check_many call; each takes `delay` seconds; answers echo the text."""

    def __init__(self, ruleset=RULES, delay=0.0, calls=None, fail=False):
        self.rules = ruleset
        self.options = EngineOptions()
        self.model = FakeModel()
        self.model_name = "fake"
        self.batch_tokens = 8192
        self.delay = delay
        self.calls = [] if calls is None else calls
        self.fail = fail

    def check_many(self, records):
        self.calls.append((self.rules.source, [r.text for r in records]))
        time.sleep(self.delay)
        if self.fail:
            raise RuntimeError("boom")
        return [Result({"source": r.source, "line": r.line, "text": r.text, "status": "ok", "verdict": "allowed",
                        "flagged": [], "uncertain": []}) for r in records]

    def pipeline(self, groups, stop=None, overlap=None):
        """`Guard.pipeline`'s contract, run in the caller's thread: results per group, in order."""
        try:
            for group in groups:
                yield self.check_many(group)
        finally:
            if stop is not None:
                stop.set()

    def with_rules(self, path):
        if path == "bad.yaml":
            from crossguard_cli.errors import RulesError

            raise RulesError("rules[0].threshold: must be between 0 and 1, got 2", where="bad.yaml:4")
        return FakeGuard(OTHER, self.delay, self.calls)


def records(*texts):
    return [Record("request", i + 1, text=t) for i, t in enumerate(texts)]


def run_async(coro):
    return asyncio.run(coro)


def test_an_idle_server_scores_a_lone_request_at_once():
    batcher = MicroBatcher(FakeGuard(), batch_wait_ms=3_600_000)  # an hour: waiting at all would hang

    async def one():
        with batcher.arrival() as ticket:
            future = ticket.submit(records("alone"))
        guard, results = await asyncio.wait_for(future, timeout=60)
        return results

    batcher.start()
    results = run_async(one())
    batcher.stop()
    assert [r.text for r in results] == ["alone"]


def test_warm_up_goes_through_the_pipeline_before_start_returns():
    seen = []

    class Recording(FakeGuard):
        def check_many(self, recs):
            seen.append([r.text for r in recs])
            return super().check_many(recs)

    batcher = MicroBatcher(Recording(), warm_up=True)
    batcher.start()
    assert seen == [["warm-up"]]  # the same path as requests: torch runs in the pipeline's thread only
    batcher.stop()


def test_concurrent_requests_share_a_pass_and_get_their_own_answers():
    guard = FakeGuard(delay=0.05)
    batcher = MicroBatcher(guard, batch_wait_ms=50)
    batcher.start()

    async def client(i):
        with batcher.arrival() as ticket:
            await asyncio.sleep(0.001 * (i % 3))
            future = ticket.submit(records(f"q{i}a", f"q{i}b"))
        _, results = await future
        return [r.text for r in results]

    async def many():
        return await asyncio.gather(*(client(i) for i in range(20)))

    answers = run_async(many())
    batcher.stop()
    assert answers == [[f"q{i}a", f"q{i}b"] for i in range(20)]
    assert len(guard.calls) < 20 and max(len(texts) for _, texts in guard.calls) > 2
    assert sorted(t for _, texts in guard.calls for t in texts) == sorted(t for a in answers for t in a)


def test_a_token_budget_of_one_scores_one_request_per_pass():
    guard = FakeGuard(delay=0.01)
    batcher = MicroBatcher(guard, batch_wait_ms=50, batch_tokens=1)
    batcher.start()

    async def many():
        futures = []
        for i in range(6):
            with batcher.arrival() as ticket:
                futures.append(ticket.submit(records(f"r{i}")))
        return await asyncio.gather(*futures)

    run_async(many())
    batcher.stop()
    assert [texts for _, texts in guard.calls] == [[f"r{i}"] for i in range(6)]


def test_a_full_queue_refuses_at_once_and_accepted_requests_are_answered():
    gate = threading.Event()

    class Slow(FakeGuard):
        def check_many(self, recs):
            gate.wait(5)
            return super().check_many(recs)

    batcher = MicroBatcher(Slow(), max_queue=3, batch_tokens=1)
    batcher.start()

    async def flood():
        accepted, refused = [], []
        for i in range(8):
            try:
                with batcher.arrival() as ticket:
                    accepted.append(ticket.submit(records(f"x{i}")))
            except QueueFull as exc:
                refused.append(exc.retry_after)
            while i == 0 and batcher.scoring < 1:  # the worker's own state, not a delay: x0 is being scored
                await asyncio.sleep(0.001)
        gate.set()
        return [[r.text for r in (await f)[1]] for f in accepted], refused

    answers, refused = run_async(flood())
    batcher.stop()
    assert len(refused) == 4 and all(r >= 1 for r in refused)
    assert answers == [["x0"], ["x1"], ["x2"], ["x3"]]  # one being scored, three waiting
    assert batcher.scoring == 0 and batcher.queued == 0


def test_reload_swaps_rules_between_passes_and_a_bad_file_keeps_the_old():
    guard = FakeGuard(delay=0.01)
    batcher = MicroBatcher(guard, rules_path="new.yaml")
    batcher.start()

    async def ask(text):
        with batcher.arrival() as ticket:
            future = ticket.submit(records(text))
        used, _ = await future
        return used.rules.source

    assert run_async(ask("before")) == "r.yaml"
    batcher.request_reload()
    deadline = time.monotonic() + 5
    while batcher.guard.rules.source != "o.yaml" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert run_async(ask("after")) == "o.yaml"
    batcher.rules_path = "bad.yaml"
    batcher.request_reload()
    assert run_async(ask("still")) == "o.yaml"  # before or after the refused reload: the old rules stay
    batcher.stop()
    # every pass used one rule set for all of its inputs
    assert [(src, texts) for src, texts in guard.calls] == [("r.yaml", ["before"]), ("o.yaml", ["after"]),
                                                           ("o.yaml", ["still"])]


def test_a_failed_pass_fails_its_requests_and_the_worker_keeps_serving():
    guard = FakeGuard(fail=True)
    batcher = MicroBatcher(guard)
    batcher.start()

    async def ask():
        with batcher.arrival() as ticket:
            future = ticket.submit(records("x"))
        return await future

    with pytest.raises(ScoringFailed):
        run_async(ask())
    guard.fail = False
    assert [r.text for r in run_async(ask())[1]] == ["x"]
    assert batcher.ready
    batcher.stop()
    assert not batcher.ready


def test_a_dead_worker_fails_waiting_requests_and_health(monkeypatch):
    batcher = MicroBatcher(FakeGuard(), batch_wait_ms=1000)
    gathered = threading.Event()

    def broken_gather():
        gathered.set()
        raise RuntimeError("a bug in the worker")

    monkeypatch.setattr(batcher, "_gather", broken_gather)

    async def ask():
        with batcher.arrival() as ticket:
            future = ticket.submit(records("x"))
        return await asyncio.wait_for(future, timeout=10)  # a hang would fail here, not block the suite

    batcher.start()
    with pytest.raises(Unavailable):
        run_async(ask())
    assert gathered.is_set() and batcher.failed and not batcher.ready
    with pytest.raises(Unavailable):  # later requests are refused at once
        run_async(ask())


def test_a_round_is_one_group_when_one_pass_holds_it_else_groups_of_similar_length_shortest_first():
    from crossguard_cli.serve.batcher import Job
    from crossguard_cli.serve.sizing import passes

    def job(width):
        return Job([], None, width, width, None, None)

    jobs = [job(w) for w in (100, 30, 480, 90, 400, 28, 500)]
    assert [[j.width for j in p] for p in passes(jobs)] == [[30, 28], [100, 90], [500, 480, 400]]
    assert [[j.width for j in p] for p in passes(jobs, 1627)] == [[30, 28], [100, 90], [500, 480, 400]]
    assert passes(jobs, 1628) == [jobs]  # one forward pass holds the round: one group, as given
    assert passes(jobs[:1]) == [[jobs[0]]]


def test_estimates_cap_a_pair_at_the_model_length():
    from crossguard_cli.serve.sizing import estimate_tokens

    guard = FakeGuard()
    tokens, width = estimate_tokens(guard, records("x" * 400, "y" * 40_000))
    assert width == 512 and tokens > 2 * 10_000
    assert estimate_tokens(guard, records("x" * 400))[1] < 120


def test_the_round_budget_follows_the_scorers_budget_after_an_out_of_memory_reduction():
    guard = FakeGuard()
    batcher = MicroBatcher(guard)
    assert batcher.budget == 4 * 8192
    guard.batch_tokens = 1024  # the scorer halved its budget after running out of memory
    assert batcher.budget == 4 * 1024
    assert MicroBatcher(guard, batch_tokens=1).budget == 1  # --batch-tokens wins


@pytest.mark.parametrize("overlap", [False, True], ids=["cpu-default", "overlapped"])
def test_a_real_guard_runs_every_forward_pass_in_one_thread_warm_up_included(model_dir, overlap):
    # Issue 18: a second thread that has run torch keeps a second OpenMP team and slows every pass.
    from crossguard_cli import Guard

    guard = Guard(RULES, str(model_dir), device="cpu", dtype="float32")
    threads = []
    model = guard.model
    logits = model.logits

    def spy(*args):
        threads.append(threading.get_ident())
        return logits(*args)

    model.logits = spy
    batcher = MicroBatcher(guard, warm_up=True, overlap=None if not overlap else True)
    batcher.start()
    assert len(threads) == 1 and threads[0] != threading.get_ident()  # warmed up before start returned

    async def ask(text):
        with batcher.arrival() as ticket:
            future = ticket.submit(records(text))
        return (await asyncio.wait_for(future, timeout=60))[1]

    async def many():
        return await asyncio.gather(*(ask(f"prompt number {i}") for i in range(6)))

    answers = run_async(many())
    batcher.stop()
    served = list(threads)
    assert len(served) >= 2 and len(set(served)) == 1  # the warm-up's thread ran every request's pass
    assert [[r.text for r in a] for a in answers] == [[f"prompt number {i}"] for i in range(6)]
    expected = [guard.check_many(records(f"prompt number {i}"))[0].to_dict() for i in range(6)]
    assert [a[0].to_dict() for a in answers] == expected  # the pipeline scores as check_many does
