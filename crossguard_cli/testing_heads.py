"""Random-weight learned-abstention heads models, for tests, benchmarks and trying crossguard offline.

The real heads need ModernBERT-large and a download; the tests need the same format without
either. `build_heads_model` writes what the model card publishes (`task_heads.pt` saved with
`torch.save(state_dict)`, a config.json and a README.md naming `base_model`) on top of a tiny
random ModernBERT encoder saved with `save_pretrained`, so loading goes through the real
files, tokenizer and torch maths; the probabilities mean nothing.

Example:
    >>> from crossguard_cli.testing_heads import build_heads_model
    >>> path = build_heads_model("/tmp/heads")            # then: crossguard check --model /tmp/heads "hi"
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from crossguard_cli.testing import _FALLBACK_TEXT, SHAPES, _config, _wrap_tokenizer, train_wordpiece

BASE_MODEL_IN = ("both", "config", "readme", "none")  # where the heads name their encoder


def build_encoder_folder(path: str | Path, *, shape: str | dict = "tiny", texts: Iterable[str] | None = None,
                         vocab_size: int = 2000, max_length: int = 512, seed: int = 0, tokenizer=None) -> Path:
    """Write a random-weight ModernBERT encoder (`AutoModel`) with a fast WordPiece tokenizer.

    Weight matrices are drawn as `crossguard_cli.testing` draws them: normal with std 0.2 for
    a tiny encoder (hidden size <= 64), else 0.02 (the config's own initialisation). At 0.02 a
    tiny encoder's first-token vectors differ from pair to pair by 0.2% only, so the heads' first
    Linear would have to cancel a large common part in float32, and its rounding (which differs
    between a batch and a single pair) would be as large as the signal a fidelity test compares.
    """
    import torch
    from transformers import AutoModel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = tokenizer if tokenizer is not None else train_wordpiece(texts or [_FALLBACK_TEXT], vocab_size)
    sizes = dict(SHAPES[shape] if isinstance(shape, str) else shape)
    rows = max(tok.get_vocab_size(), sizes.pop("vocab_size", 0))
    config = _config("modernbert", sizes, rows, ("LABEL_0", "LABEL_1"), max_length)
    config.initializer_range = 0.2 if sizes["hidden_size"] <= 64 else 0.02
    config.bos_token_id, config.eos_token_id = config.cls_token_id, config.sep_token_id  # in this vocabulary
    torch.manual_seed(seed)
    model = AutoModel.from_config(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, config.initializer_range)
    model.save_pretrained(path)
    _wrap_tokenizer(tok, "modernbert", max_length).save_pretrained(path)
    return path


def random_heads(width: int, *, inner: int = 512, abstain: int = 128, seed: int = 0, features=None) -> dict:
    """A state dict of the card's heads for an encoder of hidden size `width`, with random weights.

    Built from the card's own `nn.Sequential` layers, so the key names are the ones the card's
    code saves and loads (`nli_hidden.0.weight`, ..., `abstention_head.4.bias`).

    Args:
        features: first-token vectors of the encoder on some pairs, shape (n, width). A random
            encoder's vectors share a large common part, so random heads would give every pair
            nearly the same scores; the first Linear is folded with a standardisation on these
            vectors (as a trained head's weights are fitted to its encoder), so scores differ
            from pair to pair and a pooling or padding mistake shows.
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    heads = nn.ModuleDict({
        "nli_hidden": nn.Sequential(nn.Linear(width, inner), nn.LayerNorm(inner), nn.GELU(), nn.Dropout(0.1)),
        "nli_output": nn.Linear(inner, 3),
        "abstention_head": nn.Sequential(nn.Linear(inner + 3, abstain), nn.LayerNorm(abstain), nn.GELU(),
                                         nn.Dropout(0.1), nn.Linear(abstain, 2)),
    })
    with torch.no_grad():
        for name, p in heads.named_parameters():
            if ".1." in name:  # LayerNorm's ones and zeros would hide a mix-up of its weight and bias
                p.add_(torch.randn_like(p) * 0.1)
        for last in (heads["nli_output"], heads["abstention_head"][4]):
            last.weight.mul_(4.0)  # logits of a few units: probabilities across the whole range
        if features is not None and len(features) > 1:
            first = heads["nli_hidden"][0]
            mean = features.float().mean(0)
            scale = float((features.float() - mean).std().clamp_min(1e-6))
            first.weight.div_(scale)
            first.bias.sub_(first.weight @ mean)
    return {k: v.detach().clone() for k, v in heads.state_dict().items()}


def first_token_vectors(encoder: str | Path, texts: Sequence[str], pairs: int = 64):
    """The encoder's first-token vectors on (text, next text) pairs: what the heads will see."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    lines = [t for t in texts if t.strip()][: pairs + 1] or [_FALLBACK_TEXT]
    firsts, seconds = lines[:-1] or lines, lines[1:] or lines
    model, tok = AutoModel.from_pretrained(encoder).eval(), AutoTokenizer.from_pretrained(encoder)
    batch = tok(firsts, seconds, padding=True, truncation=True, max_length=128, return_tensors="pt")
    with torch.inference_mode():
        return model(**batch).last_hidden_state[:, 0]


def build_heads_model(
    folder: str | Path,
    *,
    encoder_folder: str | Path | None = None,
    seed: int = 0,
    shape: str | dict = "tiny",
    texts: Sequence[str] | None = None,
    vocab_size: int = 2000,
    max_length: int = 512,
    tokenizer=None,
    inner: int = 512,
    abstain: int = 128,
    base_model_in: str = "both",
) -> Path:
    """Write a heads model folder: `task_heads.pt`, config.json and README.md on a tiny random encoder.

    Args:
        folder: the heads folder to create.
        encoder_folder: where the encoder is (built there unless it already holds a config.json,
            so several heads can share one); None: `folder/encoder`.
        seed: torch seed of the encoder (when built) and, plus one, of the heads.
        shape: a key of `crossguard_cli.testing.SHAPES` or a dict of encoder config sizes.
        texts: text the WordPiece tokenizer is trained on (unless `tokenizer` is given), and whose
            pairs the heads are scaled on (see `random_heads`).
        vocab_size, tokenizer: the tokenizer's size to aim for, or one already trained.
        max_length: the tokenizer's `model_max_length` and the encoder's position limit.
        inner, abstain: the heads' hidden sizes (the card: 512 and 128).
        base_model_in: where `base_model` (the encoder's path, relative to `folder`) is written:
            "both" (config.json and README.md front matter), "config", "readme" or "none".

    Returns:
        The heads folder.
    """
    import torch
    from transformers import AutoConfig

    if base_model_in not in BASE_MODEL_IN:
        raise ValueError(f"base_model_in must be one of {', '.join(BASE_MODEL_IN)}, got {base_model_in!r}")
    texts = list(texts) if texts is not None else None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder = Path(encoder_folder) if encoder_folder is not None else folder / "encoder"
    if not (encoder / "config.json").is_file():
        build_encoder_folder(encoder, shape=shape, texts=texts, vocab_size=vocab_size, max_length=max_length,
                             seed=seed, tokenizer=tokenizer)
    width = AutoConfig.from_pretrained(encoder).hidden_size
    calibration = list(texts) if texts is not None else _FALLBACK_TEXT.replace("? ", "?\n").split(". ")
    features = first_token_vectors(encoder, calibration)
    torch.save(random_heads(width, inner=inner, abstain=abstain, seed=seed + 1, features=features),
               folder / "task_heads.pt")
    relative = os.path.relpath(encoder.resolve(), folder.resolve())
    named = {"base_model": relative}
    config = {**(named if base_model_in in ("both", "config") else {}), "heads": "task_heads.pt",
              "nli_labels": ["entailment", "neutral", "contradiction"], "abstention_labels": ["confident", "uncertain"],
              "nli_hidden_size": inner, "abstention_hidden_size": abstain, "random_weights": True}
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    front = [f"base_model: {json.dumps(relative)}"] if base_model_in in ("both", "readme") else []
    (folder / "README.md").write_text("\n".join([
        "---", "license: mit", *front, "tags: [nli, abstention, crossguard-test-model]", "---", "",
        "# Random-weight learned-abstention heads (crossguard test model)", "",
        "Built by `python -m crossguard_cli.testing_heads`: the model card's format on a tiny random ModernBERT",
        "encoder. The scores mean nothing.", ""]), encoding="utf-8")
    return folder


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m crossguard_cli.testing_heads FOLDER`: a random heads model to try crossguard offline."""
    import argparse

    ap = argparse.ArgumentParser(prog="python -m crossguard_cli.testing_heads",
                                 description="Build a random-weight learned-abstention heads model folder "
                                             "(task_heads.pt on a tiny ModernBERT; scores mean nothing).")
    ap.add_argument("folder")
    ap.add_argument("--shape", default="tiny", choices=sorted(k for k in SHAPES if not k.startswith("deberta")))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    from crossguard_cli.engine.models.loader import quiet_libraries
    from crossguard_cli.rules import default_rules_path

    quiet_libraries()
    texts = [_FALLBACK_TEXT, *default_rules_path().read_text(encoding="utf-8").splitlines()]
    print(build_heads_model(args.folder, shape=args.shape, seed=args.seed, texts=texts, vocab_size=8000))


if __name__ == "__main__":
    main()
