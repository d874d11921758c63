"""Prompt records: line splitting, encodings, JSONL fields, format detection, streaming."""

from __future__ import annotations

import gzip
import io
import json
import os
import sys
import tracemalloc
import warnings
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from itertools import islice
from pathlib import Path

import pytest

from crossguard_cli.errors import UsageError
from crossguard_cli.records.inputs import Record, read_records, record_from_argument, record_from_stdin_whole


def from_bytes(data: bytes, **options: object) -> list[Record]:
    """All records of `data` fed through stdin."""
    return list(read_records([], stdin=io.BytesIO(data), **options))


def texts(data: bytes, **options: object) -> list[str | None]:
    return [record.text for record in from_bytes(data, **options)]


def write(path: Path, data: bytes) -> str:
    path.write_bytes(data)
    return str(path)


def shared_data_dir() -> Path | None:
    candidates = [Path("/work/shared/data"), Path(__file__).resolve().parents[2] / "shared/data"]
    if os.environ.get("CROSSGUARD_SHARED_DATA"):
        candidates.insert(0, Path(os.environ["CROSSGUARD_SHARED_DATA"]))
    return next((path for path in candidates if (path / "openai-moderation-1680.jsonl.gz").is_file()), None)


# --- Record -------------------------------------------------------------------------------------


def test_record_status() -> None:
    assert Record("f", 1, text="hi").status == "ok"
    assert Record("f", 1, text="").status == "empty"
    assert Record("f", 1, text=" \t\u2028\x0c").status == "empty"
    assert Record("f", 1, error="bad").status == "error"
    assert Record("f", None, error="cannot open: x").status == "error"


def test_record_is_frozen() -> None:
    with pytest.raises(AttributeError):
        Record("f", 1, text="hi").text = "other"  # type: ignore[misc]


# --- Line splitting ------------------------------------------------------------------------------


def test_lines_split_on_newline_only() -> None:
    odd = "a\x0bb\x0cc\x1cd\x1de\x1ef\rg\u0085h\u2028i\u2029j"
    records = from_bytes(odd.encode() + b"\nsecond\n", input_format="text")
    assert [r.text for r in records] == [odd, "second"]
    assert [r.line for r in records] == [1, 2]


def test_crlf_drops_one_carriage_return() -> None:
    assert texts(b"one\r\ntwo\r\nthree", input_format="text") == ["one", "two", "three"]
    assert texts(b"x\r\r\ny\r", input_format="text") == ["x\r", "y"]


def test_bom_dropped_at_start_only() -> None:
    assert texts(b"\xef\xbb\xbfhello\n\xef\xbb\xbfagain\n", input_format="text") == ["hello", "\ufeffagain"]
    assert from_bytes(b"\xef\xbb\xbf") == []
    assert texts(b"\xef\xbb\xbf\n") == [""]


def test_bom_before_jsonl() -> None:
    records = from_bytes(b'\xef\xbb\xbf{"text": "a"}\n')
    assert [(r.line, r.text, r.status) for r in records] == [(1, "a", "ok")]


def test_last_line_without_newline_is_a_record() -> None:
    assert texts(b"a\nb", input_format="text") == ["a", "b"]
    assert texts(b"a\nb\n", input_format="text") == ["a", "b"]
    assert from_bytes(b"", input_format="text") == []
    assert texts(b"\n", input_format="text") == [""]


def test_blank_text_lines_are_empty_records() -> None:
    records = from_bytes(b"a\n\n  \t\nb\n", input_format="text")
    assert [(r.line, r.text, r.status) for r in records] == [
        (1, "a", "ok"),
        (2, "", "empty"),
        (3, "  \t", "empty"),
        (4, "b", "ok"),
    ]


def test_multi_megabyte_line() -> None:
    big = "x" * 5_000_000 + "\u00e9"
    assert texts(b"before\n" + big.encode() + b"\nafter", input_format="text") == ["before", big, "after"]
    line = json.dumps({"text": big}).encode()
    assert texts(line + b"\n") == [big]


# --- Encoding ------------------------------------------------------------------------------------


