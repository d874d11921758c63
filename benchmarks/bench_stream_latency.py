"""A lone record on a quiet stream: `Guard.stream` and `crossguard batch` against `Guard.check`.

    python benchmarks/bench_stream_latency.py --shape modernbert-68m --rules one,default

`tail -f chat.log | crossguard batch` sees one line, then nothing for a while: that line's result
should come as fast as `Guard.check` of the same prompt gives it (issue 18: within 3 ms). For each
rule set and prompt set (a short prompt, and real prompts of evenly spaced lengths), each method
runs in a process of its own, so that each has one thread running torch, as a user's would:

  check    `Guard.check(prompt)`, one after another with the same --gap between them, in the
           main thread (the p50 to match)
  stream   `Guard.stream` over a generator that yields a prompt, waits for its result, stays
           quiet for --gap seconds, then yields the next; latency: yield to result
  batch    a `crossguard batch` process fed JSON lines on a pipe, one at a time with the same
           gaps; latency: the line written to its result line read (the pipe included)

The three run in turn, --rounds times (a shared machine's speed drifts by more than the 3 ms
asked: each round's stream and batch are compared with that round's check, and the verdict is
the median over rounds of those differences).
The first record of a stream is not counted (the start of a stream waits `idle` for company by
design, so a file's first lines are never scored one by one); it is printed apart.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
import _workload as work  # noqa: E402
from bench_serve import ONE_RULE, SHORT, environment, percentile  # noqa: E402


def child_check(spec: dict) -> dict:
    from crossguard_cli import Guard

    guard = Guard(spec["rules"], spec["model"], device=spec["device"])
    guard.check("warm-up")
    out = []
    for text in spec["prompts"]:
        time.sleep(spec["gap"])  # the same quiet spells as the streams have (a CPU left idle runs differently)
        t = time.perf_counter()
        guard.check(text)
        out.append(time.perf_counter() - t)
    return {"latencies": out}


def child_stream(spec: dict) -> dict:
    from crossguard_cli import Guard

    guard = Guard(spec["rules"], spec["model"], device=spec["device"])
    answered = threading.Event()
    sent: list[float] = []

    def source():
        for text in ["warm-up", *spec["prompts"]]:
            answered.clear()
            sent.append(time.perf_counter())
            yield text
            answered.wait()
            time.sleep(spec["gap"])

    out = []
    for result in guard.stream(source()):
        out.append(time.perf_counter() - sent[-1])
        assert result.status == "ok", result.to_dict()
        answered.set()
    return {"first": out[0], "latencies": out[1:]}


def run_child(kind: str, spec: dict, tmp: Path) -> dict:
    spec_file = tmp / f"{kind}.json"
    spec_file.write_text(json.dumps(spec))
    proc = subprocess.run([sys.executable, __file__, "--child", kind, str(spec_file)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_batch(spec: dict) -> dict:
    """`crossguard batch` reading JSON lines from a pipe, one record at a time."""
    cmd = [sys.executable, "-m", "crossguard_cli", "batch", "-m", spec["model"], "--device", spec["device"],
           "--input-format", "jsonl", "--format", "jsonl", "--quiet", "--exit-zero"]
    if spec["rules"]:
        cmd += ["-r", spec["rules"]]
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    out = []
    try:
        for text in ["warm-up", *spec["prompts"]]:
            line = (json.dumps({"text": text}) + "\n").encode()
            t = time.perf_counter()
            proc.stdin.write(line)
            proc.stdin.flush()
            got = proc.stdout.readline()
            out.append(time.perf_counter() - t)
            if json.loads(got).get("status") != "ok":
                raise SystemExit(f"batch answered {got[:300]!r}")
            time.sleep(spec["gap"])
    finally:
        proc.stdin.close()
        proc.wait(60)
    return {"first": out[0], "latencies": out[1:]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        spec = json.loads(Path(sys.argv[3]).read_text())
        result = {"check": child_check, "stream": child_stream}[sys.argv[2]](spec)
        print(json.dumps(result))
        return
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="modernbert-68m")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--rules", default="one,default", help="one (a one-rule file), default (32 hypotheses)")
    ap.add_argument("--prompts", type=int, default=16, help="real prompts (length quantiles)")
    ap.add_argument("--short-requests", type=int, default=20)
    ap.add_argument("--default-prompts", type=int, default=4, help="real prompts with the default rules")
    ap.add_argument("--rounds", type=int, default=3, help="check, stream and batch in turn, this many times")
    ap.add_argument("--gap", type=float, default=0.1, help="quiet seconds between records (the stream's idle is 0.02)")
    ap.add_argument("--cache", default=str(work.ROOT / ".bench"))
    ap.add_argument("--out")
    args = ap.parse_args()

    env = environment()
    folder = work.model_folder(args.shape, Path(args.cache))
    tmp = Path(tempfile.mkdtemp())
    (tmp / "one.yaml").write_text(ONE_RULE)
    print(f"# {args.shape} on {args.device}; host {env['cpu']} ({env['cores']} cores, {env['cpu_flags']}), "
          f"{env['date']}, torch {env['torch']}", flush=True)
    rows, verdicts = [], []
    for name in args.rules.split(","):
        rules = str(tmp / "one.yaml") if name == "one" else None
        real = work.real_prompts(args.prompts if name == "one" else args.default_prompts)
        for prompt_set, prompts in (("short", [SHORT] * args.short_requests), ("real", real)):
            spec = {"rules": rules, "model": str(folder), "device": args.device, "prompts": prompts, "gap": args.gap}
            runs: dict[str, list[dict]] = {"check": [], "stream": [], "batch": []}
            for k in range(args.rounds):
                print(f"[{name}] {prompt_set}: round {k + 1}: check, stream, batch", flush=True)
                runs["check"].append(run_child("check", spec, tmp))
                runs["stream"].append(run_child("stream", spec, tmp))
                runs["batch"].append(run_batch(spec))
            p50s = {m: [percentile(r["latencies"], 50) * 1000 for r in rs] for m, rs in runs.items()}
            for method, rs in runs.items():
                every = [x for r in rs for x in r["latencies"]]
                firsts = [r["first"] * 1000 for r in rs if "first" in r]
                rows.append({"rules": name, "prompts": prompt_set, "method": method, "records": len(every),
                             "p50_ms": percentile(every, 50) * 1000, "p99_ms": percentile(every, 99) * 1000,
                             "round_p50s_ms": p50s[method],
                             "first_ms": percentile(firsts, 50) if firsts else float("nan"),
                             "vs_check_ms": percentile([a - b for a, b in zip(p50s[method], p50s["check"],
                                                                             strict=True)], 50)})
            for method, label in (("stream", "Guard.stream"), ("batch", "crossguard batch")):
                added = rows[-3 + ("check", "stream", "batch").index(method)]["vs_check_ms"]
                verdicts.append(f"[{name}] {prompt_set} prompts: {label} lone-record p50 minus Guard.check p50, "
                                f"median over {args.rounds} rounds: {added:+.1f} ms (round p50s "
                                f"{', '.join(f'{x:.1f}' for x in p50s[method])} vs check "
                                f"{', '.join(f'{x:.1f}' for x in p50s['check'])}) (target <= +3 ms: "
                                f"{'met' if added <= 3 else 'NOT met'})")
    print("\n| rules | prompts | method | records | p50 ms | p99 ms | first record ms "
          "| p50 - check p50 (median of rounds) ms |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        first = "-" if r["first_ms"] != r["first_ms"] else f"{r['first_ms']:.1f}"
        print(f"| {r['rules']} | {r['prompts']} | {r['method']} | {r['records']} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {first} | {r['vs_check_ms']:+.1f} |")
    print()
    for line in verdicts:
        print(line)
    if args.out:
        Path(args.out).write_text(json.dumps({"environment": env, "args": vars(args), "rows": rows,
                                              "verdicts": verdicts}, indent=1))


if __name__ == "__main__":
    main()
