"""Which model, and which backend runs it: the one entrance to model loading.

The model is the caller's choice, else the rules file's `model:` (a relative folder is found
beside the rules file, like an include), else the default CrossingGuard model. The backend
picks the loader: torch through sentence-transformers' `CrossEncoder`, ONNX Runtime or
OpenVINO. All return an object with the same scoring surface (`logits`, `tokenizer`,
`label_columns`, `max_length`, `input_names`, ...).
"""

from __future__ import annotations

import os

from crossguard_cli import DEFAULT_MODEL
from crossguard_cli.engine.options import BACKENDS
from crossguard_cli.errors import UsageError
from crossguard_cli.rules import RuleSet

RUNTIME_BACKENDS = tuple(b for b in BACKENDS if b != "torch")  # exported from the torch model, run on the CPU


def quiet_libraries() -> None:
    """Silence library chatter (loading bars, advisory warnings, hub retries): stderr is ours."""
    import logging
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    warnings.filterwarnings("ignore", module="transformers")
    warnings.filterwarnings("ignore", module="sentence_transformers")
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


def model_name(model: str | None, ruleset: RuleSet, rules_path: str | None) -> str:
    """The model to load: `model`, else the rules file's `model:`, else the default."""
    if model:
        return model
    name = ruleset.model
    if name and rules_path and not os.path.isabs(name):
        beside = os.path.join(os.path.dirname(rules_path), name)
        if os.path.isdir(beside):
            return beside
    return name or DEFAULT_MODEL


def load_model(name: str, *, backend: str = "torch", revision: str | None = None, device: str = "auto",
               dtype: str = "auto", max_length: int = 512, compile: bool = False, encoder: str | None = None):
    """Load `name` with `backend`; see `load_torch_model`, `load_runtime_model`, `load_openvino_model`.

    A model whose files hold `task_heads.pt` (NLI heads with learned abstention on a plain
    encoder) loads through `load_heads_model`, on torch only; `encoder` names its base encoder.

    Raises:
        ModelError: the model cannot be found, loaded or used.
        UsageError: the device or dtype cannot be used with this backend here, another backend
            is asked for a heads model, or `encoder` is given for a model without heads.
    """
    quiet_libraries()
    from crossguard_cli.engine.models.heads import HEADS_FILE, is_heads_model, load_heads_model

    if is_heads_model(name, revision):
        if backend != "torch":
            raise UsageError(f"--backend {backend}: model {name!r} has learned-abstention heads ({HEADS_FILE}), "
                             "which run on --backend torch only")
        return load_heads_model(name, encoder=encoder, revision=revision, device=device, dtype=dtype,
                                max_length=max_length, compile=compile)
    if encoder:
        raise UsageError(f"--encoder: names the base encoder of a model with learned-abstention heads "
                         f"({HEADS_FILE}); model {name!r} has none")
    if backend == "torch":
        from crossguard_cli.engine.models.nli_torch import load_torch_model

        return load_torch_model(name, revision=revision, device=device, dtype=dtype, max_length=max_length,
                                compile=compile)
    if backend not in RUNTIME_BACKENDS:
        raise UsageError(f"--backend: {backend!r} is not one of {', '.join(BACKENDS)}")
    if compile:
        raise UsageError(f"--compile: compiles the torch model; --backend {backend} has its own compiler")
    if (dtype or "auto") not in ("auto", "float32"):
        raise UsageError(f"--dtype {dtype}: --backend {backend} runs in float32 (or int8 with {backend.split('-')[0]}"
                         "-int8)")
    if backend in ("onnx", "onnx-int8"):
        from crossguard_cli.engine.models.nli_onnx import load_runtime_model

        return load_runtime_model(name, revision=revision, backend=backend, max_length=max_length, device=device)
    from crossguard_cli.engine.models.nli_openvino import load_openvino_model

    return load_openvino_model(name, revision=revision, backend=backend, max_length=max_length, device=device)


__all__ = ["load_model", "model_name", "quiet_libraries"]
