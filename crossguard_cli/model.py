"""Loading an NLI cross-encoder: device, dtype, and the label mapping by name.

Models disagree on label order (CrossingGuard: entailment, neutral, contradiction;
cross-encoder/nli-*: contradiction, entailment, neutral), so the column of each label is
found in `config.id2label` by name, never assumed by position; a model without exactly those
three labels is refused here rather than producing confident nonsense later.

Loading goes through sentence-transformers' `CrossEncoder` (the same path a user's own code
would take), then scoring calls the underlying transformers model directly so the scorer can
control windows, batching and padding.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from crossguard_cli import DEFAULT_MODEL
from crossguard_cli.errors import ModelError, UsageError
from crossguard_cli.rules import LABELS

DEVICES_HELP = "auto, cpu, cuda, cuda:N or mps"
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class LoadedModel:
    """A loaded cross-encoder ready for scoring.

    Attributes:
        name: the model id or path as the user gave it.
        tokenizer: the model's (fast) tokenizer.
        module: the transformers sequence-classification model, in eval mode.
        device: the torch device it lives on.
        dtype: the torch dtype of its weights.
        label_columns: logits column of entailment, neutral and contradiction, in that order.
        max_length: the most tokens one (prompt, hypothesis) pair may have.
        input_names: the tokenizer outputs the model takes (token_type_ids or not).
    """

    name: str
    tokenizer: Any
    module: Any
    device: Any
    dtype: Any
    label_columns: tuple[int, int, int]
    max_length: int
    input_names: tuple[str, ...]

    @property
    def uses_token_types(self) -> bool:
        return "token_type_ids" in self.input_names

    def logits(self, input_ids, attention_mask, token_type_ids) -> np.ndarray:
        """Raw logits (float32 numpy, model column order) for one padded batch of int64 arrays."""
        import torch

        inputs = {
            "input_ids": torch.from_numpy(input_ids).to(self.device, non_blocking=True),
            "attention_mask": torch.from_numpy(attention_mask).to(self.device, non_blocking=True),
        }
        if self.uses_token_types:
            inputs["token_type_ids"] = torch.from_numpy(token_type_ids).to(self.device, non_blocking=True)
        with torch.inference_mode():
            out = self.module(**inputs).logits
        return out.float().cpu().numpy()


def label_columns(id2label: dict) -> tuple[int, int, int]:
    """Find the entailment, neutral and contradiction columns by name, case-insensitively.

    Raises:
        ModelError: unless the labels are exactly those three names.
    """
    names = {str(v).strip().lower(): int(k) for k, v in (id2label or {}).items()}
    if len(id2label or {}) != 3 or set(names) != set(LABELS):
        found = ", ".join(str(v) for _, v in sorted((id2label or {}).items(), key=lambda kv: int(kv[0])))
        raise ModelError(
            f"not a 3-label NLI model: config.id2label has [{found or 'nothing'}], expected "
            "entailment, neutral and contradiction; use an NLI cross-encoder such as "
            f"{DEFAULT_MODEL} (or fix id2label in the model's config.json)"
        )
    return names["entailment"], names["neutral"], names["contradiction"]


def resolve_device(device: str) -> str:
    """Turn `auto` into the best available device and check an explicit one exists."""
    import torch

    device = (device or "auto").strip().lower()
    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        mps = getattr(torch.backends, "mps", None)
        return "mps" if mps is not None and mps.is_available() else "cpu"
    if device == "cpu":
        return device
    if device == "cuda" or device.startswith("cuda:"):
        index = device.partition(":")[2]
        if index and not index.isdigit():
            raise UsageError(f"--device: {device!r} is not a device; use {DEVICES_HELP}")
        if not torch.cuda.is_available():
            raise UsageError(f"--device {device}: CUDA is not available here; use --device cpu or auto")
        if index and int(index) >= torch.cuda.device_count():
            raise UsageError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) here")
        return device
    if device == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError("--device mps: MPS is not available here; use --device cpu or auto")
        return device
    raise UsageError(f"--device: {device!r} is not a device; use {DEVICES_HELP}")


def resolve_dtype(dtype: str, device: str):
    """`auto` is bfloat16 on CUDA when supported (else float16), float32 elsewhere."""
    import torch

    dtype = (dtype or "auto").lower()
    if dtype not in DTYPES:
        raise UsageError(f"--dtype: {dtype!r} is not one of {', '.join(DTYPES)}")
    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, dtype)


def check_model_name(name: str) -> None:
    """Fail fast on a path-like name that is no folder, before asking the hub about it."""
    if not os.path.isdir(name) and (name.startswith(("/", ".", "~")) or name.count("/") > 1):
        raise ModelError(f"no such model folder: {name}; give --model a folder or a hub id like ORG/NAME")


def require_fast_tokenizer(tokenizer, name: str) -> None:
    """Windows and pair templates need a fast (Rust) tokenizer."""
    if tokenizer is None or not getattr(tokenizer, "is_fast", False):
        raise ModelError(f"model {name!r} has no fast tokenizer; crossguard needs one (tokenizer.json)")


def model_limit(tokenizer, config) -> int | None:
    """The model's own token limit, from the tokenizer or the position embeddings."""
    limits = []
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 0 < tok_max < 1_000_000:
        limits.append(tok_max)
    positions = getattr(config, "max_position_embeddings", None)
    if isinstance(positions, int) and positions > 0:
        # RoBERTa-style models reserve padding_idx + 1 positions.
        offset = 2 if getattr(config, "model_type", "") in ("roberta", "xlm-roberta") else 0
        limits.append(positions - offset)
    return min(limits) if limits else None


