"""Running a cross-encoder through OpenVINO on the CPU, exactly (fp32) or in int8.

`--backend openvino` converts the cached ONNX export (`engine/export.py`) to OpenVINO's own
format once and compiles it for the CPU with fp32 inference precision: OpenVINO would otherwise
pick bf16 by itself on CPUs with native bf16, and this backend is the exact one.
`--backend openvino-int8` quantises that model with NNCF (static int8: weights and activations,
the recipe of sentence-transformers' and optimum-intel's OpenVINO int8 export), calibrated on
pairs built from the packaged default rules, and caches it too. The object returned offers
the surface the `Scorer` uses (`logits`, `tokenizer`, `label_columns`, `max_length`,
`input_names`), like the ONNX Runtime backend's `RuntimeModel`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from crossguard_cli.engine.models.export import Exportable, ExportedModel, cached, cpu_threads, describe
from crossguard_cli.errors import ModelError, UsageError

CALIBRATION_PAIRS = 32  # int8 calibration: (premise, hypothesis) pairs, built from the default rules
_MISSING = "--backend {backend} needs OpenVINO: pip install 'crossguard[openvino]'"


@dataclass
class OpenVinoModel(ExportedModel):
    """A cross-encoder compiled by OpenVINO for the CPU (`compiled`: its `openvino.CompiledModel`)."""

    compiled: Any = field(default=None, repr=False, kw_only=True)

    def __post_init__(self) -> None:
        self._inputs = tuple(port.get_any_name() for port in self.compiled.inputs)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one infer request: one batch at a time

    def logits(self, input_ids, attention_mask, token_type_ids) -> np.ndarray:
        """Raw logits (float32 numpy, model column order) for one padded batch of int64 arrays."""
        feed = self.feed(self._inputs, input_ids, attention_mask, token_type_ids)
        with self._lock:
            self._request.infer(feed)
            return np.array(self._request.get_output_tensor(0).data, dtype=np.float32)


def _convert(onnx_path: Path, target: Path) -> None:
    """ONNX -> OpenVINO IR, weights kept in fp32 (`save_model` would halve them to fp16)."""
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    _save(model, target)


def _save(model, target: Path) -> None:
    """Write `target` (.xml and .bin) through a temporary name, so a half-written model is never used."""
    import openvino as ov

    target.parent.mkdir(parents=True, exist_ok=True)
    # Our own temporary name: two processes converting at once (two Ray actors, serve and batch)
    # each write their own files; the replaces are atomic, and both write the same model.
    tmp = target.with_name(f".tmp-{os.getpid()}-{threading.get_ident()}-{target.name}")
    ov.save_model(model, str(tmp), compress_to_fp16=False)
    tmp.with_suffix(".bin").replace(target.with_suffix(".bin"))
    tmp.replace(target)


def calibration_pairs(model: Exportable, n: int = CALIBRATION_PAIRS) -> list[dict[str, np.ndarray]]:
    """Model inputs for int8 calibration: English premises of 1 to 12 sentences, each with a hypothesis.

    The sentences are the packaged default rules' hypotheses, so no data set is needed and the
    calibration is the same on every machine; premises of mixed length cover short and long pairs.
    """
    from crossguard_cli.rules import load_rules

    sentences = list(load_rules(None).hypotheses)
    feeds = []
    for i in range(n):
        count = 1 + (i * 5) % 12
        premise = " ".join(sentences[(i * 7 + k * 3) % len(sentences)] for k in range(count))
        hypothesis = sentences[(i * 11 + 5) % len(sentences)]
        enc = model.tokenizer(premise, hypothesis, truncation="only_first", max_length=model.max_length,
                              return_token_type_ids=True)
        given = {key: np.asarray([enc[key]], dtype=np.int64) for key in ("input_ids", "attention_mask",
                                                                           "token_type_ids") if key in enc}
        given.setdefault("token_type_ids", np.zeros_like(given["input_ids"]))
        feeds.append(given)
    return feeds


def _quantize(fp32: Path, target: Path, model: Exportable) -> None:
    """Static int8 with NNCF, as a transformer (attention and layer-norm patterns kept precise)."""
    import nncf
    import openvino as ov

    ov_model = ov.Core().read_model(str(fp32))
    names = [port.get_any_name() for port in ov_model.inputs]
    data = [{name: feed[name] for name in names} for feed in calibration_pairs(model)]
    nncf.set_log_level(logging.ERROR)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):  # progress bars
        quantized = nncf.quantize(ov_model, nncf.Dataset(data), model_type=nncf.ModelType.TRANSFORMER,
                                  subset_size=len(data))
    _save(quantized, target)


def _compile(path: Path):
    import openvino as ov

    config = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
              "INFERENCE_NUM_THREADS": cpu_threads()}
    return ov.Core().compile_model(str(path), "CPU", config)


def load_openvino_model(
    name: str,
    *,
    revision: str | None = None,
    backend: str = "openvino",
    max_length: int = 512,
    device: str = "cpu",
    cache_dir: str | Path | None = None,
) -> OpenVinoModel:
    """Load an NLI cross-encoder into OpenVINO, converting (and quantising) it on first use.

    Args:
        name: a local folder or a Hugging Face hub id.
        revision: hub branch, tag or commit.
        backend: "openvino" (fp32, exact) or "openvino-int8".
        max_length: tokens per (prompt, hypothesis) pair, capped by the model's own limit.
        device: "cpu" or "auto"; OpenVINO runs on the CPU here.
        cache_dir: where converted files go (default: `export.cache_root()`).

    Raises:
        ModelError: OpenVINO (or NNCF, for int8) is not installed, or the model cannot be
            loaded, exported or compiled, or is not a 3-label NLI model.
        UsageError: a device other than the CPU was asked for.
    """
    if backend not in ("openvino", "openvino-int8"):
        raise ModelError(f"unknown backend {backend!r}: expected openvino or openvino-int8")
    if (device or "cpu").lower() not in ("cpu", "auto"):
        raise UsageError(f"--backend {backend} runs on the CPU; use --device cpu, or --backend torch for {device}")
    int8 = backend == "openvino-int8"
    try:
        import openvino  # noqa: F401

        if int8:
            import nncf  # noqa: F401
        import onnx  # noqa: F401  (the export goes through ONNX)
    except ImportError:
        raise ModelError(_MISSING.format(backend=backend)) from None
    model = describe(name, revision, max_length, cache_dir)
    fp32 = model.cache / "openvino" / model.key / "model.xml"
    path = fp32.with_name("model-int8.xml") if int8 else fp32
    try:
        if not path.exists():
            if not fp32.exists():
                onnx_path = model.ensure_onnx()
                cached(fp32, f"converting {name} to OpenVINO", lambda: _convert(onnx_path, fp32))
            if int8:
                cached(path, "quantising the OpenVINO model to int8 (NNCF, calibrated on the default rules)",
                       lambda: _quantize(fp32, path, model))
        compiled = _compile(path)
    except ImportError as exc:
        raise ModelError(f"--backend {backend}: {exc}; pip install 'crossguard[openvino]'") from None
    except OSError as exc:
        raise ModelError(f"cannot write the OpenVINO model under {model.cache}: {exc.strerror or exc}; set "
                         "CROSSGUARD_CACHE_DIR to a writable folder") from None
    except Exception as exc:  # export, conversion and compilation errors are architecture specific
        raise ModelError(f"cannot run model {name!r} with OpenVINO: {type(exc).__name__}: "
                         f"{str(exc).strip().splitlines()[0] if str(exc).strip() else ''}; use --backend torch"
                         ) from None
    return OpenVinoModel(
        name=name,
        tokenizer=model.tokenizer,
        compiled=compiled,
        label_columns=model.label_columns,
        max_length=model.max_length,
        input_names=model.input_names,
        dtype="int8" if int8 else "float32",
        path=path,
    )


__all__ = ["OpenVinoModel", "calibration_pairs", "load_openvino_model"]
