"""Reaching Ray: importing it, checking `--ray-address`, connecting, and keeping it off our stderr.

`ray.init` against an address that is down, or that is not Ray (the dashboard's port 8265 is a
common slip), retries for minutes. So an address is checked first, within a minute: a TCP
connection (refused, unknown host, no answer: a few seconds), then a real handshake in a child
process that is killed when it takes longer than `CROSSGUARD_RAY_CONNECT_TIMEOUT` seconds (30).
Only then does this process connect.

Our stderr is one-line errors and the summary, and a Ray job's stdout is empty: Ray's own log
lines stay in its session logs (``/tmp/ray/session_latest/logs``), worker output is not
forwarded, and Ray Data's progress bars show only on a terminal.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

from crossguard_cli.errors import CrossguardError, UsageError

INSTALL_HINT = "pip install 'crossguard[ray]'"
TCP_TIMEOUT_S = 5.0
DEFAULT_CONNECT_TIMEOUT_S = 30.0
_HOST_PORT = re.compile(r"^(?:\[(?P<ip6>[0-9a-fA-F:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$")
_NATIVE_LOG = re.compile(rb"^\[\d{4}-\d\d-\d\d [\d:,.]+ [A-Z] \d+ \d+\] ")
_HANDSHAKE = """
import json, logging, sys
import ray
ray.init(address=sys.argv[1], logging_level=logging.ERROR, log_to_driver=False)
print(json.dumps(ray.cluster_resources()))
ray.shutdown()
"""


class RayMissing(UsageError):
    """Ray is not installed (or cannot be imported) here."""


class ClusterError(CrossguardError):
    """The Ray cluster cannot be reached, or the job failed inside Ray."""


def import_ray() -> Any:
    """`ray`, with Ray Data; one line saying how to install it when it is missing."""
    try:
        import ray
        import ray.data  # noqa: F401 - the job needs Ray Data, not only Ray core
    except ImportError as exc:
        missing = getattr(exc, "name", None) or str(exc)
        what = "Ray is not installed" if missing in ("ray", "ray.data") else f"Ray cannot be imported ({exc})"
        raise RayMissing(f"--engine ray: {what}; install it with: {INSTALL_HINT}") from None
    return ray


def check_address(address: str, timeout: float | None = None) -> None:
    """Fail within a minute, naming `address`, unless a Ray cluster answers there.

    Raises:
        ClusterError: a malformed address, a host that does not answer, or one that is not Ray.
    """
    where = f"--ray-address {address}"
    if address.startswith(("http://", "https://")):
        raise ClusterError("this is a dashboard address (as `ray job submit` takes); give the cluster's "
                           "address, HOST:6379 or ray://HOST:10001", where=where)
    if address not in ("auto", "local"):
        bare = address.removeprefix("ray://")
        found = _HOST_PORT.match(bare)
        if not found or not 0 < int(found["port"]) < 65536:
            raise ClusterError("not an address: expected HOST:PORT, ray://HOST:PORT or auto", where=where)
        _tcp_probe(found["ip6"] or found["host"], int(found["port"]), where)
    _handshake(address, where, timeout if timeout is not None else _connect_timeout())


@contextlib.contextmanager
def connected(address: str | None, *, progress: bool) -> Iterator[Any]:
    """Ray, connected to `address` (None: a local Ray), quiet on stderr; disconnected at the end.

    A given address is always checked first. A Ray already initialised in this process (an
    embedding program, the tests) is then used as it is and left running; a Ray started or
    joined here is shut down here.
    """
    ray = import_ray()
    if address:
        check_address(address)
    started = not ray.is_initialized()
    with _quiet_ray_logs(progress), _native_logs_filtered(enabled=not progress), _stdout_held():
        if started:
            try:
                ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False,
                         include_dashboard=False if not address else None)
            except Exception as exc:  # noqa: BLE001 - Ray raises many kinds here; each becomes one line
                raise ClusterError(f"cannot start or join Ray: {_first_line(exc)}",
                                   where=f"--ray-address {address}" if address else None) from None
        try:
            yield ray
        finally:
            if started:
                ray.shutdown()


def _tcp_probe(host: str, port: int, where: str) -> None:
    try:
        with socket.create_connection((host, port), timeout=TCP_TIMEOUT_S):
            pass
    except socket.gaierror:
        raise ClusterError(f"unknown host {host!r}", where=where) from None
    except TimeoutError:
        raise ClusterError(f"no answer within {TCP_TIMEOUT_S:g} s; is the cluster up and the port open?",
                           where=where) from None
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ClusterError(f"cannot connect: {reason}; is the cluster up?", where=where) from None


def _handshake(address: str, where: str, timeout: float) -> dict[str, float]:
    """Connect from a child process we can kill: the only bound on Ray's own retries."""
    env = {**os.environ, "RAY_BACKEND_LOG_LEVEL": os.environ.get("RAY_BACKEND_LOG_LEVEL", "fatal")}
    try:
        proc = subprocess.run([sys.executable, "-c", _HANDSHAKE, address], capture_output=True, text=True,
                              timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"no Ray cluster answered within {timeout:g} s (HOST:6379 is the cluster's address, "
                           "ray://HOST:10001 its client address; 8265 is the dashboard)", where=where) from None
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if re.match(r"^\w+(\.\w+)*(Error|Exception): ", line)]
        raise ClusterError(f"cannot connect: {(errors or lines or ['Ray exited with no message'])[-1]}",
                           where=where)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


