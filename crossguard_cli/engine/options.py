"""The engine's options, declared once: name, default, check, help text and where they show.

Every front end takes the same options to build a `Guard`: the CLI turns each field into a
Typer option (cli/options.py), the service and the Ray job into their own flags, Python users
into keyword arguments. A new option is one field here. Nothing here imports typer or torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from crossguard_cli import DEFAULT_MODEL
from crossguard_cli.errors import UsageError

DTYPES = ("auto", "float32", "float16", "bfloat16")
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8")
LONG_INPUT = ("window", "truncate")


@dataclass(frozen=True)
class Spec:
    """How one option is named, checked and explained.

    Attributes:
        flag: the long command-line flag, e.g. "--batch-size".
        help: one or two sentences for `--help`.
        panel: the `--help` group: "Model", "Scoring", "Input" or "Output".
        short: a one-letter flag, e.g. "-r".
        env: the environment variable the CLI reads when the flag is absent.
        metavar: the value's name in `--help`.
        choices: the only values accepted, when the option is an enumeration.
        low, high: the accepted range (inclusive), when the option is a number.
    """

    flag: str
    help: str
    panel: str
    short: str | None = None
    env: str | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float | None = None

    def problem(self, value: Any) -> str | None:
        """Why `value` is not acceptable (one line naming it), or None when it is."""
        if value is None:
            return None
        if self.choices is not None and value not in self.choices:
            return f"{value!r} is not one of {', '.join(self.choices)}"
        if self.low is not None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return f"must be a number, got {value!r}"
            if not (self.low <= value and (self.high is None or value <= self.high)):
                want = f"at least {self.low:g}" if self.high is None else f"between {self.low:g} and {self.high:g}"
                return f"must be {want}, got {value:g}"
        return None


def _option(default: Any, **spec: Any) -> Any:
    return dataclasses.field(default=default, metadata={"spec": Spec(**spec)})


@dataclass(frozen=True)
class EngineOptions:
    """Everything that decides how prompts are scored, with the CLI's defaults.

    Environment variables are the CLI's concern; here a value is what the caller gave.
    """

    rules: str | None = _option(
        None, flag="--rules", short="-r", env="CROSSGUARD_RULES", metavar="FILE", panel="Scoring",
        help="Rules file (YAML), or a packaged preset by name: default, duoguard (DuoGuard-0.5B's 12 categories), "
             "prompt-guard (Llama Prompt Guard 2 86M); a file of that name wins. [default: the packaged rules, as "
             "rules.example.yaml]")
    model: str | None = _option(
        None, flag="--model", short="-m", env="CROSSGUARD_MODEL", metavar="ID_OR_PATH", panel="Model",
        help="The NLI model: hub id or local folder (not loaded when no rule needs it). [default: rules file "
             f"'model:', else {DEFAULT_MODEL}]")
    revision: str | None = _option(
        None, flag="--revision", metavar="REV", panel="Model", help="Hub branch, tag or commit of the model.")
    encoder: str | None = _option(
        None, flag="--encoder", metavar="ID_OR_PATH", panel="Model",
        help="Base encoder of a model with learned-abstention heads (task_heads.pt). [default: its 'base_model']")
    device: str = _option(
        "auto", flag="--device", env="CROSSGUARD_DEVICE", metavar="DEVICE", panel="Model",
        help="auto, cpu, cuda, cuda:N or mps.")
    dtype: str = _option(
        "auto", flag="--dtype", choices=DTYPES, metavar="DTYPE", panel="Model",
        help="auto, float32, float16 or bfloat16 (auto: bf16/fp16 on CUDA; on a CPU bf16 where it has native "
             "bf16 matmuls, else fp32; float32 is exact).")
    backend: str = _option(
        "torch", flag="--backend", choices=BACKENDS, metavar="BACKEND", panel="Model",
        help="torch; onnx or openvino (ONNX Runtime, OpenVINO on the CPU: exact); onnx-int8 or openvino-int8 "
             "(int8: faster, approximate). Exports are cached. For the NLI model; classifiers run on torch.")
    batch_size: int | None = _option(
        None, flag="--batch-size", low=1, metavar="N", panel="Model",
        help="Pairs per forward pass (>= 1). [default: chosen per device, by a token budget]")
    max_length: int = _option(
        512, flag="--max-length", low=16, metavar="N", panel="Scoring",
        help="Tokens per (prompt, hypothesis) pair (>= 16), capped by the model.")
    max_chars: int = _option(
        50_000, flag="--max-chars", low=1, metavar="N", panel="Scoring",
        help="Characters kept per prompt before tokenising (>= 1).")
    threshold: float | None = _option(
        None, flag="--threshold", low=0.0, high=1.0, metavar="X", panel="Scoring",
        help="Override every rule's threshold (0 to 1).")
    compile: bool = _option(
        False, flag="--compile", panel="Model",
        help="Run the torch model through torch.compile: same scores; the first batches wait for the compiler.")
    long_input: str = _option(
        "window", flag="--long-input", choices=LONG_INPUT, metavar="MODE", panel="Scoring",
        help="window: score overlapping windows, best wins; truncate: first window only.")

    def check(self) -> EngineOptions:
        """Return self if every value is acceptable.

        Raises:
            UsageError: the first bad value, named as a Python argument (`batch_size: ...`).
        """
        for f in dataclasses.fields(self):
            problem = f.metadata["spec"].problem(getattr(self, f.name))
            if problem:
                raise UsageError(problem, where=f.name)
        return self

    def replace(self, **changes: Any) -> EngineOptions:
        return dataclasses.replace(self, **changes)


def option_specs() -> dict[str, tuple[Spec, Any, Any]]:
    """name -> (spec, default, type annotation) of every engine option, in declaration order."""
    import typing

    hints = typing.get_type_hints(EngineOptions)
    return {f.name: (f.metadata["spec"], f.default, hints[f.name]) for f in dataclasses.fields(EngineOptions)}


__all__ = ["BACKENDS", "DTYPES", "LONG_INPUT", "EngineOptions", "Spec", "option_specs"]
