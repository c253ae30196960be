"""Shared fixtures: real servers on loopback, started and stopped by the tests.

``SMTPBENCH_REQUIRE_PEERS=1`` (set by .ci/run) turns "peer not installed"
skips into failures, so CI never passes by skipping.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import pytest

REQUIRE_PEERS = os.environ.get("SMTPBENCH_REQUIRE_PEERS") == "1"


def require_command(name: str) -> str:
    """Path of an external peer program; skip (or fail in CI) when it is absent."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None
    )
    if path is None:
        msg = f"{name} is not installed (Debian: apt-get install postfix swaks)"
        if REQUIRE_PEERS:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port}")


@dataclass
class SinkProcess:
    """A running ``smtpbench sink`` subprocess."""

    proc: subprocess.Popen
    host: str
    port: int
    stats_file: str
    output: str = ""
    final: dict = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def stats(self) -> dict:
        """The latest JSON-lines snapshot (written every 1 s, and at exit)."""
        with open(self.stats_file, encoding="utf-8") as f:
            lines = [line for line in f if line.strip()]
        return json.loads(lines[-1]) if lines else {}

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> dict:
        """Stop gracefully; return the final counters (the last stats line)."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, _ = self.proc.communicate(timeout=timeout)
        self.output = out
        self.final = self.stats()
        return self.final


def launch_sink(stats_file: str, *args: str, host: str = "127.0.0.1", port: int | None = None,
                env: dict | None = None) -> SinkProcess:
    """Start ``smtpbench sink`` on a (free) loopback port and wait until it accepts; the caller stops it."""
    port = port or free_port(host)
    listen = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    cmd = [sys.executable, "-m", "smtpbench", "sink", "--listen", listen, "--stats-file", stats_file, *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, **(env or {})})
    sink = SinkProcess(proc, host, port, stats_file)
    try:
        wait_port(host, port)
    except TimeoutError:
        proc.kill()
        raise RuntimeError(f"sink did not start: {proc.communicate()[0]}")
    return sink


@pytest.fixture
def start_sink(tmp_path):
    """Factory: ``start_sink("--capture", "maildir:...")`` starts a sink on a free loopback port."""
    started: list[SinkProcess] = []

    def start(*args: str, host: str = "127.0.0.1", port: int | None = None, env: dict | None = None) -> SinkProcess:
        sink = launch_sink(str(tmp_path / f"sink-stats-{len(started)}.jsonl"), *args, host=host, port=port, env=env)
        started.append(sink)
        return sink

    yield start
    for sink in started:
        if sink.proc.poll() is None:
            sink.proc.kill()
            sink.proc.communicate()


@pytest.fixture
def sink(start_sink) -> SinkProcess:
    """A default sink (discard mode, one worker)."""
    return start_sink()
