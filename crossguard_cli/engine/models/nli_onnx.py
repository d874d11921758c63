"""Running a cross-encoder through ONNX Runtime on the CPU, exactly (fp32) or in int8.

On a CPU, PyTorch's fp32 matmuls can leave much of the machine idle (on some AMD processors its
MKL build takes a slow path), while ONNX Runtime's own kernels do not, and int8 weights go
further still. So `--backend onnx` exports the same transformers model to ONNX once
(`engine/export.py`: cached, checked against torch) and scores through an `InferenceSession`;
the object it returns offers the surface the `Scorer` uses from `LoadedModel`, so windows,
batching and the label mapping by name stay one code path.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossguard_cli.engine.models.export import ExportedModel, cached, cpu_threads, describe
from crossguard_cli.errors import ModelError, UsageError


@dataclass
class RuntimeModel(ExportedModel):
    """A cross-encoder loaded into ONNX Runtime (`session`: its `onnxruntime.InferenceSession`)."""

    session: Any = field(default=None, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        self._inputs = tuple(i.name for i in self.session.get_inputs())

    def logits(self, input_ids, attention_mask, token_type_ids) -> np.ndarray:
        """Raw logits (float32 numpy, model column order) for one padded batch of int64 arrays."""
        feed = self.feed(self._inputs, input_ids, attention_mask, token_type_ids)
        return np.asarray(self.session.run(["logits"], feed)[0], dtype=np.float32)


def _quantize(fp32: Path, target: Path) -> None:
    """int8 weights, activations quantised per batch; only weight matmuls (MatMulConstBOnly).

    Quantising the attention matmuls too (both inputs activations) was slower and less accurate.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    # quantize_dynamic advises pre-processing through the root logger; stderr is for our own
    # lines, and a handler must be present or logging.warning() would install one for good.
    root, quiet = logging.getLogger(), logging.NullHandler()
    level = root.level
    root.addHandler(quiet)
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(str(fp32), str(tmp), weight_type=QuantType.QInt8,
                         extra_options={"MatMulConstBOnly": True})
        os.replace(tmp, target)
    finally:
        root.removeHandler(quiet)
        root.setLevel(level)
        tmp.unlink(missing_ok=True)


def _session(path: Path):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = cpu_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def load_runtime_model(
    name: str,
    *,
    revision: str | None = None,
    backend: str = "onnx",
    max_length: int = 512,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
) -> RuntimeModel:
    """Load an NLI cross-encoder into ONNX Runtime, exporting (and quantising) it on first use.

    Args:
        name: a local folder or a Hugging Face hub id.
        revision: hub branch, tag or commit.
        backend: "onnx" (fp32: matches torch to ~1e-6) or "onnx-int8" (dynamic int8 quantisation).
        max_length: tokens per (prompt, hypothesis) pair, capped by the model's own limit.
        device: "cpu" or "auto"; ONNX Runtime runs on the CPU here.
        cache_dir: where exported files go (default: `cache_root()`).

    Raises:
        ModelError: the model cannot be loaded or exported, is not a 3-label NLI model, or the
            backend is not available.
        UsageError: a device other than the CPU was asked for.
    """
    if backend not in ("onnx", "onnx-int8"):
        raise ModelError(f"unknown backend {backend!r}: expected onnx or onnx-int8")
    int8 = backend == "onnx-int8"
    if (device or "cpu").lower() not in ("cpu", "auto"):
        raise UsageError(f"--backend onnx runs on the CPU; use --device cpu, or --backend torch for {device}")
    try:
        import onnxruntime  # noqa: F401
        from onnxruntime import quantization  # noqa: F401  (needs the onnx package)
    except ImportError:
        raise ModelError("--backend onnx needs onnxruntime and onnx: pip install 'crossguard[onnx]'") from None
    model = describe(name, revision, max_length, cache_dir)
    fp32 = model.onnx_path
    path = fp32.with_name("model-int8.onnx") if int8 else fp32
    try:
        if not path.exists():
            model.ensure_onnx()
        if int8:
            cached(path, "quantising the ONNX model to int8", lambda: _quantize(fp32, path))
        session = _session(path)
    except ImportError as exc:
        raise ModelError(f"--backend onnx: {exc}; pip install 'crossguard[onnx]'") from None
    except OSError as exc:
        raise ModelError(f"cannot write the ONNX export under {model.cache}: {exc.strerror or exc}; set "
                         "CROSSGUARD_CACHE_DIR to a writable folder") from None
    except Exception as exc:  # tracing, export and runtime errors are architecture specific
        raise ModelError(f"cannot run model {name!r} with ONNX Runtime: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}; use --backend torch") from None
    return RuntimeModel(
        name=name,
        tokenizer=model.tokenizer,
        session=session,
        label_columns=model.label_columns,
        max_length=model.max_length,
        input_names=model.input_names,
        dtype="int8" if int8 else "float32",
        path=path,
    )


__all__ = ["RuntimeModel", "load_runtime_model"]
