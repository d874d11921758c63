"""`crossguard serve` in operation, over real HTTP on 127.0.0.1: the API key, JSON logs, rules reloads
(SIGHUP and --watch) under load, overload (429), SIGTERM drain, Ctrl-C, and startup errors.

Servers run as subprocesses on free ports with the tiny random-weight BERT of conftest. The
"slow" server scores long prompts against the 32 default hypotheses one request per pass, so a
queue forms that overload and drain can be seen in.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

from conftest import cli_env  # noqa: E402

from crossguard_cli.serve.testing import ServerProcess  # noqa: E402

RULES_A = "version: 1\nrules:\n  - name: alpha\n    hypothesis: The prompt is about money.\n" \
          "  - name: beta\n    hypothesis: The prompt is a question.\n    threshold: 0.3\n"
RULES_B = "version: 1\nrules:\n  - name: gamma\n    hypothesis: The prompt is about food.\n" \
          "  - name: delta\n    hypothesis: The prompt is rude.\n    label: contradiction\n" \
          "  - name: epsilon\n    hypothesis: The prompt is about sport.\n    threshold: 0.35\n"
BAD = "version: 1\nrules:\n  - name: gamma\n    hypothesis: The prompt is about food.\n    threshold: 2\n"
KEY = "test-key-7f3a"


def scores_close(got: dict, want: dict) -> None:
    assert (got["verdict"], got["flagged"], got["uncertain"]) == (want["verdict"], want["flagged"], want["uncertain"])
    for rule, labels in want["scores"].items():
        assert got["scores"][rule] == pytest.approx(labels, abs=0.011)


# -- one server: key, JSON logs with prompts, --max-chars, --watch, Ctrl-C -------------------------

@pytest.fixture(scope="module")
def ops(model_dir, tmp_path_factory):
    rules = tmp_path_factory.mktemp("ops") / "rules.yaml"
    rules.write_text(RULES_A)
    args = ["-m", str(model_dir), "-r", str(rules), "--log-format", "json", "--log-prompts", "--watch",
            "--max-chars", "40"]
    srv = ServerProcess(args, env=cli_env(CROSSGUARD_API_KEY=KEY)).start()
    srv.rules_path = rules
    yield srv
    srv.kill()


def test_the_api_key_guards_v1_and_leaves_probes_open(ops):
    openai = pytest.importorskip("openai")
    body = {"input": "hello"}
    status, headers, err = ops.post("/v1/moderations", body)
    assert status == 401 and err["error"]["code"] == "invalid_api_key"
    assert "bearer" in headers["www-authenticate"].lower()
    for wrong in ("Bearer nope", f"Basic {KEY}", f"Bearer {KEY}x"):
        assert ops.post("/v1/check", body, headers={"Authorization": wrong})[0] == 401
    assert ops.get("/v1/rules")[0] == 401
    assert ops.post("/v1/check", body, headers={"Authorization": f"Bearer {KEY}"})[0] == 200
    for path in ("/healthz", "/readyz", "/metrics"):
        assert ops.get(path)[0] == 200
    good = openai.OpenAI(base_url=ops.url + "/v1", api_key=KEY, max_retries=0)
    assert len(good.moderations.create(input=["a", "b"]).results) == 2
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=ops.url + "/v1", api_key="wrong", max_retries=0).moderations.create(input="a")


def test_json_logs_carry_prompts_only_when_asked_and_max_chars_truncates(ops):
    text = "tell me about bread " * 10  # 200 characters; --max-chars 40 keeps the first 40
    status, _, body = ops.post("/v1/check", {"input": [text]}, headers={"Authorization": f"Bearer {KEY}"})
    assert status == 200
    (record,) = body["results"]
    assert record["truncated"] is True and record["text"] == text and record["status"] == "ok"
    line = ops.wait_for_line(body["id"])
    entry = json.loads(line)
    assert entry["event"] == "access" and entry["status"] == 200 and entry["inputs"] == 1
    assert entry["prompts"] == [text] and entry["path"] == "/v1/check" and entry["ms"] > 0
    ours = [line for line in ops.lines if "crossguard" in line or line.startswith("{")]
    assert ours and all(isinstance(json.loads(line), dict) for line in ours)  # every line of ours is JSON


def test_watch_reloads_a_changed_file_and_keeps_the_rules_when_it_is_bad(ops):
    auth = {"Authorization": f"Bearer {KEY}"}
    ops.rules_path.write_text(RULES_B)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        names = [r["name"] for r in ops.get("/v1/rules", headers=auth)[2]["rules"]]
        if names == ["gamma", "delta", "epsilon"]:
            break
        time.sleep(0.1)
    assert names == ["gamma", "delta", "epsilon"]
    mark = len(ops.lines)
    ops.rules_path.write_text(BAD)
    line = ops.wait_for_line("reload refused", start=mark)
    assert "threshold" in json.loads(line)["message"] and json.loads(line)["level"] == "error"
    assert [r["name"] for r in ops.get("/v1/rules", headers=auth)[2]["rules"]] == ["gamma", "delta", "epsilon"]
    status, _, body = ops.post("/v1/moderations", {"input": "hi"}, headers=auth)
    assert status == 200 and list(body["results"][0]["categories"]) == ["gamma", "delta", "epsilon"]


def test_ctrl_c_drains_and_exits_0(ops):
    ops.signal(signal.SIGINT)
    assert ops.wait(30) == 0
    assert any("stopped" in line for line in ops.lines[-3:])


# -- the slow server: overload, then SIGTERM drain ------------------------------------------------

@pytest.fixture(scope="module")
def long_prompts(moderation_records):
    pool = [r["prompt"] for r in moderation_records]
    return [" ".join(pool[i * 40:(i + 1) * 40])[:8000] for i in range(16)]


@pytest.fixture(scope="module")
def slow(model_dir, long_prompts, tmp_path_factory):
    """One request per pass, two inputs may wait; its forward passes wait while `slow.gate` exists
    (tests/gated_serve.py), so a test holds requests in flight and reads the server's own state."""
    from crossguard_cli import Guard

    expected = {t: r.to_dict() for t, r in zip(long_prompts, Guard(None, str(model_dir), device="cpu")
                                                 .check_many(long_prompts), strict=True)}
    gate = tmp_path_factory.mktemp("gate") / "closed"
    args = ["-m", str(model_dir), "--batch-tokens", "1", "--max-queue", "2", "--max-inputs", "2"]
    srv = ServerProcess(args, env=cli_env(CROSSGUARD_TEST_GATE=str(gate)),
                        command=[sys.executable, str(Path(__file__).with_name("gated_serve.py"))]).start()
    srv.expected = expected
    srv.gate = gate
    yield srv
    gate.unlink(missing_ok=True)
    srv.kill()


