"""Random-weight sequence classifiers, for tests, benchmarks and trying the presets offline.

Two kinds, as the trained guards people put beside NLI rules: a decoder classifier shaped like
DuoGuard (Qwen2 with a 12-way multi-label head, a byte-level BPE tokenizer with an eos token
and no pad token, shipped apart from the model as DuoGuard's repo does), and an encoder
classifier shaped like protectai's injection model or Prompt Guard (BERT or DeBERTa-v2, two
labels). `plant` puts folders into a Hugging Face cache under real hub ids, so the presets load
through the real hub-id path with no network. The probabilities mean nothing.

    python -m crossguard_cli.testing_classifiers /tmp/demo-hub --texts ../shared/data/openai-moderation-1680.jsonl.gz
    HF_HUB_CACHE=/tmp/demo-hub HF_HUB_OFFLINE=1 crossguard check --rules duoguard "hello"
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

from crossguard_cli.testing import _FALLBACK_TEXT, build_model_folder

EOS = "<|endoftext|>"
QWEN_SHAPES: dict[str, dict] = {
    "tiny": {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
             "intermediate_size": 64},
    # Qwen2.5-0.5B, as DuoGuard-0.5B: the real embedding rows, so memory and cost match.
    "qwen2.5-0.5b": {"hidden_size": 896, "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
                     "intermediate_size": 4864, "vocab_size": 151936, "rope_theta": 1000000.0},
}
# What the presets name on the hub, for `plant`.
PRESET_IDS = {"duoguard": ("DuoGuard/DuoGuard-0.5B", "Qwen/Qwen2.5-0.5B"),
              "prompt-guard": ("meta-llama/Llama-Prompt-Guard-2-86M", None)}


def train_bpe(texts: Iterable[str], vocab_size: int = 2000):
    """A byte-level BPE tokenizer (Qwen/GPT-2 style) with an eos token and no pad token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[EOS, "<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts) or [_FALLBACK_TEXT], trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOS, model_max_length=32768,
                                   additional_special_tokens=["<|im_start|>", "<|im_end|>"])


def build_decoder_classifier(path: str | Path, *, tokenizer_path: str | Path | None = None,
                             labels: Sequence[str] | None = None, num_labels: int = 12, shape: str = "tiny",
                             texts: Iterable[str] | None = None, vocab_size: int = 2000, seed: int = 0,
                             tokenizer=None) -> Path:
    """A DuoGuard-shaped Qwen2 sequence classifier: multi-label, pad token none (eos pads).

    Args:
        path: the model folder.
        tokenizer_path: where to save the tokenizer instead of beside the model (DuoGuard's
            repo ships none; its card loads Qwen's).
        labels: id2label names; None: the generic LABEL_0 ... that need `labels:` in a rules file.
        shape: "tiny" or "qwen2.5-0.5b".
        tokenizer: a `PreTrainedTokenizerFast` from `train_bpe`, shared to save time.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = tokenizer if tokenizer is not None else train_bpe(texts or [_FALLBACK_TEXT], vocab_size)
    sizes = dict(QWEN_SHAPES[shape])
    rows = max(len(tok), sizes.pop("vocab_size", 0))
    names = list(labels) if labels is not None else [f"LABEL_{i}" for i in range(num_labels)]
    config = Qwen2Config(vocab_size=rows, max_position_embeddings=32768, num_labels=len(names),
                         id2label=dict(enumerate(names)), label2id={n: i for i, n in enumerate(names)},
                         problem_type="multi_label_classification", eos_token_id=tok.eos_token_id,
                         bos_token_id=tok.eos_token_id, pad_token_id=None, tie_word_embeddings=True, **sizes)
    torch.manual_seed(seed)
    model = Qwen2ForSequenceClassification(config)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2 if sizes["hidden_size"] <= 64 else 0.02)
    model.eval()
    model.save_pretrained(path)
    tok.save_pretrained(tokenizer_path if tokenizer_path is not None else path)
    (path / "crossguard-test-model.json").write_text(json.dumps({"arch": "qwen2", "labels": names,
                                                                 "shape": sizes, "random_weights": True}))
    return path


def build_encoder_classifier(path: str | Path, *, arch: str = "bert", labels: Sequence[str] = ("SAFE", "INJECTION"),
                             shape: str | dict = "tiny", **kwargs) -> Path:
    """A protectai/Prompt-Guard-shaped encoder classifier (BERT or DeBERTa-v2), single-label."""
    return build_model_folder(path, arch=arch, labels=labels, shape=shape, **kwargs)


def plant(folder: str | Path, repo_id: str, cache: str | Path) -> Path:
    """Copy a model folder into a Hugging Face cache as `repo_id` (main), so it loads by hub id offline.

    Refuses the user's real cache: random weights must never stand in for a real model there.
    """
    cache = Path(cache).resolve()
    from huggingface_hub import constants

    if cache == Path(constants.HF_HUB_CACHE).resolve() and "HF_HUB_CACHE" not in os.environ:
        raise ValueError(f"{cache} is your Hugging Face cache; plant random-weight models in a folder of their own")
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = repo / "snapshots" / commit
    if snapshot.exists():
        shutil.rmtree(snapshot)
    shutil.copytree(folder, snapshot)
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def plant_presets(cache: str | Path, texts: Iterable[str] | None = None, work: str | Path | None = None) -> None:
    """Random-weight stand-ins for every preset's models, planted in `cache` under the presets' hub ids."""
    import tempfile

    texts = list(texts or [_FALLBACK_TEXT])
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        tmp = Path(tmp)
        duo, qwen = PRESET_IDS["duoguard"]
        build_decoder_classifier(tmp / "duoguard", tokenizer_path=tmp / "qwen-tokenizer", texts=texts)
        # The tokenizer's repo is a whole model on the hub; AutoTokenizer reads its config.json.
        (tmp / "qwen-tokenizer" / "config.json").write_text(json.dumps(
            {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]}))
        plant(tmp / "duoguard", duo, cache)
        plant(tmp / "qwen-tokenizer", qwen, cache)
        guard, _ = PRESET_IDS["prompt-guard"]
        build_encoder_classifier(tmp / "prompt-guard", arch="deberta-v2", labels=("LABEL_0", "LABEL_1"), texts=texts)
        plant(tmp / "prompt-guard", guard, cache)


def _main(argv: Sequence[str] | None = None) -> None:
    import argparse

    from crossguard_cli.testing import read_texts

    ap = argparse.ArgumentParser(prog="python -m crossguard_cli.testing_classifiers",
                                 description="Plant random-weight stand-ins for the presets' classifiers in a "
                                             "Hugging Face cache folder of their own (scores mean nothing).")
    ap.add_argument("cache", help="a new folder; then run crossguard with HF_HUB_CACHE=CACHE HF_HUB_OFFLINE=1")
    ap.add_argument("--texts", help="a .txt or .jsonl(.gz) file to train the tokenizers on")
    args = ap.parse_args(argv)
    from crossguard_cli.engine.models.loader import quiet_libraries

    quiet_libraries()
    plant_presets(args.cache, read_texts(args.texts) if args.texts else None)
    print(args.cache)


if __name__ == "__main__":
    _main()
