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


def child(argv: list[str]) -> None:
    fixed, per_pair = float(argv[0]) / 1000, float(argv[1]) / 1000
    args = argv[3:] if argv[2] == "--" else argv[2:]
    import crossguard_cli.engine.models.loader as loader

    load = sim.simulated_loader(0)

    def load_model(name: str, **kwargs: Any) -> PassCostDevice:
        base = load(name, **kwargs)
        device = PassCostDevice(base.name, base.tokenizer, 0, max_length=base.max_length,
                                input_names=base.input_names)
        device.fixed, device.per_pair = fixed, per_pair
        return device

    loader.load_model = load_model
    from crossguard_cli.cli import main as cli_main

    cli_main(args)


class SimServer:
    """`ServerProcess`, started through this file's child mode."""

    def __init__(self, fixed_ms: float, per_pair_ms: float, args: list[str]) -> None:
        from crossguard_cli.serve.testing import ServerProcess

        self.inner = ServerProcess(args)
        self.cmd_prefix = [sys.executable, __file__, "--serve-child", str(fixed_ms), str(per_pair_ms), "--"]

    def __enter__(self):
        import subprocess
        import threading

        srv = self.inner
        cmd = [*self.cmd_prefix, "serve", "--port", "0", *srv.args]
        srv.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                    env=srv.env, text=True, encoding="utf-8")
        srv._reader = threading.Thread(target=srv._read, daemon=True)
        srv._reader.start()
        if not srv._started.wait(srv.timeout) or not srv.url:
            srv.kill()
            raise SystemExit("the simulated server did not start:\n" + "\n".join(srv.lines[-20:]))
        return srv

    def __exit__(self, *exc: object) -> None:
        self.inner.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--serve-child":
        child(sys.argv[2:])
        return
    from bench_serve import environment, run_clients

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixed-ms", type=float, default=2.0, help="cost of a forward pass, whatever its size")
    ap.add_argument("--per-pair-ms", type=float, default=0.05, help="cost of each pair in a pass")
    ap.add_argument("--rules", default="default", help="default (32 hypotheses) or one")
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
    rules_args: list[str] = []
    hyps = 32
    if args.rules == "one":
        (tmp / "one.yaml").write_text(ONE_RULE)
        rules_args, hyps = ["-r", str(tmp / "one.yaml")], 1
    base = ["-m", str(folder), "--device", "cpu", "--max-queue", "4096", *rules_args]
    print(f"# simulated device: {args.fixed_ms} ms a pass + {args.per_pair_ms} ms a pair; {hyps} pairs a request; "
          f"host {env['cpu']} ({env['cores']} cores), {env['date']}", flush=True)
    rows = {}
    with SimServer(args.fixed_ms, args.per_pair_ms, base) as server:
        rows["serve, 1 client"] = run_clients(server, prompts[:1] * args.one_client_requests, 1, 0, 0)
        rows[f"serve, {args.clients} clients"] = run_clients(server, prompts, args.clients, args.seconds, args.warmup)
        m = server.metrics()
        rows["requests per pass"] = m["crossguard_batch_requests_sum"] / max(1, m["crossguard_batch_requests_count"])
    with SimServer(args.fixed_ms, args.per_pair_ms, [*base, "--batch-tokens", "1"]) as server:
        rows[f"--batch-tokens 1, {args.clients} clients"] = run_clients(server, prompts, args.clients, args.seconds,
                                                                        args.warmup)
    one_pass_ms = args.fixed_ms + args.per_pair_ms * hyps
    device_rps = args.clients / ((args.fixed_ms + args.per_pair_ms * hyps * args.clients) / 1000)
    serve = rows[f"serve, {args.clients} clients"]
    single = rows[f"--batch-tokens 1, {args.clients} clients"]
    print("| run | requests | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for name, r in rows.items():
        if isinstance(r, dict):
            print(f"| {name} | {r['requests']} | {r['rps']:.1f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} |")
    print(f"requests per pass at {args.clients} clients: {rows['requests per pass']:.1f}")
    p50 = rows["serve, 1 client"]["p50_ms"]
    lines = [
        f"1 client: serve p50 {p50:.2f} ms vs one simulated pass {one_pass_ms:.2f} ms: {p50 - one_pass_ms:+.2f} ms "
        f"(target <= +1 ms: {'met' if p50 - one_pass_ms <= 1 else 'NOT met'})",
        f"{args.clients} clients: serve {serve['rps']:.1f} req/s vs the device's {device_rps:.1f} ({args.clients} "
        f"requests a pass): {100 * serve['rps'] / device_rps:.0f}% (target >= 90%: "
        f"{'met' if serve['rps'] >= 0.9 * device_rps else 'NOT met'})",
        f"{args.clients} clients: serve vs --batch-tokens 1: {serve['rps'] / single['rps']:.2f}x (target >= 3x: "
        f"{'met' if serve['rps'] >= 3 * single['rps'] else 'NOT met'})",
    ]
    for line in lines:
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps({"environment": env, "args": vars(args), "rows": rows,
                                              "verdicts": lines}, indent=1))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    main()