def taken_in(metrics):
    """Inputs the server has taken in: waiting, being scored, or scored."""
    scored = sum(v for k, v in metrics.items() if k.startswith("crossguard_inputs_total"))
    return metrics.get("crossguard_queue_inputs", 0) + metrics.get("crossguard_scoring_inputs", 0) + scored


def answered(metrics):
    return metrics.get('crossguard_requests_total{endpoint="/v1/check",status="200"}', 0)


def refused_429(metrics):
    return metrics.get('crossguard_requests_total{endpoint="/v1/check",status="429"}', 0)


def wait_for(server, condition, what, timeout=120):
    """Poll the server's own metrics until `condition(metrics)`: tests wait on its state, never on timing."""
    deadline = time.monotonic() + timeout
    while True:
        metrics = server.metrics()
        if condition(metrics):
            return metrics
        assert time.monotonic() < deadline, f"the server never reached this state: {what}: {metrics}"
        time.sleep(0.01)


def fire(server, texts, path="/v1/check"):
    """Send every text at once, one request each: [(status, headers, body, seconds)] in order."""
    out: list = [None] * len(texts)
    barrier = threading.Barrier(len(texts))

    def client(i):
        barrier.wait()
        start = time.perf_counter()
        try:
            status, headers, body = server.post(path, {"input": [texts[i]]})
        except OSError as exc:  # reported by the assertions on `out`, not lost in a thread
            status, headers, body = None, {}, f"{type(exc).__name__}: {exc}"
        out[i] = (status, headers, body, time.perf_counter() - start)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(texts))]
    for t in threads:
        t.start()
    return threads, out


