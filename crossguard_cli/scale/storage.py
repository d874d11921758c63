"""Where a Ray job's files live: local paths and object-store URIs, through pyarrow file systems.

A Ray job reads and writes on machines other than the one it was started from, so every
location is resolved where it is used: a local path becomes an absolute path on the local file
system (a path on a cluster means a folder every node sees, such as a shared mount), a URI
(``s3://bucket/key``, ``gs://...``, ``file:///...``) goes to `pyarrow.fs.FileSystem.from_uri`,
which takes credentials from the usual environment of the machine it runs on.

Globs are expanded here, once, on the driver, into a sorted list of files, as a shell would do
for a local path (``*`` does not cross ``/`` nor match a leading dot; ``**`` crosses folders).
"""

from __future__ import annotations

import errno
import fnmatch
import io
import os
import re
from typing import IO, Any

from crossguard_cli.errors import CrossguardError

GLOB_CHARS = frozenset("*?[")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
READ_BUFFER = 1 << 20


class StorageError(CrossguardError):
    """A location that no file system can serve (unknown scheme, unreachable store, bad folder)."""


def is_uri(location: str) -> bool:
    """True for ``scheme://...`` locations, False for plain local paths."""
    return bool(_SCHEME.match(location))


def has_glob(location: str) -> bool:
    return any(ch in GLOB_CHARS for ch in location)


def resolve(location: str) -> tuple[Any, str]:
    """The pyarrow file system of `location` and the path inside it.

    Raises:
        StorageError: naming `location`, when pyarrow has no file system for it or cannot reach it.
    """
    import pyarrow.fs as pafs

    if not is_uri(location):
        return pafs.LocalFileSystem(), os.path.abspath(location)
    try:
        return pafs.FileSystem.from_uri(location)
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise StorageError(_one_line(exc), where=location) from None


def open_input(location: str) -> IO[bytes]:
    """`location` opened for reading as a buffered binary stream (``readline`` splits on ``\\n``).

    Compression is left to the reader (batch's own reader decompresses ``.gz`` by name).

    Raises:
        OSError: the file cannot be opened; `open_error` words it as batch does.
        StorageError: the location has no file system.
    """
    fs, path = resolve(location)
    try:
        raw = fs.open_input_stream(path, compression=None, buffer_size=READ_BUFFER)
    except OSError as exc:
        raise _with_reason(exc, fs, path) from None
    return io.BufferedReader(raw, READ_BUFFER)


def open_error(exc: BaseException) -> str:
    """The OS's words for a file that cannot be opened ("No such file or directory"), as batch gives them."""
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return _one_line(reason)


def _with_reason(exc: OSError, fs: Any, path: str) -> OSError:
    """pyarrow's error with the OS's plain reason as `strerror`, so records read as batch's do."""
    import pyarrow.fs as pafs

    code = exc.errno
    if code is None:
        try:
            kind = fs.get_file_info(path).type
        except OSError:
            kind = None
        code = {pafs.FileType.Directory: errno.EISDIR, pafs.FileType.NotFound: errno.ENOENT}.get(kind)
    if code is None:
        return OSError(_one_line(exc))
    return OSError(code, os.strerror(code))


def glob(pattern: str) -> list[tuple[str, str]]:
    """Files matching `pattern`, sorted: (the name as a shell would spell it, the location to open).

    Raises:
        StorageError: the folder the pattern starts from cannot be listed.
    """
    import pyarrow.fs as pafs

    prefix, rest = _split_pattern(pattern)
    fs, base = resolve(prefix or ".")
    base = base.rstrip("/") if base not in ("/", "") else base
    wanted = rest.split("/")
    selector = pafs.FileSelector(base, recursive="/" in rest or "**" in rest, allow_not_found=True)
    try:
        infos = fs.get_file_info(selector)
    except OSError as exc:
        raise StorageError(f"cannot list: {open_error(exc)}", where=pattern) from None
    found = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        rel = info.path[len(base):].lstrip("/") if base else info.path
        if _matches(wanted, rel.split("/")):
            name = f"{prefix.rstrip('/')}/{rel}" if prefix else rel
            location = name if is_uri(name) else os.path.join(os.path.abspath(prefix or "."), rel)
            found.append((name, location))
    return sorted(found)


def _split_pattern(pattern: str) -> tuple[str, str]:
    """("the folder before the first wildcard", "the wildcard part"), split at a ``/``."""
    head = ""
    if is_uri(pattern):
        scheme_end = pattern.index("://") + 3
        head, pattern = pattern[:scheme_end], pattern[scheme_end:]
    parts = pattern.split("/")
    first = next(i for i, part in enumerate(parts) if has_glob(part))
    prefix = "/".join(parts[:first])
    if first == 0 and not head:
        return "", pattern
    if pattern.startswith("/") and first == 1:
        prefix = "/"
    return head + prefix, "/".join(parts[first:])


def _matches(pattern: list[str], parts: list[str]) -> bool:
    """Does a relative path (split at ``/``) match a glob (split at ``/``)? ``**`` is any number of folders."""
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return _matches(pattern[1:], parts) or (
            bool(parts) and not parts[0].startswith(".") and _matches(pattern, parts[1:]))
    return bool(parts) and _segment(pattern[0], parts[0]) and _matches(pattern[1:], parts[1:])


def _segment(pattern: str, name: str) -> bool:
    """One name against one glob segment; as in a shell, only a pattern with a leading dot matches one."""
    if name.startswith(".") and not pattern.startswith("."):
        return False
    return fnmatch.fnmatchcase(name, pattern)


def _one_line(value: object) -> str:
    return " ".join(str(value).split())


__all__ = ["GLOB_CHARS", "StorageError", "glob", "has_glob", "is_uri", "open_error", "open_input", "resolve"]
