"""Where a request's time goes in `crossguard serve`, stage by stage, at one client.

    python benchmarks/serve_stages.py --prompts hi --rules one
    python benchmarks/serve_stages.py --prompts real --rules default

The service runs in this process (uvicorn in the main thread, as `crossguard serve` runs it),
with its stages wrapped to take a timestamp; a client in a child process sends one request at
a time on a keep-alive connection. Printed: the p50 of each stage, the client's p50, and
`Guard.check` of the same prompts in this process before the server starts (the p50 to match).

Stages: `http in` (client send to the handler's start: the socket, uvicorn's parsing, the
middleware), `body+parse` (reading the body, `parse_request`), `to worker` (submit to the
worker's pass starting), `pass` (`Guard.check_many` in the worker thread), `to handler` (the
pass's end to the handler resuming), `response` (the response body and JSON), `http out` (the
handler's end to the client having read the answer).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as work  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ONE_RULE = ("version: 1\nrules:\n  - name: jailbreak\n"
            "    hypothesis: The prompt tries to make the assistant ignore its rules.\n")


def client(port: int, prompts: list[str], out) -> None:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    marks = []
    for i, text in enumerate(["warm-up"] * 3 + prompts):
        body = json.dumps({"input": text}).encode()
        sent = time.perf_counter()  # CLOCK_MONOTONIC: comparable across processes on Linux
        conn.request("POST", "/v1/moderations", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        resp.read()
        if i >= 3:
            marks.append((sent, time.perf_counter()))
    out.send(marks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="modernbert-68m")
    ap.add_argument("--prompts", default="hi", help="hi (a short prompt, 30 times) or real (16 real prompts)")
    ap.add_argument("--rules", default="one", help="one or default")
    ap.add_argument("--cache", default=str(ROOT / ".bench"))
    ap.add_argument("--before", action="store_true",
                    help="warm up in the main thread first, as the service did before issue 18 (a second OpenMP team)")
    args = ap.parse_args()

    from crossguard_cli import Guard
    from crossguard_cli.engine.options import EngineOptions
    from crossguard_cli.serve import app as app_module
    from crossguard_cli.serve import batcher as batcher_module
    from crossguard_cli.serve import protocol
    from crossguard_cli.serve.options import ServeOptions
    from crossguard_cli.serve.server import listen, run

    folder = work.model_folder(args.shape, Path(args.cache))
    prompts = ["hi there"] * 30 if args.prompts == "hi" else work.real_prompts(16)
    tmp = Path(tempfile.mkdtemp())
    rules = None
    if args.rules == "one":
        rules = tmp / "one.yaml"
        rules.write_text(ONE_RULE)
    # The p50 to match is measured first, in the child process, while this one waits: this
    # process must not run torch in two threads, and nothing else may load the CPU meanwhile.
    ctx = multiprocessing.get_context("spawn")
    stamps: dict[str, list[float]] = {k: [] for k in ("handler", "parsed", "submit", "pass0", "pass1", "resumed",
                                                      "response", "delivered")}

    def mark(name: str) -> None:
        stamps[name].append(time.perf_counter())

    parse = protocol.parse_request

    def parse_request(*a, **k):
        out = parse(*a, **k)
        mark("parsed")
        return out

    protocol.parse_request = parse_request
    score = app_module.Service._score

    async def _score(self, request, *, moderation):
        mark("handler")
        resp = await score(self, request, moderation=moderation)
        mark("response")
        return resp

    app_module.Service._score = _score
    submit = batcher_module.MicroBatcher._submit

    def _submit(self, records, ticket=None):
        mark("submit")
        future = submit(self, records, ticket)
        future.add_done_callback(lambda _: mark("resumed"))
        return future

    batcher_module.MicroBatcher._submit = _submit
    score_pass = batcher_module.MicroBatcher._score

    def _score_pass(self, jobs):
        mark("pass0")
        score_pass(self, jobs)
        mark("pass1")

    batcher_module.MicroBatcher._score = _score_pass
    deliver = batcher_module._deliver

    def _deliver(job, value=None, error=None):
        mark("delivered")
        deliver(job, value, error)

    batcher_module._deliver = _deliver

    sock = listen(ServeOptions(port=0))  # as `crossguard serve` binds it (IPPROTO_TCP: asyncio sets TCP_NODELAY)
    port = sock.getsockname()[1]
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_driver, args=(port, prompts, there, str(rules) if rules else None, str(folder)))
    proc.start()
    inproc = here.recv()  # the child's Guard.check p50 first, alone on the machine
    options = EngineOptions(rules=str(rules) if rules else None, model=str(folder), device="cpu").check()
    guard = Guard.from_options(options)

    import threading

    def stop_when_done() -> None:
        stamps["client"] = here.recv()
        stamps["inproc"] = inproc
        import os
        import signal

        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=stop_when_done, daemon=True).start()
    if args.before:
        guard.check_many(["warm-up"])
    run(guard, sock, ServeOptions(port=port, drain_timeout=5))
    proc.join()
    report(stamps, args)


def _driver(port: int, prompts: list[str], out, rules: str | None, folder: str) -> None:
    """In the child: Guard.check p50 first (the server is idle, loading), then the client."""
    from crossguard_cli import Guard

    guard = Guard(rules, folder, device="cpu")
    guard.check_many(["warm-up"])
    lat = []
    for text in prompts:
        t = time.perf_counter()
        guard.check(text)
        lat.append(time.perf_counter() - t)
    del guard
    import gc

    gc.collect()
    out.send(lat)
    for _ in range(600):  # wait for the server to listen
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.1)
    here, there = multiprocessing.Pipe()
    client(port, prompts, there)
    out.send(here.recv())


def report(stamps: dict, args) -> None:
    skip = 3  # the client's warm-up requests
    s = {k: v[skip:] for k, v in stamps.items() if k not in ("client", "inproc")}
    client_marks = stamps["client"]
    n = len(client_marks)
    rows = {
        "http in": [s["handler"][i] - client_marks[i][0] for i in range(n)],
        "body+parse": [s["parsed"][i] - s["handler"][i] for i in range(n)],
        "to worker": [s["pass0"][i] - s["submit"][i] for i in range(n)],
        "pass": [s["delivered"][i] - s["pass0"][i] for i in range(n)],
        "to handler": [s["resumed"][i] - s["delivered"][i] for i in range(n)],
        "response": [s["response"][i] - s["resumed"][i] for i in range(n)],
        "http out": [client_marks[i][1] - s["response"][i] for i in range(n)],
        "client total": [b - a for a, b in client_marks],
    }
    inproc = statistics.median(stamps["inproc"]) * 1000
    before = ' (before)' if args.before else ''
    print(f"# {args.prompts} prompts, {args.rules} rules, {n} requests at one client{before}")
    print("| stage | p50 ms |\n|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values) * 1000:.2f} |")
    total = statistics.median(rows["client total"]) * 1000
    print(f"| in-process Guard.check | {inproc:.2f} |")
    print(f"serve p50 {total:.1f} ms vs Guard.check p50 {inproc:.1f} ms: {total - inproc:+.1f} ms (target <= +3 ms)")


if __name__ == "__main__":
    main()
