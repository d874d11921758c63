"""One classifier benchmark method in its own process (the classifier twin of `_workers.py`).

Usage (by bench_classifiers.py): python benchmarks/_classifier_workers.py SPEC.json RESULT.json.
Every method loads its model, warms up on two prompts, then is timed on all of them; each
returns every prompt's probabilities in percent by label, and the time spent in each stage
(tokenising, padding, forward, the rest), measured by wrapping the stage functions.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _workers import WARMUP_PROMPTS, _count_tokens, _zero  # noqa: E402

MAX_LENGTH = 512


def _timed(obj, attr: str, stages: dict, stage: str) -> None:
    """Wrap `obj.attr` so the seconds spent in it add up in `stages[stage]`."""
    inner = getattr(obj, attr)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            stages[stage] += time.perf_counter() - start

    setattr(obj, attr, wrapper)


def _activation(model) -> str:
    return "sigmoid" if model.config.problem_type == "multi_label_classification" else "softmax"


def _stats() -> dict:
    return {"pairs": 0, "tokens": 0, "padded_tokens": 0, "batches": 0}


def run_pipeline(spec: dict, prompts: list[str]) -> dict:
    """Baseline: `pipeline("text-classification", top_k=None)`, its defaults (batch_size 1), with
    truncation at 512 tokens (the pipeline has no windows; without it Qwen reads 4k-token prompts whole)."""
    from transformers import pipeline

    stats, stages = _stats(), defaultdict(float)
    start = time.perf_counter()
    pipe = pipeline("text-classification", model=spec["model"], tokenizer=spec["tokenizer"], device=spec["device"],
                    top_k=None)
    load = time.perf_counter() - start
    _count_tokens(pipe.model.base_model, stats)
    kwargs = dict(truncation=True, max_length=MAX_LENGTH)
    pipe(prompts[:WARMUP_PROMPTS], **kwargs)
    _zero(stats)
    for attr, stage in (("preprocess", "tokenise"), ("forward", "forward"), ("postprocess", "postprocess")):
        _timed(pipe, attr, stages, stage)
    start, cpu = time.perf_counter(), time.process_time()
    out = pipe(prompts, **kwargs)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    probs = [{d["label"]: 100 * d["score"] for d in row} for row in out]
    return {"load_s": load, "seconds": seconds, "cpu_s": cpu, "dtype": str(pipe.model.dtype).replace("torch.", ""),
            "probs": probs, "stages": dict(stages), **stats}


def run_loop(spec: dict, prompts: list[str]) -> dict:
    """Baseline: the plain loop a user writes: batches of 32 in file order, padded to the longest,
    truncated at 512, `torch.inference_mode()`, the model's own activation."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    stats, stages = _stats(), defaultdict(float)
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(spec["tokenizer"])
    model = AutoModelForSequenceClassification.from_pretrained(spec["model"]).eval()
    if tok.pad_token is None:  # DuoGuard's card: pad with eos, and tell the model
        tok.pad_token = tok.eos_token
    model.config.pad_token_id = tok.pad_token_id
    load = time.perf_counter() - start
    _count_tokens(model.base_model, stats)
    act = torch.sigmoid if _activation(model) == "sigmoid" else (lambda x: torch.softmax(x, -1))
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]

    def score(batch: list[str]) -> list[dict]:
        t0 = time.perf_counter()
        enc = tok(batch, padding=True, truncation=True, max_length=MAX_LENGTH, return_tensors="pt")
        t1 = time.perf_counter()
        with torch.inference_mode():
            p = act(model(**enc).logits.float())
        t2 = time.perf_counter()
        stages["tokenise+pad"] += t1 - t0
        stages["forward"] += t2 - t1
        return [dict(zip(labels, (100 * row).tolist(), strict=True)) for row in p]

    score(prompts[:WARMUP_PROMPTS])
    _zero(stats)
    stages.clear()
    start, cpu = time.perf_counter(), time.process_time()
    probs = [row for i in range(0, len(prompts), 32) for row in score(prompts[i : i + 32])]
    return {"load_s": load, "seconds": time.perf_counter() - start, "cpu_s": time.process_time() - cpu,
            "dtype": str(model.dtype).replace("torch.", ""),
            "probs": probs, "stages": dict(stages), **stats}


