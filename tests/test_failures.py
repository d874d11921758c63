"""Failures that must never pass as results: each one found by trying crossguard as a new user would.

Exit 1 means "flagged" to every script that gates on crossguard, so any failure, expected or
not, is one stderr line and exit 2, and a record that was not scored never reads as allowed.
Where the failure is about the process (an encoding, a signal, a crash), the test runs the real
program in a subprocess.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest
from conftest import cli_cmd, cli_env


def run(*args: str, stdin: bytes = b"", env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(cli_cmd(*args), input=stdin, capture_output=True, env=env or cli_env(), timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess) -> str:
    err = proc.stderr.decode("utf-8", "replace")
    assert proc.returncode == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1 and lines[0].startswith("crossguard: error: "), err
    return lines[0]


def corrupt_gzip(path: Path, lines: list[bytes]) -> None:
    """A .gz whose deflate stream is damaged halfway (zlib.error), not merely cut short."""
    data = gzip.compress(b"".join(lines))
    for pos in range(len(data) // 2, len(data) - 8):
        damaged = bytearray(data)
        damaged[pos] ^= 0xFF
        try:
            with gzip.open(io.BytesIO(bytes(damaged))) as f:
                for _ in f:
                    pass
        except zlib.error:
            path.write_bytes(bytes(damaged))
            return
        except Exception:  # noqa: BLE001 - another kind of damage: try the next byte
            continue
    raise AssertionError("could not make a damaged deflate stream")


# --- an unexpected exception: one line, exit 2, never a traceback and exit 1 ----------------------

CRASH = """
import sys
import crossguard_cli.engine.stream as stream
def boom(*args, **kwargs):
    raise ZeroDivisionError("a bug deep inside")
