"""How much can batching gain on this device? Per-pair cost of raw forward passes at batch 1, 8, 32.

    python benchmarks/batch_gain.py --shape modernbert-68m --tokens 160,64
    python benchmarks/batch_gain.py --shape qwen2.5-0.5b-12 --tokens 160,64   (a classifier shape of
                                                                           bench_classifiers.py)

The ceiling for micro-batching (`crossguard serve`): pairs of equal length, no padding, the
model's forward pass alone (torch, fp32, random weights of the real shape, std 0.02). The ratio
of batch 1 to the best larger batch is the most any batcher can gain here, before padding.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _workload as work  # noqa: E402


def per_pair_ms(model, batch: int, tokens: int, repeat: int) -> float:
    import torch

    ids = torch.randint(1000, 20000, (batch, tokens))
    mask = torch.ones_like(ids)
    best = float("inf")
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)  # warm-up
        for _ in range(repeat):
            start = time.perf_counter()
            model(input_ids=ids, attention_mask=mask)
            best = min(best, time.perf_counter() - start)
    return 1000 * best / batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", default="modernbert-68m")
    parser.add_argument("--tokens", default="160,64", help="pair lengths, comma-separated")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per cell (best is kept)")
    args = parser.parse_args()
    from crossguard_cli.engine.models.loader import quiet_libraries

    quiet_libraries()
    import torch
    from transformers import AutoModelForSequenceClassification

    if args.shape in work.ARCH:
        folder = work.model_folder(args.shape, work.ROOT / ".bench")
    else:  # a classifier shape, SHAPE-LABELS (bench_classifiers.py builds it the same way)
        from bench_classifiers import classifier_folder

        folder, _ = classifier_folder(args.shape, work.ROOT / ".bench")
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), dtype=torch.float32).eval()
    if model.config.pad_token_id is None:  # a decoder classifier (DuoGuard's shape) pads with eos
        model.config.pad_token_id = model.config.eos_token_id
    batches = [int(b) for b in args.batches.split(",")]
    print(f"# {args.shape}, fp32, torch {torch.__version__}, {torch.get_num_threads()} threads; ms per pair "
          f"(best of {args.repeat})\n")
    print("| tokens | " + " | ".join(f"batch {b}" for b in batches) + " | batch 1 / best |")
    print("|---|" + "---|" * (len(batches) + 1))
    for tokens in (int(t) for t in args.tokens.split(",")):
        ms = [per_pair_ms(model, b, tokens, args.repeat) for b in batches]
        print(f"| {tokens} | " + " | ".join(f"{m:.0f}" for m in ms) + f" | {ms[0] / min(ms):.2f}x |", flush=True)


if __name__ == "__main__":
    main()
