"""The benchmark's work: shaped random-weight models, the real prompts, the pairs and their FLOPs.

Weights do not change the cost of a forward pass, shapes and token counts do; so each model
is a random-weight folder with a real architecture's sizes (`crossguard_cli.testing.SHAPES`)
and bert-base-uncased's real 30,522-piece WordPiece vocabulary (`assets/`), which cuts English
into about 1.4 pieces per whitespace word, as trained models do. Everything is built from
files in this repository, so a machine without network or extra packages can rebuild it.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
TOKENIZER = HERE / "assets" / "bert-base-uncased-tokenizer.json"
DATA = ROOT.parent / "shared" / "data" / "openai-moderation-1680.jsonl.gz"

# shape -> (architecture, id2label order): CrossingGuard's order for the ModernBERT family, the
# cross-encoder/nli-* order for DeBERTa, so both label mappings are exercised.
ARCH = {
    "modernbert-68m": ("modernbert", ("entailment", "neutral", "contradiction")),
    "modernbert-150m": ("modernbert", ("entailment", "neutral", "contradiction")),
    "modernbert-400m": ("modernbert", ("entailment", "neutral", "contradiction")),
    "deberta-v3-small": ("deberta-v2", ("contradiction", "entailment", "neutral")),
    "deberta-v3-base": ("deberta-v2", ("contradiction", "entailment", "neutral")),
    "tiny": ("bert", ("entailment", "neutral", "contradiction")),
}


def load_tokenizer():
    """The stored bert-base-uncased `tokenizers.Tokenizer` (no truncation or padding set)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(TOKENIZER))
    tok.no_truncation()
    tok.no_padding()
    return tok


def model_folder(shape: str, cache: Path) -> Path:
    """Build (once) and return the random-weight model folder of `shape` under `cache`."""
    from crossguard_cli.testing import SHAPES, build_model_folder

    if shape not in ARCH or shape not in SHAPES:
        raise SystemExit(f"unknown shape {shape!r}; choose from {', '.join(ARCH)}")
    folder = cache / "models" / shape
    marker = folder / "crossguard-test-model.json"
    if not marker.exists():
        arch, labels = ARCH[shape]
        build_model_folder(folder, arch=arch, labels=labels, shape=shape, tokenizer=load_tokenizer(), max_length=512)
    return folder


def parameter_counts(folder: Path) -> dict[str, int]:
    """Total, embedding and non-embedding parameters, counted on the meta device (no memory)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(folder)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config)
    total = sum(p.numel() for p in model.parameters())
    embed = sum(p.numel() for n, p in model.named_parameters() if "embed" in n and p.dim() == 2)
    return {"total": total, "embedding": embed, "non_embedding": total - embed,
            "layers": config.num_hidden_layers, "hidden": config.hidden_size}


def real_prompts(n: int) -> list[str]:
    """`n` real prompts with the data set's length mix: evenly spaced quantiles of length.

    Quantiles keep the mean length and a share of the longest (past the 512-token window)
    even for small `n`, which a small random sample would not; file order is kept.
    """
    with gzip.open(DATA, "rt", encoding="utf-8") as f:
        prompts = [json.loads(line)["prompt"] for line in f]
    by_length = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    n = max(1, min(n, len(prompts)))
    picked = sorted({by_length[int((k + 0.5) * len(prompts) / n)] for k in range(n)})
    return [prompts[i] for i in picked]


def hypotheses() -> list[str]:
    from crossguard_cli.rules import load_rules

    return list(load_rules(None).hypotheses)


def pair_lengths(prompts: list[str], hyps: list[str], max_length: int = 512) -> dict[str, list[int]]:
    """Tokens of every pair as a plain truncating cross-encoder sees them, and as crossguard's windows do.

    Both add 3 special tokens ([CLS] A [SEP] B [SEP]); truncation keeps the first tokens of a
    long prompt, crossguard scores overlapping windows that cover all of it.
    """
    from crossguard_cli.engine.pairs import window_spans
    from crossguard_cli.records.text import normalize_text

    tok = load_tokenizer()
    p_len = [len(e.ids) for e in tok.encode_batch([normalize_text(p) for p in prompts], add_special_tokens=False)]
    h_len = [len(e.ids) for e in tok.encode_batch(hyps, add_special_tokens=False)]
    truncated, windowed = [], []
    for p in p_len:
        for h in h_len:
            truncated.append(min(p + h + 3, max_length))
            for start, end in window_spans(p, max_length - 3 - h):
                windowed.append(end - start + h + 3)
    words = sum(len(p.split()) for p in prompts)
    return {"truncated": truncated, "windowed": windowed, "prompt_tokens": p_len,
            "tokens_per_word": [sum(p_len) / max(1, words)]}


def flops(lengths: list[int], params: dict[str, int]) -> float:
    """Forward FLOPs of these pairs: sum over pairs of 2*N*t + 4*L*d*t^2.

    N is the non-embedding parameter count (every weight is one multiply-add per token), and
    4*L*d*t^2 is attention's QK^T and AV products over L layers of width d. DeBERTa's extra
    relative-position products and ModernBERT's sliding-window savings are left out.
    """
    n, layers, d = params["non_embedding"], params["layers"], params["hidden"]
    return float(sum(2 * n * t + 4 * layers * d * t * t for t in lengths))