stream.decide = boom
from crossguard_cli.cli import main
main(sys.argv[1:])
"""


def test_an_unexpected_exception_is_one_line_and_exit_2(model_dir):
    proc = subprocess.run([sys.executable, "-c", CRASH, "batch", "-m", str(model_dir)], input=b"hello\n",
                          capture_output=True, env=cli_env(), timeout=120)
    line = one_error_line(proc)
    assert line.startswith("crossguard: error: internal error: ZeroDivisionError: a bug deep inside (at ")
    assert "CROSSGUARD_DEBUG=1" in line
    debug = subprocess.run([sys.executable, "-c", CRASH, "batch", "-m", str(model_dir)], input=b"hello\n",
                           capture_output=True, env=cli_env(CROSSGUARD_DEBUG="1"), timeout=120)
    assert debug.returncode == 2 and b"Traceback" in debug.stderr and b"ZeroDivisionError" in debug.stderr


# --- a damaged .gz: an error record in its place, the other inputs still read ------------------------

def test_a_corrupt_gzip_input_gives_an_error_record_in_place(model_dir, tmp_path, run_cli):
    before, after = tmp_path / "a.txt", tmp_path / "c.txt"
    before.write_text("first file\n")
    after.write_text("third file\n")
    bad = tmp_path / "b.jsonl.gz"
    corrupt_gzip(bad, [json.dumps({"text": f"prompt {i} with words"}).encode() + b"\n" for i in range(400)])
    code, out, err = run_cli("batch", str(before), str(bad), str(after), "-m", str(model_dir), "-q")
    records = [json.loads(line) for line in out.splitlines()]
    assert code == 2
    assert records[0]["source"] == str(before) and records[-1]["source"] == str(after)
    assert records[0]["status"] == records[-1]["status"] == "ok"
    middle = [r for r in records if r["source"] == str(bad)]
    assert middle[-1]["status"] == "error" and "corrupt gzip data" in middle[-1]["error"]
    assert [r["line"] for r in middle] == list(range(1, len(middle) + 1))  # nothing dropped before it
    assert f"crossguard: error: {bad}:{middle[-1]['line']}: read error: corrupt gzip data" in err


def test_a_corrupt_gzip_labelled_file_is_reported_by_eval(model_dir, tmp_path, run_cli):
    bad = tmp_path / "labels.jsonl.gz"
    corrupt_gzip(bad, [json.dumps({"text": f"prompt {i}", "expected": "allowed"}).encode() + b"\n"
                       for i in range(400)])
    code, out, err = run_cli("eval", str(bad), "-m", str(model_dir), "-f", "json", "--max-length", "64")
    assert code == 2 and "Traceback" not in err
    report = json.loads(out)
    assert report["scored"] >= 1
    assert any(line.startswith(f"crossguard: error: {bad}:") and "corrupt gzip data" in line
               for line in err.splitlines())


# --- output encoding: JSON lines and CSV are UTF-8 whatever the locale -------------------------------

@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_output_is_utf8_under_a_legacy_encoding(model_dir, fmt):
    prompts = ["日本語のプロンプト", "emoji 🙂 and Ελληνικά", "plain ascii"]
    env = cli_env(PYTHONIOENCODING="cp1252", LC_ALL="C", LANG="C")
    proc = run("batch", "-m", str(model_dir), "-f", fmt, "-q", stdin="\n".join(prompts).encode(), env=env)
    assert proc.returncode in (0, 1), proc.stderr.decode(errors="replace")
    text = proc.stdout.decode("utf-8")  # strict: any cp1252 byte here would fail
    for prompt in prompts:
        assert prompt in text
    if fmt == "jsonl":
        assert [json.loads(line)["text"] for line in text.splitlines()] == prompts


def test_errors_on_a_legacy_stderr_are_still_one_line(tmp_path):
    missing = tmp_path / "données-日本.txt"
    env = cli_env(PYTHONIOENCODING="cp1252")
    proc = run("validate", str(missing), env=env)
    line = one_error_line(proc)
    assert "cannot read rules file" in line


# --- a prompt of invisible characters is empty: never scored, never "allowed" ------------------------

INVISIBLE = ["\u200b", "\u00ad", "\u200d\u200c", "\u202e\u2066", "\ufeff\u2060 \u200b", " \t\u200b ",
             "\x01\x02\x1b", "\x7f \x85\u200b"]  # control characters: tokenizers drop them too


def test_invisible_only_lines_are_empty_records(model_dir, run_cli):
    stdin = ("visible text\n" + "\n".join(INVISIBLE) + "\n").encode()
    code, out, err = run_cli("batch", "-m", str(model_dir), "--input-format", "text", stdin=stdin)
    records = [json.loads(line) for line in out.splitlines()]
    assert code in (0, 1), err
    assert len(records) == 1 + len(INVISIBLE)
    assert records[0]["status"] == "ok"
    for rec in records[1:]:
        assert rec == {"source": "stdin", "line": rec["line"], "status": "empty"}
    assert f"{len(INVISIBLE)} empty" in err


@pytest.mark.parametrize("text", INVISIBLE[:3])
def test_check_refuses_an_invisible_prompt(model_dir, run_cli, text):
    code, out, err = run_cli("check", text, "-m", str(model_dir))
    assert code == 2 and out == ""
    assert err == "crossguard: error: argument:1: the prompt is empty (nothing visible after normalisation); " \
                  "nothing to score\n"


def test_a_prompt_the_tokenizer_reads_as_nothing_is_an_error_not_allowed(model_dir):
    """A lone combining accent is visible, but a tokenizer that strips accents drops it: scoring it
    would score an empty premise."""
    from crossguard_cli import Guard

    guard = Guard(model=str(model_dir), device="cpu")
    results = guard.check_many(["\u0300", "hello there", "\u0301\u0300"])
    assert [r.status for r in results] == ["error", "ok", "error"]
    assert results[0].verdict is None and results[0].error == "the model's tokenizer reads nothing in this prompt"


# --- eval: records it cannot read or score are errors, not a silent success --------------------------

def test_eval_on_records_without_text_fails_and_names_each(model_dir, tmp_path, run_cli):
    labelled = tmp_path / "labels.jsonl"
    labelled.write_text("".join(json.dumps({"message": f"m{i}", "expected": "allowed"}) + "\n" for i in range(3))
                        + "{not json\n", encoding="utf-8")
    code, out, err = run_cli("eval", str(labelled), "-m", str(model_dir), "-f", "json")
    assert code == 2
    lines = err.splitlines()
    assert lines[:3] == [f"crossguard: error: {labelled}:{i}: no text field: expected one of text, prompt, input, "
                         "content (use --field)" for i in (1, 2, 3)]
    assert lines[3].startswith(f"crossguard: error: {labelled}:4: invalid JSON")
    assert json.loads(out)["scored"] == 0
    code, out, err = run_cli("eval", str(labelled), "-m", str(model_dir), "-f", "json", "--field", "message")
    assert code == 2 and json.loads(out)["scored"] == 3  # only the bad JSON line is left to report
    assert err.splitlines() == [lines[3]]


# --- a damaged model folder: one line ----------------------------------------------------------------

@pytest.mark.parametrize("damage", ["truncated-weights", "corrupt-tokenizer", "corrupt-config"])
def test_a_damaged_model_folder_is_one_line(model_dir, tmp_path, damage):
    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    if damage == "truncated-weights":
        weights = folder / "model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 3])
    elif damage == "corrupt-tokenizer":
        (folder / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "WordPiece", "vocab": 5')
    else:
        (folder / "config.json").write_text("{ this is not json")
    line = one_error_line(run("check", "hello", "-m", str(folder)))
    assert line.startswith(f"crossguard: error: cannot load model '{folder}': ")
    assert "check the folder holds a complete saved model" in line


# --- SIGTERM in the middle of a batch ---------------------------------------------------------------

def test_sigterm_mid_batch_leaves_complete_lines_and_no_traceback(model_dir):
    proc = subprocess.Popen(cli_cmd("batch", "-m", str(model_dir), "--input-format", "text"), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    try:
        for i in range(3):
            proc.stdin.write(f"prompt number {i}\n".encode())
        proc.stdin.flush()
        first = proc.stdout.readline()  # results are flushed as they are ready: wait for one
        assert json.loads(first)["line"] == 1
        for i in range(3, 200):
            proc.stdin.write(f"prompt number {i}\n".encode())
        proc.stdin.flush()
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        proc.stdin.close()
        rest = proc.stdout.read()  # the same buffered reader as readline (communicate would skip its buffer)
        err = proc.stderr.read()
        proc.wait(60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert b"Traceback" not in err
    lines = (first + rest).decode().splitlines()
    assert (first + rest).endswith(b"\n")
    records = [json.loads(line) for line in lines]  # every written line is whole JSON
    assert [r["line"] for r in records] == list(range(1, len(records) + 1))


@pytest.mark.skipif(not hasattr(os, "getpgid"), reason="POSIX only")
def test_sigterm_while_loading_is_quiet(model_dir):
    # `check -` waits for stdin, which stays open: the run cannot finish before the signal.
    proc = subprocess.Popen(cli_cmd("check", "-", "-m", str(model_dir)), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cli_env())
    try:
        time.sleep(3.0)  # importing torch, loading the model, or reading stdin
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
        err = proc.stderr.read()
    finally:
        proc.stdin.close()
        if proc.poll() is None:
            proc.kill()
    assert code == 143, err
    assert err == b"" and proc.stdout.read() == b""


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_a_signal_while_loading_is_not_reported_as_a_broken_model(model_dir, monkeypatch, backend):
    """SIGTERM raises the CLI's Terminated (a BaseException) wherever Python is: during a load it
    must unwind to exit 143, not become "cannot load model ...: Terminated" and exit 2."""
    from crossguard_cli.cli.signals import Terminated
    from crossguard_cli.engine.models import export, loader
    from crossguard_cli.engine.models import nli_torch as torch_model
    from crossguard_cli.errors import ModelError

    def stopped(*_args, **_kwargs):
        raise Terminated()

    monkeypatch.setattr(torch_model, "_load_crossencoder", stopped)
    monkeypatch.setattr(export, "_from_pretrained", stopped)
    with pytest.raises(Terminated):
        loader.load_model(str(model_dir), backend=backend, device="cpu")

    PanicException = type("PanicException", (BaseException,), {})  # PyO3's, from a corrupt tokenizer.json

    def panics(*_args, **_kwargs):
        raise PanicException("called `Result::unwrap()` on an `Err` value")

    monkeypatch.setattr(torch_model, "_load_crossencoder", panics)
    monkeypatch.setattr(export, "_from_pretrained", panics)
    with pytest.raises(ModelError, match="cannot load model .*PanicException"):
        loader.load_model(str(model_dir), backend=backend, device="cpu")
