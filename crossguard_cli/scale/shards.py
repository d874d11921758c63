"""The output folder of a Ray job: deterministic shard names, write-then-rename, final checks.

Exactly once, by construction rather than by trusting the engine: a shard is named by its
chunk, ``part-FFFFFF-CCCCCCCC.EXT`` (file index, chunk index), and a chunk's records are fixed by
the input alone. So when Ray retries a task or restarts an actor, the retry writes the same
name with the same records, replacing what an earlier attempt may have left: no record can
appear twice, and none is lost while the job completes. Shard names sort in input order.

A shard appears whole or not at all: on a local or mounted file system it is written to a
hidden temporary name (``.part-...tmp``, unique per attempt) and renamed into place, an atomic
step; on an object store (S3, GCS, Azure) it is written to its final key directly, since an
object becomes visible only when its upload completes. Temporary files that a dead attempt
left behind are removed when the job ends, and `_SUCCESS` (the job's counts as JSON) is written
last, so its presence says the folder is complete.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from crossguard_cli.errors import CrossguardError
from crossguard_cli.scale import storage
from crossguard_cli.scale.formats import EXTENSIONS

SUCCESS = "_SUCCESS"
_SHARD = re.compile(r"part-(\d{6,})-(\d{8,})\.(jsonl|parquet)")
_OBJECT_STORES = ("S3FileSystem", "GcsFileSystem", "AzureFileSystem")


class OutputDirError(CrossguardError):
    """The output folder cannot be used: not empty, not a folder, not writable."""


@dataclass(frozen=True)
class OutputSpec:
    """Where and how shards are written: `location` is an absolute local path or a URI."""

    location: str
    format: str = "jsonl"


def output_spec(output: str, fmt: str) -> OutputSpec:
    """`--output DIR` as given, resolved for every machine of the job (a local path made absolute)."""
    import os

    return OutputSpec(output if storage.is_uri(output) else os.path.abspath(output), fmt)


def shard_name(file: int, chunk: int, fmt: str) -> str:
    """``part-000003-00000012.jsonl``: names sort in input order (file, then chunk)."""
    return f"part-{file:06d}-{chunk:08d}.{EXTENSIONS[fmt]}"


def check_empty(spec: OutputSpec, shown: str, *, overwrite: bool) -> None:
    """Refuse a folder that holds anything, unless `overwrite`; a missing folder is fine.

    Raises:
        OutputDirError: naming the folder as the user gave it (`shown`).
    """
    import pyarrow.fs as pafs

    fs, path = storage.resolve(spec.location)
    info = _info(fs, path, shown)
    if info.type == pafs.FileType.NotFound:
        return
    if info.type != pafs.FileType.Directory:
        raise OutputDirError("exists and is not a folder; give a folder for the shards", where=shown)
    if overwrite:
        return
    try:
        held = fs.get_file_info(pafs.FileSelector(path, recursive=False))
    except OSError as exc:
        raise OutputDirError(f"cannot list: {storage.open_error(exc)}", where=shown) from None
    if held:
        raise OutputDirError(f"is not empty ({len(held)} entries); use --overwrite to replace what it holds, "
                             "or give an empty or new folder", where=shown)


def prepare(spec: OutputSpec, shown: str, *, overwrite: bool) -> None:
    """Create the folder; with `overwrite`, delete everything it held first."""
    fs, path = storage.resolve(spec.location)
    try:
        if overwrite:
            fs.delete_dir_contents(path, missing_dir_ok=True)
        fs.create_dir(path, recursive=True)
    except OSError as exc:
        raise OutputDirError(f"cannot prepare the output folder: {storage.open_error(exc)}", where=shown) from None


class ShardWriter:
    """Writes one chunk's records as one shard, atomically; used inside each Ray actor."""

    def __init__(self, spec: OutputSpec) -> None:
        self.spec = spec
        self.fs, self.path = storage.resolve(spec.location)
        self.direct = type(self.fs).__name__ in _OBJECT_STORES

    def write(self, file: int, chunk: int, data: bytes) -> str:
        """Write `data` as the shard of (file, chunk); returns its name. Idempotent: a retry replaces it."""
        name = shard_name(file, chunk, self.spec.format)
        final = f"{self.path}/{name}"
        target = final if self.direct else f"{self.path}/.{name}.{uuid.uuid4().hex}.tmp"
        with self.fs.open_output_stream(target, compression=None) as out:
            out.write(data)
        if not self.direct:
            self.fs.move(target, final)  # rename(2) on a local file system: atomic, replaces an older copy
        return name


def finish(spec: OutputSpec, shown: str, expected: set[str], counts: dict[str, Any]) -> None:
    """Remove temporaries of dead attempts, check that the shards are exactly `expected`, write `_SUCCESS`.

    Raises:
        OutputDirError: a shard is missing, or one the job did not write is there.
    """
    import pyarrow.fs as pafs

    fs, path = storage.resolve(spec.location)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, recursive=False))
        for info in infos:
            if info.base_name.startswith(".part-") and info.base_name.endswith(".tmp"):
                fs.delete_file(info.path)
        names = {info.base_name for info in infos if _SHARD.fullmatch(info.base_name)}
    except OSError as exc:
        raise OutputDirError(f"cannot check the shards: {storage.open_error(exc)}", where=shown) from None
    missing, extra = sorted(expected - names), sorted(names - expected)
    if missing or extra:
        what = f"{len(missing)} shards missing (first: {missing[0]})" if missing else ""
        what += ("; " if what else "") + (f"{len(extra)} unexpected shards (first: {extra[0]})" if extra else "")
        raise OutputDirError(f"the output is incomplete: {what}; run again with --overwrite", where=shown)
    with fs.open_output_stream(f"{path}/{SUCCESS}", compression=None) as out:
        out.write((json.dumps({**counts, "shards": len(expected)}) + "\n").encode())


def _info(fs: Any, path: str, shown: str):
    try:
        return fs.get_file_info(path)
    except OSError as exc:
        raise OutputDirError(f"cannot read: {storage.open_error(exc)}", where=shown) from None


__all__ = ["SUCCESS", "OutputDirError", "OutputSpec", "ShardWriter", "check_empty", "finish", "output_spec",
           "prepare", "shard_name"]
