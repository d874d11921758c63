"""The `crossguard` command: options, wiring of the stages, consoles, errors -> exit codes.

No scoring logic lives here. Heavy modules (torch, transformers) are imported inside the
commands that need them, so `crossguard --help` and `crossguard validate` stay fast.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import Annotated

import typer

from crossguard_cli import __version__
from crossguard_cli.errors import CrossguardError, UsageError
from crossguard_cli.options import (
    BackendOpt,
    BatchOpt,
    DeviceOpt,
    DtypeOpt,
    LongOpt,
    MaxCharsOpt,
    MaxLenOpt,
    ModelOpt,
    RevisionOpt,
    RulesOpt,
    ThresholdOpt,
    choice,
)

app = typer.Typer(
    name="crossguard",
    help="Score prompts against natural-language rules with NLI cross-encoders.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)


def _version(value: bool) -> None:
    if value:
        print(f"crossguard {__version__}")
        raise typer.Exit(0)


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
    """A Rich console that colours only a real terminal (piped output never holds ANSI codes,
    whatever FORCE_COLOR says) and honours NO_COLOR."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, soft_wrap=True, highlight=False, force_terminal=stream.isatty())


@app.command()
def check(
    text: Annotated[str, typer.Argument(metavar="TEXT", help="The prompt, or - to read all of stdin as one prompt.")],
    rules: RulesOpt = None,
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    batch_size: BatchOpt = None,
    max_length: MaxLenOpt = 512,
    max_chars: MaxCharsOpt = 50_000,
    fmt: Annotated[str | None, typer.Option(
        "--format", "-f", callback=choice("--format", ("table", "jsonl", "csv", "json")),
        help="table, json, jsonl or csv. [default: table on a terminal, else json]")] = None,
    threshold: ThresholdOpt = None,
    long_input: LongOpt = "window",
    backend: BackendOpt = "torch",
) -> int:
    """Score one prompt against every rule. Exit 1 if a rule fired, 0 if not, 2 on error."""
    from crossguard_cli.inputs import record_from_argument, record_from_stdin_whole
    from crossguard_cli.outputs import where

    record = record_from_stdin_whole() if text == "-" else record_from_argument(text)
    if record.status == "error":
        raise CrossguardError(record.error, where=where(record))
    if record.status == "empty":
        raise UsageError("the prompt is empty; nothing to score", where=where(record))
    scorer = _build_scorer(rules, model, revision, device, dtype, batch_size, max_length, max_chars,
                           threshold, long_input, backend)
    from crossguard_cli.outputs import make_writer
    from crossguard_cli.pipeline import score_records

    (out,) = score_records(scorer, [record])
    if out["status"] == "error":
        raise CrossguardError(out["error"], where=where(record))
    fmt = fmt or ("table" if sys.stdout.isatty() else "json")
    writer = make_writer(fmt, sys.stdout, scorer.ruleset, console=_console(), detailed=True)
    writer.write(out)
    writer.close()
    return 1 if out["verdict"] == "flagged" else 0


