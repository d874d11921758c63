"""The `crossguard` command: options, wiring of the stages, consoles, errors -> exit codes.

No scoring logic lives here. Heavy modules (torch, transformers) are imported inside the
commands that need them, so `crossguard --help` and `crossguard validate` stay fast.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated

import typer

from crossguard_cli import DEFAULT_MODEL, __version__
from crossguard_cli.errors import CrossguardError, UsageError

app = typer.Typer(
    name="crossguard",
    help="Score prompts against natural-language rules with NLI cross-encoders.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _choice(name: str, values: tuple[str, ...]):
    def check(value: str | None) -> str | None:
        if value is not None and value not in values:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(values)}", param_hint=name)
        return value

    return check


def _version(value: bool) -> None:
    if value:
        print(f"crossguard {__version__}")
        raise typer.Exit(0)


RulesOpt = Annotated[str | None, typer.Option("--rules", "-r", envvar="CROSSGUARD_RULES", metavar="FILE",
                     help="Rules file (YAML). [default: the packaged rules, as rules.example.yaml]")]
ModelOpt = Annotated[str | None, typer.Option("--model", "-m", envvar="CROSSGUARD_MODEL", metavar="ID_OR_PATH",
                     help=f"Hub id or local folder. [default: rules file 'model:', else {DEFAULT_MODEL}]")]
RevisionOpt = Annotated[str | None, typer.Option("--revision", help="Hub branch, tag or commit of the model.")]
DeviceOpt = Annotated[str, typer.Option("--device", envvar="CROSSGUARD_DEVICE",
                      help="auto, cpu, cuda, cuda:N or mps.")]
DtypeOpt = Annotated[str, typer.Option("--dtype", callback=_choice("--dtype", ("auto", "float32", "float16",
                     "bfloat16")), help="auto, float32, float16 or bfloat16 (auto: bf16/fp16 on CUDA, fp32 on CPU).")]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", min=1, help="Pairs per forward pass. "
                     "[default: chosen per device, by a token budget]")]
MaxLenOpt = Annotated[int, typer.Option("--max-length", min=16, help="Tokens per (prompt, hypothesis) pair, "
                      "capped by the model.")]
MaxCharsOpt = Annotated[int, typer.Option("--max-chars", min=1, help="Characters kept per prompt before "
                        "tokenising.")]
ThresholdOpt = Annotated[float | None, typer.Option("--threshold", min=0.0, max=1.0,
                         help="Override every rule's threshold.")]
LongOpt = Annotated[str, typer.Option("--long-input", callback=_choice("--long-input", ("window", "truncate")),
                    help="window: score overlapping windows, best wins; truncate: first window only.")]
BackendOpt = Annotated[str, typer.Option("--backend", callback=_choice("--backend", ("torch", "onnx",
                       "openvino")), help="Inference backend: torch, onnx or openvino.")]


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version and exit.")] = False,
) -> None:
    """Score prompts against natural-language rules with NLI cross-encoders."""


def _build_scorer(rules, model, revision, device, dtype, batch_size, max_length, max_chars, threshold,
                  long_input, backend):
    from crossguard_cli.engine import build_scorer

    return build_scorer(rules_path=rules, model=model, revision=revision, device=device, dtype=dtype,
                        batch_size=batch_size, max_length=max_length, max_chars=max_chars,
                        threshold=threshold, long_input=long_input, backend=backend)


def _console(stderr: bool = False):
    from rich.console import Console

    return Console(stderr=stderr, soft_wrap=True, highlight=False)


@app.command()
def check(
    text: Annotated[str, typer.Argument(help="The prompt, or - to read all of stdin as one prompt.")],
    rules: RulesOpt = None,
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    batch_size: BatchOpt = None,
    max_length: MaxLenOpt = 512,
    max_chars: MaxCharsOpt = 50_000,
    fmt: Annotated[str | None, typer.Option("--format", "-f", callback=_choice("--format", ("table", "jsonl",
                   "csv", "json")), help="table, json, jsonl or csv. [default: table on a terminal, else json]")] = None,
    threshold: ThresholdOpt = None,
    long_input: LongOpt = "window",
    backend: BackendOpt = "torch",
) -> int:
    """Score one prompt against every rule. Exit 1 if a rule fired, 0 if not, 2 on error."""
    from crossguard_cli.inputs import record_from_argument, record_from_stdin_whole

    record = record_from_stdin_whole() if text == "-" else record_from_argument(text)
    if record.status == "error":
        raise CrossguardError(record.error, where=f"{record.source}:{record.line}")
    if record.status == "empty":
        raise UsageError("the prompt is empty; nothing to score", where=f"{record.source}:{record.line}")
    scorer = _build_scorer(rules, model, revision, device, dtype, batch_size, max_length, max_chars,
                           threshold, long_input, backend)
    from crossguard_cli.outputs import make_writer
    from crossguard_cli.pipeline import score_records

    (out,) = score_records(scorer, [record])
    if out["status"] == "error":
        raise CrossguardError(out["error"], where=f"{record.source}:{record.line}")
    fmt = fmt or ("table" if sys.stdout.isatty() else "json")
    writer = make_writer(fmt, sys.stdout, scorer.ruleset, console=_console(), detailed=True)
    writer.write(out)
    writer.close()
    return 1 if out["verdict"] == "flagged" else 0


@app.command()
def batch(
    paths: Annotated[list[str] | None, typer.Argument(help="Files to read in order; - or none: stdin.",
                                                       show_default=False)] = None,
    rules: RulesOpt = None,
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    batch_size: BatchOpt = None,
    max_length: MaxLenOpt = 512,
    max_chars: MaxCharsOpt = 50_000,
    fmt: Annotated[str | None, typer.Option("--format", "-f", callback=_choice("--format", ("table", "jsonl",
                   "csv")), help="table, jsonl or csv. [default: table on a terminal, else jsonl]")] = None,
    threshold: ThresholdOpt = None,
    long_input: LongOpt = "window",
    backend: BackendOpt = "torch",
    input_format: Annotated[str, typer.Option("--input-format", callback=_choice("--input-format", ("auto",
                            "text", "jsonl")), help="auto (by extension, else content), text or jsonl.")] = "auto",
    field: Annotated[str | None, typer.Option("--field", help="JSONL text field. [default: the first of text, "
                     "prompt, input, content]")] = None,
    id_field: Annotated[str | None, typer.Option("--id-field", help="JSONL id field copied to the output. "
                        "[default: id, when present]")] = None,
    on_error: Annotated[str, typer.Option("--on-error", callback=_choice("--on-error", ("continue", "abort")),
                        help="continue: error records and go on; abort: stop at the first.")] = "continue",
    exit_zero: Annotated[bool, typer.Option("--exit-zero", help="Exit 0 even when a record is flagged.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line on stderr.")] = False,
) -> int:
    """Score every record of each PATH (or stdin), one output record per input record, in order."""
    from crossguard_cli.inputs import read_records
    from crossguard_cli.outputs import make_writer
    from crossguard_cli.pipeline import stream
    from crossguard_cli.progress import Progress

    records = read_records(paths or [], input_format=input_format, field=field, id_field=id_field)
    scorer = _build_scorer(rules, model, revision, device, dtype, batch_size, max_length, max_chars,
                           threshold, long_input, backend)
    fmt = fmt or ("table" if sys.stdout.isatty() else "jsonl")
    writer = make_writer(fmt, sys.stdout, scorer.ruleset, console=_console())
    counts = {"records": 0, "flagged": 0, "errors": 0, "uncertain": 0, "empty": 0}
    start = time.monotonic()
    with Progress(_console(stderr=True), enabled=sys.stderr.isatty() and not quiet) as bar:
        for group in stream(scorer, records, group_size=max(64, min(1024, scorer.batch_size * 4))):
            for out in group:
                counts["records"] += 1
                status = out["status"]
                if status == "error":
                    counts["errors"] += 1
                    writer.write(out)
                    _error_line(f"{out['source']}:{out['line'] if out['line'] is not None else '-'}: {out['error']}")
                    if on_error == "abort":
                        writer.close()
                        return 2
                    continue
                if status == "empty":
                    counts["empty"] += 1
                elif out["verdict"] in ("flagged", "uncertain"):
                    counts[out["verdict"]] += 1
                writer.write(out)
            writer.flush()
            bar.update(counts)
    writer.close()
    if not quiet:
        secs = time.monotonic() - start
        sys.stderr.write(f"crossguard: {counts['records']} records, {counts['flagged']} flagged, "
                         f"{counts['uncertain']} uncertain, {counts['errors']} errors, {counts['empty']} empty "
                         f"in {secs:.1f} s\n")
    if counts["errors"]:
        return 2
    return 1 if counts["flagged"] and not exit_zero else 0


@app.command()
def validate(
    rules: Annotated[str | None, typer.Argument(envvar="CROSSGUARD_RULES", help="Rules file. [default: the "
                     "packaged rules]", show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary; only the exit code.")] = False,
) -> int:
    """Check a rules file without loading any model. Exit 0 if valid, 2 if not."""
    from crossguard_cli.rules import load_rules, summarize

    ruleset = load_rules(rules)
    if not quiet:
        from rich.table import Table

        table = Table(title=f"{ruleset.source}: {len(ruleset.rules)} rules, mode {ruleset.mode}"
                      + (f", model {ruleset.model}" if ruleset.model else ""), title_justify="left")
        for col in ("rule", "label", "threshold", "margin", "hypotheses"):
            table.add_column(col, justify="right" if col in ("threshold", "margin", "hypotheses") else "left")
        for row in summarize(ruleset):
            table.add_row(row["name"], row["label"], f"{row['threshold']:g}", f"{row['margin']:g}",
                          str(row["hypotheses"]))
        _console().print(table)
    return 0


def _error_line(message: str) -> None:
    sys.stderr.write(f"crossguard: error: {message}\n")
    sys.stderr.flush()


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (`| head -1`): exit like `yes | head -1`, without noise."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass
    return 141


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, and turn every user error into one line and an exit code."""
    from typer.exceptions import TyperException

    command = typer.main.get_command(app)
    try:
        code = command.main(args=argv, prog_name="crossguard", standalone_mode=False)
        code = code if isinstance(code, int) else 0
        sys.stdout.flush()
    except CrossguardError as exc:
        _error_line(str(exc))
        code = exc.exit_code
    except TyperException as exc:  # usage errors from option parsing
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(message + "\n")
            code = 0
        else:
            _error_line(" ".join(message.split()))
            code = getattr(exc, "exit_code", 2) or 2
    except BrokenPipeError:
        code = _quiet_broken_pipe()
    except KeyboardInterrupt:
        code = 130
    except OSError as exc:  # writing results failed: disk full, closed stream
        _error_line(f"stdout: {exc.strerror or exc}")
        code = 2
    sys.exit(code)
