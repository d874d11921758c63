"""Classifier rules: crossguard against the baselines a user would run, on the same prompts and CPU.

    python benchmarks/bench_classifiers.py --shapes qwen2.5-0.5b-12,deberta-v3-base-2 --prompts 32 \\
        --out .bench/classifiers-cpu.json

Shapes are SHAPE-LABELS: a random-weight classifier of a real architecture's sizes with that many
outputs. qwen2.5-0.5b-N is DuoGuard's shape (Qwen2, multi-label, sigmoid, eos pads), with a byte-level
BPE of 32,000 pieces trained on the moderation prompts (about 1.33 pieces a word, near Qwen's own
tokenizer, which is not available offline); deberta-v3-base-N is Prompt Guard's / protectai's shape
(DeBERTa-v2, single-label, softmax) with bert-base-uncased's WordPiece (1.43 pieces a word).

Methods (--methods; each in its own process, all on the same prompts):
  pipeline    pipeline("text-classification", top_k=None), defaults (batch 1), truncation=True at 512
  loop        a plain loop: batches of 32 in file order, padded to the longest, truncated at 512, fp32
  crossguard  Guard(rules).check_many, one rule per output column, --dtype float32 (the |dp| rows)
  truncate    the same with --long-input truncate: the first window only, as the baselines read a
              long prompt, so the same work and the same outputs on every prompt
  default     the same as crossguard with --dtype auto (bf16 on CPUs with AVX512-BF16 or AMX)
`x pipeline` is pipeline seconds / method seconds, both measured in this run (wall clock, the best
of two runs with --repeat; also in process CPU seconds, which other users of a shared CPU disturb
less). `max |dp|` is the largest difference in percentage points from the pipeline's probabilities
over the prompts that fit in one 512-token window (crossguard reads longer prompts in overlapping
windows and keeps each column's maximum; the baselines truncate); crossguard's records round to
0.01 pp. It is given twice: over the prompts that crossguard's text normalisation (NFKC, format
characters dropped) leaves alone, and over all of them (the baselines feed the raw text). The
stage columns split each method's time: tokenising, padding, the forward passes.

--mixed NLI:CLASSIFIER also times one rules file with NLI rules (--nli-rules of the default rules, on
the NLI shape, built as bench_throughput.py builds it) and the classifier's rules, against each half
alone on the same prompts, and checks that every rule's scores are the same either way.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as work  # noqa: E402
from bench_throughput import _wait, versions  # noqa: E402

ALL_METHODS = ("pipeline", "loop", "crossguard", "truncate", "default")
BASELINE = "pipeline"
BPE_PIECES = 32000


def parse_shape(shape: str) -> tuple[str, int]:
    base, _, labels = shape.rpartition("-")
    if base not in ("qwen2.5-0.5b", "deberta-v3-base", "tiny-qwen", "tiny") or not labels.isdigit():
        raise SystemExit(f"unknown classifier shape {shape!r}; use qwen2.5-0.5b-N, deberta-v3-base-N, "
                         "tiny-qwen-N or tiny-N (N labels)")
    return base, int(labels)


def classifier_folder(shape: str, cache: Path) -> tuple[Path, list[str]]:
    """Build (once) the random-weight classifier of `shape`; (folder, its labels in column order)."""
    base, n = parse_shape(shape)
    folder = cache / "models" / "classifiers" / shape
    marker = folder / "crossguard-test-model.json"
    if not marker.exists():
        from crossguard_cli.testing_classifiers import build_decoder_classifier, build_encoder_classifier, train_bpe

        if base in ("qwen2.5-0.5b", "tiny-qwen"):
            tok = train_bpe(work.real_prompts(10_000), BPE_PIECES)
            build_decoder_classifier(folder, num_labels=n, shape="tiny" if base == "tiny-qwen" else base,
                                     tokenizer=tok)
        else:
            labels = ("SAFE", "INJECTION") if n == 2 else tuple(f"LABEL_{i}" for i in range(n))
            build_encoder_classifier(folder, arch="deberta-v2" if base == "deberta-v3-base" else "bert",
                                     labels=labels, shape=base, tokenizer=work.load_tokenizer(), max_length=512)
    return folder, json.loads(marker.read_text())["labels"]


def run_worker(spec: dict, tmp: Path) -> dict:
    spec_file, out_file = tmp / "spec.json", tmp / "result.json"
    spec_file.write_text(json.dumps(spec))
    out_file.unlink(missing_ok=True)
    _wait([sys.executable, str(work.HERE / "_classifier_workers.py"), str(spec_file), str(out_file)],
          subprocess.DEVNULL)
    return json.loads(out_file.read_text())


def classifier_counts(folder: Path) -> dict[str, int]:
    """Parameters of a classifier (embedding rows apart), counted on the meta device."""
    return work.parameter_counts(folder)


def bench_shape(shape: str, args, tmp: Path) -> list[dict]:
    folder, labels = classifier_folder(shape, Path(args.cache))
    params = classifier_counts(folder)
    prompts = work.real_prompts(args.prompts)
    (tmp / "prompts.json").write_text(json.dumps(prompts))
    base = {"model": str(folder), "tokenizer": str(folder), "labels": labels, "device": "cpu",
            "prompts_file": str(tmp / "prompts.json")}
    print(f"# {shape}: {params['total'] / 1e6:.1f}M parameters ({params['non_embedding'] / 1e6:.1f}M "
          f"non-embedding), {len(labels)} labels, {len(prompts)} prompts", flush=True)
    rows: dict[str, dict] = {}
    # With --repeat, the pipeline and crossguard (the target's pair) run again in reverse order
    # and the faster of each is kept: the CPU is shared, and drift would favour one side.
    again = [m for m in reversed(args.methods) if m in (BASELINE, "crossguard", "truncate")] if args.repeat else []
    for method in [*args.methods, *again]:
        runner = "crossguard" if method in ("crossguard", "truncate", "default") else method
        dtype = "float32" if method in ("crossguard", "truncate") else "auto"
        long_input = "truncate" if method == "truncate" else "window"
        r = run_worker({**base, "runner": runner, "dtype": dtype, "long_input": long_input}, tmp)
        r.update(shape=shape, method=method, prompts=len(prompts), params=params)
        runs = rows[method]["runs"] if method in rows else []
        runs.append({"seconds": r["seconds"], "cpu_s": r["cpu_s"], "loadavg": r["loadavg"]})
        if method not in rows or r["seconds"] < rows[method]["seconds"]:
            rows[method] = r
        rows[method]["runs"] = runs
        print(f"  {method}: {r['seconds']:.1f} s, {r['cpu_s']:.1f} CPU s ({r['dtype']}, load avg "
              f"{r['loadavg'][0]:.1f}-{r['loadavg'][1]:.1f})", flush=True)
    rows = list(rows.values())
    from crossguard_cli.records.text import normalize_text

    windows = next((r["windows"] for r in rows if "windows" in r), None)
    one = list(range(len(prompts))) if windows is None else [i for i, w in enumerate(windows) if w == 1]
    # crossguard NFKC-folds prompts and drops format characters before tokenising (the baselines do
    # not), so prompts that normalisation changes are compared apart from those it leaves alone.
    plain = [i for i in one if normalize_text(prompts[i]) == prompts[i]]
    reference = next((r for r in rows if r["method"] == BASELINE), None)
    for r in rows:
        r["compared_prompts"], r["plain_prompts"] = len(one), len(plain)
        if reference and r is not reference:
            for key, which in (("max_dp_vs_pipeline", one), ("max_dp_plain_vs_pipeline", plain)):
                r[key] = max((abs(r["probs"][i][k] - reference["probs"][i][k]) for i in which for k in labels),
                             default=0.0)
    for r in rows:
        r.pop("scores", None)
    return rows


def bench_mixed(pair: str, args, tmp: Path) -> dict:
    """One rules file with NLI and classifier rules, against its two halves run apart."""
    nli_shape, _, cls_shape = pair.partition(":")
    folder, labels = classifier_folder(cls_shape, Path(args.cache))
    prompts = work.real_prompts(args.prompts)
    (tmp / "prompts.json").write_text(json.dumps(prompts))
    spec = {"model": str(folder), "tokenizer": str(folder), "labels": labels, "device": "cpu",
            "prompts_file": str(tmp / "prompts.json"), "runner": "crossguard", "dtype": args.mixed_dtype,
            "nli_model": str(work.model_folder(nli_shape, Path(args.cache))), "nli_rules": args.nli_rules}
    print(f"# mixed: {nli_shape} NLI ({', '.join(args.nli_rules)}) + {cls_shape}, {len(prompts)} prompts, "
          f"--dtype {args.mixed_dtype}", flush=True)
    runs, times = {}, {}
    # ABBA order, best of two each: the CPU is shared, and drift would favour whichever ran last.
    for part in ("nli", "classifier", "both", "both", "classifier", "nli")[: 6 if args.mixed_repeat else 3]:
        r = run_worker({**spec, "part": part}, tmp)
        times.setdefault(part, []).append(r["seconds"])
        if part not in runs or r["seconds"] < runs[part]["seconds"]:
            runs[part] = r
        print(f"  {part}: {r['seconds']:.1f} s (load {r['load_s']:.1f} s, load avg {r['loadavg'][0]:.1f})", flush=True)
    for part, r in runs.items():
        r["all_seconds"] = times[part]
    apart = [{**a, **b} for a, b in zip(runs["nli"]["scores"], runs["classifier"]["scores"], strict=True)]
    diff = max((abs(v - apart[i][rule][key]) for i, rec in enumerate(runs["both"]["scores"])
                for rule, fields in rec.items() for key, v in fields.items()), default=0.0)
    for r in runs.values():
        r.pop("probs", None)
        r.pop("scores", None)
    return {"nli_shape": nli_shape, "classifier_shape": cls_shape, "nli_rules": args.nli_rules,
            "dtype": args.mixed_dtype, "prompts": len(prompts), "runs": runs, "max_dp_together_vs_apart": diff}


def _stage(r: dict, *names: str) -> str:
    s = sum(r["stages"].get(n, 0.0) for n in names)
    return f"{s:.1f}" if s else "-"


def print_table(rows: list[dict], mixed: dict | None) -> None:
    head = ["shape", "method", "dtype", "prompts/s", "tokens/s", "pad waste", "tokenise s", "pad s", "forward s",
            "CPU s", "load s", "peak RSS MB", "max |dp| unchanged by NFKC (prompts)", "max |dp| all (prompts)",
            f"x {BASELINE}", f"x {BASELINE} (CPU s)"]
    print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for r in rows:
        base = next((b for b in rows if b["shape"] == r["shape"] and b["method"] == BASELINE), None)
        waste = 1 - r["tokens"] / r["padded_tokens"] if r.get("padded_tokens") else None
        tokenise = _stage(r, "tokenise") if r["method"] != "loop" else _stage(r, "tokenise+pad")
        pad = "(in tokenise)" if r["method"] == "loop" else ("-" if r["method"] == "pipeline" else _stage(r, "pad"))
        cells = [r["shape"], r["method"], r["dtype"], f"{r['prompts'] / r['seconds']:.2f}",
                 f"{r['tokens'] / r['seconds']:.0f}", "-" if waste is None else f"{100 * waste:.1f}%", tokenise, pad,
                 _stage(r, "forward"), f"{r['cpu_s']:.1f}", f"{r['load_s']:.1f}", f"{r['peak_rss_mb']:.0f}",
                 f"{r['max_dp_plain_vs_pipeline']:.3g} ({r['plain_prompts']})" if "max_dp_vs_pipeline" in r else "-",
                 f"{r['max_dp_vs_pipeline']:.3g} ({r['compared_prompts']})" if "max_dp_vs_pipeline" in r else "-",
                 f"{base['seconds'] / r['seconds']:.2f}" if base else "-",
                 f"{base['cpu_s'] / r['cpu_s']:.2f}" if base else "-"]
        print("| " + " | ".join(cells) + " |")
    for r in rows:
        base = next((b for b in rows if b["shape"] == r["shape"] and b["method"] == BASELINE), None)
        if base is None or r["method"] not in ("crossguard", "truncate"):
            continue
        ratio = base["seconds"] / r["seconds"]
        print(f"{r['shape']}: {r['method']} {ratio:.2f}x the pipeline's prompts/s ({r['tokens']} tokens, "
              f"{r['padded_tokens']} padded, against the pipeline's {base['tokens']}; "
              f"{r['tokens'] / r['seconds'] / (base['tokens'] / base['seconds']):.2f}x its tokens/s) "
              f"(target >= 1.5x: {'met' if ratio >= 1.5 else 'NOT met'})")
    if mixed:
        runs = mixed["runs"]
        print(f"\nmixed file ({mixed['nli_shape']} NLI rules {', '.join(mixed['nli_rules'])} + "
              f"{mixed['classifier_shape']}, "
              f"{mixed['prompts']} prompts, {mixed['dtype']}):")
        for part in ("nli", "classifier", "both"):
            r = runs[part]
            print(f"  {part}: {r['seconds']:.1f} s scoring (runs: {', '.join(f'{t:.1f}' for t in r['all_seconds'])}), "
                  f"{r['load_s']:.1f} s load, {r['peak_rss_mb']:.0f} MB, {r['pairs']} rows, {r['tokens']} tokens, "
                  f"{r['padded_tokens']} padded, {r['batches']} passes, "
                  f"stages " + ", ".join(f"{k} {v:.1f}" for k, v in r["stages"].items()))
        apart = runs["nli"]["seconds"] + runs["classifier"]["seconds"]
        print(f"  together / apart (scoring): {runs['both']['seconds']:.1f} / {apart:.1f} s = "
              f"{runs['both']['seconds'] / apart:.2f}; load together / apart: {runs['both']['load_s']:.1f} / "
              f"{runs['nli']['load_s'] + runs['classifier']['load_s']:.1f} s; max |dp| together vs apart: "
              f"{mixed['max_dp_together_vs_apart']:.3g}")


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.partition(":")[2].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted(set(flags) & {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8", "amx_tile"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default="qwen2.5-0.5b-12,deberta-v3-base-2", help="SHAPE-LABELS, comma-separated")
    parser.add_argument("--prompts", type=int, default=32, help="real prompts (length quantiles of the moderation set)")
    parser.add_argument("--methods", default=",".join(ALL_METHODS), help=f"of {', '.join(ALL_METHODS)}")
    parser.add_argument("--mixed", default="modernbert-68m:deberta-v3-base-2",
                        help="NLI_SHAPE:CLASSIFIER_SHAPE for the mixed-file rows ('' to skip)")
    parser.add_argument("--nli-rules", default="jailbreak,prompt-injection",
                        help="rules of the default rules file kept in the mixed file")
    parser.add_argument("--mixed-dtype", default="float32")
    parser.add_argument("--repeat", type=int, default=1,
                        help="1: run pipeline and crossguard a second time (reverse order), keep the best; 0: once")
    parser.add_argument("--mixed-repeat", type=int, default=1,
                        help="1: run each part twice (ABBA order), keep the best; 0: once each")
    parser.add_argument("--cache", default=str(work.ROOT / ".bench"), help="where models are built")
    parser.add_argument("--out", default=None, help="write all figures to this JSON file")
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.nli_rules = [r for r in args.nli_rules.split(",") if r]
    unknown = set(args.methods) - set(ALL_METHODS)
    if unknown:
        parser.error(f"unknown methods: {', '.join(sorted(unknown))}")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    tmp = Path(tempfile.mkdtemp(prefix="crossguard-bench-cls-"))
    try:
        rows = [r for shape in args.shapes.split(",") if shape for r in bench_shape(shape.strip(), args, tmp)]
        mixed = bench_mixed(args.mixed, args, tmp) if args.mixed else None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if args.out:
        from crossguard_cli.engine.models.devices import native_bf16_cpu

        report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "cpu_flags": cpu_flags(), "native_bf16": native_bf16_cpu(), "versions": versions(),
                  "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "rows": rows, "mixed": mixed}
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(f"CPU flags: {' '.join(cpu_flags())}")
    print_table(rows, mixed)


if __name__ == "__main__":
    main()
