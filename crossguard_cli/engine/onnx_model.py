"""Running a cross-encoder through ONNX Runtime on the CPU, exactly (fp32) or in int8.

On a CPU, PyTorch's fp32 matmuls leave much of the machine idle (on AMD processors its MKL
build takes a slow path), while ONNX Runtime's own kernels do not, and int8 weights with
VNNI instructions go further still. So `--backend onnx` exports the same transformers model
to ONNX once, caches the file, and scores through an `InferenceSession`; the object it
returns offers the surface the `Scorer` uses from `LoadedModel`, so windows, batching and
the label mapping by name stay one code path.

The export is the TorchScript-based `torch.onnx.export` (no onnxscript or optimum needed),
with dynamic batch and sequence axes, checked against torch on a second shape before it is
cached. The cache lives in `$CROSSGUARD_CACHE_DIR` (else `$XDG_CACHE_HOME/crossguard`, else
`~/.cache/crossguard`) under `onnx/<key>`, where the key covers the model folder's files (size
and modification time) or the hub commit, so changed weights are never served stale, and a
user's model folder is never written to.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
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

QUANTIZE = ("int8",)
EXPORT_VERSION = 1  # bump when the export recipe changes, so older cached files are not reused
OPSET = 17
EXPORT_TOLERANCE = 1e-3  # largest logit difference against torch accepted when checking an export
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_WEIGHT_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".pt")


@dataclass
class RuntimeModel:
    """A cross-encoder loaded into ONNX Runtime, with `LoadedModel`'s scoring surface.

    Attributes:
        name: the model id or path as the user gave it.
        tokenizer: the model's fast tokenizer.
        session: the `onnxruntime.InferenceSession`.
        label_columns: logits column of entailment, neutral and contradiction, in that order.
        max_length: the most tokens one (prompt, hypothesis) pair may have.
        input_names: the tokenizer outputs the model takes (token_type_ids or not).
        dtype: "float32", or "int8" for dynamically quantised weights.
        device: always "cpu".
        path: the ONNX file in use.
    """

    name: str
    tokenizer: Any
    session: Any = field(repr=False)
    label_columns: tuple[int, int, int]
    max_length: int
    input_names: tuple[str, ...]
    dtype: str = "float32"
    device: str = "cpu"
    path: Path | None = None

    def __post_init__(self) -> None:
        # The exporter drops inputs the graph never reads (DeBERTa-v3 ignores token types).
        self._feeds = tuple(i.name for i in self.session.get_inputs())

    @property
    def uses_token_types(self) -> bool:
        return "token_type_ids" in self.input_names

    def logits(self, input_ids, attention_mask, token_type_ids) -> np.ndarray:
        """Raw logits (float32 numpy, model column order) for one padded batch of int64 arrays."""
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        feed = {name: np.ascontiguousarray(given[name], dtype=np.int64) for name in self._feeds}
        return np.asarray(self.session.run(["logits"], feed)[0], dtype=np.float32)


def cache_root() -> Path:
    """Where exported files go: $CROSSGUARD_CACHE_DIR, else $XDG_CACHE_HOME/crossguard, else ~/.cache."""
    env = os.environ.get("CROSSGUARD_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "crossguard"


def cpu_threads() -> int:
    """Cores this process may use (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _from_pretrained(cls, source: str, revision: str | None, **kwargs):
    """`cls.from_pretrained`, from the local cache first, so a cached hub model needs no network."""
    def load(local_files_only: bool):
        return cls.from_pretrained(source, revision=revision, local_files_only=local_files_only, **kwargs)

    return load_cached_first(load, source, revision)


def _fingerprint(name: str, revision: str | None) -> str:
    """A cache key that changes whenever the model's files (or its hub commit) change."""
    if os.path.isdir(name):
        folder = Path(name).resolve()
        files = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.iterdir()
            if p.is_file() and p.suffix in _WEIGHT_SUFFIXES
        )
        material: list[Any] = [str(folder), files]
    else:
        from huggingface_hub import hf_hub_download

        try:
            config = hf_hub_download(name, "config.json", revision=revision, local_files_only=True)
        except Exception:
            config = hf_hub_download(name, "config.json", revision=revision)
        material = [name, Path(config).parent.name]  # .../snapshots/<commit>: immutable
    material.append(EXPORT_VERSION)
    return hashlib.sha256(json.dumps(material).encode()).hexdigest()[:20]


def _positional(module, names: tuple[str, ...]):
    """Wrap the model to take positional inputs (the exporter names graph inputs by position)."""
    import torch

    class Positional(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *args):
            return self.inner(**dict(zip(names, args, strict=True))).logits

    return Positional().eval()


