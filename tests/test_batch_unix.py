"""`crossguard batch` as a real process in a pipeline: streaming, Ctrl-C, `| head -1`, a full disk.

Every subprocess runs with PYTHONUNBUFFERED unset (CI sets it, which would hide a missing
flush) and pays a few seconds of imports, so each test checks several things at once.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import cli_cmd, cli_env

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and pipes")

ONE_RULE = "version: 1\nrules:\n  - name: harm\n    hypothesis: The prompt is harmful.\n"
NOISE = ("Traceback", "Exception ignored", "Fatal Python error", "BrokenPipeError", "KeyboardInterrupt")


@pytest.fixture(scope="module")
def rules_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("unix-rules") / "one.yaml"
    path.write_text(ONE_RULE)
    return str(path)


def env() -> dict[str, str]:
    return cli_env(OMP_NUM_THREADS="1")


def line_reader(stream) -> queue.Queue:
    """Lines of `stream` in a queue as they arrive (None at end of stream)."""
    lines: queue.Queue = queue.Queue()

    def pump() -> None:
        for line in iter(stream.readline, b""):
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def drain(lines: queue.Queue, timeout: float = 30) -> list[bytes]:
    out = []
    while (line := lines.get(timeout=timeout)) is not None:
        out.append(line)
    return out


def assert_quiet(err: str) -> None:
    for word in NOISE:
        assert word not in err, err


def test_streams_each_line_before_the_next_then_ctrl_c_exits_130(model_dir, rules_file) -> None:
    """`tail -f chat.log | crossguard batch`: a result per line as it arrives, then Ctrl-C."""
    proc = subprocess.Popen(cli_cmd("batch", "-m", str(model_dir), "-r", rules_file), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    try:
        lines = line_reader(proc.stdout)
        latencies = []
        for i in range(4):
            record = {"id": f"r{i}", "text": f"message number {i} from the chat log"}
            start = time.monotonic()
            proc.stdin.write((json.dumps(record) + "\n").encode())
            proc.stdin.flush()
            got = lines.get(timeout=120 if i == 0 else 15)  # the first waits for the model to load
            latencies.append(time.monotonic() - start)
            assert got is not None, proc.stderr.read().decode()
            out = json.loads(got)
            assert (out["id"], out["line"], out["source"], out["status"]) == (f"r{i}", i + 1, "stdin", "ok")
        assert max(latencies[1:]) < 3.0, latencies  # a fraction of a second, with room for a busy CI
        time.sleep(0.2)
        proc.send_signal(signal.SIGINT)  # stdin is still open: the reader is blocked on it
        code = proc.wait(timeout=60)
        rest = drain(lines)
        err = proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert code == 130, err
    assert rest == []
    assert_quiet(err)


def test_head_1_on_a_large_file_exits_quietly(model_dir, rules_file, moderation_records, tmp_path) -> None:
    path = tmp_path / "moderation.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in moderation_records))
    producer = subprocess.Popen(cli_cmd("batch", str(path), "-m", str(model_dir), "-r", rules_file,
                                        "--max-length", "64"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env())
    head = subprocess.Popen(["head", "-1"], stdin=producer.stdout, stdout=subprocess.PIPE)
    producer.stdout.close()  # only head holds the read end now
    first, _ = head.communicate(timeout=120)
    err = producer.stderr.read().decode()
    code = producer.wait(timeout=60)
    assert json.loads(first)["line"] == 1
    assert code in (141, -signal.SIGPIPE), err
    assert_quiet(err)
    assert err == ""  # stopped early: no summary, no error


def test_head_1_while_stdin_stays_open_exits_quietly(model_dir, rules_file) -> None:
    """`tail -f log | crossguard batch | head -1`: the reader thread is blocked on stdin at exit."""
    r, w = os.pipe()
    producer = subprocess.Popen(cli_cmd("batch", "-m", str(model_dir), "-r", rules_file), stdin=subprocess.PIPE,
                                stdout=w, stderr=subprocess.PIPE, env=env())
    head = subprocess.Popen(["head", "-1"], stdin=r, stdout=subprocess.PIPE)
    os.close(r)
    os.close(w)
    try:
        producer.stdin.write(b"first line\n")
        producer.stdin.flush()
        first, _ = head.communicate(timeout=120)
        assert json.loads(first)["text"] == "first line"
        for i in range(50):  # the next result meets a closed pipe
            if producer.poll() is not None:
                break
            producer.stdin.write(b"more line %d\n" % i)
            producer.stdin.flush()
            time.sleep(0.1)
        code = producer.wait(timeout=60)
        err = producer.stderr.read().decode()
    except BrokenPipeError:  # it exited between our writes: that is the point
        code = producer.wait(timeout=60)
        err = producer.stderr.read().decode()
    finally:
        if producer.poll() is None:
            producer.kill()
            producer.wait()
    assert code in (141, -signal.SIGPIPE), err
    assert_quiet(err)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="no /dev/full")
def test_a_full_disk_is_one_error_line_and_exit_2(model_dir, rules_file, tmp_path) -> None:
    path = tmp_path / "prompts.txt"
    path.write_text("one prompt\nanother prompt\n")
    with open("/dev/full", "w") as full:
        done = subprocess.run(cli_cmd("batch", str(path), "-m", str(model_dir), "-r", rules_file), stdout=full,
                              stderr=subprocess.PIPE, env=env(), timeout=120)
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert err.count("\n") == 1 and err.startswith("crossguard: error: stdout: "), err
    assert "No space left on device" in err
