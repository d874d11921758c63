"""Cost of the learned-abstention heads model against the plain NLI model of the same encoder shape.

    python benchmarks/bench_heads.py --shape modernbert-150m --prompts 12 --repeats 3 \\
        --dtypes auto,float32 --out .bench/heads.json

Two random-weight models with the same ModernBERT encoder shape (`crossguard_cli.testing.SHAPES`,
weights drawn with std 0.02) and the same bert-base-uncased tokenizer (`assets/`), so both see the
same tokens: the plain sequence-classification NLI model (`build_model_folder`, its own
ModernBertPredictionHead + 3-way classifier) and the heads model (`build_heads_model`: `AutoModel`
encoder + the card's 527K-parameter NLI head and 67K-parameter abstention head, 512 and 128 wide).

Two measurements, each interleaved (plain, heads, then heads, plain, ...) so machine drift cancels:
  end to end   `Guard(model=...).check_many(prompts)` with the default rules, every rule's pairs
               (windows included); pairs/s of each and heads/plain time, per adjacent pair of runs.
  forward only the heads model's own module on fixed batches of real pairs: its encoder alone
               (`net.encoder(...)`) against encoder + heads (`net(...)`), and the plain model's
               forward; plus the heads alone on first-token vectors, which is their cost measured
               directly (the encoder/encoder+heads difference is below run-to-run noise).
The prompts are real ones (../shared/data, evenly spaced length quantiles). Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as work  # noqa: E402

SHAPES = ("modernbert-68m", "modernbert-150m", "modernbert-400m")


def heads_folder(shape: str, cache: Path) -> Path:
    """Build (once) and return the random-weight heads model of `shape` under `cache`."""
    from crossguard_cli.testing_heads import build_heads_model

    folder = cache / "models" / f"heads-{shape}"
    if not (folder / "task_heads.pt").is_file():
        build_heads_model(folder, shape=shape, tokenizer=work.load_tokenizer(), texts=work.real_prompts(65),
                          max_length=512)
    return folder


def count(module) -> int:
    return sum(p.numel() for p in module.parameters())


def end_to_end(guards: dict, prompts: list[str], repeats: int) -> dict:
    """Interleaved `check_many` runs: seconds per run and the work (pairs, tokens) of each model."""
    runs = {name: [] for name in guards}
    work_done = {}
    names = list(guards)
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            guard = guards[name]
            before = guard.stats
            start = time.perf_counter()
            results = list(guard.check_many(prompts))
            seconds = time.perf_counter() - start
            after = guard.stats
            assert len(results) == len(prompts)
            runs[name].append(seconds)
            work_done[name] = {k: after[k] - before.get(k, 0) for k in after}
            print(f"    rep {rep + 1} {name}: {seconds:.1f} s", flush=True)
    return {"seconds": runs, "work": work_done}


def batches_of(tokenizer, prompts: list[str], hyps: list[str], size: int, max_length: int) -> list[dict]:
    """Pairs (prompt, hypothesis) of the real workload, truncated, in batches of `size` padded to the longest."""
    pairs = [(p, h) for p in prompts for h in hyps]
    return [dict(tokenizer([a for a, _ in pairs[i:i + size]], [b for _, b in pairs[i:i + size]], padding=True,
                           truncation=True, max_length=max_length, return_tensors="pt"))
            for i in range(0, len(pairs), size)]


def forward_only(heads_model, plain_model, prompts: list[str], hyps: list[str], size: int, repeats: int) -> dict:
    """Interleaved forward passes: heads' encoder alone, encoder + heads, plain model; and the heads alone."""
    import torch

    net, plain = heads_model.module, plain_model.module
    names = [n for n in heads_model.input_names if n in ("input_ids", "attention_mask")]
    batches = [{k: v for k, v in b.items() if k in names}
               for b in batches_of(heads_model.tokenizer, prompts, hyps, size, heads_model.max_length)]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["attention_mask"].numel() for b in batches)
    pairs = sum(len(b["input_ids"]) for b in batches)

    def encoder_only(b):
        return net.encoder(**b).last_hidden_state[:, 0].float()

    def encoder_heads(b):
        return net(**b).logits

    def plain_forward(b):
        return plain(**b).logits

    steps = {"encoder": encoder_only, "encoder+heads": encoder_heads, "plain": plain_forward}
    order = list(steps)
    times = {k: [] for k in steps}
    with torch.inference_mode():
        for b in batches:  # warm-up
            for fn in steps.values():
                fn(b)
        # Interleaved batch by batch, the order rotating, so drift within a pass cancels too.
        for rep in range(repeats):
            total = dict.fromkeys(steps, 0.0)
            for i, b in enumerate(batches):
                k = (rep + i) % len(order)
                for name in order[k:] + order[:k]:
                    start = time.perf_counter()
                    steps[name](b)
                    total[name] += time.perf_counter() - start
            for name in steps:
                times[name].append(total[name])
        # The heads alone, on first-token vectors of the same batches (float32, as the model runs them).
        width = net.encoder.config.hidden_size
        pooled = [torch.randn(len(b["input_ids"]), width) for b in batches]

        def heads_only():
            for x in pooled:
                hidden = net.nli_hidden(x)
                nli = net.nli_output(hidden)
                net.abstention_head(torch.cat([hidden, nli], dim=-1))

        for _ in range(5):
            heads_only()
        head_times = []
        for _ in range(max(20, repeats)):
            start = time.perf_counter()
            heads_only()
            head_times.append(time.perf_counter() - start)
    enc = [t for t in times["encoder"]]
    paired = [h / e for h, e in zip(times["encoder+heads"], enc, strict=True)]
    return {"batches": len(batches), "batch_size": size, "pairs": pairs, "tokens": tokens, "padded_tokens": padded,
            "seconds": times, "heads_only_s": head_times,
            "encoder_heads_over_encoder": paired,
            "heads_only_share": statistics.median(head_times) / statistics.median(enc)}