@pytest.mark.parametrize("input_format", ["text", "jsonl"])
def test_invalid_utf8_is_one_error_record(input_format: str) -> None:
    good = b'{"text": "good"}' if input_format == "jsonl" else b"good"
    records = from_bytes(good + b"\nab\xffc\n" + good + b"\n", input_format=input_format)
    assert [r.status for r in records] == ["ok", "error", "ok"]
    assert [r.line for r in records] == [1, 2, 3]
    assert records[1].error is not None
    assert records[1].error.startswith("invalid UTF-8 at byte 3 (0xff)")
    assert records[1].text is None


def test_truncated_utf8_sequence_at_end_of_line() -> None:
    records = from_bytes(b"caf\xc3\nok\n", input_format="text")
    assert records[0].error is not None and "byte 4" in records[0].error
    assert records[1].text == "ok"


def test_encoded_surrogates_are_invalid_utf8() -> None:
    assert from_bytes(b"\xed\xa0\x80\n", input_format="text")[0].status == "error"


# --- JSONL ---------------------------------------------------------------------------------------


def test_jsonl_blank_lines_skipped_but_counted() -> None:
    records = from_bytes(b'\n{"text": "a"}\n  \n\r\n{"text": "b"}\n\n', input_format="jsonl")
    assert [(r.line, r.text) for r in records] == [(2, "a"), (5, "b")]


def test_jsonl_blank_text_is_empty_record() -> None:
    records = from_bytes(b'{"text": ""}\n{"text": "  "}\n', input_format="jsonl")
    assert [(r.line, r.text, r.status) for r in records] == [(1, "", "empty"), (2, "  ", "empty")]


def test_jsonl_text_kept_exactly() -> None:
    text = "line one\nline two\r\n\u2028\x00 \U0001f600"
    assert texts(json.dumps({"text": text}).encode()) == [text]
    assert texts(json.dumps({"text": text}, ensure_ascii=False).encode()) == [text]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"text": "a"', "invalid JSON: Expecting ',' delimiter at column 13"),
        (b"not json", "invalid JSON: Expecting value at column 1"),
        (b'{"text": NaN}', "invalid JSON: NaN is not valid JSON"),
        (b'{"text": "a", "n": -Infinity}', "invalid JSON: -Infinity is not valid JSON"),
        (b"[" * 100_000, "invalid JSON: nested too deeply"),
        (b'["text"]', "expected a JSON object, got array"),
        (b'"text"', "expected a JSON object, got string"),
        (b"3", "expected a JSON object, got number"),
        (b"null", "expected a JSON object, got null"),
        (b"{}", "no text field: expected one of text, prompt, input, content (use --field)"),
        (b'{"text": 3}', "field 'text' must be a string, got number"),
        (b'{"text": null}', "field 'text' must be a string, got null"),
        (b'{"prompt": true}', "field 'prompt' must be a string, got boolean"),
        (b'{"input": ["a"]}', "field 'input' must be a string, got array"),
        (b'{"content": {"a": 1}}', "field 'content' must be a string, got object"),
        (b'{"text": "a\\ud800b"}', "field 'text' holds an unpaired surrogate at character 2"),
    ],
)
def test_jsonl_bad_line_is_error_record_between_good_ones(line: bytes, message: str) -> None:
    records = from_bytes(b'{"text": "before"}\n' + line + b'\n{"text": "after"}\n', input_format="jsonl")
    assert [r.status for r in records] == ["ok", "error", "ok"]
    assert [r.text for r in records] == ["before", None, "after"]
    assert records[1].line == 2
    assert records[1].error is not None
    assert records[1].error.startswith(message)
    assert "\n" not in records[1].error


def test_jsonl_huge_integer_is_error_record() -> None:
    record = from_bytes(b'{"text": "a", "n": ' + b"9" * 5000 + b"}", input_format="jsonl")[0]
    assert record.error is not None and record.error.startswith("invalid JSON: ")


def test_jsonl_auto_field_order() -> None:
    lines = [
        {"content": "c", "input": "i", "prompt": "p", "text": "t"},
        {"content": "c", "input": "i", "prompt": "p"},
        {"content": "c", "input": "i"},
        {"content": "c"},
    ]
    data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    assert texts(data) == ["t", "p", "i", "c"]


def test_jsonl_auto_field_takes_first_key_present_even_if_not_a_string() -> None:
    record = from_bytes(b'{"text": null, "prompt": "p"}\n')[0]
    assert record.error == "field 'text' must be a string, got null"


