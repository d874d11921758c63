"""Property-based: whatever bytes come in, and whatever YAML the rules file holds, crossguard keeps
its promises. Never a traceback; exit 0, 1 or 2 only; 1 only when a record is flagged and none
failed; one output record per input record, in order, with the line numbers of the input.

The expected records are worked out here from the bytes, by the contract's own words (lines split
on \\n only, one trailing \\r dropped, a leading BOM dropped, blank JSONL lines skipped but
counted, a text that is nothing but whitespace and format characters is `empty`), not by calling
the reader under test.
"""

from __future__ import annotations

import io
import json
import sys
import unicodedata

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crossguard_cli.cli import main

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
TEXT_FIELDS = ("text", "prompt", "input", "content")


def invoke(args: list[str], stdin: bytes = b"") -> tuple[int, bytes, str]:
    """`crossguard ARGS` in-process with binary stdin; (exit code, stdout bytes, stderr text)."""
    saved = sys.stdin, sys.stdout, sys.stderr
    out, err = io.BytesIO(), io.BytesIO()
    streams = (io.TextIOWrapper(io.BytesIO(stdin)), io.TextIOWrapper(out, encoding="utf-8", write_through=True),
               io.TextIOWrapper(err, encoding="utf-8", errors="backslashreplace", write_through=True))
    sys.stdin, sys.stdout, sys.stderr = streams
    try:
        main(args)
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
        for stream in streams:
            stream.flush()
            stream.detach()  # keep the BytesIO open: a collected wrapper would close it
    return code, out.getvalue(), err.getvalue().decode("utf-8")


def blank(text: str) -> bool:
    folded = unicodedata.normalize("NFKC", text)
    return all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in folded)


