"""Exporting a cross-encoder once for the CPU runtimes (ONNX Runtime, OpenVINO), and caching it.

The export is the TorchScript-based `torch.onnx.export` (no onnxscript or optimum needed),
with dynamic batch and sequence axes, checked against torch on a second shape before it is
cached. The cache lives in `$CROSSGUARD_CACHE_DIR` (else `$XDG_CACHE_HOME/crossguard`, else
`~/.cache/crossguard`) under `onnx/<key>` (and `openvino/<key>`), where the key covers the
model folder's files (size and modification time) or the hub commit, so changed weights are
never served stale, and a user's model folder is never written to. Each step that writes the
cache says so on stderr (logged at INFO: the CLI prints it as a `crossguard:` line), since an
export of a large model takes a minute or more.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from crossguard_cli.engine.models.files import (
    check_model_name,
    checked_model,
    is_library_failure,
    load_cached_first,
    load_failure,
)
from crossguard_cli.errors import ModelError

log = logging.getLogger("crossguard_cli.engine.models.export")

EXPORT_VERSION = 1  # bump when the export recipe changes, so older cached files are not reused
OPSET = 17
EXPORT_TOLERANCE = 1e-3  # largest logit difference against torch accepted when checking an export
_WEIGHT_SUFFIXES = (".json", ".safetensors", ".bin", ".txt", ".model", ".pt")


@dataclass
class ExportedModel:
    """What the ONNX Runtime and OpenVINO models share: `LoadedModel`'s scoring surface, run on the CPU.

    Attributes:
        name: the model id or path as the user gave it.
        tokenizer: the model's fast tokenizer.
        label_columns: logits column of entailment, neutral and contradiction, in that order.
        max_length: the most tokens one (prompt, hypothesis) pair may have.
        input_names: the tokenizer outputs the model takes (token_type_ids or not).
        dtype: "float32", or "int8" for a quantised model.
        device: always "cpu".
        path: the exported file in use.
    """

    name: str
    tokenizer: Any
    label_columns: tuple[int, int, int]
    max_length: int
    input_names: tuple[str, ...]
    dtype: str = "float32"
    device: str = "cpu"
    path: Path | None = None

    @property
    def uses_token_types(self) -> bool:
        return "token_type_ids" in self.input_names

    def feed(self, graph_inputs: tuple[str, ...], input_ids, attention_mask, token_type_ids) -> dict[str, np.ndarray]:
        """The batch as the graph takes it: only the inputs it has (the exporter drops inputs the graph
        never reads: DeBERTa-v3 ignores token types), contiguous int64."""
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return {name: np.ascontiguousarray(given[name], dtype=np.int64) for name in graph_inputs}


@dataclass(frozen=True)
class Exportable:
    """What every CPU runtime needs to know about a model before loading it.

    Attributes:
        name, revision: the model as the user gave it.
        config, tokenizer: its transformers config and fast tokenizer.
        key: the cache key of its files.
        label_columns: logits column of entailment, neutral and contradiction.
        max_length: tokens per pair, capped by the model's own limit.
        input_names: the tokenizer outputs the model takes.
        cache: the cache folder.
    """

    name: str
    revision: str | None
    config: Any
    tokenizer: Any
    key: str
    label_columns: tuple[int, int, int]
    max_length: int
    input_names: tuple[str, ...]
    cache: Path

    @property
    def onnx_path(self) -> Path:
        return self.cache / "onnx" / self.key / "model.onnx"

    def ensure_onnx(self) -> Path:
        """The fp32 ONNX file, exported (and checked against torch) on first use."""
        path = self.onnx_path
        cached(path, f"exporting {self.name} to ONNX", lambda: _export(self.name, self.revision, self.config,
                                                                        self.input_names, path))
        return path


def describe(name: str, revision: str | None, max_length: int, cache_dir: str | Path | None) -> Exportable:
    """Config, tokenizer, labels and cache key of a model, checked before anything is exported.

    Raises:
        ModelError: the model cannot be found or loaded, or is not a 3-label NLI model.
    """
    check_model_name(name)
    from transformers import AutoConfig, AutoTokenizer

    try:
        config = _from_pretrained(AutoConfig, name, revision)
        tokenizer = _from_pretrained(AutoTokenizer, name, revision)
        key = _fingerprint(name, revision)
    except ModelError:
        raise
    except BaseException as exc:  # noqa: BLE001 - hub, file-format, config and tokenizer (Rust panic) errors
        if not is_library_failure(exc):  # Ctrl-C, SIGTERM, exit: not a broken model
            raise
        raise load_failure(name, exc) from None
    columns, length, names = checked_model(name, config, tokenizer, max_length)
    folder = Path(cache_dir).expanduser() if cache_dir else cache_root()
    return Exportable(name, revision, config, tokenizer, key, columns, length, names, folder)


def cached(path: Path, doing: str, make: Callable[[], None]) -> None:
    """Run `make` (which writes `path`) unless `path` exists, saying what it does first."""
    if path.exists():
        return
    log.info("%s (first use; cached in %s)", doing, path.parent)
    make()


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


__all__ = ["ExportedModel", "EXPORT_TOLERANCE", "Exportable", "cache_root", "cached", "cpu_threads", "describe"]