def test_jsonl_field_option() -> None:
    records = from_bytes(b'{"text": "t", "body": "b"}\n{"text": "t"}\n', field="body")
    assert records[0].text == "b"
    assert records[1].status == "error"
    assert records[1].error is not None and "'body'" in records[1].error
    assert "--field" in records[1].error


def test_jsonl_field_non_string_names_the_field() -> None:
    assert (
        from_bytes(b'{"body": 1.5}\n', field="body")[0].error == "field 'body' must be a string, got number"
    )


def test_jsonl_id_default_is_id_field() -> None:
    data = b'{"id": "a17", "text": "x"}\n{"text": "y"}\n{"id": 7, "text": "z"}\n'
    data += b'{"id": [1, {"k": null}], "text": "w"}\n'
    assert [r.id for r in from_bytes(data)] == ["a17", None, 7, [1, {"k": None}]]


def test_jsonl_id_field_option() -> None:
    data = b'{"id": "ignored", "uid": 3, "text": "x"}\n{"id": "i", "text": "y"}\n'
    assert [r.id for r in from_bytes(data, id_field="uid")] == [3, None]


def test_jsonl_error_record_keeps_id() -> None:
    record = from_bytes(b'{"id": "a1", "text": 5}\n')[0]
    assert (record.status, record.id) == ("error", "a1")


def test_jsonl_crlf_and_text_lines_in_jsonl_file() -> None:
    records = from_bytes(b'{"text": "a"}\r\nplain text\r\n', input_format="jsonl")
    assert [r.status for r in records] == ["ok", "error"]


# --- Format detection ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["p.jsonl", "p.ndjson", "p.json", "P.JSONL"])
def test_detect_jsonl_by_extension(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, b'{"text": "a"}\nplain\n')
    records = list(read_records([path]))
    assert [r.status for r in records] == ["ok", "error"]  # extension wins over content
    assert records[0].text == "a"


@pytest.mark.parametrize("name", ["p.txt", "p.text", "P.TXT"])
def test_detect_text_by_extension(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, b'{"text": "a"}\n')
    assert [r.text for r in read_records([path])] == ['{"text": "a"}']


@pytest.mark.parametrize("name", ["prompts", "prompts.csv", "prompts.jsonl.txt.bak"])
def test_detect_by_content_without_known_extension(tmp_path: Path, name: str) -> None:
    jsonl = write(tmp_path / name, b'\n  {"text": "a"}\n')
    assert [(r.line, r.text) for r in read_records([jsonl])] == [(2, "a")]
    text = write(tmp_path / (name + "-2"), b"\nhello {\n")
    assert [(r.line, r.text) for r in read_records([text])] == [(1, ""), (2, "hello {")]


def test_detect_stdin_by_content_keeps_every_line() -> None:
    records = from_bytes(b'\xef\xbb\xbf\n \r\n{"prompt": "p", "id": 1}\n\n{"text": "q"}')
    assert [(r.line, r.text, r.id) for r in records] == [(3, "p", 1), (5, "q", None)]
    records = from_bytes(b"\n\nfirst\n{not json}\n")
    assert [(r.line, r.text) for r in records] == [(1, ""), (2, ""), (3, "first"), (4, "{not json}")]


def test_detect_all_blank_input_is_text() -> None:
    assert texts(b"\n \n") == ["", " "]


def test_explicit_format_beats_extension(tmp_path: Path) -> None:
    path = write(tmp_path / "p.jsonl", b'{"text": "a"}\n')
    assert [r.text for r in read_records([path], input_format="text")] == ['{"text": "a"}']
    path = write(tmp_path / "p.txt", b'{"text": "a"}\n')
    assert [r.text for r in read_records([path], input_format="jsonl")] == ["a"]


def test_bad_options_fail_before_reading() -> None:
    with pytest.raises(UsageError, match="--input-format"):
        read_records([], input_format="csv", stdin=io.BytesIO(b""))
    with pytest.raises(UsageError, match="--field"):
        read_records([], input_format="text", field="body", stdin=io.BytesIO(b""))
    with pytest.raises(TypeError):
        read_records("file.txt")


# --- Paths and stdin -----------------------------------------------------------------------------