@app.command()
def batch(
    paths: Annotated[list[str] | None, typer.Argument(metavar="PATH", help="Files to read in order; - or none: stdin.",
                                                       show_default=False)] = None,
    rules: RulesOpt = None,
    model: ModelOpt = None,
    revision: RevisionOpt = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    batch_size: BatchOpt = None,
    max_length: MaxLenOpt = 512,
    max_chars: MaxCharsOpt = 50_000,
    fmt: Annotated[str | None, typer.Option("--format", "-f", callback=choice("--format", ("table", "jsonl",
                   "csv")), help="table, jsonl or csv. [default: table on a terminal, else jsonl]")] = None,
    threshold: ThresholdOpt = None,
    long_input: LongOpt = "window",
    backend: BackendOpt = "torch",
    input_format: Annotated[str, typer.Option("--input-format", callback=choice("--input-format", ("auto",
                            "text", "jsonl")), help="auto (by extension, else content), text or jsonl.")] = "auto",
    field: Annotated[str | None, typer.Option("--field", help="JSONL text field. [default: the first of text, "
                     "prompt, input, content]")] = None,
    id_field: Annotated[str | None, typer.Option("--id-field", help="JSONL id field copied to the output. "
                        "[default: id, when present]")] = None,
    on_error: Annotated[str, typer.Option("--on-error", callback=choice("--on-error", ("continue", "abort")),
                        help="continue: error records and go on; abort: stop at the first.")] = "continue",
    exit_zero: Annotated[bool, typer.Option("--exit-zero", help="Exit 0 even when a record is flagged.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No summary line on stderr.")] = False,
) -> int:
    """Score every record of each PATH (or stdin), one output record per input record, in order."""
    from crossguard_cli.errors import OutputError
    from crossguard_cli.inputs import read_records
    from crossguard_cli.outputs import make_writer, where
    from crossguard_cli.pipeline import write_stream
    from crossguard_cli.progress import Progress

    paths = paths or ["-"]
    stdin = _private_stdin() if "-" in paths else None
    records = read_records(paths, input_format=input_format, field=field, id_field=id_field, stdin=stdin)
    scorer = _build_scorer(rules, model, revision, device, dtype, batch_size, max_length, max_chars,
                           threshold, long_input, backend)
    fmt = fmt or ("table" if sys.stdout.isatty() else "jsonl")
    start = time.monotonic()
    with Progress(_console(stderr=True), enabled=sys.stderr.isatty() and not quiet) as bar:

        def report(out: dict) -> None:
            bar.line(f"crossguard: error: {where(out)}: {out['error']}")

        # A table on the terminal that shows the bar goes through the bar's console, above the bar.
        on_screen = bar.enabled and fmt == "table" and sys.stdout.isatty()
        try:
            writer = make_writer(fmt, sys.stdout, scorer.ruleset, console=bar.console if on_screen else _console())
            tally = write_stream(scorer, records, writer,
                                 on_error=on_error, report=report, progress=bar.update)
            writer.close()
        except BrokenPipeError:
            raise
        except OSError as exc:  # disk full, a closed stream: one line, and stdout is given up
            _drop_stdout()
            raise OutputError(f"cannot write results: {exc.strerror or exc}", where="stdout") from None
    if not quiet:
        sys.stderr.write(f"crossguard: {tally.records} records, {tally.flagged} flagged, {tally.uncertain} "
                         f"uncertain, {tally.errors} errors, {tally.empty} empty in "
                         f"{time.monotonic() - start:.1f} s\n")
    if tally.errors:
        return 2
    return 1 if tally.flagged and not exit_zero else 0


@app.command()
def validate(
    rules: Annotated[str | None, typer.Argument(
        metavar="RULES", envvar="CROSSGUARD_RULES", help="Rules file. [default: the packaged rules]",
        show_default=False)] = None,
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


def _register_eval() -> None:
    """`crossguard eval` lives in eval_command.py (its wiring is long); it is registered here."""
    from crossguard_cli.eval_command import eval_command

    app.command("eval")(eval_command)


_register_eval()


def _error_line(message: str) -> None:
    sys.stderr.write(f"crossguard: error: {message}\n")
    sys.stderr.flush()


def _private_stdin():
    """A reader of our own on fd 0 for the reader thread, or None to use `sys.stdin.buffer`.

    A thread blocked reading `sys.stdin.buffer` holds its lock; when the program then ends
    (Ctrl-C, `| head -1`), the interpreter's shutdown closes sys.stdin, cannot take that lock
    and aborts ("Fatal Python error: _enter_buffered_busy"). A duplicate descriptor keeps the
    reader's lock private, and the OS closes it at exit.
    """
    try:
        return os.fdopen(os.dup(sys.stdin.fileno()), "rb")
    except (AttributeError, OSError, ValueError):  # no real stdin: tests, embedders, closed fd 0
        return None


def _drop_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's last flush of stdout cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (`| head -1`): exit like `yes | head -1`, without noise."""
    _drop_stdout()
    return 141


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app, and turn every user error into one line and an exit code.

    The command runs through Click's `make_context`/`invoke` rather than `main`, whose own
    handlers would turn a closed pipe into exit 1 and hide Ctrl-C from us.
    """
    from typer.exceptions import Abort, Exit, TyperException

    command = typer.main.get_command(app)
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        with command.make_context("crossguard", args) as ctx:
            code = command.invoke(ctx)
        code = code if isinstance(code, int) else 0
        sys.stdout.flush()
    except Exit as exc:  # --help, --version
        code = exc.exit_code
        sys.stdout.flush()
    except CrossguardError as exc:
        _error_line(str(exc))
        code = exc.exit_code
    except TyperException as exc:  # usage errors from option parsing
        message = exc.format_message()
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(message + "\n")
            code = 0
        else:
            # "Invalid value for '--batch-size': must be ..." -> "--batch-size: must be ..."
            _error_line(re.sub(r"^Invalid value for '?([^':]+)'?: ", r"\1: ", " ".join(message.split())))
            code = getattr(exc, "exit_code", 2) or 2
    except BrokenPipeError:
        code = _quiet_broken_pipe()
    except (KeyboardInterrupt, Abort):
        code = 130
    except OSError as exc:  # an I/O failure nothing nearer handled: name the file when there is one
        if exc.filename is None:  # most likely writing results (disk full, closed stream)
            _drop_stdout()
        _error_line(f"{exc.filename or 'stdout'}: {exc.strerror or exc}")
        code = 2
    sys.exit(code)
