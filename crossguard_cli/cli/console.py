"""The CLI's streams: Rich consoles for people, UTF-8 text for machines, stdin and stdout manners.

Front ends own their consoles and sockets; this module is where the CLI's are made, so every
command colours only a real terminal, writes machine formats as UTF-8 whatever the locale, and
reads stdin in a way that lets Ctrl-C and `| head -1` end the program cleanly.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any


def console(stderr: bool = False) -> Any:
    """A Rich console that colours only a real terminal (piped output never holds ANSI codes,
    whatever FORCE_COLOR says) and honours NO_COLOR."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(file=stream, soft_wrap=True, highlight=False, force_terminal=stream.isatty())


def machine_stdout() -> IO[str]:
    """stdout for JSON lines and CSV: UTF-8 whatever the locale or PYTHONIOENCODING says.

    A legacy code page (cp1252, latin-1) cannot encode most prompts; the contract says these
    formats are UTF-8, so the stream is switched rather than the records mangled.
    """
    out = sys.stdout
    encoding = (getattr(out, "encoding", None) or "").lower().replace("_", "-")
    if encoding not in ("utf-8", "utf8") and hasattr(out, "reconfigure"):
        out.reconfigure(encoding="utf-8", errors="strict")
    return out


def private_stdin() -> IO[bytes] | None:
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


def drop_stdout() -> None:
    """Point fd 1 at /dev/null, so the interpreter's last flush of stdout cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


def error_line(message: str) -> None:
    """`crossguard: error: MESSAGE` on stderr: one line, never wrapped, whatever it contains."""
    sys.stderr.write(f"crossguard: error: {' '.join(str(message).split())}\n")
    sys.stderr.flush()


__all__ = ["console", "drop_stdout", "error_line", "machine_stdout", "private_stdin"]