def test_paths_read_in_order_with_source(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", b"a1\na2\n")
    b = write(tmp_path / "b.jsonl", b'{"text": "b1"}\n')
    records = list(read_records([b, "-", a], stdin=io.BytesIO(b"s1\n")))
    assert [(r.source, r.line, r.text) for r in records] == [
        (b, 1, "b1"),
        ("stdin", 1, "s1"),
        (a, 1, "a1"),
        (a, 2, "a2"),
    ]


def test_unopenable_paths_give_one_error_record_each_in_order(tmp_path: Path) -> None:
    a = write(tmp_path / "a.txt", b"a1\na2\n")
    b = write(tmp_path / "b.txt", b"b1\n")
    missing = str(tmp_path / "missing.txt")
    directory = str(tmp_path)
    under_a_file = os.path.join(a, "x")
    records = list(read_records([a, missing, directory, under_a_file, b]))
    assert [(r.source, r.line, r.status) for r in records] == [
        (a, 1, "ok"),
        (a, 2, "ok"),
        (missing, None, "error"),
        (directory, None, "error"),
        (under_a_file, None, "error"),
        (b, 1, "ok"),
    ]
    assert records[2].error == "cannot open: No such file or directory"
    assert records[3].error == "cannot open: Is a directory"
    assert records[4].error == "cannot open: Not a directory"


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read any file")
def test_unreadable_path_gives_error_record(tmp_path: Path) -> None:
    locked = tmp_path / "locked.txt"
    locked.write_bytes(b"secret\n")
    locked.chmod(0)
    good = write(tmp_path / "good.txt", b"g\n")
    records = list(read_records([str(locked), good]))
    assert [(r.status, r.error) for r in records] == [
        ("error", "cannot open: Permission denied"),
        ("ok", None),
    ]


def test_no_paths_reads_stdin_resolved_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"from stdin\n")))
    assert [(r.source, r.text) for r in read_records([])] == [("stdin", "from stdin")]


