"""Typer options built from the engine's own declarations, and `--help` grouped into panels.

The engine options are declared once (`engine/options.py`); `@engine_options` adds every one
of them to a command as a Typer option (flag, env variable, help, check) and hands the command
one `EngineOptions`. A new engine option is one field there, and every command gets it.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

from crossguard_cli.engine.options import EngineOptions, Spec, option_specs

PANELS = ("Scoring", "Model", "Input", "Evaluation", "Output", "Service", "Ray")


def choice(name: str, values: tuple[str, ...]) -> Callable[[Any], Any]:
    """A callback that accepts only `values`: a usage error (exit 2, one line) otherwise."""
    return checked(Spec(flag=name, help="", panel="", choices=values))


def within(name: str, low: float, high: float | None = None) -> Callable[[Any], Any]:
    """A callback for a number in [low, high]: a usage error naming the value given otherwise."""
    return checked(Spec(flag=name, help="", panel="", low=low, high=high))


def checked(spec: Spec) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        problem = spec.problem(value)
        if problem:
            raise typer.BadParameter(problem, param_hint=spec.flag)
        return value

    return check


def _typer_parameter(name: str, spec: Spec, default: Any, annotation: Any) -> inspect.Parameter:
    decls = [spec.flag, *([spec.short] if spec.short else [])]
    info = typer.Option(*decls, envvar=spec.env, metavar=spec.metavar, help=spec.help, rich_help_panel=spec.panel,
                        callback=checked(spec) if (spec.choices or spec.low is not None) else None)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                             annotation=Annotated[annotation, info])


def engine_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Give `command` every engine option; it receives them as one `engine: EngineOptions` argument."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "engine"]
    specs = option_specs()
    added = [_typer_parameter(name, spec, default, annotation) for name, (spec, default, annotation) in specs.items()]

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        engine = EngineOptions(**{name: kwargs.pop(name) for name in specs})
        return command(*args, engine=engine, **kwargs)

    wrapper.__signature__ = signature.replace(parameters=[*own, *added])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in (*own, *added)}
    return wrapper


# Input options that every command reading JSONL shares (batch, eval, serve's neighbours).
FieldOpt = Annotated[str | None, typer.Option(
    "--field", metavar="NAME", rich_help_panel="Input",
    help="JSONL text field. [default: the first of text, prompt, input, content]")]
IdFieldOpt = Annotated[str | None, typer.Option(
    "--id-field", metavar="NAME", rich_help_panel="Input",
    help="JSONL id field, copied to the output and used to join records. [default: id, when present]")]


class PanelCommand(TyperCommand):
    """Plain-text `--help` (no boxes, stable for the README) with options grouped by panel."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        args: list[tuple[str, str]] = []
        panels: dict[str, list[tuple[str, str]]] = {}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                args.append(record)
            else:
                panels.setdefault(getattr(param, "rich_help_panel", None) or "Other", []).append(record)
        if args:
            with formatter.section("Arguments"):
                formatter.write_dl(args)
        for panel in sorted(panels, key=lambda p: PANELS.index(p) if p in PANELS else len(PANELS)):
            with formatter.section(f"{panel} options" if panel in PANELS else "Other options"):
                formatter.write_dl(panels[panel])


__all__ = ["PANELS", "FieldOpt", "IdFieldOpt", "PanelCommand", "checked", "choice", "engine_options", "within"]
