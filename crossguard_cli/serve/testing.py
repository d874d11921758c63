"""A `crossguard serve` in a subprocess, and a small stdlib HTTP client: for tests and benchmarks.

    >>> with ServerProcess(["--model", "/tmp/demo-model"]) as server:
    ...     status, headers, body = server.post("/v1/moderations", {"input": "hello"})

The server listens on a free port (`--port 0`); `start()` returns once its startup line names
the address, with stderr collected line by line (`lines`) by a thread, so a chatty server
never blocks on a full pipe. Only the standard library is used here.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

_LISTENING = re.compile(r"listening on (http://\S+?):? ")


class ServerProcess:
    """`python -m crossguard_cli serve ARGS --port 0` as a subprocess.

    Args:
        args: arguments after `serve` (model, rules, limits...).
        env: the environment (None: this process's).
        timeout: seconds to wait for the startup line.
        command: the program that takes `serve ARGS` (None: `python -m crossguard_cli`); tests and
            benchmarks pass a wrapper that swaps the model for a gated or simulated one.
    """

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120.0,
                 command: Sequence[str] | None = None) -> None:
        self.args = list(args)
        self.command = list(command or [sys.executable, "-m", "crossguard_cli"])
        self.env = dict(os.environ if env is None else env)
        self.timeout = timeout
        self.lines: list[str] = []
        self.url = ""
        self.host = ""
        self.port = 0
        self.proc: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._started = threading.Event()

    def start(self) -> ServerProcess:
        cmd = [*self.command, "serve", "--port", "0", *self.args]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     env=self.env, text=True, encoding="utf-8")
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._started.wait(self.timeout) or not self.url:
            self.kill()
            raise RuntimeError("crossguard serve did not start:\n" + "\n".join(self.lines[-20:]))
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))
            found = _LISTENING.search(line) if not self.url else None
            if found:
                self.url = found.group(1)
                self.host, port = self.url.removeprefix("http://").rsplit(":", 1)
                self.port = int(port)
                self._started.set()
        self._started.set()  # the process ended (perhaps before it started)

    # -- HTTP ----------------------------------------------------------------------------------

    def request(self, method: str, path: str, body: bytes | None = None, headers: Mapping[str, str] | None = None,
                timeout: float = 120.0) -> tuple[int, dict[str, str], Any]:
        """(status, headers with lower-case names, the JSON body or the text when not JSON)."""
        conn = http.client.HTTPConnection(self.host.strip("[]"), self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=dict(headers or {}))
            resp = conn.getresponse()
            raw = resp.read()
            head = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        try:
            payload: Any = json.loads(raw)
        except ValueError:
            payload = raw.decode("utf-8", "replace")
        return resp.status, head, payload

    def post(self, path: str, data: Any, headers: Mapping[str, str] | None = None,
             timeout: float = 120.0) -> tuple[int, dict[str, str], Any]:
        body = data if isinstance(data, bytes) else json.dumps(data).encode()
        return self.request("POST", path, body, {"Content-Type": "application/json", **(headers or {})}, timeout)

    def get(self, path: str, headers: Mapping[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
        return self.request("GET", path, headers=headers)

    def metrics(self) -> dict[str, float]:
        """`/metrics` as {"name{labels}": value}."""
        _, _, text = self.get("/metrics")
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    # -- the process ---------------------------------------------------------------------------

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        code = self.proc.wait(timeout)
        if self._reader is not None:
            self._reader.join(5)
        return code

    def wait_for_line(self, pattern: str, timeout: float = 30.0, start: int = 0) -> str:
        """The first stderr line from index `start` on that matches `pattern` (a regex)."""
        deadline = time.monotonic() + timeout
        regex = re.compile(pattern)
        while time.monotonic() < deadline:
            for line in self.lines[start:]:
                if regex.search(line):
                    return line
            time.sleep(0.02)
        raise TimeoutError(f"no line matching {pattern!r}:\n" + "\n".join(self.lines[-20:]))

    def stop(self) -> int:
        """SIGTERM and wait (kill after 30 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait(30)
        except subprocess.TimeoutExpired:
            self.kill()
            return -9

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


__all__ = ["ServerProcess"]
