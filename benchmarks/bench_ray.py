"""Records/s of `crossguard batch --engine ray` with 1 and 2 local actors, against local `batch`, same run.

    python benchmarks/bench_ray.py --shape modernbert-150m --prompts 200 --out .bench/ray.json

Three methods, each a fresh `crossguard` process on the same prompts, model and rules:
  local        `crossguard batch FILE > out.jsonl` (the baseline: torch uses every core)
  ray-1x2      `--engine ray --ray-actors 1 --ray-cpus-per-actor 2`: one actor, every core
  ray-2x1      `--engine ray --ray-actors 2 --ray-cpus-per-actor 1`: two actors, a core each
Each Ray run starts its own local Ray (as a user's first run would) and stops it. Reported:
wall-clock records/s (process start to exit: imports, Ray start, model loads included) and
records/s over the seconds the summary line reports (local: scoring only, after the model
load; Ray: the job, actor start-up and model loads included), with ratios against local.
The records of every method are checked against local's (scores to 0.01).

The model is a random-weight folder of a real shape (weights do not change the cost), the
prompts are real (evenly spaced length quantiles of ../shared/data), the rules one hypothesis,
so that three runs fit in minutes on a 2-core machine. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as work  # noqa: E402

RULES = "version: 1\nrules:\n  - name: harm\n    hypothesis: The prompt asks for help to hurt someone.\n"
METHODS = {
    "local": [],
    "ray-1x2": ["--engine", "ray", "--ray-actors", "1", "--ray-cpus-per-actor", "2"],
    "ray-2x1": ["--engine", "ray", "--ray-actors", "2", "--ray-cpus-per-actor", "1"],
}
_SUMMARY = re.compile(r"crossguard: (\d+) records, .* in ([\d.]+) s$")


def crossguard_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("crossguard")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "crossguard_cli"]


def run(method: str, common: list[str], inputs: Path, tmp: Path, shard_records: int) -> dict:
    out = tmp / f"{method}.jsonl"
    args = [*common, *METHODS[method]]
    if method != "local":
        args += ["--output", str(tmp / method), "--ray-records-per-shard", str(shard_records)]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "OMP_NUM_THREADS")}
    start = time.perf_counter()
    with open(out, "wb") as stdout:
        proc = subprocess.run([*crossguard_cmd(), "batch", *args, str(inputs)], stdout=stdout, stderr=subprocess.PIPE,
                              env=env, timeout=3600)
    wall = time.perf_counter() - start
    err = proc.stderr.decode(errors="replace").strip()
    found = _SUMMARY.search(err.splitlines()[-1]) if err else None
    if proc.returncode not in (0, 1) or not found:
        raise SystemExit(f"{method} failed ({proc.returncode}):\n{err[-2000:]}")
    if method == "local":
        records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    else:
        records = [json.loads(line) for shard in sorted((tmp / method).glob("part-*.jsonl"))
                   for line in shard.read_text(encoding="utf-8").splitlines()]
    return {"method": method, "records": int(found[1]), "wall_s": wall, "summary_s": float(found[2]),
            "stderr_lines": len(err.splitlines()), "out": records}


def same_records(got: list[dict], want: list[dict]) -> float:
    """The largest score difference; raises if any other field differs."""
    worst = 0.0
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want, strict=True):
        assert {k: v for k, v in g.items() if k != "scores"} == {k: v for k, v in w.items() if k != "scores"}
        for rule, labels in w.get("scores", {}).items():
            worst = max([worst] + [abs(g["scores"][rule][k] - v) for k, v in labels.items()])
    return worst


def versions() -> dict[str, str]:
    import pyarrow
    import ray
    import torch
    import transformers

    from crossguard_cli import __version__

    return {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "ray": ray.__version__, "pyarrow": pyarrow.__version__, "crossguard": __version__}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="modernbert-150m", help="a shape of crossguard_cli.testing.SHAPES")
    ap.add_argument("--prompts", type=int, default=200, help="real prompts (evenly spaced length quantiles)")
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--shard-records", type=int, default=25, help="records per shard, so chunks spread over actors")
    ap.add_argument("--cache", type=Path, default=Path(".bench"))
    ap.add_argument("--out", type=Path, help="write the figures as JSON here")
    opts = ap.parse_args()

    model = work.model_folder(opts.shape, opts.cache)
    prompts = work.real_prompts(opts.prompts)
    with tempfile.TemporaryDirectory(prefix="bench-ray-") as tmp_name:
        tmp = Path(tmp_name)
        inputs = tmp / "prompts.jsonl"
        inputs.write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts), encoding="utf-8")
        (tmp / "rules.yaml").write_text(RULES)
        common = ["-m", str(model), "-r", str(tmp / "rules.yaml"), "--max-length", str(opts.max_length),
                  "--device", "cpu"]
        results = [run(method, common, inputs, tmp, opts.shard_records) for method in METHODS]
    base = results[0]
    print(f"{len(prompts)} real prompts, model {opts.shape} (random weights), 1 hypothesis, --max-length "
          f"{opts.max_length}, {os.cpu_count()} CPUs, {datetime.date.today()}")
    print(f"{'method':<9} {'records':>7} {'wall s':>7} {'rec/s wall':>10} {'x local':>7} {'job s':>7} "
          f"{'rec/s job':>9} {'x local':>7} {'max |d score|':>13}")
    for r in results:
        diff = same_records(r["out"], base["out"])
        r["max_score_diff"] = diff
        print(f"{r['method']:<9} {r['records']:>7} {r['wall_s']:>7.1f} {r['records'] / r['wall_s']:>10.2f} "
              f"{base['wall_s'] / r['wall_s']:>7.2f} {r['summary_s']:>7.1f} {r['records'] / r['summary_s']:>9.2f} "
              f"{base['summary_s'] / r['summary_s']:>7.2f} {diff:>13.2f}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    if opts.out:
        opts.out.parent.mkdir(parents=True, exist_ok=True)
        keep = [{k: v for k, v in r.items() if k != "out"} for r in results]
        opts.out.write_text(json.dumps({"shape": opts.shape, "prompts": len(prompts), "max_length": opts.max_length,
                                        "date": str(datetime.date.today()), "results": keep,
                                        "versions": versions()}, indent=2))


if __name__ == "__main__":
    main()