def _example(config, names: tuple[str, ...], batch: int, length: int):
    """Inputs with a padded row and both segments, so the traced graph covers masks and types."""
    import torch

    vocab = int(getattr(config, "vocab_size", 100) or 100)
    ids = (torch.arange(batch * length).reshape(batch, length) * 7919 % max(1, vocab - 1)) + 1
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[-1, length // 2 :] = 0
    types = torch.zeros(batch, length, dtype=torch.long)
    if int(getattr(config, "type_vocab_size", 0) or 0) >= 2:
        types[:, length // 3 :] = 1
    given = {"input_ids": ids.long(), "attention_mask": mask, "token_type_ids": types}
    return tuple(given[n] for n in names)


def _export(source: str, revision: str | None, config, names: tuple[str, ...], target: Path) -> None:
    """Export to ONNX with dynamic axes, check it against torch on another shape, then publish."""
    import inspect

    import onnxruntime as ort
    import torch
    from transformers import AutoModelForSequenceClassification

    module = _from_pretrained(AutoModelForSequenceClassification, source, revision, dtype=torch.float32)
    wrapper = _positional(module.eval(), names)
    axes = {n: {0: "batch", 1: "sequence"} for n in names} | {"logits": {0: "batch"}}
    extra = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".export-"))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(wrapper, _example(config, names, 2, 16), str(tmp / "model.onnx"),
                              input_names=list(names), output_names=["logits"], dynamic_axes=axes,
                              opset_version=OPSET, do_constant_folding=True, **extra)
        wrapper.eval()  # the exporter restores the mode it found, recursively; be sure
        check = _example(config, names, 3, 40)
        with torch.inference_mode():
            expect = wrapper(*check).float().numpy()
        session = ort.InferenceSession(str(tmp / "model.onnx"), providers=["CPUExecutionProvider"])
        feeds = {i.name for i in session.get_inputs()}
        got = session.run(["logits"], {n: t.numpy() for n, t in zip(names, check, strict=True) if n in feeds})[0]
        diff = float(np.abs(got - expect).max())
        if not diff <= EXPORT_TOLERANCE:
            raise RuntimeError(f"the exported graph differs from torch by {diff:.3g} on a second input shape")
        for part in tmp.iterdir():  # model.onnx, and external weight files for models over 2 GB
            os.replace(part, target.parent / part.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


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


def _session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or cpu_threads()
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
    quantize: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
    cache_dir: str | Path | None = None,
) -> RuntimeModel:
    """Load an NLI cross-encoder into ONNX Runtime, exporting (and quantising) it on first use.

    Args:
        name: a local folder or a Hugging Face hub id.
        revision: hub branch, tag or commit.
        backend: "onnx", or "onnx-int8" (the same as backend="onnx", quantize="int8").
        max_length: tokens per (prompt, hypothesis) pair, capped by the model's own limit.
        quantize: None for fp32 (matches torch to ~1e-6), "int8" for dynamic int8 quantisation.
        device: "cpu" or "auto"; ONNX Runtime runs on the CPU here.
        threads: intra-op threads (default: the cores this process may use).
        cache_dir: where exported files go (default: `cache_root()`).

    Raises:
        ModelError: the model cannot be loaded or exported, is not a 3-label NLI model, or the
            backend is not available.
        UsageError: a device other than the CPU was asked for.
    """
    if backend == "onnx-int8":
        backend, quantize = "onnx", quantize or "int8"
    if backend != "onnx":
        raise ModelError(f"unknown backend {backend!r}: expected onnx or onnx-int8")
    if quantize is not None and quantize not in QUANTIZE:
        raise ModelError(f"unknown quantisation {quantize!r}: expected int8 or none")
    if (device or "cpu").lower() not in ("cpu", "auto"):
        raise UsageError(f"--backend onnx runs on the CPU; use --device cpu, or --backend torch for {device}")
    try:
        import onnxruntime  # noqa: F401
        from onnxruntime import quantization  # noqa: F401  (needs the onnx package)
    except ImportError:
        raise ModelError("--backend onnx needs onnxruntime and onnx: pip install 'crossguard[onnx]'") from None
    check_model_name(name)
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = _from_pretrained(AutoConfig, name, revision)
        tokenizer = _from_pretrained(AutoTokenizer, name, revision)
        key = _fingerprint(name, revision)
    except ModelError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # noqa: BLE001 - hub, file-format, config and tokenizer (Rust panic) errors
        raise load_failure(name, exc) from None
    columns = label_columns(getattr(config, "id2label", None))
    require_fast_tokenizer(tokenizer, name)
    limit = model_limit(tokenizer, config)
    names = tuple(n for n in getattr(tokenizer, "model_input_names", _MODEL_INPUTS[:2]) if n in _MODEL_INPUTS)
    folder = Path(cache_dir).expanduser() if cache_dir else cache_root()
    fp32 = folder / "onnx" / key / "model.onnx"
    path = fp32.with_name("model-int8.onnx") if quantize else fp32
    try:
        if not fp32.exists() and not path.exists():
            _export(name, revision, config, names, fp32)
        if not path.exists():
            _quantize(fp32, path)
        session = _session(path, threads)
    except ImportError as exc:
        raise ModelError(f"--backend onnx: {exc}; pip install 'crossguard[onnx]'") from None
    except OSError as exc:
        raise ModelError(f"cannot write the ONNX export under {folder}: {exc.strerror or exc}; set "
                         "CROSSGUARD_CACHE_DIR to a writable folder") from None
    except Exception as exc:  # tracing, export and runtime errors are architecture specific
        raise ModelError(f"cannot run model {name!r} with ONNX Runtime: {type(exc).__name__}: "
                         f"{str(exc).splitlines()[0] if str(exc) else ''}; use --backend torch") from None
    return RuntimeModel(
        name=name,
        tokenizer=tokenizer,
        session=session,
        label_columns=columns,
        max_length=min(max_length, limit) if limit else max_length,
        input_names=names,
        dtype=quantize or "float32",
        path=path,
    )


__all__ = ["RuntimeModel", "cache_root", "cpu_threads", "load_runtime_model"]
