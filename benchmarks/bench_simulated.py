"""Can the host keep a fast GPU busy? crossguard against a simulated device, on the real prompts.

    python benchmarks/bench_simulated.py --repeat 4 --rate 20000 --out .bench/results-sim.json

The device (`_simulated.py`) sleeps for padded tokens / rate, releasing the GIL as a CUDA
forward pass does; its rate is set so that it would do `--rate` pairs per second on this work
with no padding (rate x mean real tokens per pair, in tokens per second). Printed:

1. Host cost per pair with a zero-time device, in-process: crossguard's `Scorer` now, by stage,
   and the scorer of `--baseline-commit` (read from git, run on the same prompts in this run).
   Also the pipelined stream with output records (what `crossguard batch` runs), wall clock.
2. `crossguard batch` end to end as a subprocess (reading JSONL, writing JSONL), zero-time
   device and the simulated device: pairs/s from the model being loaded to the last record
   written (startup, i.e. imports and model load, measured apart), and over the whole wall
   clock; device busy time / that time.
3. In-process at the simulated rate: the pipelined stream against scoring the same groups one
   after another (no overlap), so the pipeline's share is visible.

The work: every prompt of ../shared/data/openai-moderation-1680.jsonl.gz (file order), `--repeat`
times (copies made unique so none is deduplicated), against the default rules' 32 hypotheses,
tokenised with bert-base-uncased's vocabulary. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _simulated as sim  # noqa: E402
import _workload as work  # noqa: E402


def workload(repeat: int) -> list[str]:
    prompts = work.real_prompts(1680)
    return [p if r == 0 else f"{p} ({r})" for r in range(repeat) for p in prompts]


def old_scorer(commit: str):
    """The `Scorer` class as it was at `commit` (its own file, today's helpers), or None."""
    try:
        source = subprocess.run(["git", "show", f"{commit}:crossguard_cli/engine/scorer.py"], cwd=work.ROOT,
                                capture_output=True, text=True, check=True).stdout
    except (subprocess.CalledProcessError, FileNotFoundError):
        return None
    path = Path(tempfile.mkdtemp()) / f"scorer_{commit}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(f"scorer_{commit}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.Scorer


def host_cost(model, prompts: list[str], group: int, scorer_class=None) -> dict:
    """Seconds per stage of scoring `prompts` in groups of `group` with a zero-time device."""
    from crossguard_cli.engine.scorer import Scorer
    from crossguard_cli.rules import load_rules

    rules = load_rules(None)
    if scorer_class is not None:
        scorer = scorer_class(model, rules)
        scorer.score(prompts[:group])  # warm-up
        warm = scorer.stats["pairs"]
        start = time.perf_counter()
        for i in range(0, len(prompts), group):
            scorer.score(prompts[i : i + group])
        return {"total_s": time.perf_counter() - start, "pairs": scorer.stats["pairs"] - warm}
    scorer = Scorer(model, rules)
    scorer.score(prompts[:group])
    warm, warm_tokens, warm_padded = (scorer.stats[k] for k in ("pairs", "tokens", "padded_tokens"))
    stages = dict.fromkeys(("prepare", "batches", "model", "finish"), 0.0)
    begin = time.perf_counter()
    for i in range(0, len(prompts), group):
        t0 = time.perf_counter()
        prepared = scorer.prepare(prompts[i : i + group])
        t1 = time.perf_counter()
        batches = list(scorer.batches(prepared))
        t2 = time.perf_counter()
        for batch in batches:
            scorer.run_batch(prepared, batch)
        scorer.collect(prepared)
        t3 = time.perf_counter()
        scorer.finish(prepared)
        t4 = time.perf_counter()
        for key, seconds in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True):
            stages[key] += seconds
    return {"total_s": time.perf_counter() - begin, "pairs": scorer.stats["pairs"] - warm,
            "tokens": scorer.stats["tokens"] - warm_tokens,
            "padded_tokens": scorer.stats["padded_tokens"] - warm_padded, **stages}


def run_cli(folder: Path, prompts: list[str], rate: float, tmp: Path) -> dict:
    """`crossguard batch` in a subprocess with the simulated device; startup measured on an empty file."""
    records, empty = tmp / "prompts.jsonl", tmp / "empty.jsonl"
    records.write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts))
    empty.write_text("")
    stats = tmp / "sim-stats.json"
    env = dict(os.environ, CROSSGUARD_SIM_STATS=str(stats))
    cmd = [sys.executable, str(work.HERE / "_simulated.py"), str(rate), "--", "batch", "--model", str(folder),
           "--format", "jsonl", "-q", "--exit-zero"]
    startup = min(_timed([*cmd, str(empty)], env, tmp) for _ in range(2))
    wall = _timed([*cmd, str(records)], env, tmp)
    out = json.loads(stats.read_text())
    lines = (tmp / "out.jsonl").read_bytes().count(b"\n")
    if lines != len(prompts):
        raise SystemExit(f"crossguard batch wrote {lines} records for {len(prompts)} prompts")
    return {"wall_s": wall, "startup_s": startup, **out}


