"""One benchmark method in its own process, so each peak RSS and GPU peak is that method's alone.

Usage (by bench_throughput.py): python benchmarks/_workers.py SPEC.json RESULT.json, where SPEC
holds method, model folder, device and the prompts file. Every method loads its model, warms
up on two prompts, then is timed on all of them; forward pre-hooks on the transformers module
count the real and padded tokens each baseline feeds, so padding waste is measured, not guessed.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

WARMUP_PROMPTS = 2


def _count_tokens(module, stats: dict) -> None:
    """Count pairs, real tokens and padded tokens of every call of `module` (the base encoder:
    sentence-transformers calls the head's `forward` directly, which hooks never see)."""

    def hook(_module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1:
            mask = args[1]
        if mask is not None:
            stats["pairs"] += int(mask.shape[0])
            stats["tokens"] += int(mask.sum())
            stats["padded_tokens"] += int(mask.numel())
            stats["batches"] += 1

    module.register_forward_pre_hook(hook, with_kwargs=True)


def _zero(stats: dict) -> None:
    for key in stats:
        stats[key] = 0


def run_cross_encoder(spec: dict, prompts: list[str], hyps: list[str]) -> dict:
    """Baseline (1): the model card's usage, `CrossEncoder(model).predict(pairs)`, all defaults."""
    from sentence_transformers import CrossEncoder

    stats = {"pairs": 0, "tokens": 0, "padded_tokens": 0, "batches": 0}
    start = time.perf_counter()
    model = CrossEncoder(spec["model"], device=spec["device"])
    load = time.perf_counter() - start
    _count_tokens(model[0].auto_model.base_model, stats)
    model.predict([(p, h) for p in prompts[:WARMUP_PROMPTS] for h in hyps])
    _zero(stats)
    start = time.perf_counter()
    model.predict([(p, h) for p in prompts for h in hyps])
    return {"load_s": load, "seconds": time.perf_counter() - start, "dtype": "float32", **stats}


def run_zero_shot(spec: dict, prompts: list[str], hyps: list[str]) -> dict:
    """Baseline (2): transformers' zero-shot-classification pipeline, multi_label, hypotheses as labels.

    The pipeline finds the entailment column by a label2id name starting with "entail" and
    runs one (prompt, hypothesis) pair per forward pass (its default batch_size of 1).
    """
    from transformers import pipeline

    stats = {"pairs": 0, "tokens": 0, "padded_tokens": 0, "batches": 0}
    start = time.perf_counter()
    pipe = pipeline("zero-shot-classification", model=spec["model"], device=spec["device"])
    load = time.perf_counter() - start
    _count_tokens(pipe.model.base_model, stats)
    kwargs = dict(candidate_labels=hyps, multi_label=True, hypothesis_template="{}")
    pipe(prompts[:WARMUP_PROMPTS], **kwargs)
    _zero(stats)
    start = time.perf_counter()
    pipe(prompts, **kwargs)
    return {"load_s": load, "seconds": time.perf_counter() - start, "dtype": str(pipe.model.dtype), **stats}


def run_crossguard(spec: dict, prompts: list[str], hyps: list[str]) -> dict:
    """(3) crossguard in-process: the Scorer, fed in the groups `crossguard batch` uses."""
    from crossguard_cli.engine.models.loader import quiet_libraries
    from crossguard_cli.engine.scorer import Scorer
    from crossguard_cli.rules import load_rules

    quiet_libraries()
    start = time.perf_counter()
    backend = spec.get("backend", "torch")
    if backend == "torch":
        from crossguard_cli.engine.models.loader import load_model

        model = load_model(spec["model"], device=spec["device"], dtype=spec.get("dtype", "auto"))
    elif backend.startswith("openvino"):
        from crossguard_cli.engine.models.nli_openvino import load_openvino_model

        model = load_openvino_model(spec["model"], backend=backend, cache_dir=spec.get("cache"))
    else:
        from crossguard_cli.engine.models.nli_onnx import load_runtime_model

        model = load_runtime_model(spec["model"], backend=backend, cache_dir=spec.get("cache"))
    scorer = Scorer(model, load_rules(None))
    load = time.perf_counter() - start
    scorer.score(prompts[:WARMUP_PROMPTS])
    _zero(scorer.stats)
    from crossguard_cli.engine.stream import group_size_for

    group = group_size_for(scorer)
    start = time.perf_counter()
    results = []
    for i in range(0, len(prompts), group):
        results.extend(scorer.score(prompts[i : i + group]))
    seconds = time.perf_counter() - start
    scores = [{name: [s.entailment, s.neutral, s.contradiction] for name, s in r.rules.items()} for r in results]
    return {"load_s": load, "seconds": seconds, "dtype": str(model.dtype).replace("torch.", ""),
            "scores": scores, **scorer.stats}


METHODS = {"cross-encoder": run_cross_encoder, "zero-shot": run_zero_shot, "crossguard": run_crossguard}


def main(spec_path: str, out_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    prompts = json.loads(Path(spec["prompts_file"]).read_text())
    hyps = spec["hypotheses"]
    result = METHODS[spec["runner"]](spec, prompts, hyps)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if str(spec["device"]).startswith("cuda"):
        import torch

        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:3])