def forward_prompts(prompts: list[str], n: int) -> list[str]:
    """`n` of the prompts around the median length (all when n is 0)."""
    if not n or n >= len(prompts):
        return prompts
    by_length = sorted(prompts, key=len)
    mid = max(0, len(prompts) // 2 - n // 2)
    return by_length[mid:mid + n]


def bench_dtype(dtype: str, plain_folder: Path, heads_path: Path, prompts: list[str], hyps: list[str], args) -> dict:
    from crossguard_cli import Guard

    print(f"## dtype {dtype}", flush=True)
    guards = {"plain": Guard(None, model=str(plain_folder), device="cpu", dtype=dtype),
              "heads": Guard(None, model=str(heads_path), device="cpu", dtype=dtype)}
    resolved = {k: str(g.model.dtype).replace("torch.", "") for k, g in guards.items()}
    assert guards["heads"].abstains and not guards["plain"].abstains
    for g in guards.values():  # warm-up, as bench_throughput does
        list(g.check_many(prompts[:2]))
    print(f"  end to end ({len(prompts)} prompts x {len(hyps)} hypotheses, {args.repeats} repeats each):", flush=True)
    e2e = end_to_end(guards, prompts, args.repeats)
    print(f"  forward only ({args.forward_prompts} prompts x {len(hyps)} hypotheses, batches of "
          f"{args.batch_size}, {args.forward_repeats} repeats):", flush=True)
    fwd = forward_only(guards["heads"].model, guards["plain"].model, forward_prompts(prompts, args.forward_prompts),
                       hyps, args.batch_size, args.forward_repeats)
    net = guards["heads"].model.module
    params = {"encoder": count(net.encoder),
              "nli_head": count(net.nli_hidden) + count(net.nli_output),
              "abstention_head": count(net.abstention_head),
              "plain_total": count(guards["plain"].model.module)}
    params["plain_head"] = params["plain_total"] - count(guards["plain"].model.module.base_model)
    return {"dtype": dtype, "resolved_dtype": resolved, "end_to_end": e2e, "forward": fwd, "params": params}


def summarise(r: dict) -> dict:
    e = r["end_to_end"]
    plain, heads = e["seconds"]["plain"], e["seconds"]["heads"]
    pairs = e["work"]["plain"]["pairs"]
    ratios = [h / p for h, p in zip(heads, plain, strict=True)]
    return {"pairs": pairs, "plain_pairs_s": pairs / statistics.median(plain),
            "heads_pairs_s": e["work"]["heads"]["pairs"] / statistics.median(heads),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ratio_of_medians": statistics.median(heads) / statistics.median(plain)}


def print_tables(rows: list[dict], shape: str) -> None:
    print("\n| shape | dtype | model | pairs | tokens | s per run (median; all) | pairs/s | heads/plain time |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        s = summarise(r)
        e = r["end_to_end"]
        for name in ("plain", "heads"):
            secs = e["seconds"][name]
            w = e["work"][name]
            ratio = "1.000" if name == "plain" else (f"**{s['ratio_median']:.3f}** (median of {len(secs)} adjacent "
                                                     f"pairs; {s['ratio_min']:.3f}-{s['ratio_max']:.3f})")
            print(f"| {shape} | {r['resolved_dtype'][name]} | {name} | {w['pairs']} | {w['tokens']} | "
                  f"{statistics.median(secs):.2f}; {', '.join(f'{x:.2f}' for x in secs)} | "
                  f"{w['pairs'] / statistics.median(secs):.2f} | {ratio} |")
    print("\n| shape | dtype | pass | pairs | tokens (padded) | ms per pass over all batches (median) | x encoder |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        f = r["forward"]
        enc = statistics.median(f["seconds"]["encoder"])
        for name in ("encoder", "encoder+heads", "plain"):
            med = statistics.median(f["seconds"][name])
            print(f"| {shape} | {r['resolved_dtype']['heads']} | {name} | {f['pairs']} | {f['tokens']} "
                  f"({f['padded_tokens']}) | {1000 * med:.1f} | {med / enc:.4f} |")
        print(f"| {shape} | float32 | heads alone (on first-token vectors) | {f['pairs']} | - | "
              f"{1000 * statistics.median(f['heads_only_s']):.3f} | {f['heads_only_share']:.5f} |")
    for r in rows:
        p, f = r["params"], r["forward"]
        print(f"{r['resolved_dtype']['heads']}: heads alone cost {100 * f['heads_only_share']:.3f}% of the encoder's "
              f"forward; (encoder+heads)/encoder per adjacent pair, median "
              f"{statistics.median(f['encoder_heads_over_encoder']):.4f} "
              f"(range {min(f['encoder_heads_over_encoder']):.4f}-{max(f['encoder_heads_over_encoder']):.4f}); "
              f"end to end heads/plain {summarise(r)['ratio_median']:.3f}")
    p = rows[0]["params"]
    print(f"parameters: encoder {p['encoder'] / 1e6:.1f}M, NLI head {p['nli_head']:,}, abstention head "
          f"{p['abstention_head']:,}; plain model {p['plain_total'] / 1e6:.1f}M of which its head "
          f"{p['plain_head']:,}")


def cpu_flags() -> list[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = next((line.partition(":")[2].split() for line in text.splitlines() if line.startswith("flags")), [])
    return sorted({"avx512_bf16", "amx_bf16", "amx_tile", "amx_int8", "avx512f", "avx512_vnni"} & set(flags))


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    return next((line.partition(":")[2].strip() for line in text.splitlines() if line.startswith("model name")), "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="modernbert-150m", choices=SHAPES)
    parser.add_argument("--prompts", type=int, default=12, help="real prompts, end to end")
    parser.add_argument("--repeats", type=int, default=3, help="end-to-end runs of each model, interleaved")
    parser.add_argument("--dtypes", default="auto", help="comma-separated: auto, float32, bfloat16")
    parser.add_argument("--forward-prompts", type=int, default=2, help="N prompts of median length, forward only")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--forward-repeats", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=16, help="pairs per forward pass, forward only")
    parser.add_argument("--cache", default=str(work.ROOT / ".bench"), help="where models are built")
    parser.add_argument("--out", default=None, help="write all figures to this JSON file")
    args = parser.parse_args(argv)
    import torch

    from crossguard_cli.engine.models.loader import quiet_libraries

    quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    cache = Path(args.cache)
    plain_folder = work.model_folder(args.shape, cache)
    heads_path = heads_folder(args.shape, cache)
    prompts, hyps = work.real_prompts(args.prompts), work.hypotheses()
    print(f"# {args.shape}: {len(prompts)} real prompts x {len(hyps)} hypotheses (default rules); CPU "
          f"{cpu_model()!r} flags {' '.join(cpu_flags())}; torch {torch.__version__}, {torch.get_num_threads()} "
          "threads", flush=True)
    rows = [bench_dtype(d.strip(), plain_folder, heads_path, prompts, hyps, args) for d in args.dtypes.split(",")]
    print_tables(rows, args.shape)
    if args.out:
        import transformers

        report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "command": " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]), "shape": args.shape,
                  "cpu": cpu_model(), "cpu_flags": cpu_flags(), "torch": torch.__version__,
                  "transformers": transformers.__version__, "threads": torch.get_num_threads(),
                  "rows": [{**r, "summary": summarise(r)} for r in rows]}
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
