"""Latency and throughput of `crossguard serve` against what a user would otherwise run, in one run.

    python benchmarks/bench_serve.py --shape modernbert-68m --out .bench/serve.json

For each rule set (--rules: `one`, a one-rule file, and `default`, the packaged 32-hypothesis
rules), one prompt per request, POST /v1/moderations, keep-alive connections, closed-loop clients:

  in-process   `Guard.check(prompt)` in this process (the p50 to match), for a short prompt ("hi
               there") and for real prompts (../shared/data, evenly spaced length quantiles),
               paired with serve at one client: each prompt in-process, then over HTTP, in turn,
               so a change in the machine's load falls on both
  ceiling      `Guard.check_many(prompts)` of the same real prompts in one call (best of 2,
               before and after the servers; the better counts): the device's most, no HTTP
  serve        `crossguard serve` with micro-batching (the defaults)
  (b) no-batch the same server with `--batch-tokens 1`: one request per scoring pass
  (a) process  a `crossguard check` process per request (imports and model load included)

Issue 18's targets, printed as verdict lines at the end: at one client, serve p50 <= in-process
p50 + 3 ms (short and real prompts); at the most clients (32), serve requests/s >= 90% of the
ceiling. With 1 client every method scores the same prompts once, in the same order, so their
p50s compare; with more clients each level runs for --seconds after a warm-up and counts the
requests completed in that window. `(b)` runs at the most clients only; `(a)` only with
--process-requests. Models are random-weight folders of real shapes (`_workload.model_folder`);
the weights do not change the cost. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import http.client
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as work  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from crossguard_cli.serve.testing import ServerProcess  # noqa: E402

SHORT = "hi there"
KEEP_ALIVE_S = 4.0  # uvicorn closes a keep-alive connection after 5 s idle
ONE_RULE = ("version: 1\nrules:\n  - name: jailbreak\n"
            "    hypothesis: The prompt tries to make the assistant ignore its rules.\n")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def summary(latencies: list[float], seconds: float) -> dict:
    return {"requests": len(latencies), "seconds": round(seconds, 2), "rps": len(latencies) / seconds,
            "p50_ms": percentile(latencies, 50) * 1000, "p99_ms": percentile(latencies, 99) * 1000}


def ceiling(guard, prompts: list[str]) -> dict:
    """`check_many` of the prompts in one call, best of 2: the most the device gives with no HTTP."""
    best = float("inf")
    for _ in range(2):
        t = time.perf_counter()
        guard.check_many(prompts)
        best = min(best, time.perf_counter() - t)
    return {"requests": len(prompts), "seconds": round(best, 2), "rps": len(prompts) / best,
            "p50_ms": float("nan"), "p99_ms": float("nan")}


def paired(guard, server: ServerProcess, prompts: list[str]) -> tuple[dict, dict]:
    """One client: each prompt by `Guard.check` in this process, then by the server, in turn.

    Pairing the two measurements prompt by prompt keeps a change in the machine's load (other
    processes on a shared machine) from falling on one method only. Both sides are idle while the
    other runs (the server's worker waits on its queue; this process waits on the socket)."""
    conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
    inproc, serve = [], []
    start = time.perf_counter()
    for text in prompts:
        t = time.perf_counter()
        guard.check(text)
        inproc.append(time.perf_counter() - t)
        body = json.dumps({"input": text}).encode()
        if time.perf_counter() - t > KEEP_ALIVE_S:  # the server closes a connection idle this long
            conn.close()
            conn = http.client.HTTPConnection(server.host, server.port, timeout=600)
            conn.connect()  # outside the timed request, as a pooled client's open connection
        t = time.perf_counter()
        conn.request("POST", "/v1/moderations", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        serve.append(time.perf_counter() - t)
        if resp.status != 200:
            raise SystemExit(f"serve answered {resp.status}: {data[:200]!r}")
    conn.close()
    seconds = time.perf_counter() - start
    # The median of the per-prompt differences: each prompt against itself, so prompts of very
    # different lengths (a few real prompts) do not make the comparison of two medians noisy.
    diff = {"paired_diff_ms": percentile([b - a for a, b in zip(inproc, serve, strict=True)], 50) * 1000}
    return summary(inproc, seconds), {**summary(serve, seconds), **diff}


class Client(threading.Thread):
    """One closed-loop client on a keep-alive connection: the next request when the last is answered."""

    def __init__(self, server: ServerProcess, prompts: list[str], offset: int, stop_at: float | None,
                 count: int | None) -> None:
        super().__init__(daemon=True)
        self.server, self.prompts, self.offset = server, prompts, offset
        self.stop_at, self.count = stop_at, count
        self.done: list[tuple[float, float]] = []  # (end time, latency)
        self.errors: list[str] = []

    def run(self) -> None:
        conn = http.client.HTTPConnection(self.server.host, self.server.port, timeout=600)
        i = 0
        while (self.count is None or i < self.count) and (self.stop_at is None or time.perf_counter() < self.stop_at):
            body = json.dumps({"input": self.prompts[(self.offset + i) % len(self.prompts)]}).encode()
            t = time.perf_counter()
            conn.request("POST", "/v1/moderations", body, {"Content-Type": "application/json"})
            resp = conn.getresponse()
            data = resp.read()
            end = time.perf_counter()
            if resp.status != 200:
                self.errors.append(f"{resp.status} {data[:200]!r}")
            else:
                self.done.append((end, end - t))
            i += 1
        conn.close()


def run_clients(server: ServerProcess, prompts: list[str], clients: int, seconds: float, warmup: float) -> dict:
    if clients == 1:  # every prompt once, in order: comparable with the in-process pass
        client = Client(server, prompts, 0, None, len(prompts))
        start = time.perf_counter()
        client.run()
        if client.errors:
            raise SystemExit(f"errors: {client.errors[:3]}")
        return summary([lat for _, lat in client.done], time.perf_counter() - start)
    begin = time.perf_counter()
    window = (begin + warmup, begin + warmup + seconds)
    threads = [Client(server, prompts, k * 7, window[1], None) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [e for t in threads for e in t.errors]
    if errors:
        raise SystemExit(f"errors: {errors[:3]}")
    latencies = [lat for t in threads for end, lat in t.done if window[0] <= end <= window[1]]
    return summary(latencies, seconds)


def process_per_request(rules: str | None, folder: Path, prompts: list[str], clients: int, total: int,
                        device: str) -> dict:
    """`crossguard check` as a new process per request, `clients` at a time."""
    exe = Path(sys.executable).with_name("crossguard")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "crossguard_cli"]
    base = [*cmd, "check", "--format", "json", "-m", str(folder), "--device", device] + (["-r", rules] if rules else [])
    latencies: list[float] = []
    lock = threading.Lock()
    queue = list(range(total))

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                i = queue.pop(0)
            t = time.perf_counter()
            proc = subprocess.run([*base, prompts[i % len(prompts)]], capture_output=True, text=True)
            if proc.returncode not in (0, 1):
                raise SystemExit(f"crossguard check failed: {proc.stderr[-500:]}")
            with lock:
                latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return summary(latencies, time.perf_counter() - start)


def bench_rules(name: str, rules: str | None, folder: Path, args, prompts: list[str]) -> list[dict]:
    from crossguard_cli import Guard

    rows = []
    levels = [int(c) for c in args.clients.split(",")]
    if name == "default":
        levels = [c for c in levels if c <= args.default_max_clients]
    sets = {"short": [SHORT] * args.short_requests, "real": prompts}
    guard = Guard(rules, str(folder), device=args.device)
    guard.check_many(["warm-up"])
    print(f"[{name}] the ceiling: check_many of {len(prompts)} real prompts in one call", flush=True)
    first_ceiling = ceiling(guard, prompts)
    for method, extra in (("serve", []), ("(b) no-batch", ["--batch-tokens", "1"])):
        if method == "(b) no-batch" and args.no_batch == "off":
            continue
        server_args = ["-m", str(folder), "--device", args.device, "--max-queue", "4096", *extra] + (
            ["-r", rules] if rules else [])
        with ServerProcess(server_args) as server:
            for clients in levels if method == "serve" else levels[-1:]:
                for prompt_set in ("short", "real") if clients == 1 else ("real",):
                    print(f"[{name}] {method}: {clients} clients, {prompt_set} prompts", flush=True)
                    before = server.metrics()
                    if clients == 1:
                        server.post("/v1/moderations", {"input": sets[prompt_set][0]})  # a warm connection path
                        inproc, result = paired(guard, server, sets[prompt_set])
                        rows.append({"rules": name, "method": "in-process", "prompts": prompt_set, "clients": 1,
                                     **inproc})
                    else:
                        seconds = args.seconds if name == "one" else args.default_seconds
                        result = run_clients(server, sets[prompt_set], clients, seconds, args.warmup)
                    after = server.metrics()
                    passes = after["crossguard_batch_requests_count"] - before["crossguard_batch_requests_count"]
                    reqs = after["crossguard_batch_requests_sum"] - before["crossguard_batch_requests_sum"]
                    rows.append({"rules": name, "method": method, "prompts": prompt_set, "clients": clients,
                                 **result, "requests_per_pass": reqs / max(1.0, passes)})
    # The ceiling again, after the servers: the better of the two is the target (the stricter one).
    second = ceiling(guard, prompts)
    rows.append({"rules": name, "method": "ceiling", "prompts": "real", "clients": 1,
                 **max(first_ceiling, second, key=lambda c: c["rps"])})
    del guard
    gc.collect()
    for clients, total in ((1, args.process_requests), (8, 8)):
        if not args.process_requests or (name == "default" and clients > 1):
            continue
        print(f"[{name}] (a) process per request: {clients} clients, {total} requests", flush=True)
        rows.append({"rules": name, "method": "(a) process", "prompts": "real", "clients": clients,
                     **process_per_request(rules, folder, prompts, clients, total, args.device)})
    return rows


def table(rows: list[dict]) -> str:
    out = ["| rules | method | prompts | clients | requests | req/s | p50 ms | p99 ms | requests/pass | x ceiling |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    ceiling = {r["rules"]: r["rps"] for r in rows if r["method"] == "ceiling"}
    for r in rows:
        ratio = r["rps"] / ceiling[r["rules"]] if r["prompts"] == "real" and r["method"] != "in-process" else None
        per_pass = f"{r['requests_per_pass']:.1f}" if "requests_per_pass" in r else "-"
        p50 = "-" if r["p50_ms"] != r["p50_ms"] else f"{r['p50_ms']:.1f}"
        p99 = "-" if r["p99_ms"] != r["p99_ms"] else f"{r['p99_ms']:.1f}"
        out.append(f"| {r['rules']} | {r['method']} | {r['prompts']} | {r['clients']} | {r['requests']} | "
                   f"{r['rps']:.2f} | {p50} | {p99} | {per_pass} | {'-' if ratio is None else f'{ratio:.2f}'} |")
    return "\n".join(out)


def verdicts(rows: list[dict]) -> list[str]:
    lines = []
    for name in sorted({r["rules"] for r in rows}):
        get = {(r["method"], r["prompts"], r["clients"]): r for r in rows if r["rules"] == name}
        for prompt_set in ("short", "real"):
            inproc, one = get[("in-process", prompt_set, 1)], get[("serve", prompt_set, 1)]
            added = one["p50_ms"] - inproc["p50_ms"]
            lines.append(f"[{name}] {prompt_set} prompts, 1 client: median of the per-prompt differences, serve - "
                         f"Guard.check: {one['paired_diff_ms']:+.1f} ms (target <= +3 ms: "
                         f"{'met' if one['paired_diff_ms'] <= 3 else 'NOT met'})")
            lines.append(f"[{name}] {prompt_set} prompts, 1 client: serve p50 {one['p50_ms']:.1f} ms vs in-process "
                         f"Guard.check {inproc['p50_ms']:.1f} ms: {added:+.1f} ms (target <= +3 ms: "
                         f"{'met' if added <= 3 else 'NOT met'})")
        top = max(c for m, _, c in get if m == "serve")
        serve, ceiling = get[("serve", "real", top)], get[("ceiling", "real", 1)]
        share = serve["rps"] / ceiling["rps"]
        lines.append(f"[{name}] {top} clients: serve {serve['rps']:.2f} req/s vs the ceiling (check_many in one call) "
                     f"{ceiling['rps']:.2f} prompts/s: {100 * share:.0f}% (target >= 90%: "
                     f"{'met' if share >= 0.9 else 'NOT met'})")
        nobatch = get.get(("(b) no-batch", "real", top))
        if nobatch and nobatch["rps"]:
            lines.append(f"[{name}] serve vs (b) --batch-tokens 1 at {top} clients: "
                         f"{serve['rps'] / nobatch['rps']:.2f}x requests/s")
        if ("(a) process", "real", 1) in get:
            proc = get[("(a) process", "real", 1)]
            lines.append(f"[{name}] p50 at 1 client: serve {get[('serve', 'real', 1)]['p50_ms']:.0f} ms vs a process "
                         f"per request {proc['p50_ms']:.0f} ms")
    return lines


def environment() -> dict:
    import importlib.metadata as md

    versions = {}
    for pkg in ("torch", "transformers", "sentence-transformers", "starlette", "uvicorn", "prometheus-client",
                "crossguard"):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    wanted = ("avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "python": platform.python_version(), "cpu": cpu, "cores": os.cpu_count(),
            "cpu_flags": " ".join(f for f in wanted if f in flags) or "none of " + " ".join(wanted), **versions}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="modernbert-68m", help="model shape (benchmarks/_workload.py ARCH)")
    ap.add_argument("--device", default="cpu", help="cpu, cuda, ... (the same for every method)")
    ap.add_argument("--rules", default="one,default", help="rule sets: one (a one-rule file), default (32 hypotheses)")
    ap.add_argument("--clients", default="1,8,32", help="concurrent clients per level (the last is the target's)")
    ap.add_argument("--prompts", type=int, default=32, help="real prompts (length quantiles) for the one-rule set")
    ap.add_argument("--default-prompts", type=int, default=4, help="prompts for the default rules (32 pairs each)")
    ap.add_argument("--default-max-clients", type=int, default=32, help="most clients measured with the default rules")
    ap.add_argument("--short-requests", type=int, default=30, help="requests of the short prompt at one client")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window per level with several clients")
    ap.add_argument("--default-seconds", type=float, default=15.0, help="the window with the default rules")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each window")
    ap.add_argument("--no-batch", choices=("on", "off"), default="on", help="(b) at the most clients")
    ap.add_argument("--process-requests", type=int, default=0, help="(a) requests at 1 client; 0 skips (a)")
    ap.add_argument("--cache", default=str(ROOT / ".bench"), help="where model folders are built once")
    ap.add_argument("--out", help="write every figure as JSON here")
    args = ap.parse_args()
    folder = work.model_folder(args.shape, Path(args.cache))
    env = environment()
    print(f"# {args.shape} on {args.device}: {env['cpu']} ({env['cores']} cores; {env['cpu_flags']}), {env['date']}; "
          f"torch {env['torch']}, default dtype", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        one = Path(tmp) / "one-rule.yaml"
        one.write_text(ONE_RULE)
        for name in args.rules.split(","):
            rules = str(one) if name == "one" else None
            count = args.prompts if name == "one" else args.default_prompts
            rows += bench_rules(name, rules, folder, args, work.real_prompts(count))
    print()
    print(table(rows))
    print()
    for line in verdicts(rows):
        print(line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({"environment": env, "args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