def joined(threads, timeout=120):
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), "a client got no answer"


@pytest.mark.slow
def test_overload_refuses_fast_with_retry_after_and_answers_every_accepted_request(slow, long_prompts):
    before = slow.metrics()
    slow.gate.touch()  # passes wait: what the server holds stays held until the test opens the gate
    try:
        first, head = fire(slow, long_prompts[:1])
        wait_for(slow, lambda m: taken_in(m) > taken_in(before) and m["crossguard_queue_inputs"] == 0,
                 "the first request taken")
        threads, tail = fire(slow, long_prompts[1:])  # the rest at once, while the first is held
        # Every request is either held (in a pass, or one of the two --max-queue allows) or refused.
        held = wait_for(slow, lambda m: m["crossguard_queue_inputs"] == 2
                        and taken_in(m) - taken_in(before) + refused_429(m) - refused_429(before)
                        == len(long_prompts), "every request held or refused")
        in_flight = held["crossguard_scoring_inputs"]
        assert 1 <= in_flight <= 2  # the pass the gate holds, and the next round, tokenised meanwhile
    finally:
        slow.gate.unlink(missing_ok=True)
    joined(first + threads)
    out = head + tail  # filled by the client threads
    refused = [o for o in out if o[0] == 429]
    accepted = [(text, o) for text, o in zip(long_prompts, out, strict=True) if o[0] == 200]
    assert len(accepted) == 2 + in_flight and len(refused) == len(long_prompts) - len(accepted)
    for _, headers, body, _ in refused:
        assert body["error"]["code"] == "rate_limit_exceeded" and body["error"]["type"] == "rate_limit_error"
        assert int(headers["retry-after"]) >= 1
    for text, (_, _, body, _) in accepted:
        (record,) = body["results"]
        assert record["text"] == text
        scores_close(record, slow.expected[text])
    metrics = slow.metrics()
    assert refused_429(metrics) - refused_429(before) == len(refused)


@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight_then_exits_0(slow, long_prompts):
    # The gate holds the passes, so all three requests are in the server when SIGTERM comes.
    texts = long_prompts[:3]
    before = taken_in(slow.metrics())
    slow.gate.touch()
    try:
        first, head = fire(slow, texts[:1])
        wait_for(slow, lambda m: taken_in(m) > before and m["crossguard_queue_inputs"] == 0, "the first request taken")
        rest, tail = fire(slow, texts[1:])  # --max-queue 2: both fit while the first is held
        wait_for(slow, lambda m: taken_in(m) >= before + 3, "all three requests accepted")
        slow.signal(signal.SIGTERM)
        slow.wait_for_line(r"finishing 3 requests in flight")
    finally:
        slow.gate.unlink(missing_ok=True)
    joined(first + rest, 60)
    out = head + tail  # filled by the client threads
    for text, (status, _, body, _) in zip(texts, out, strict=True):
        assert status == 200, body
        scores_close(body["results"][0], slow.expected[text])
    assert slow.wait(30) == 0
    with pytest.raises(OSError):
        socket.create_connection((slow.host, slow.port), timeout=2).close()


# -- rules reloads under load ---------------------------------------------------------------------

