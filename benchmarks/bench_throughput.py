"""Throughput of crossguard against the baselines users would run, on the same pairs and device.

    python benchmarks/bench_throughput.py --shapes modernbert-150m,deberta-v3-small --prompts 16 \\
        --device cpu --out .bench/results-cpu.json

Methods (--methods, comma-separated; each runs in its own process):
  cross-encoder  (1) the model card's usage: CrossEncoder(model).predict(pairs), all defaults (fp32, batch 32)
  zero-shot      (2) pipeline("zero-shot-classification", multi_label=True, hypothesis_template="{}")
  crossguard     (3) crossguard's Scorer in-process, --dtype float32: the exact reference of the |dp| column
  cli            (4) `crossguard batch FILE > out.jsonl` as a subprocess, end to end, default options
  default        crossguard's Scorer in-process with the default dtype (bf16 on CUDA and on CPUs with native bf16)
  bf16           crossguard's Scorer in-process, --dtype bfloat16 (emulated, slow, on CPUs without native bf16)
  onnx, onnx-int8, openvino, openvino-int8   crossguard with that --backend, in-process
  cli-onnx, cli-onnx-int8, cli-openvino-int8  the same through `crossguard batch`
The work is the real prompts in ../shared/data (evenly spaced length quantiles: the real length mix,
long prompts included) against every hypothesis of the default rules. Models are random-weight
folders with real shapes and a real 30,522-piece vocabulary, built once under --cache. Also printed:
`crossguard --help` time (best of 5), the memory of `crossguard batch` on N and 4N records, and on
CUDA the bf16 matmul rate and model-FLOPs utilisation. Nothing is downloaded.

Classifier rules (DuoGuard's Qwen2.5-0.5B shape, Prompt Guard's DeBERTa-v3-base shape) have rows of
their own, against `pipeline("text-classification", top_k=None)` and a plain batch-32 loop, and the
cost of a mixed NLI + classifier file against its halves: `python benchmarks/bench_classifiers.py`
(it shares this file's helpers).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as work  # noqa: E402

BASELINE = "cross-encoder"
BACKEND_METHODS = ("onnx", "onnx-int8", "openvino", "openvino-int8")
ALL_METHODS = ("cross-encoder", "zero-shot", "crossguard", "cli", "default", "bf16", *BACKEND_METHODS,
               *(f"cli-{b}" for b in BACKEND_METHODS))
CPU_METHODS = ("cross-encoder", "crossguard", "cli", "onnx-int8", "openvino-int8")
CUDA_METHODS = ("cross-encoder", "zero-shot", "crossguard", "default", "cli")


def _wait(cmd: list[str], stdout, env=None) -> tuple[float, float, int]:
    """Run `cmd`; (seconds, peak RSS in MB of that child alone, exit code)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=stdout, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}):\n{err[-2000:]}")
    return seconds, usage.ru_maxrss / 1024, proc.returncode


def crossguard_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("crossguard")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "crossguard_cli"]


def run_worker(spec: dict, tmp: Path) -> dict:
    spec_file, out_file = tmp / "spec.json", tmp / "result.json"
    spec_file.write_text(json.dumps(spec))
    out_file.unlink(missing_ok=True)
    _wait([sys.executable, str(work.HERE / "_workers.py"), str(spec_file), str(out_file)], subprocess.DEVNULL)
    return json.loads(out_file.read_text())


def run_cli(folder: Path, prompts: list[str], device: str, backend: str, tmp: Path, cache: Path) -> dict:
    """(4) `crossguard batch` end to end; startup (imports, model load) measured on an empty file too."""
    records = tmp / "prompts.jsonl"
    records.write_text("".join(json.dumps({"text": p}) + "\n" for p in prompts))
    empty = tmp / "empty.jsonl"
    empty.write_text("")
    env = dict(os.environ, CROSSGUARD_CACHE_DIR=str(cache / "crossguard-cache"))
    cmd = [*crossguard_cmd(), "batch", "--model", str(folder), "--device", device, "--backend", backend,
           "--format", "jsonl", "-q", "--exit-zero"]
    startup, _, _ = _wait([*cmd, str(empty)], subprocess.DEVNULL, env)
    with open(tmp / "out.jsonl", "wb") as out:
        seconds, rss, _ = _wait([*cmd, str(records)], out, env)
    rows = [json.loads(line) for line in (tmp / "out.jsonl").read_text().splitlines()]
    scores = [{k: [v["entailment"] / 100, v["neutral"] / 100, v["contradiction"] / 100]
               for k, v in r["scores"].items()} for r in rows]
    return {"seconds": seconds, "startup_s": startup, "peak_rss_mb": rss, "scores": scores}


