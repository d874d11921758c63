"""The `crossguard` command: the Typer app, and every failure turned into one line and an exit code.

No scoring logic lives here or in the command modules beside it: each command parses its
options, builds a `Guard` and hands off. Heavy modules (torch, transformers) are imported
inside the commands that need them, so `crossguard --help` and `crossguard validate` stay fast.

Exit codes are a promise to scripts: 1 means "flagged" and nothing else. Any failure, expected
(a `CrossguardError`) or not (a bug, a library's surprise), is one stderr line and exit 2;
`CROSSGUARD_DEBUG=1` adds the traceback for a bug report.
"""

from __future__ import annotations

import os
import re
import sys
import threading
from typing import Annotated

import typer

from crossguard_cli import __version__
from crossguard_cli.cli import signals
from crossguard_cli.cli.batch import batch
from crossguard_cli.cli.check import check
from crossguard_cli.cli.console import drop_stdout, error_line
from crossguard_cli.cli.eval import eval_command
from crossguard_cli.cli.options import PanelCommand
from crossguard_cli.cli.serve import serve
from crossguard_cli.cli.signals import Terminated
from crossguard_cli.cli.validate import validate
from crossguard_cli.errors import CrossguardError

app = typer.Typer(
    name="crossguard",
    help="Score prompts against natural-language rules with NLI cross-encoders.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process ended by it


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


app.command(cls=PanelCommand)(check)
app.command(cls=PanelCommand)(batch)
app.command(cls=PanelCommand)(validate)
app.command("eval", cls=PanelCommand)(eval_command)
app.command(cls=PanelCommand)(serve)


def _quiet_broken_pipe() -> int:
    """stdout's reader went away (`| head -1`): exit like `yes | head -1`, without noise."""
    drop_stdout()
    return 141


def _internal_error(exc: BaseException) -> int:
    """A bug or a library's surprise: still one line and exit 2, never a traceback and exit 1."""
    if os.environ.get("CROSSGUARD_DEBUG"):
        import traceback

        traceback.print_exception(exc)
    where = ""
    tb = exc.__traceback__
    while tb is not None:
        where = f" (at {os.path.basename(tb.tb_frame.f_code.co_filename)}:{tb.tb_lineno})"
        tb = tb.tb_next
    error_line(f"internal error: {type(exc).__name__}: {exc}{where}; please report it "
               "(CROSSGUARD_DEBUG=1 shows the traceback)")
    return 2


def _run(args: list[str]) -> int:
    """Run one command; every way it can end becomes an exit code here."""
    from typer.exceptions import Abort, Exit, TyperException

    command = typer.main.get_command(app)
    try:
        with command.make_context("crossguard", args) as ctx:
            code = command.invoke(ctx)
        sys.stdout.flush()
        return code if isinstance(code, int) else 0
    except Exit as exc:  # --help, --version
        sys.stdout.flush()
        return exc.exit_code
    except CrossguardError as exc:
        error_line(str(exc))
        return exc.exit_code
    except TyperException as exc:  # usage errors from option parsing
        message = exc.format_message()
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(message + "\n")
            return 0
        # "Invalid value for '--batch-size': must be ..." -> "--batch-size: must be ..."
        error_line(re.sub(r"^Invalid value for '?([^':]+)'?: ", r"\1: ", " ".join(message.split())))
        return getattr(exc, "exit_code", 2) or 2
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except (KeyboardInterrupt, Abort):
        return 130
    except Terminated:
        return EXIT_TERMINATED
    except OSError as exc:  # an I/O failure nothing nearer handled: name the file when there is one
        if exc.filename is None:  # most likely writing results (disk full, closed stream)
            drop_stdout()
        error_line(f"{exc.filename or 'stdout'}: {exc.strerror or exc}")
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence for exit codes
        return _internal_error(exc)


def main(argv: list[str] | None = None) -> None:
    """Entry point: run the app and exit with its code.

    The command runs through Click's `make_context`/`invoke` rather than `main`, whose own
    handlers would turn a closed pipe into exit 1 and hide Ctrl-C from us. SIGTERM unwinds like
    Ctrl-C, and neither cuts an output line in half (cli/signals.py); stderr never fails to
    encode a message, whatever the locale.
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if hasattr(sys.stderr, "reconfigure"):
        sys.stderr.reconfigure(errors="backslashreplace")
    import logging

    from crossguard_cli.notices import notices_on_stderr

    notices_on_stderr(logging.Formatter("crossguard: %(message)s"))
    restore = signals.install()
    try:
        code = _run(args)
    except Terminated:  # arrived while an error was being reported
        code = EXIT_TERMINATED
    except KeyboardInterrupt:
        code = 130
    finally:
        restore()
    try:
        sys.stdout.flush()  # complete every line written before the end (Ctrl-C, SIGTERM)
    except BrokenPipeError:
        code = _quiet_broken_pipe() if code in (0, 1) else code
        drop_stdout()
    except (OSError, ValueError):
        drop_stdout()
    engine = sys.modules.get("crossguard_cli.engine.pipeline")  # never imported for --help
    if engine is not None and any(t.is_alive() for t in threading.enumerate() if t.name in engine.THREADS):
        # A second signal cut the engine's wait for its threads short, and one is still inside the
        # model or the tokenizer: letting the interpreter finalise around it aborts the process.
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


__all__ = ["app", "main"]
