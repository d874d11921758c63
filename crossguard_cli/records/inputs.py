"""Prompt records from arguments, stdin, text files and JSON Lines files (lazy, lossless).

Everything downstream (scoring, deciding, writing) works on `Record`s, so this module is the
only place that knows about bytes, encodings and file formats. Two promises shape it:

- Lossless: every input line becomes exactly one record (or, for blank JSONL lines, is skipped
  but still counted), and a line that cannot be read becomes an *error record* in its place
  instead of an exception, so one bad line never hides its neighbours or shifts line numbers.
- Lazy: files are read line by line in binary mode, so memory stays flat on huge inputs and a
  record read from a pipe is yielded as soon as its newline arrives.

Lines are split on ``b"\\n"`` only. ``str.splitlines`` would also split on ``\\r``, ``\\x0b``,
``\\x0c``, ``\\x1c``-``\\x1e``, ``\\x85``, U+2028 and U+2029, which would silently cut one prompt
into several and break line numbers that every other Unix tool agrees on.
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import sys
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any, BinaryIO

from crossguard_cli.errors import UsageError
from crossguard_cli.records.text import is_blank

INPUT_FORMATS = ("auto", "text", "jsonl")
TEXT_FIELDS = ("text", "prompt", "input", "content")
JSONL_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
TEXT_SUFFIXES = frozenset({".txt", ".text"})
STDIN = "-"

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class Record:
    """One prompt as read, or the reason it could not be read.

    Attributes:
        source: The path as given, ``"stdin"`` or ``"argument"``; with `line` it tells the
            user where to look.
        line: 1-based line number in `source`; None when the source could not be opened.
        text: The prompt exactly as read (after BOM and CR handling); None for error records.
        id: The JSONL id value (any JSON value), None when absent; kept so that results can be
            joined back to the caller's data.
        error: A one-line message for an error record, None otherwise.
        fields: The whole JSON object of a JSONL record, when the reader was asked to keep it
            (eval reads its labels from there); None otherwise.
    """

    source: str | None
    line: int | None
    text: str | None = None
    id: object = None
    error: str | None = None
    fields: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def status(self) -> str:
        """``"error"``, ``"empty"`` (nothing visible after normalisation: never scored) or ``"ok"``."""
        if self.error is not None:
            return "error"
        if is_blank(self.text):
            return "empty"
        return "ok"


def read_records(
    paths: Sequence[str],
    *,
    input_format: str = "auto",
    field: str | None = None,
    id_field: str | None = None,
    stdin: BinaryIO | None = None,
    keep_fields: bool = False,
) -> Iterator[Record]:
    """Yield the records of each path in order, reading lazily.

    Options are checked here, before anything is read, so a bad value fails at once rather than
    at the first ``next()``; the reading itself happens in the returned generator.

    Args:
        paths: Files to read in order; ``"-"`` is stdin, and no paths at all means stdin.
        input_format: ``"auto"`` (by extension, else by the first non-blank line: ``{`` means
            JSONL), ``"text"`` (one prompt per line) or ``"jsonl"`` (one object per line).
        field: JSONL field holding the prompt; None tries ``text``, ``prompt``, ``input`` and
            ``content`` in that order, per record.
        id_field: JSONL field holding the record id; None uses ``id`` when present.
        stdin: Binary stream read for ``"-"``; None means ``sys.stdin.buffer`` at call time.
        keep_fields: Keep each JSONL record's whole object in `Record.fields`.

    Returns:
        A generator of `Record`s; closing it closes the file being read.

    Raises:
        UsageError: For an unknown `input_format`, or `field`/`id_field` with text input.

    Examples:
        >>> import io
        >>> [r.text for r in read_records([], stdin=io.BytesIO(b"hi\\r\\nthere"))]
        ['hi', 'there']
    """
    if isinstance(paths, (str, bytes)):
        raise TypeError("paths must be a sequence of paths, not a single string")
    if input_format not in INPUT_FORMATS:
        raise UsageError(f"--input-format must be one of auto, text, jsonl; got {input_format!r}")
    if input_format == "text" and (field is not None or id_field is not None):
        raise UsageError("--field and --id-field apply to JSONL input only; use --input-format jsonl")
    sources = [os.fspath(path) for path in paths] or [STDIN]
    return _read_all(sources, _Options(input_format, field, id_field, keep_fields), stdin)


def read_stream(
    stream: BinaryIO,
    source: str,
    *,
    input_format: str = "auto",
    field: str | None = None,
    id_field: str | None = None,
    keep_fields: bool = False,
) -> Iterator[Record]:
    """The records of one open binary stream, exactly as `read_records` reads a file named `source`.

    For readers that open their own streams (object stores, archives, a Ray task's file
    system): the format is told by `source`'s extension (`.gz` names are decompressed here), else
    by content; line numbers are the stream's own. The stream is not closed.
    """
    if input_format not in INPUT_FORMATS:
        raise UsageError(f"--input-format must be one of auto, text, jsonl; got {input_format!r}")
    opts = _Options(input_format, field, id_field, keep_fields)
    if source.lower().endswith(".gz"):
        stream = gzip.GzipFile(fileobj=stream, mode="rb")  # type: ignore[assignment]
    return _read_stream(stream, source, _format_for(source, input_format), opts)


def record_from_text(text: str, source: str | None = "argument", line: int | None = 1) -> Record:
    """Wrap a prompt given as a string (``check TEXT``, the Python API, a request) as a record.

    Invalid UTF-8 in ``argv`` reaches Python as lone surrogates (surrogateescape), which no
    tokenizer or UTF-8 writer accepts, so it becomes an error record here instead of a crash later.
    """
    bad = _lone_surrogate(text)
    if bad is not None:
        return Record(source, line, error=f"invalid UTF-8 at character {bad + 1}: pass the prompt as UTF-8")
    return Record(source, line, text=text)


def record_from_argument(text: str) -> Record:
    """``crossguard check TEXT``: the prompt as a record from source "argument", line 1."""
    return record_from_text(text, "argument", 1)


def record_from_stdin_whole(stream: BinaryIO | None = None) -> Record:
    """Read all of stdin as one prompt (``check -``).

    A leading BOM and one trailing ``\\n`` (or ``\\r\\n``) are dropped, as ``echo`` and editors
    add them; anything else, inner newlines included, is part of the prompt.

    Args:
        stream: Binary stream to read; None means ``sys.stdin.buffer`` at call time.

    Returns:
        A record with source ``"stdin"`` and line 1, or an error record.
    """
    stream = stream if stream is not None else _sys_stdin()
    if stream is None:
        return Record("stdin", None, error="cannot open: stdin is closed")
    try:
        data = stream.read()
    except (OSError, ValueError) as exc:
        return Record("stdin", 1, error=f"read error: {_reason(exc)}")
    data = data.removeprefix(_BOM)
    if data.endswith(b"\n"):
        data = data[:-2] if data.endswith(b"\r\n") else data[:-1]
    try:
        return Record("stdin", 1, text=data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        return Record("stdin", 1, error=_utf8_error(exc))


@dataclass(frozen=True)
class _Options:
    input_format: str
    field: str | None
    id_field: str | None
    keep_fields: bool


def _read_all(paths: list[str], opts: _Options, stdin: BinaryIO | None) -> Iterator[Record]:
    """Read each path in turn; an unopenable path yields one error record and reading goes on."""
    for path in paths:
        if path == STDIN:
            stream = stdin if stdin is not None else _sys_stdin()
            if stream is None:
                yield Record("stdin", None, error="cannot open: stdin is closed")
                continue
            # Never closed here: stdin belongs to the caller and may be named twice.
            yield from _read_stream(stream, "stdin", _format_for(None, opts.input_format), opts)
            continue
        try:
            # A gzip file is read through gzip, line by line like any other (`data.jsonl.gz`).
            handle = gzip.open(path, "rb") if path.lower().endswith(".gz") else open(path, "rb")  # noqa: SIM115
        except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
            yield Record(path, None, error=f"cannot open: {_reason(exc)}")
            continue
        with handle:
            yield from _read_stream(handle, path, _format_for(path, opts.input_format), opts)


def _format_for(path: str | None, input_format: str) -> str | None:
    """The format of `path` when options or its extension tell; None means look at the content."""
    if input_format != "auto":
        return input_format
    pure = PurePath(path.lower()[:-3] if path is not None and path.lower().endswith(".gz") else path or "")
    suffix = pure.suffix.lower() if path is not None else ""
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in TEXT_SUFFIXES:
        return "text"
    return None


def _read_stream(stream: BinaryIO, source: str, fmt: str | None, opts: _Options) -> Iterator[Record]:
    """Turn one binary stream into records, one line at a time."""
    failure: list[BaseException] = []
    lines = _raw_lines(stream, failure)
    if fmt is None:
        fmt, peeked = _detect(lines)
        lines = itertools.chain(peeked, lines)
    line_no = 0
    for line_no, raw in enumerate(lines, start=1):
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield Record(source, line_no, error=_utf8_error(exc))
            continue
        if fmt == "text":
            yield Record(source, line_no, text=text)
        elif text.strip():
            yield _jsonl_record(text, source, line_no, opts)
    if failure:
        yield Record(source, line_no + 1, error=f"read error: {_reason(failure[0])}")


def _raw_lines(stream: BinaryIO, failure: list[BaseException]) -> Iterator[bytes]:
    """Yield lines with their ``\\n``, BOM dropped; a read error ends the stream into `failure`.

    ``readline`` on a binary stream splits on ``\\n`` only and, on a pipe, returns as soon as
    the newline arrives instead of waiting to fill its buffer: that is what makes streaming work.
    """
    try:
        line = stream.readline()
        if line.startswith(_BOM):
            line = line[len(_BOM) :]
            if not line:  # the whole input was a BOM
                return
        while line:
            yield line
            line = stream.readline()
    except (OSError, ValueError, EOFError, zlib.error) as exc:
        # ValueError: closed under us; EOFError: a cut gzip file; zlib.error: a damaged deflate
        # stream. Either way the lines read so far stand and the stream ends in an error record.
        failure.append(exc)


def _detect(lines: Iterator[bytes]) -> tuple[str, list[bytes]]:
    """Guess text or JSONL from the first non-blank line, returning the lines read to decide.

    Reads no further than that line, so a pipe's first records are not held back, and hands
    back what it read so that nothing is lost on a stream that cannot seek.
    """
    peeked: list[bytes] = []
    for line in lines:
        peeked.append(line)
        if line.strip():
            return ("jsonl" if line.lstrip().startswith(b"{") else "text"), peeked
    return "text", peeked


def _jsonl_record(text: str, source: str, line_no: int, opts: _Options) -> Record:
    """Parse one non-blank JSONL line into a record, or an error record naming the problem."""
    try:
        obj = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return Record(source, line_no, error="invalid JSON: nested too deeply")
    except json.JSONDecodeError as exc:
        return Record(source, line_no, error=f"invalid JSON: {exc.msg} at column {exc.colno}")
    except ValueError as exc:  # NaN/Infinity, or an integer too long to convert
        return Record(source, line_no, error=f"invalid JSON: {exc}")
    if not isinstance(obj, dict):
        return Record(source, line_no, error=f"expected a JSON object, got {_json_type(obj)}")
    kept = obj if opts.keep_fields else None
    record_id = obj.get(opts.id_field if opts.id_field is not None else "id")
    if opts.field is not None:
        if opts.field not in obj:
            error = f"missing field {opts.field!r} (check --field)"
            return Record(source, line_no, id=record_id, error=error, fields=kept)
        name = opts.field
    else:
        name = next((key for key in TEXT_FIELDS if key in obj), None)
        if name is None:
            error = f"no text field: expected one of {', '.join(TEXT_FIELDS)} (use --field)"
            return Record(source, line_no, id=record_id, error=error, fields=kept)
    value = obj[name]
    if not isinstance(value, str):
        error = f"field {name!r} must be a string, got {_json_type(value)}"
        return Record(source, line_no, id=record_id, error=error, fields=kept)
    bad = _lone_surrogate(value)
    if bad is not None:
        error = f"field {name!r} holds an unpaired surrogate at character {bad + 1}; it is not valid text"
        return Record(source, line_no, id=record_id, error=error, fields=kept)
    return Record(source, line_no, text=value, id=record_id, fields=kept)


def _reject_constant(name: str) -> object:
    """Refuse NaN and Infinity, which are not JSON and could not be written back as JSON."""
    raise ValueError(f"{name} is not valid JSON")


def _json_type(value: object) -> str:
    """Name a parsed value by its JSON type, the vocabulary of the user's file."""
    if isinstance(value, bool):  # before int: bool is an int in Python
        return "boolean"
    names = {dict: "object", list: "array", str: "string", int: "number", float: "number"}
    return names.get(type(value), "null")


def _lone_surrogate(text: str) -> int | None:
    """Index of the first lone surrogate in `text` (not encodable as UTF-8), or None."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def _utf8_error(exc: UnicodeDecodeError) -> str:
    """One line saying where a line stops being UTF-8 (1-based byte in the line) and what to do."""
    byte = exc.object[exc.start]
    return f"invalid UTF-8 at byte {exc.start + 1} (0x{byte:02x}): save the input as UTF-8"


def _reason(exc: BaseException) -> str:
    """The OS's words for an I/O failure, without the errno and path clutter."""
    if isinstance(exc, (zlib.error, gzip.BadGzipFile)) or (isinstance(exc, EOFError) and "stream" in str(exc)):
        return f"corrupt gzip data ({exc}); the records before it were read"
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return " ".join(reason.split())


def _sys_stdin() -> BinaryIO | None:
    """``sys.stdin.buffer`` looked up now (tests and embedders swap it), or None if absent."""
    return getattr(sys.stdin, "buffer", None) if sys.stdin is not None else None