def test_missing_stdin_is_error_record(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", None)
    assert [(r.source, r.line, r.status) for r in read_records(["-"])] == [("stdin", None, "error")]
    assert record_from_stdin_whole().status == "error"


class _FailingRaw(io.RawIOBase):
    """A stream that delivers some bytes, then fails like a disk or network error."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        if not self.data:
            raise OSError(5, "Input/output error")
        n = min(len(buffer), len(self.data))
        buffer[:n], self.data = self.data[:n], self.data[n:]
        return n


def test_read_error_mid_stream_ends_with_error_record() -> None:
    stream = io.BufferedReader(_FailingRaw(b"one\ntwo\n"))
    records = list(read_records([], input_format="text", stdin=stream))  # type: ignore[arg-type]
    assert [(r.line, r.text, r.error) for r in records] == [
        (1, "one", None),
        (2, "two", None),
        (3, None, "read error: Input/output error"),
    ]


# --- Laziness and streaming ----------------------------------------------------------------------


class _Endless(io.RawIOBase):
    """Endless lines that refuse to be read past `budget` bytes, to prove reading is lazy."""

    def __init__(self, budget: int) -> None:
        self.budget = budget

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray) -> int:  # type: ignore[override]
        assert self.budget > 0, "read far more than was asked for"
        chunk = (b"prompt line\n" * (len(buffer) // 12 + 1))[: len(buffer)]
        buffer[: len(chunk)] = chunk
        self.budget -= len(chunk)
        return len(chunk)


@pytest.mark.parametrize("input_format", ["auto", "text"])
def test_reading_is_lazy(input_format: str) -> None:
    stream = io.BufferedReader(_Endless(budget=1_000_000))
    records = read_records([], input_format=input_format, stdin=stream)  # type: ignore[arg-type]
    assert [r.line for r in islice(records, 1000)] == list(range(1, 1001))


def test_memory_stays_flat_on_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl"
    line = json.dumps({"id": 0, "text": "y" * 200}).encode() + b"\n"
    with path.open("wb") as out:
        for _ in range(50):
            out.write(line * 1000)  # 50,000 lines, about 11 MB
    tracemalloc.start()
    try:
        count = sum(1 for _ in read_records([str(path)]))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == 50_000
    assert peak < 2_000_000


def _open_fds() -> int:
    for fd_dir in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(fd_dir):
            return len(os.listdir(fd_dir))
    pytest.skip("cannot count open files here")


def test_files_closed_when_exhausted_or_closed(tmp_path: Path) -> None:
    path = write(tmp_path / "p.txt", b"a\nb\nc\n")
    before = _open_fds()
    with warnings.catch_warnings():
        warnings.simplefilter("error", ResourceWarning)  # a file left to the garbage collector
        records = read_records([path, path])
        assert next(records).text == "a"
        assert _open_fds() == before + 1
        records.close()
        assert _open_fds() == before
        assert len(list(read_records([path, path]))) == 6
        assert _open_fds() == before


@pytest.mark.parametrize(
    ("input_format", "lines", "expected"),
    [
        ("auto", [b"first\n", b"second\n"], ["first", "second"]),
        ("text", [b"first\n", b"second\n"], ["first", "second"]),
        ("auto", [b'{"text": "first"}\n', b'{"text": "second"}\n'], ["first", "second"]),
    ],
)
def test_pipe_streams_each_record_as_its_line_arrives(
    input_format: str, lines: list[bytes], expected: list[str]
) -> None:
    read_fd, write_fd = os.pipe()
    with os.fdopen(read_fd, "rb") as reader, ThreadPoolExecutor(max_workers=1) as pool:
        records = read_records([], input_format=input_format, stdin=reader)
        try:
            for line, text in zip(lines, expected, strict=True):
                os.write(write_fd, line[:3])
                pending = pool.submit(next, records)
                with pytest.raises(FutureTimeout):
                    pending.result(timeout=0.2)  # half a line is not a record yet
                os.write(write_fd, line[3:])
                assert pending.result(timeout=10).text == text  # next line not written yet
            os.close(write_fd)
            write_fd = -1
            assert pool.submit(list, records).result(timeout=10) == []
        finally:
            if write_fd != -1:
                os.close(write_fd)  # unblocks a reader stuck after a failure


# --- The real data set ---------------------------------------------------------------------------


def test_real_moderation_data_round_trips(tmp_path: Path) -> None:
    data_dir = shared_data_dir()
    if data_dir is None:
        pytest.skip("openai-moderation-1680.jsonl.gz not found (set CROSSGUARD_SHARED_DATA)")
    raw = gzip.decompress((data_dir / "openai-moderation-1680.jsonl.gz").read_bytes())
    path = write(tmp_path / "moderation.jsonl", raw)
    expected = [json.loads(line)["prompt"] for line in raw.decode("utf-8").split("\n") if line]
    assert len(expected) == 1680
    for input_format in ("auto", "jsonl"):
        records = list(read_records([path], input_format=input_format))
        assert len(records) == 1680
        assert [r.line for r in records] == list(range(1, 1681))
        assert [r.text for r in records] == expected
        assert {r.status for r in records} <= {"ok", "empty"}
    no_extension = write(tmp_path / "moderation", raw)
    assert [r.text for r in read_records([no_extension])] == expected


# --- check TEXT and check - ----------------------------------------------------------------------


def test_record_from_argument() -> None:
    assert record_from_argument("how do I\nbake bread") == Record("argument", 1, text="how do I\nbake bread")
    assert record_from_argument("  ").status == "empty"
    bad = record_from_argument("caf\udcc3")  # what surrogateescape makes of invalid UTF-8 in argv
    assert (bad.source, bad.line, bad.status) == ("argument", 1, "error")
    assert bad.error is not None and "character 4" in bad.error


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b"one prompt\n", "one prompt"),
        (b"one prompt\r\n", "one prompt"),
        (b"one prompt", "one prompt"),
        (b"two\nlines\n\n", "two\nlines\n"),
        (b"cr only\r", "cr only\r"),
        (b"\xef\xbb\xbfbom\n", "bom"),
        (b"", ""),
        (b"\n", ""),
    ],
)
def test_record_from_stdin_whole(data: bytes, text: str) -> None:
    assert record_from_stdin_whole(io.BytesIO(data)) == Record("stdin", 1, text=text)


def test_record_from_stdin_whole_invalid_utf8() -> None:
    record = record_from_stdin_whole(io.BytesIO(b"ok\nbad \xfe\n"))
    assert (record.source, record.line, record.status, record.text) == ("stdin", 1, "error", None)
    assert record.error is not None and record.error.startswith("invalid UTF-8 at byte 8 (0xfe)")


def test_record_from_stdin_whole_reads_sys_stdin_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"whole\ninput\n")))
    assert record_from_stdin_whole().text == "whole\ninput"