def expected_records(data: bytes, fmt: str) -> list[tuple[int, str]]:
    """(line, status) of every output record the contract promises for `data`."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()  # the newline ends the last line; it does not start another
    out = []
    for number, raw in enumerate(lines, start=1):
        raw = raw[:-1] if raw.endswith(b"\r") else raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            out.append((number, "error"))
            continue
        if fmt == "text":
            out.append((number, "empty" if blank(text) else "ok"))
            continue
        if not text.strip():
            continue  # a blank JSONL line: skipped, still counted
        out.append((number, jsonl_status(text)))
    return out


def jsonl_status(text: str) -> str:
    def no_constants(name: str):
        raise ValueError(name)

    try:
        obj = json.loads(text, parse_constant=no_constants)
    except (ValueError, RecursionError):
        return "error"
    if not isinstance(obj, dict):
        return "error"
    name = next((key for key in TEXT_FIELDS if key in obj), None)
    if name is None or not isinstance(obj[name], str):
        return "error"
    try:
        obj[name].encode("utf-8")
    except UnicodeEncodeError:
        return "error"
    return "empty" if blank(obj[name]) else "ok"


# Lines: raw bytes, real-looking text, odd Unicode, JSON objects (good and broken), CRs and BOMs.
ODD = st.sampled_from(["", " ", "\t", "\r", "\ufeff", "\u200b", "\u00ad", "\u202e", "\u2028", "\x00", "\x85",
                       "ｆｕｌｌ", "日本語", "🙂", "\ud7ff", "é", "{", "}", "\"", "\\"])
WORDS = st.lists(st.sampled_from(["how", "do", "I", "make", "a", "bomb", "bread", "ignore", "previous", "rules"]),
                 max_size=6).map(" ".join)
TEXT_LINE = st.lists(st.one_of(WORDS, ODD, st.text(max_size=8)), max_size=5).map("".join)
JSON_LINE = st.one_of(
    st.builds(lambda k, v: json.dumps({k: v}), st.sampled_from([*TEXT_FIELDS, "id", "other"]),
              st.one_of(TEXT_LINE, st.integers(), st.none(), st.lists(st.integers(), max_size=2))),
    st.builds(lambda t, i: json.dumps({"id": i, "text": t}, ensure_ascii=False), TEXT_LINE, st.integers()),
    st.sampled_from(["[1, 2]", "null", "{\"text\": NaN}", "{\"text\": \"\\ud800\"}", "{bad json", "\"text\""]),
)
INVISIBLE = st.lists(st.sampled_from(["\u200b", "\u00ad", "\u200d", "\u202e", "\u2060", "\ufeff", " ", "\t",
                                      "\u3000"]), min_size=1, max_size=4).map("".join)
LINE = st.one_of(INVISIBLE.map(str.encode), INVISIBLE.map(lambda s: json.dumps({"text": s}).encode()),
                 TEXT_LINE.map(lambda s: s.replace("\n", " ").encode("utf-8", "surrogatepass")),
                 JSON_LINE.map(str.encode), st.binary(max_size=12).map(lambda b: b.replace(b"\n", b"")))
INPUT = st.builds(lambda bom, lines, end: (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(lines) + end,
                  st.booleans(), st.lists(LINE, max_size=8), st.sampled_from([b"", b"\n", b"\r\n"]))


@pytest.fixture(scope="module")
def rules_files(tmp_path_factory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("property-rules")
    files = {}
    for name, threshold in (("never", 1.0), ("always", 0.0), ("some", 0.34)):
        path = base / f"{name}.yaml"
        path.write_text(f"version: 1\ndefaults: {{margin: 0.05}}\nrules:\n  - name: bomb\n"
                        f"    hypothesis: The prompt is about a bomb.\n    threshold: {threshold}\n"
                        "  - name: rude\n    hypothesis: The prompt is rude.\n    label: contradiction\n")
        files[name] = str(path)
    return files


@SETTINGS
@given(data=INPUT, fmt=st.sampled_from(["text", "jsonl"]), rules=st.sampled_from(["never", "always", "some"]))
def test_any_input_gives_one_record_per_input_record_in_order(model_dir, rules_files, data, fmt, rules):
    code, out, err = invoke(["batch", "-m", str(model_dir), "-r", rules_files[rules], "--input-format", fmt,
                             "--max-length", "64", "-q"], stdin=data)
    assert "Traceback" not in err
    assert code in (0, 1, 2)
    records = [json.loads(line) for line in out.decode("utf-8").splitlines()]
    assert [(r["source"], r["line"], r["status"]) for r in records] == \
        [("stdin", line, status) for line, status in expected_records(data, fmt)]
    errors = [r for r in records if r["status"] == "error"]
    flagged = [r for r in records if r.get("verdict") == "flagged"]
    assert all("verdict" not in r for r in records if r["status"] != "ok")  # unscored: never allowed
    assert code == (2 if errors else 1 if flagged else 0)
    assert [line for line in err.splitlines()] == [f"crossguard: error: stdin:{r['line']}: {r['error']}"
                                                   for r in errors]


YAML_SCALAR = st.one_of(st.none(), st.booleans(), st.integers(-5, 200), st.floats(allow_nan=True), TEXT_LINE,
                        st.sampled_from(["entailment", "neutral", "contradiction", "guard", "route", "weapons",
                                         "The prompt is rude.", ""]))
YAML_KEY = st.sampled_from(["version", "model", "mode", "defaults", "rules", "name", "hypothesis", "hypotheses",
                            "label", "threshold", "margin", "description", "treshold", "Rules"])
YAML_DATA = st.recursive(YAML_SCALAR, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                              st.dictionaries(YAML_KEY, inner, max_size=4)),
                         max_leaves=12)
YAML_TEXT = st.one_of(
    YAML_DATA.map(lambda d: yaml.safe_dump(d, allow_unicode=True)),
    st.builds(lambda rules: yaml.safe_dump({"version": 1, "rules": rules}), st.lists(
        st.dictionaries(YAML_KEY, YAML_DATA, max_size=5), max_size=3)),
    st.text(max_size=80),
    st.sampled_from(["rules:\n  - name: a\n    hypothesis: A.\n    threshold: 0.5\n    threshold: 0.6\n",
                     "rules: [", "\t- x", "rules:\n  - &a {name: a, hypothesis: A.}\n  - *a\n",
                     "!!python/object:os.system {}"]),
)


@SETTINGS
@given(rules_text=YAML_TEXT)
def test_any_rules_file_is_valid_or_one_line_naming_it(model_dir, tmp_path_factory, rules_text):
    path = tmp_path_factory.mktemp("yaml") / "rules.yaml"
    path.write_text(rules_text, encoding="utf-8", errors="surrogatepass")
    code, out, err = invoke(["validate", str(path), "-q"])
    assert "Traceback" not in err and code in (0, 2)
    if code == 2:
        assert out == b"" and len(err.splitlines()) == 1 and err.startswith(f"crossguard: error: {path}")
        return
    code, out, err = invoke(["batch", "-m", str(model_dir), "-r", str(path), "--max-length", "64", "-q",
                             "--input-format", "text"], stdin=b"hello there\n\nhow do I make a bomb\n")
    assert "Traceback" not in err
    if code == 2 and not out:  # a valid file can still be refused by the model (a hypothesis too long)
        assert len(err.splitlines()) == 1 and err.startswith(f"crossguard: error: {path}")
        return
    records = [json.loads(line) for line in out.decode().splitlines()]
    assert [r["status"] for r in records] == ["ok", "empty", "ok"]
    assert code == (1 if any(r.get("verdict") == "flagged" for r in records) else 0)
