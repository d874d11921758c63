"""Where a request's time goes in `crossguard serve`, stage by stage, at one client.

    python benchmarks/serve_stages.py --prompts hi --rules one
    python benchmarks/serve_stages.py --prompts real --rules default
    python benchmarks/serve_stages.py --prompts hi --rules default --simulated 2,0.05

The service runs in this process (uvicorn in the main thread, as `crossguard serve` runs it),
with its stages wrapped to take a timestamp; a client in a child process sends one request at
a time on a keep-alive connection. Printed: the p50 of each stage, the client's p50, and
`Guard.check` of the same prompts in the child before the server starts (the p50 to match).
With `--simulated FIXED_MS,PER_PAIR_MS` the model is a simulated device (a pass sleeps FIXED +
pairs x PER_PAIR, benchmarks/bench_serve_simulated.py): every stage but the pass is host work.

Stages: `http in` (client send to the handler's start: the socket, uvicorn's parsing, the
middleware), `body+parse` (reading the body, `parse_request`), `to worker` (submit to the round
being gathered), `prepare` (normalise, tokenise, plan), `to device` (prepared to the forward
pass starting: the hand-offs and padding), `forward` (the model), `to finish` (the pass's end to
the results being built: the hand-off back), `finish` (softmax, best window), `records` (output
records, decisions), `to handler` (the answer to the handler resuming), `response` (the
response body and JSON), `http out` (the handler's end to the client having read the answer).
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
    ap.add_argument("--simulated", default="", help="FIXED_MS,PER_PAIR_MS: a simulated device instead of the model")
    args = ap.parse_args()

    from crossguard_cli import Guard
    from crossguard_cli.engine import scorer as scorer_module
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
    simulated = [float(x) for x in args.simulated.split(",")] if args.simulated else None
    if simulated:
        import bench_serve_simulated as sim

        sim.install(*simulated)
    # The p50 to match is measured first, in the child process, while this one waits: this
    # process must not run torch in two threads, and nothing else may load the CPU meanwhile.
    ctx = multiprocessing.get_context("spawn")
    names = ("handler", "parsed", "submit", "gathered", "prep0", "prep1", "fin0", "fin1", "answer", "resumed",
             "response")
    stamps: dict[str, list[float]] = {k: [] for k in names}

    def mark(name: str) -> None:
        stamps[name].append(time.perf_counter())

    def around(owner, attr: str, first: str | None, last: str | None) -> None:
        real = getattr(owner, attr)

        def timed(*a, **k):
            if first:
                mark(first)
            out = real(*a, **k)
            if last:
                mark(last)
            return out

        setattr(owner, attr, timed)

    around(protocol, "parse_request", None, "parsed")
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
    around(batcher_module.MicroBatcher, "_gather", None, "gathered")
    around(scorer_module.WindowScorer, "prepare", "prep0", "prep1")
    around(scorer_module.WindowScorer, "finish", "fin0", "fin1")
    around(batcher_module.MicroBatcher, "_answer", "answer", None)

    sock = listen(ServeOptions(port=0))  # as `crossguard serve` binds it (IPPROTO_TCP: asyncio sets TCP_NODELAY)
    port = sock.getsockname()[1]
    here, there = ctx.Pipe()
    proc = ctx.Process(target=_driver, args=(port, prompts, there, str(rules) if rules else None, str(folder),
                                             simulated))
    proc.start()
    inproc = here.recv()  # the child's Guard.check p50 first, alone on the machine
    options = EngineOptions(rules=str(rules) if rules else None, model=str(folder), device="cpu").check()
    guard = Guard.from_options(options)
    logits = guard.model.logits
    passes: dict[str, float] = {}

    def timed_logits(*a):  # a request's pairs may take several passes: its first start, its last end
        t0 = time.perf_counter()
        out = logits(*a)
        passes.setdefault("fwd0", t0)
        passes["fwd1"] = time.perf_counter()
        passes["busy"] = passes.get("busy", 0.0) + passes["fwd1"] - t0
        return out

    guard.model.logits = timed_logits
    answer = batcher_module.MicroBatcher._answer

    def _answer(self, *a, **k):
        for key in ("fwd0", "fwd1", "busy"):
            stamps.setdefault(key, []).append(passes.pop(key, float("nan")))
        return answer(self, *a, **k)

    batcher_module.MicroBatcher._answer = _answer

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


def _driver(port: int, prompts: list[str], out, rules: str | None, folder: str, simulated: list | None) -> None:
    """In the child: Guard.check p50 first (the server is idle, loading), then the client."""
    from crossguard_cli import Guard

    if simulated:
        import bench_serve_simulated as sim

        sim.install(*simulated)

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
    client_marks = stamps["client"]
    n = len(client_marks)
    # One of each stamp per request (the warm-ups come first): the measured requests are the last n.
    s = {k: v[-n:] for k, v in stamps.items() if k not in ("client", "inproc")}
    rows = {
        "http in": [s["handler"][i] - client_marks[i][0] for i in range(n)],
        "body+parse": [s["parsed"][i] - s["handler"][i] for i in range(n)],
        "to worker": [s["gathered"][i] - s["submit"][i] for i in range(n)],
        "prepare": [s["prep1"][i] - s["prep0"][i] for i in range(n)],
        "to device": [s["fwd0"][i] - s["prep1"][i] for i in range(n)],
        "forward": [s["busy"][i] for i in range(n)],
        "between passes": [s["fwd1"][i] - s["fwd0"][i] - s["busy"][i] for i in range(n)],
        "to finish": [s["fin0"][i] - s["fwd1"][i] for i in range(n)],
        "finish": [s["fin1"][i] - s["fin0"][i] for i in range(n)],
        "records": [s["answer"][i] - s["fin1"][i] for i in range(n)],
        "to handler": [s["resumed"][i] - s["answer"][i] for i in range(n)],
        "response": [s["response"][i] - s["resumed"][i] for i in range(n)],
        "http out": [client_marks[i][1] - s["response"][i] for i in range(n)],
        "client total": [b - a for a, b in client_marks],
    }
    inproc = statistics.median(stamps["inproc"]) * 1000
    before = " (before)" if args.before else ""
    device = f"simulated device {args.simulated} ms" if args.simulated else args.shape
    print(f"# {args.prompts} prompts, {args.rules} rules, {n} requests at one client, {device}{before}")
    print("| stage | p50 ms |\n|---|---|")
    for name, values in rows.items():
        print(f"| {name} | {statistics.median(values) * 1000:.2f} |")
    total = statistics.median(rows["client total"]) * 1000
    print(f"| in-process Guard.check | {inproc:.2f} |")
    print(f"serve p50 {total:.2f} ms vs Guard.check p50 {inproc:.2f} ms: {total - inproc:+.2f} ms")


if __name__ == "__main__":
    main()
