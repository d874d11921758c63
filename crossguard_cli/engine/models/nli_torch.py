"""Loading an NLI cross-encoder into torch: device, dtype, and the label mapping by name.

Loading goes through sentence-transformers' `CrossEncoder` (the same path a user's own code
would take), then scoring calls the underlying transformers model directly so the scorer can
control windows, batching and padding.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from crossguard_cli.engine.models.devices import resolve_device, resolve_dtype
from crossguard_cli.engine.models.files import (
    check_model_name,
    checked_model,
    is_library_failure,
    load_cached_first,
    load_failure,
)
from crossguard_cli.errors import ModelError

log = logging.getLogger("crossguard_cli.engine.models.nli_torch")

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
        compiled: the `torch.compile`d module when compiling was asked for, else None.
    """

    name: str
    tokenizer: Any = field(repr=False)
    module: Any = field(repr=False)
    device: Any
    dtype: Any
    label_columns: tuple[int, int, int]
    max_length: int
    input_names: tuple[str, ...]
    compiled: Any = field(default=None, repr=False)

    @property
    def uses_token_types(self) -> bool:
        return "token_type_ids" in self.input_names

    @property
    def n_outputs(self) -> int:
        """Logits columns of a forward pass."""
        return int(getattr(self.module.config, "num_labels", 3))

    def logits(self, input_ids, attention_mask, token_type_ids):
        """Raw logits (model column order) of one padded batch of int64 arrays.

        On the CPU a float32 numpy array. On a GPU the inputs go through pinned host memory with
        non-blocking copies and the result is a float32 tensor still on the device, possibly
        still being computed: nothing here waits for the GPU, so Python can prepare the next
        batch meanwhile; `to_host` brings a whole group's logits back in one copy.
        """
        import torch

        on_gpu, cuda = self.device.type != "cpu", self.device.type == "cuda"
        arrays = {"input_ids": input_ids, "attention_mask": attention_mask}
        if self.uses_token_types:
            arrays["token_type_ids"] = token_type_ids
        inputs = {}
        for name, array in arrays.items():
            tensor = torch.from_numpy(array)
            if cuda:  # the copy into pinned memory is made now, so the caller may reuse `array`
                tensor = tensor.pin_memory()
            inputs[name] = tensor.to(self.device, non_blocking=cuda)
        with torch.inference_mode():
            out = self.forward(**inputs).logits.float()
        return out if on_gpu else out.numpy()

    def to_host(self, parts: list) -> Callable[[], np.ndarray]:
        """Start one device-to-host copy of a group's logits; the returned function waits for it."""
        import torch

        with torch.inference_mode():
            logits = torch.cat(parts) if parts else torch.zeros(0, self.n_outputs, device=self.device)
            if self.device.type != "cuda":
                host = logits.cpu()
                return host.numpy
            host = torch.empty(logits.shape, dtype=logits.dtype, pin_memory=True)
            host.copy_(logits, non_blocking=True)
            done = torch.cuda.Event()
            # On the model's device's stream, where the copy runs: a pipeline thread's current
            # device is cuda:0 whatever --device says, and an event there would not wait for it.
            done.record(torch.cuda.current_stream(self.device))

        def wait() -> np.ndarray:
            done.synchronize()
            return host.numpy()

        return wait

    @property
    def forward(self):
        return self.module if self.compiled is None else self.compiled


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
    compile: bool = False,
) -> LoadedModel:
    """Load an NLI cross-encoder for scoring.

    Args:
        name: a local folder or a Hugging Face hub id.
        revision: hub branch, tag or commit (pin it for reproducible guardrails).
        device: auto, cpu, cuda, cuda:N or mps.
        dtype: auto, float32, float16 or bfloat16.
        max_length: tokens per (prompt, hypothesis) pair, capped by the model's own limit.
        compile: run the forward pass through `torch.compile` (dynamic shapes: one compilation
            covers every batch shape, after a first one or two). Same numbers; the first
            batches wait for the compiler.

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
    except BaseException as exc:  # noqa: BLE001 - hub, file-format, config and tokenizer (Rust panic) errors
        if not is_library_failure(exc):  # Ctrl-C, SIGTERM, exit: not a broken model
            raise
        raise load_failure(name, exc) from None

    module = ce[0].auto_model
    tokenizer = ce.tokenizer
    columns, length, names = checked_model(name, module.config, tokenizer, max_length)
    module.eval()
    return LoadedModel(
        name=name,
        tokenizer=tokenizer,
        module=module,
        device=module.device,
        dtype=next(module.parameters()).dtype,
        label_columns=columns,
        max_length=length,
        input_names=names,
        compiled=compiled(module) if compile else None,
    )


def compiled(module):
    """`torch.compile` of the model, shapes dynamic (every batch has its own length and size)."""
    import torch

    log.info("compiling the model with torch.compile; the first batches wait for the compiler")
    return torch.compile(module, dynamic=True)