def _rules(spec: dict, part: str) -> dict:
    """The rules mapping of this run: the classifier's rules, the NLI rules, or both in one file."""
    mapping: dict = {"version": 1, "rules": []}
    if part in ("nli", "both"):
        from crossguard_cli.rules import load_rules

        keep = set(spec["nli_rules"])
        mapping["rules"] += [{"name": r.name, "hypotheses": list(r.hypotheses)} for r in load_rules(None).rules
                             if r.name in keep]
    if part in ("classifier", "both"):
        mapping["classifiers"] = {"bench": {"model": spec["model"], "tokenizer": spec["tokenizer"],
                                            "max_length": MAX_LENGTH}}
        mapping["rules"] += [{"name": f"c-{i}", "classifier": "bench", "label": label}
                             for i, label in enumerate(spec["labels"])]
    return mapping


def run_crossguard(spec: dict, prompts: list[str]) -> dict:
    """crossguard's `Guard(...).check_many` (what `batch` runs, without its reader and writer
    threads), rules naming every column; probabilities from the output records (percent, 2 decimals)."""
    from crossguard_cli import Guard
    from crossguard_cli.engine.models.loader import quiet_libraries

    quiet_libraries()
    part = spec.get("part", "classifier")
    stages = defaultdict(float)
    start = time.perf_counter()
    guard = Guard(_rules(spec, part), model=spec.get("nli_model"), device=spec["device"], dtype=spec["dtype"],
                  long_input=spec.get("long_input", "window"))
    load = time.perf_counter() - start
    guard.check_many(prompts[:WARMUP_PROMPTS])
    scorer = guard._scorer
    parts = getattr(scorer, "parts", [scorer])
    for p in parts:
        _zero(p.stats)
        _timed(p, "prepare", stages, "tokenise")  # normalise, tokenise, plan windows
        _timed(p.assembler, "build", stages, "pad")  # batches padded into arrays
        _timed(p.model, "logits", stages, "forward")
        _timed(p, "finish", stages, "reduce")
    start, cpu = time.perf_counter(), time.process_time()
    results = guard.check_many(prompts)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    records = [r.to_dict() for r in results]
    bad = [r for r in records if r["status"] != "ok"]
    if bad:
        raise SystemExit(f"{len(bad)} records not scored: {bad[0]}")
    by_rule = {f"c-{i}": label for i, label in enumerate(spec.get("labels", ()))}
    probs = [{by_rule.get(k, k): v.get("probability", v.get("entailment")) for k, v in r["scores"].items()}
             for r in records]
    stats = {key: sum(p.stats[key] for p in parts) for key in ("pairs", "tokens", "padded_tokens", "batches")}
    return {"load_s": load, "seconds": seconds, "cpu_s": cpu,
            "dtype": str(guard.models[-1].dtype).replace("torch.", ""),
            "dtypes": [str(m.dtype).replace("torch.", "") for m in guard.models], "probs": probs,
            "scores": [r["scores"] for r in records], "windows": [r["windows"] for r in records],
            "stages": dict(stages), **stats}


METHODS = {"pipeline": run_pipeline, "loop": run_loop, "crossguard": run_crossguard}


def peak_rss_mb() -> float:
    """This process's own peak RSS: VmHWM starts afresh at exec, while ru_maxrss carries the parent's
    peak over fork and exec (the driver that built a 2 GB model would show in every row)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(spec_path: str, out_path: str) -> None:
    import os

    spec = json.loads(Path(spec_path).read_text())
    prompts = json.loads(Path(spec["prompts_file"]).read_text())
    load_before = os.getloadavg()[0]
    result = METHODS[spec["runner"]](spec, prompts)
    result["loadavg"] = [load_before, os.getloadavg()[0]]
    result["peak_rss_mb"] = peak_rss_mb()
    Path(out_path).write_text(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:3])
