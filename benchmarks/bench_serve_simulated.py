"""`crossguard serve` over a simulated GPU: does the service keep a fast device busy?

    python benchmarks/bench_serve_simulated.py --fixed-ms 2 --per-pair-ms 0.05

The service runs as a subprocess whose model is a simulated device (`_simulated.SimulatedDevice`
with another cost): a forward pass of P pairs sleeps `fixed + P * per_pair` (the GIL released,
as a CUDA pass releases it), with the model folder's real tokenizer, so all host work (HTTP,
JSON, tokenising, pairs, padding, softmax, records) is real. Closed-loop clients on keep-alive
connections, one prompt per request, the packaged default rules (32 hypotheses: 32 pairs a
request) unless --rules one.

Printed, with issue 18's targets:
  - at 1 client, serve p50 against one simulated pass of one request (target: within 1 ms);
  - at 32 clients, requests/s against the device's own throughput for that load: 32 requests'
    pairs in one pass, back to back (target >= 90%), and against the same server with
    `--batch-tokens 1`, one request per pass (target >= 3x).

    python benchmarks/bench_serve_simulated.py --serve-child FIXED PER_PAIR -- serve ARGS

is the child: `crossguard serve ARGS` with every model load replaced by the simulated device.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import _simulated as sim  # noqa: E402
import _workload as work  # noqa: E402

ONE_RULE = ("version: 1\nrules:\n  - name: jailbreak\n"
            "    hypothesis: The prompt tries to make the assistant ignore its rules.\n")


class PassCostDevice(sim.SimulatedDevice):
    """A simulated device whose pass costs `fixed` seconds plus `per_pair` seconds per pair."""

    fixed: float = 0.0
    per_pair: float = 0.0

    def logits(self, input_ids, attention_mask, token_type_ids):
        import numpy as np

        seconds = self.fixed + self.per_pair * input_ids.shape[0]
        time.sleep(seconds)
        self.busy += seconds
        last = input_ids[:, -1].astype(np.float32)
        return np.stack([np.sin(last), np.cos(last), np.sin(0.5 * last)], axis=1)


def install(fixed_ms: float, per_pair_ms: float) -> None:
    """Replace every model load in this process with a `PassCostDevice` (the folder's real tokenizer)."""
    import crossguard_cli.engine.models.loader as loader

    load = sim.simulated_loader(0)

    def load_model(name: str, **kwargs: Any) -> PassCostDevice:
        base = load(name, **kwargs)
        device = PassCostDevice(base.name, base.tokenizer, 0, max_length=base.max_length,
                                input_names=base.input_names)
        device.fixed, device.per_pair = fixed_ms / 1000, per_pair_ms / 1000
        return device

    loader.load_model = load_model


def child(argv: list[str]) -> None:
    args = argv[3:] if argv[2] == "--" else argv[2:]
    install(float(argv[0]), float(argv[1]))
    from crossguard_cli.cli import main as cli_main

    cli_main(args)


def sim_server(fixed_ms: float, per_pair_ms: float, args: list[str]):
    """`ServerProcess` running this file's child mode: the real service over a simulated device."""
    from crossguard_cli.serve.testing import ServerProcess

    return ServerProcess(args, command=[sys.executable, __file__, "--serve-child", str(fixed_ms), str(per_pair_ms),
                                        "--"])


def http_round_trip(server, n: int) -> float:
    """p50 seconds of GET /healthz on a keep-alive connection: HTTP alone, client and server."""
    import http.client

    from bench_serve import percentile

    conn = http.client.HTTPConnection(server.host, server.port, timeout=60)
    out = []
    for _ in range(n + 5):
        t = time.perf_counter()
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        out.append(time.perf_counter() - t)
    conn.close()
    return percentile(out[5:], 50)


def in_process(rules_file: str | None, folder: Path, prompt: str, n: int, fixed_ms: float, per_pair_ms: float) -> dict:
    """`Guard.check` of the prompt in this process over the same simulated device: p50 seconds of the
    call, and of the pass alone as the device took it (a sleep overshoots its request a little)."""
    from bench_serve import percentile

    install(fixed_ms, per_pair_ms)
    from crossguard_cli import Guard

    guard = Guard(rules_file, str(folder), device="cpu")
    taken: list[float] = []
    logits = guard.model.logits

    def timed(*a):
        t = time.perf_counter()
        out = logits(*a)
        taken.append(time.perf_counter() - t)
        return out

    guard.model.logits = timed
    guard.check(prompt)
    calls = []
    for _ in range(n):
        t = time.perf_counter()
        guard.check(prompt)
        calls.append(time.perf_counter() - t)
    return {"check": percentile(calls, 50), "pass": percentile(taken[1:], 50)}


def bench_rules(rules: str, args, folder: Path, prompts: list[str], tmp: Path) -> dict:
    from bench_serve import run_clients

    rules_args: list[str] = []
    hyps = 32
    if rules == "one":
        (tmp / "one.yaml").write_text(ONE_RULE)
        rules_args, hyps = ["-r", str(tmp / "one.yaml")], 1
    base = ["-m", str(folder), "--device", "cpu", "--max-queue", "4096", *rules_args]
    rows: dict[str, Any] = {}
    floor = in_process(str(tmp / "one.yaml") if rules == "one" else None, folder, prompts[0],
                       args.one_client_requests, args.fixed_ms, args.per_pair_ms)
    with sim_server(args.fixed_ms, args.per_pair_ms, base) as server:
        floor["http"] = http_round_trip(server, args.one_client_requests)
        rows["serve, 1 client"] = run_clients(server, prompts[:1] * args.one_client_requests, 1, 0, 0)
        before = server.metrics()
        rows[f"serve, {args.clients} clients"] = run_clients(server, prompts, args.clients, args.seconds, args.warmup)
        m = server.metrics()
        passes = m["crossguard_batch_requests_count"] - before["crossguard_batch_requests_count"]
        rows["requests per pass"] = (m["crossguard_batch_requests_sum"] - before["crossguard_batch_requests_sum"]) \
            / max(1, passes)
    with sim_server(args.fixed_ms, args.per_pair_ms, [*base, "--batch-tokens", "1"]) as server:
        rows[f"--batch-tokens 1, {args.clients} clients"] = run_clients(server, prompts, args.clients, args.seconds,
                                                                        args.warmup)
    one_pass_ms = args.fixed_ms + args.per_pair_ms * hyps
    device_rps = args.clients / ((args.fixed_ms + args.per_pair_ms * hyps * args.clients) / 1000)
    single_device_rps = 1000 / one_pass_ms  # one request a pass, back to back: what --batch-tokens 1 can reach
    serve = rows[f"serve, {args.clients} clients"]
    single = rows[f"--batch-tokens 1, {args.clients} clients"]
    p50 = rows["serve, 1 client"]["p50_ms"]
    print(f"\n[{rules}] {hyps} pair{'s' if hyps > 1 else ''} a request; one pass of one request "
          f"{one_pass_ms:.2f} ms; the device at {args.clients} requests a pass: {device_rps:.0f} req/s, at one "
          f"request a pass: {single_device_rps:.0f} req/s (so at most {device_rps / single_device_rps:.2f}x "
          "between them)")
    print("| run | requests | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for name, r in rows.items():
        if isinstance(r, dict):
            print(f"| {name} | {r['requests']} | {r['rps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    print(f"requests per pass at {args.clients} clients: {rows['requests per pass']:.1f}")
    check_ms, pass_ms, http_ms = 1000 * floor["check"], 1000 * floor["pass"], 1000 * floor["http"]
    print(f"in this process over the same device: Guard.check p50 {check_ms:.2f} ms, of which the pass (as the "
          f"device took it) {pass_ms:.2f} ms and host work {check_ms - pass_ms:.2f} ms; an HTTP round trip "
          f"(GET /healthz, keep-alive) {http_ms:.2f} ms: the least serve can take is {check_ms + http_ms:.2f} ms "
          f"({check_ms + http_ms - one_pass_ms:+.2f} ms over the nominal pass)")
    lines = [
        f"[{rules}] 1 client: serve p50 {p50:.2f} ms vs one simulated pass {one_pass_ms:.2f} ms: "
        f"{p50 - one_pass_ms:+.2f} ms (target <= +1 ms: {'met' if p50 - one_pass_ms <= 1 else 'NOT met'})",
        f"[{rules}] {args.clients} clients: serve {serve['rps']:.1f} req/s vs the device's {device_rps:.1f} "
        f"({args.clients} requests a pass): {100 * serve['rps'] / device_rps:.0f}% (target >= 90%: "
        f"{'met' if serve['rps'] >= 0.9 * device_rps else 'NOT met'})",
        f"[{rules}] {args.clients} clients: serve vs --batch-tokens 1: {serve['rps'] / single['rps']:.2f}x "
        f"(target >= 3x: {'met' if serve['rps'] >= 3 * single['rps'] else 'NOT met'}; this device allows at most "
        f"{device_rps / single_device_rps:.2f}x over a --batch-tokens 1 server that keeps it busy)",
    ]
    for line in lines:
        print(line, flush=True)
    lines.append(f"[{rules}] 1 client: serve p50 {p50:.2f} ms vs Guard.check + an HTTP round trip "
                 f"{check_ms + http_ms:.2f} ms: the service's own {p50 - check_ms - http_ms:+.2f} ms")
    print(lines[-1], flush=True)
    return {"rows": rows, "floor": floor, "verdicts": lines, "one_pass_ms": one_pass_ms, "device_rps": device_rps,
            "single_device_rps": single_device_rps}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-child":
        child(sys.argv[2:])
        return
    from bench_serve import environment

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixed-ms", type=float, default=2.0, help="cost of a forward pass, whatever its size")
    ap.add_argument("--per-pair-ms", type=float, default=0.05, help="cost of each pair in a pass")
    ap.add_argument("--rules", default="default,one", help="default (32 hypotheses), one, or both")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--prompts", type=int, default=32, help="real prompts, one per request, in rotation")
    ap.add_argument("--one-client-requests", type=int, default=40)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--shape", default="modernbert-68m", help="whose tokenizer and max length (the weights are unused)")
    ap.add_argument("--cache", default=str(HERE.parent / ".bench"))
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()

    env = environment()
    folder = work.model_folder(args.shape, Path(args.cache))
    prompts = work.real_prompts(args.prompts)
    tmp = Path(tempfile.mkdtemp())
    print(f"# simulated device: {args.fixed_ms} ms a pass + {args.per_pair_ms} ms a pair; host {env['cpu']} "
          f"({env['cores']} cores, {env['cpu_flags']}), {env['date']}", flush=True)
    results = {rules: bench_rules(rules, args, folder, prompts, tmp) for rules in args.rules.split(",")}
    if args.out:
        Path(args.out).write_text(json.dumps({"environment": env, "args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    main()