def _load_crossencoder(name: str, revision: str | None, device: str, torch_dtype):
    """Load through `CrossEncoder`, from the local cache first so a cached model needs no network."""
    from sentence_transformers import CrossEncoder

    kwargs = dict(device=device, revision=revision, model_kwargs={"dtype": torch_dtype})
    if os.path.isdir(name):
        return CrossEncoder(name, **kwargs)
    try:
        return CrossEncoder(name, local_files_only=True, **kwargs)
    except Exception:  # not cached (or partly): ask the hub
        return CrossEncoder(name, **kwargs)


def load_model(
    name: str,
    *,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_length: int = 512,
    backend: str = "torch",
) -> LoadedModel:
    """Load an NLI cross-encoder for scoring.

    Args:
        name: a local folder or a Hugging Face hub id.
        revision: hub branch, tag or commit (pin it for reproducible guardrails).
        device: auto, cpu, cuda, cuda:N or mps.
        dtype: auto, float32, float16 or bfloat16.
        max_length: tokens per (prompt, hypothesis) pair, capped by the model's own limit.
        backend: "torch"; "onnx" (exact) and "onnx-int8" (faster, approximate) run the same
            model through ONNX Runtime on the CPU; "openvino" is reserved and refused for now.

    Raises:
        ModelError: the model cannot be found or loaded, or is not a 3-label NLI model.
        UsageError: the device or dtype cannot be used here.
    """
    if backend != "torch":
        from crossguard_cli.backends import load_runtime_model

        if (dtype or "auto") not in ("auto", "float32"):
            raise UsageError(f"--dtype {dtype}: --backend {backend} runs in float32 (or int8 with onnx-int8)")
        return load_runtime_model(name, revision=revision, backend=backend, max_length=max_length, device=device)
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    local = os.path.isdir(name)
    check_model_name(name)
    try:
        ce = _load_crossencoder(name, revision, device, torch_dtype)
    except ModelError:
        raise
    except Exception as exc:  # hub, file-format and config errors all surface differently
        hint = (
            "check the folder holds a saved model (config.json, weights, tokenizer)"
            if local
            else "check the id and --revision; offline, download it first or set --model to a local folder"
        )
        raise ModelError(f"cannot load model {name!r}: {type(exc).__name__}: {exc}; {hint}") from None

    module = ce[0].auto_model
    columns = label_columns(getattr(module.config, "id2label", None))
    tokenizer = ce.tokenizer
    require_fast_tokenizer(tokenizer, name)
    limit = model_limit(tokenizer, module.config)
    length = min(max_length, limit) if limit else max_length
    module.eval()
    names = tuple(getattr(tokenizer, "model_input_names", ("input_ids", "attention_mask")))
    return LoadedModel(
        name=name,
        tokenizer=tokenizer,
        module=module,
        device=module.device,
        dtype=next(module.parameters()).dtype,
        label_columns=columns,
        max_length=length,
        input_names=names,
    )