def _timed(cmd: list[str], env: dict, tmp: Path) -> float:
    start = time.perf_counter()
    with open(tmp / "out.jsonl", "wb") as out:
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}): {proc.stderr.decode()[-2000:]}")
    return time.perf_counter() - start


def in_process(model, prompts: list[str], pipelined: bool) -> dict:
    """Records out for every prompt, through the pipelined stream or group after group."""
    from crossguard_cli.engine.scorer import Scorer
    from crossguard_cli.engine.stream import group_size_for, score_records, stream
    from crossguard_cli.records.inputs import Record
    from crossguard_cli.rules import load_rules

    scorer = Scorer(model, load_rules(None))
    records = [Record("bench", i + 1, text=p) for i, p in enumerate(prompts)]
    size = group_size_for(scorer)
    busy0 = model.busy
    start = time.perf_counter()
    if pipelined:
        for _ in stream(scorer, iter(records), size):
            pass
    else:
        for i in range(0, len(records), size):
            score_records(scorer, records[i : i + size])
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "busy_s": model.busy - busy0, "pairs": scorer.stats["pairs"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=4, help="copies of the 1,680 prompts")
    parser.add_argument("--rate", type=float, default=20000, help="simulated device pairs/s (no padding)")
    parser.add_argument("--baseline-commit", default="68d0a45", help="git commit of the scorer to compare")
    parser.add_argument("--cache", default=str(work.ROOT / ".bench"))
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    from crossguard_cli.engine.models.loader import quiet_libraries

    quiet_libraries()
    folder = work.model_folder("tiny", Path(args.cache))  # only its tokenizer and length limit are used
    prompts = workload(args.repeat)
    zero = sim.simulated_loader(0)(str(folder))
    group = 1024

    now = host_cost(zero, prompts, group)
    tokens_per_pair = now["tokens"] / now["pairs"]
    token_rate = args.rate * tokens_per_pair
    baseline_class = old_scorer(args.baseline_commit)
    before = host_cost(sim.simulated_loader(0)(str(folder)), prompts, group, baseline_class) if baseline_class \
        else None
    piped_zero = in_process(sim.simulated_loader(0)(str(folder)), prompts, pipelined=True)
    device = sim.simulated_loader(token_rate)(str(folder))
    piped = in_process(device, prompts, pipelined=True)
    serial = in_process(sim.simulated_loader(token_rate)(str(folder)), prompts, pipelined=False)
    tmp = Path(tempfile.mkdtemp(prefix="crossguard-sim-"))
    cli_zero = run_cli(folder, prompts, 0, tmp)
    cli_rate = run_cli(folder, prompts, token_rate, tmp)

    pairs = now["pairs"]
    report = {"date": datetime.date.today().isoformat(), "command": " ".join(sys.argv), "prompts": len(prompts),
              "pairs": pairs, "tokens_per_pair": tokens_per_pair, "rate_pairs_s": args.rate,
              "rate_tokens_s": token_rate, "group": group, "host_now": now, "host_before": before,
              "in_process_pipelined_zero": piped_zero, "in_process_pipelined": piped, "in_process_serial": serial,
              "cli_zero": cli_zero, "cli_rate": cli_rate}
    us = 1e6 / pairs
    print(f"# {len(prompts)} prompts x 32 hypotheses = {pairs} pairs, {tokens_per_pair:.0f} tokens/pair; "
          f"simulated device {args.rate:.0f} pairs/s = {token_rate:.0f} padded tokens/s")
    print("\n| host cost per pair, zero-time device, in-process | us/pair |\n|---|---|")
    if before:
        print(f"| scorer at {args.baseline_commit} (before) | {before['total_s'] * 1e6 / before['pairs']:.1f} |")
    print(f"| scorer now, one step after another (`Scorer.score`) | {now['total_s'] * us:.1f} |")
    for stage in ("prepare", "batches", "model", "finish"):
        print(f"| - {stage} | {now[stage] * us:.2f} |")
    print(f"| scorer now, pipelined stream (`crossguard batch`'s path), output records included | "
          f"{piped_zero['seconds'] * 1e6 / piped_zero['pairs']:.1f} |")
    print("\n| run | pairs | seconds | pairs/s | x device rate | device busy |\n|---|---|---|---|---|---|")
    for name, r, seconds in (
        ("in-process, groups one after another", serial, serial["seconds"]),
        ("in-process, pipelined stream", piped, piped["seconds"]),
        ("`crossguard batch`, zero-time device, after startup", cli_zero, cli_zero["scoring_s"]),
        ("`crossguard batch`, simulated device, after startup", cli_rate, cli_rate["scoring_s"]),
        ("`crossguard batch`, simulated device, whole wall clock", cli_rate, cli_rate["wall_s"]),
    ):
        rate = r["pairs"] / seconds
        print(f"| {name} | {r['pairs']} | {seconds:.2f} | {rate:,.0f} | {rate / args.rate:.2f} | "
              f"{100 * r.get('busy_s', 0) / seconds:.0f}% |")
    print(f"\n`crossguard batch` startup (imports, rules, model load; an empty file: {cli_rate['startup_s']:.2f} s); "
          f"zero-time device after startup: {cli_zero['scoring_s'] * 1e6 / cli_zero['pairs']:.1f} us per pair, "
          "reading and writing included")
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
