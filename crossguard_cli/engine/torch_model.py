"""Loading an NLI cross-encoder into torch: device, dtype, and the label mapping by name.

Loading goes through sentence-transformers' `CrossEncoder` (the same path a user's own code
would take), then scoring calls the underlying transformers model directly so the scorer can
control windows, batching and padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from crossguard_cli.engine.model_files import (
    check_model_name,
    label_columns,
    load_cached_first,
    load_failure,
    model_limit,
    require_fast_tokenizer,
)
from crossguard_cli.errors import ModelError, UsageError

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


def _load_crossencoder(name: str, revision: str | None, device: str, torch_dtype):
    """Load through `CrossEncoder` (the path a user's own code takes), cached files first."""
    from sentence_transformers import CrossEncoder

    def load(local_files_only: bool):
        return CrossEncoder(name, device=device, revision=revision, local_files_only=local_files_only,
                            model_kwargs={"dtype": torch_dtype})

    return load_cached_first(load, name, revision)


def load_torch_model(
    name: str,
    *,
    revision: str | None = None,
    device: str = "auto",
    dtype: str = "auto",
    max_length: int = 512,
) -> LoadedModel:
    """Load an NLI cross-encoder for scoring.

    Args:
        name: a local folder or a Hugging Face hub id.
        revision: hub branch, tag or commit (pin it for reproducible guardrails).
        device: auto, cpu, cuda, cuda:N or mps.
        dtype: auto, float32, float16 or bfloat16.
        max_length: tokens per (prompt, hypothesis) pair, capped by the model's own limit.

    Raises:
        ModelError: the model cannot be found or loaded, or is not a 3-label NLI model.
        UsageError: the device or dtype cannot be used here.
    """
    device = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, device)
    check_model_name(name)
    try:
        ce = _load_crossencoder(name, revision, device, torch_dtype)
    except ModelError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - hub, file-format, config and tokenizer (Rust panic) errors
        raise load_failure(name, exc) from None

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