def _connect_timeout() -> float:
    value = os.environ.get("CROSSGUARD_RAY_CONNECT_TIMEOUT", "")
    try:
        return max(1.0, float(value)) if value else DEFAULT_CONNECT_TIMEOUT_S
    except ValueError:
        raise UsageError(f"must be a number of seconds, got {value!r}",
                         where="CROSSGUARD_RAY_CONNECT_TIMEOUT") from None


@contextlib.contextmanager
def _quiet_ray_logs(progress: bool) -> Iterator[None]:
    """Ray's console log handlers muted (progress bars aside) for the job, then put back."""
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    saved = []
    for logger in loggers:
        for handler in logger.handlers:
            if not isinstance(handler, logging.FileHandler):
                saved.append((handler, handler.level))
                handler.setLevel(logging.WARNING if progress else logging.CRITICAL + 1)
    try:
        yield
    finally:
        for handler, level in saved:
            handler.setLevel(level)


@contextlib.contextmanager
def _stdout_held() -> Iterator[None]:
    """Ray's driver prints raylet notices ("(raylet) A worker died ...") on `sys.stdout`; a Ray job
    writes nothing there, so stdout stays clean for the job's length (they are in Ray's logs)."""
    saved = sys.stdout
    sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 - closed below
    try:
        yield
    finally:
        held, sys.stdout = sys.stdout, saved
        held.close()


@contextlib.contextmanager
def _native_logs_filtered(enabled: bool) -> Iterator[None]:
    """Keep the log lines of Ray's C++ core off stderr (they are in Ray's session logs too).

    The driver's core worker writes lines like ``[2026-12-02 05:15:45,549 E 14441 14441]
    core_worker.cc:2465: ...`` straight to file descriptor 2, past Python's logging. For the
    job's length, descriptor 2 is a pipe read by a thread that drops those lines and passes
    everything else (our own messages) through unchanged. Not on a terminal: progress bars
    need descriptor 2 to stay the terminal, and there Ray's lines are tolerable.
    """
    if not enabled or not hasattr(os, "pipe"):
        yield
        return
    sys.stderr.flush()
    original = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump() -> None:
        with os.fdopen(read_end, "rb") as lines, contextlib.suppress(OSError):  # OSError: stderr is gone
            for line in lines:
                if not _NATIVE_LOG.match(line):
                    os.write(original, line)

    thread = threading.Thread(target=pump, daemon=True, name="crossguard-ray-stderr")
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(original, 2)  # the pipe's last writer is gone, unless a child of Ray still holds it
        thread.join(timeout=2.0)
        os.close(original)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


__all__ = ["ClusterError", "INSTALL_HINT", "RayMissing", "check_address", "connected", "import_ray"]