@pytest.mark.slow
def test_sighup_under_load_swaps_rules_between_requests_and_refuses_a_bad_file(model_dir, tmp_path,
                                                                               moderation_records):
    from crossguard_cli import Guard

    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES_A)
    pool = [r["prompt"] for r in moderation_records[300:340]]
    want = {}
    for name, text in (("A", RULES_A), ("B", RULES_B)):
        (tmp_path / f"{name}.yaml").write_text(text)
        guard = Guard(tmp_path / f"{name}.yaml", str(model_dir), device="cpu")
        want[name] = {t: r.to_dict() for t, r in zip(pool, guard.check_many(pool), strict=True)}
    names = {"A": ["alpha", "beta"], "B": ["gamma", "delta", "epsilon"]}
    log: list[tuple[float, float, int, dict | None, str]] = []
    stop = threading.Event()

    with ServerProcess(["-m", str(model_dir), "-r", str(rules)], env=cli_env()) as srv:
        def client(k):
            i = k
            while not stop.is_set():
                text = pool[i % len(pool)]
                start = time.monotonic()
                status, _, body = srv.post("/v1/check", {"input": [text]})
                log.append((start, time.monotonic(), status, body, text))
                i += 7

        threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
        for t in threads:
            t.start()
        # Load is measured in requests the server has answered (its metrics), not in seconds.
        wait_for(srv, lambda m: answered(m) >= 8, "8 requests answered under rules A")
        rules.write_text(RULES_B)
        hup = time.monotonic()
        srv.signal(signal.SIGHUP)
        srv.wait_for_line("rules reloaded")
        swapped = time.monotonic()
        done = answered(srv.metrics())
        wait_for(srv, lambda m: answered(m) >= done + 16, "16 more answered: 8 of them sent after the swap")
        rules.write_text(BAD)
        srv.signal(signal.SIGHUP)
        refused = srv.wait_for_line("reload refused")
        done = answered(srv.metrics())
        wait_for(srv, lambda m: answered(m) >= done + 8, "8 more answered after the refused reload")
        stop.set()
        for t in threads:
            t.join(60)
        _, _, in_force = srv.get("/v1/rules")
        metrics = srv.metrics()
    assert all(status == 200 for _, _, status, _, _ in log), [b for _, _, s, b, _ in log if s != 200][:3]
    seen = {"A": 0, "B": 0}
    for start, end, _, body, text in log:
        (record,) = body["results"]
        which = "A" if list(record["scores"]) == names["A"] else "B"
        assert list(record["scores"]) == names[which]  # one rule set per request, never a mix
        assert record["text"] == text
        scores_close(record, want[which][text])
        seen[which] += 1
        if start > swapped:  # sent after the server said it swapped
            assert which == "B"
        if end < hup:  # answered before the signal was sent
            assert which == "A"
    assert seen["A"] > 0 and seen["B"] > 0
    assert "rules.yaml:5" in refused and "threshold" in refused and refused.startswith("crossguard: error: ")
    assert [r["name"] for r in in_force["rules"]] == names["B"]
    assert metrics['crossguard_rules_reloads_total{result="ok"}'] == 1
    assert metrics['crossguard_rules_reloads_total{result="error"}'] == 1


# -- startup errors: one line, exit 2 ---------------------------------------------------------------

def test_startup_errors_are_one_line_and_exit_2(run_cli, model_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(BAD)
    code, out, err = run_cli("serve", "-m", str(model_dir), "-r", str(bad), "--port", "0")
    assert code == 2 and out == "" and err.startswith("crossguard: error: ") and "bad.yaml:5" in err
    assert err.count("\n") == 1
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli("serve", "-m", str(model_dir), "--port", str(port))
    assert code == 2
    assert err == f"crossguard: error: --port: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    code, _, err = run_cli("serve", "-m", str(tmp_path / "no-such-model"), "--port", "0")
    assert code == 2 and err.startswith("crossguard: error: ") and err.count("\n") == 1
    code, _, err = run_cli("serve", "-m", str(model_dir), "--watch", "--port", "0")
    assert code == 2 and "--watch" in err and err.count("\n") == 1
    code, _, err = run_cli("serve", "--max-queue", "0")
    assert code == 2 and "--max-queue" in err and err.count("\n") == 1


def test_listening_beyond_loopback_without_a_key_warns(run_cli, tmp_path):
    code, _, err = run_cli("serve", "--host", "0.0.0.0", "--port", "0", "-m", str(tmp_path / "no-model"))
    lines = err.splitlines()
    assert code == 2 and len(lines) == 2
    assert lines[0].startswith("crossguard: warning: listening on 0.0.0.0:0 beyond this machine without an API key")
    assert lines[1].startswith("crossguard: error: ")
    code, _, err = run_cli("serve", "--host", "0.0.0.0", "--port", "0", "-m", str(tmp_path / "no-model"),
                           env={"CROSSGUARD_API_KEY": "k"})
    assert code == 2 and "warning" not in err


def test_a_missing_extra_is_one_line_naming_the_install_command():
    code = ("import sys; sys.modules['uvicorn'] = None; from crossguard_cli.cli import main; "
            "main(['serve', '--port', '0'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=cli_env(), timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == "crossguard: error: crossguard serve needs uvicorn: pip install 'crossguard[serve]'\n"
