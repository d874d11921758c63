"""Records: prompts as read (lazy, lossless readers) and output records as written."""

from __future__ import annotations

from crossguard_cli.records.inputs import Record, read_records, record_from_argument, record_from_stdin_whole
from crossguard_cli.records.text import is_blank, normalize_text

__all__ = ["Record", "is_blank", "normalize_text", "read_records", "record_from_argument", "record_from_stdin_whole"]
