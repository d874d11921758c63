"""Options shared by the commands (check, batch, eval): one definition, the same help everywhere."""

from __future__ import annotations

from typing import Annotated

import typer

from crossguard_cli import DEFAULT_MODEL


def choice(name: str, values: tuple[str, ...]):
    """A callback that accepts only `values`: a usage error (exit 2, one line) otherwise."""
    def check(value: str | None) -> str | None:
        if value is not None and value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}", param_hint=name)
        return value

    return check


def within(name: str, low: float, high: float | None = None):
    """A callback for a number in [low, high]: a usage error naming the value given otherwise."""
    def check(value):
        if value is not None and not (low <= value and (high is None or value <= high)):
            want = f"at least {low:g}" if high is None else f"between {low:g} and {high:g}"
            raise typer.BadParameter(f"must be {want}, got {value:g}", param_hint=name)
        return value

    return check


RulesOpt = Annotated[str | None, typer.Option("--rules", "-r", envvar="CROSSGUARD_RULES", metavar="FILE",
                     help="Rules file (YAML). [default: the packaged rules, as rules.example.yaml]")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", envvar="CROSSGUARD_MODEL", metavar="ID_OR_PATH",
                     help=f"Hub id or local folder. [default: rules file 'model:', else {DEFAULT_MODEL}]")]
RevisionOpt = Annotated[str | None, typer.Option("--revision", help="Hub branch, tag or commit of the model.")]
DeviceOpt = Annotated[str, typer.Option("--device", envvar="CROSSGUARD_DEVICE",
                      help="auto, cpu, cuda, cuda:N or mps.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", callback=choice("--dtype", ("auto", "float32", "float16",
                     "bfloat16")), help="auto, float32, float16 or bfloat16 (auto: bf16/fp16 on CUDA, fp32 on CPU).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", callback=within("--batch-size", 1),
                     help="Pairs per forward pass (>= 1). "
                     "[default: chosen per device, by a token budget]")]
MaxLenOpt = Annotated[int, typer.Option("--max-length", callback=within("--max-length", 16),
                      help="Tokens per (prompt, hypothesis) pair (>= 16), capped by the model.")]
MaxCharsOpt = Annotated[int, typer.Option("--max-chars", callback=within("--max-chars", 1),
                        help="Characters kept per prompt before tokenising (>= 1).")]
ThresholdOpt = Annotated[float | None, typer.Option("--threshold", callback=within("--threshold", 0.0, 1.0),
                         help="Override every rule's threshold (0 to 1).")]
LongOpt = Annotated[str, typer.Option("--long-input", callback=choice("--long-input", ("window", "truncate")),
                    help="window: score overlapping windows, best wins; truncate: first window only.")]
BACKENDS = ("torch", "onnx", "onnx-int8", "openvino")
BackendOpt = Annotated[str, typer.Option("--backend", callback=choice("--backend", BACKENDS), help="torch; onnx "
                       "(ONNX Runtime on the CPU, exact); onnx-int8 (int8 weights: faster, approximate); openvino "
                       "(not available yet).")]


