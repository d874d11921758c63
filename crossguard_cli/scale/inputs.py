"""A Ray job's inputs: PATH arguments expanded to files, each read into chunks with its own line numbers.

Line numbers are the file's own whatever Ray does with blocks, because one task reads one file
from its first byte to its last, with batch's own reader (`read_stream`), and cuts the records
into chunks of consecutive lines. A chunk is the unit of everything downstream: it is scored by
one actor call, written as one shard, and named by (file index, chunk index), both fixed by
the input alone. That is what makes a retried chunk rewrite the same shard with the same records.

A file that cannot be opened, or a pattern that matches nothing, gives one error record
(``"line": null``) in its place, as `batch` does for a path it cannot open.
"""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from crossguard_cli.errors import UsageError
from crossguard_cli.records.inputs import STDIN, Record, read_stream
from crossguard_cli.scale import storage


@dataclass(frozen=True)
class InputFile:
    """One file to read, in argument order.

    Attributes:
        index: position among all files after glob expansion; it names the file's shards.
        source: the path as given, or as its glob expanded it: the records' `source`.
        location: what to open (an absolute local path or a URI); None when `error` is set.
        error: why there is nothing to open (a pattern that matched no file).
    """

    index: int
    source: str
    location: str | None
    error: str | None = None


@dataclass(frozen=True)
class ReadOptions:
    """batch's input options, and how many records go into one chunk (and so one shard)."""

    input_format: str = "auto"
    field: str | None = None
    id_field: str | None = None
    records_per_shard: int = 1000


def expand(paths: Sequence[str]) -> list[InputFile]:
    """The files of `paths` in order: globs expanded and sorted, each file numbered.

    A path is kept as given when it names a file that exists (``[`` in a file name is common
    enough), so only a path that is not an existing file is read as a pattern.
    """
    files: list[InputFile] = []
    for path in paths:
        if path == STDIN:
            raise UsageError("--engine ray cannot read stdin; give PATHs")
        if not storage.has_glob(path) or _exists(path):
            files.append(InputFile(len(files), path, path if storage.is_uri(path) else _absolute(path)))
            continue
        matches = storage.glob(path)
        if not matches:
            files.append(InputFile(len(files), path, None, "cannot open: no file matches this pattern"))
        for source, location in matches:
            files.append(InputFile(len(files), source, location))
    return files


def read_file(file: InputFile, options: ReadOptions) -> Iterator[Record]:
    """The records of one file, exactly as `batch` reads them (same lines, same error records)."""
    if file.location is None:
        yield Record(file.source, None, error=file.error or "cannot open")
        return
    try:
        stream = storage.open_input(file.location)
    except OSError as exc:
        yield Record(file.source, None, error=f"cannot open: {storage.open_error(exc)}")
        return
    with stream:
        yield from read_stream(stream, file.source, input_format=options.input_format, field=options.field,
                               id_field=options.id_field)


def chunks(records: Iterable[Record], size: int) -> Iterator[tuple[int, list[Record], bool]]:
    """(chunk index, records, is last) for consecutive runs of `size` records; always at least one chunk.

    An empty file still gives one (empty) chunk marked last, so the job can tell a file with no
    records from a file whose chunks went missing.
    """
    index, current = 0, []
    for record in records:
        if len(current) == size:
            yield index, current, False
            index, current = index + 1, []
        current.append(record)
    yield index, current, True


def encode(records: list[Record]) -> bytes:
    """A chunk's records as bytes for Ray's object store; `source` travels once, beside them."""
    return pickle.dumps([(r.line, r.text, r.id, r.error) for r in records], protocol=5)


def decode(source: str, payload: bytes) -> list[Record]:
    return [Record(source, line, text, id_, error) for line, text, id_, error in pickle.loads(payload)]


def file_rows(files: list[InputFile]) -> list[dict[str, Any]]:
    """The job's first dataset: one row per file."""
    return [{"file": f.index, "source": f.source, "location": f.location, "error": f.error} for f in files]


def read_files(batch: Any, *, options: ReadOptions) -> Iterator[dict[str, list]]:
    """Ray Data `map_batches` function (a task, batch format pyarrow): file rows in, one row per chunk out.

    Each chunk is yielded as soon as it is read, so a large file streams through the cluster
    instead of being held in memory; Ray keeps each yielded chunk as its own block (see job.py).
    """
    for row in batch.to_pylist():
        file = InputFile(row["file"], row["source"], row["location"], row["error"])
        for index, records, last in chunks(read_file(file, options), options.records_per_shard):
            yield {"file": [file.index], "chunk": [index], "last": [last], "source": [file.source],
                   "payload": [encode(records)]}


def _exists(path: str) -> bool:
    import pyarrow.fs as pafs

    try:
        fs, inner = storage.resolve(path)
        return fs.get_file_info(inner).type == pafs.FileType.File
    except (OSError, storage.StorageError):
        return False


def _absolute(path: str) -> str:
    import os

    return os.path.abspath(path)


__all__ = ["InputFile", "ReadOptions", "chunks", "decode", "encode", "expand", "file_rows", "read_file",
           "read_files"]