def max_prob_diff(a: list[dict], b: list[dict]) -> float:
    return max((abs(x - y) for ra, rb in zip(a, b, strict=True) for k in ra
                for x, y in zip(ra[k], rb[k], strict=True)), default=0.0)


def matmul_rate(device: str) -> float:
    """Matmul FLOP/s here in the precision that device's default runs: bf16 on a GPU (an 8192^3
    product), fp32 on a CPU (2048^3, the figure MFU is quoted against there); best after warm-up."""
    import torch

    cuda = device.startswith("cuda")
    n, dtype, reps = (8192, torch.bfloat16, 10) if cuda else (2048, torch.float32, 5)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for i in range(reps + 3):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        a @ b
        if cuda:
            torch.cuda.synchronize()
        if i >= 3:
            best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def help_time() -> float:
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([*crossguard_cmd(), "--help"], stdout=subprocess.DEVNULL, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def memory_flatness(shape: str, n: int, device: str, cache: Path, tmp: Path) -> dict:
    folder = work.model_folder(shape, cache)
    prompts = work.real_prompts(1680)
    out = {}
    for count in (n, 4 * n):
        batch = [prompts[i % len(prompts)] + ("" if i < len(prompts) else f" ({i})") for i in range(count)]
        out[count] = run_cli(folder, batch, device, "torch", tmp, cache)["peak_rss_mb"]
    return {"shape": shape, "records": list(out), "peak_rss_mb": list(out.values())}


def bench_shape(shape: str, args, hyps: list[str], tmp: Path) -> list[dict]:
    cache = Path(args.cache)
    folder = work.model_folder(shape, cache)
    params = work.parameter_counts(folder)
    prompts = work.real_prompts(args.prompts)
    lengths = work.pair_lengths(prompts, hyps)
    (tmp / "prompts.json").write_text(json.dumps(prompts))
    base = {"model": str(folder), "device": args.device, "prompts_file": str(tmp / "prompts.json"),
            "hypotheses": hyps, "cache": str(cache / "crossguard-cache")}
    print(f"# {shape}: {params['total'] / 1e6:.1f}M parameters ({params['non_embedding'] / 1e6:.1f}M "
          f"non-embedding), {len(prompts)} prompts x {len(hyps)} hypotheses, "
          f"{lengths['tokens_per_word'][0]:.2f} tokens/word, mean prompt "
          f"{sum(lengths['prompt_tokens']) / len(prompts):.0f} tokens", flush=True)
    rows = []
    for method in args.methods:
        if method == "cli" or method.startswith("cli-"):
            backend = method.removeprefix("cli-") if method != "cli" else "torch"
            r = run_cli(folder, prompts, args.device, backend, tmp, cache)
            r["pairs"] = len(lengths["windowed"])
            r["tokens"] = sum(lengths["windowed"])
        else:
            runner = "crossguard" if method in ("crossguard", "default", "bf16", *BACKEND_METHODS) else method
            backend = method if method in BACKEND_METHODS else "torch"
            dtype = {"crossguard": "float32", "bf16": "bfloat16"}.get(method, "auto")
            r = run_worker({**base, "runner": runner, "backend": backend, "dtype": dtype}, tmp)
        used = lengths["truncated"] if method in ("cross-encoder", "zero-shot") else lengths["windowed"]
        r.update(shape=shape, method=method, prompts=len(prompts), flops=work.flops(used, params),
                 params=params)
        rows.append(r)
        print(f"  {method}: {r['seconds']:.1f} s", flush=True)
    reference = next((r for r in rows if r["method"] == "crossguard"), None)
    for r in rows:
        if reference and "scores" in r and r is not reference:
            r["max_prob_diff_vs_torch"] = max_prob_diff(reference["scores"], r["scores"])
            r["flips"] = flipped_decisions(reference["scores"], r["scores"])
    for r in rows:
        r.pop("scores", None)
    return rows


def flipped_decisions(a: list[dict], b: list[dict]) -> dict:
    """(prompt, rule) decisions and prompt verdicts that differ, under the default rules' thresholds."""
    from crossguard_cli.engine.decide import decide
    from crossguard_cli.rules import LABELS, load_rules

    rules = load_rules(None)
    col = {label: i for i, label in enumerate(LABELS)}
    rule_flips = verdict_flips = 0
    for ra, rb in zip(a, b, strict=True):
        da, db = (decide(rules, {r.name: s[r.name][col[r.label]] for r in rules.rules}) for s in (ra, rb))
        rule_flips += len(set(da.flagged) ^ set(db.flagged))
        verdict_flips += da.verdict != db.verdict
    return {"rules": rule_flips, "verdicts": verdict_flips, "decisions": len(a) * len(rules.rules)}


def print_table(rows: list[dict], rate: float | None) -> None:
    head = ["shape", "method", "prompts/s", "pairs/s", "tokens/s", "tok/pair", "pad waste", "peak RSS MB",
            "peak GPU MB", "max |dp|", "flips", "x (1)"] + (["MFU"] if rate else [])
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        base = next((b for b in rows if b["shape"] == r["shape"] and b["method"] == BASELINE), None)
        waste = 1 - r["tokens"] / r["padded_tokens"] if r.get("padded_tokens") else None
        cells = [r["shape"], r["method"], f"{r['prompts'] / r['seconds']:.2f}", f"{r['pairs'] / r['seconds']:.1f}",
                 f"{r['tokens'] / r['seconds']:.0f}", f"{r['tokens'] / r['pairs']:.0f}",
                 "-" if waste is None else f"{100 * waste:.1f}%", f"{r['peak_rss_mb']:.0f}",
                 f"{r['peak_gpu_mb']:.0f}" if r.get("peak_gpu_mb") else "-",
                 f"{r['max_prob_diff_vs_torch']:.2g}" if "max_prob_diff_vs_torch" in r else "-",
                 f"{r['flips']['rules']}/{r['flips']['decisions']} ({r['flips']['verdicts']} verdicts)"
                 if "flips" in r else "-",
                 f"{base['seconds'] / r['seconds']:.2f}" if base else "-"]
        if rate:
            cells.append(f"{100 * r['flops'] / r['seconds'] / rate:.1f}%")
        print("| " + " | ".join(cells) + " |")
    for r in rows:
        if "startup_s" in r:
            print(f"{r['shape']} {r['method']}: {r['seconds']:.1f} s end to end, of which {r['startup_s']:.1f} s "
                  f"startup (imports, model load); scoring {r['seconds'] - r['startup_s']:.1f} s")


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()}
    for pkg in ("torch", "transformers", "sentence-transformers", "tokenizers", "onnxruntime", "onnx", "openvino",
                "nncf", "crossguard"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="modernbert-150m,deberta-v3-small")
    parser.add_argument("--prompts", type=int, default=64, help="real prompts per shape")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--methods", default=None, help=f"comma-separated, of {', '.join(ALL_METHODS)}")
    parser.add_argument("--cache", default=str(work.ROOT / ".bench"), help="where models are built")
    parser.add_argument("--flat-shape", default="tiny", help="model for the memory check ('' to skip)")
    parser.add_argument("--flat-records", type=int, default=200, help="N for the N vs 4N memory check")
    parser.add_argument("--out", default=None, help="write all figures to this JSON file")
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.methods = args.methods.split(",") if args.methods else list(CUDA_METHODS if cuda else CPU_METHODS)
    unknown = set(args.methods) - set(ALL_METHODS)
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    hyps = work.hypotheses()
    tmp = Path(tempfile.mkdtemp(prefix="crossguard-bench-"))
    try:
        rows = [r for shape in args.shapes.split(",") for r in bench_shape(shape.strip(), args, hyps, tmp)]
        rate = matmul_rate(args.device)
        extra = {"help_s": help_time()}
        if args.flat_shape:
            extra["memory"] = memory_flatness(args.flat_shape, args.flat_records, args.device, Path(args.cache), tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        report = {"date": datetime.date.today().isoformat(), "device": args.device, "versions": versions(),
                  "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "rows": rows,
                  "matmul_flops": rate, **extra}
        Path(args.out).write_text(json.dumps(report, indent=1))
    print_table(rows, rate)
    what = "bf16 8192^3" if cuda else "fp32 2048^3"
    print(f"matmul rate ({what}, this run): {rate / 1e9:,.0f} GFLOP/s; MFU = pairs/s x FLOPs/pair / rate, "
          "FLOPs/pair = 2 x non-embedding params x tokens + 4 x layers x hidden x tokens^2")
    print(f"`crossguard --help`: {extra['help_s']:.3f} s (best of 5)")
    if "memory" in extra:
        m = extra["memory"]
        print(f"`crossguard batch` peak RSS ({m['shape']}): " + ", ".join(
            f"{n} records {mb:.0f} MB" for n, mb in zip(m["records"], m["peak_rss_mb"], strict=True)))


if __name__ == "__main__":
    main()
