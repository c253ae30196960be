"""Helpers for the load-generator tests: running ``smtpbench run``, peers, and misbehaving servers.

* :func:`run_load` runs the generator as a user does (a subprocess) and returns
  its exit code, output, wall time and the parsed ``result.json``.
* :class:`PostfixSink` is Postfix's ``smtp-sink`` with ``-c`` counters: it
  prints ``sess=N quit=N mesg=N`` whenever "." is received or a session ends,
  so the last ``mesg=`` seen after it stops is how many messages it took.
* :class:`AiosmtpdSink` is aiosmtpd's ``Controller`` (a thread) with a counting handler.
* :class:`ScriptedServer` is a tiny asyncio SMTP server in a thread, built on the
  sans-IO server core, with a fault mode: ``stall`` (stop answering for a while),
  ``reset`` (RST the connection mid-DATA), ``garbage`` (non-SMTP replies), ``silent``
  (accept, never greet), ``hang`` (stop answering after the 354).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from conftest import wait_port
from smtpbench.protocol.server import DATA, DEFAULT_EXTENSIONS, ServerConfig, ServerSession

#: Scripted servers offer DATA only (no CHUNKING), so "mid-DATA" means after a 354.
SCRIPTED_EXTENSIONS = tuple(e for e in DEFAULT_EXTENSIONS if e != "CHUNKING")

HOST = "127.0.0.1"


# -- running the generator ------------------------------------------------------


@dataclass
class LoadRun:
    returncode: int
    stdout: str
    stderr: str
    wall: float
    result: dict | None

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return f"exit {self.returncode} after {self.wall:.1f}s\n{self.stdout}\n{self.stderr}"


def run_load(out: Path, *args: str, timeout: float = 60.0) -> LoadRun:
    """``python -m smtpbench run ARGS --out OUT``; the result file is read when there is one."""
    cmd = [sys.executable, "-m", "smtpbench", "run", *args, "--out", str(out)]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        stdout, stderr = proc.communicate()
        raise AssertionError(f"smtpbench run did not end within {timeout:g}s: {cmd}\n{stdout}\n{stderr}")
    wall = time.monotonic() - started
    path = out / "result.json"
    result = json.loads(path.read_text()) if path.exists() else None
    return LoadRun(proc.returncode, stdout, stderr, wall, result)


def write_scenario(folder: Path, text: str, name: str = "scenario.toml") -> str:
    path = folder / name
    path.write_text(text)
    return str(path)


def assert_exit(run: LoadRun, expected: int) -> None:
    """The exit code is ``expected``; a run the generator marked invalid (exit 3: its own event
    loop lagged or its CPU saturated, as can happen on a busy CI machine) is accepted with a
    warning, since what these tests check is the accounting, not the machine's health."""
    if run.returncode == 3 and expected != 3 and run.result and run.result["verdict"] == "invalid":
        warnings.warn(f"generator marked the run invalid: {run.result['health']['reasons']}")
        return
    assert run.returncode == expected, run


def assert_accounted(result: dict) -> None:
    """Every issued message ended as OK or failed, and the failures are all in the error list."""
    t = result["totals"]
    assert t["ok"] + t["failed"] + t["warmup_ok"] + t["warmup_failed"] == t["issued"], t
    assert sum(e["count"] for e in result["errors"]) >= t["failed"] + t["warmup_failed"]
    assert sum(result["timeseries"]["ok"]) == t["ok"] + t["warmup_ok"]
    assert sum(result["timeseries"]["failed"]) == t["failed"] + t["warmup_failed"]


def run_with_sink(start_sink, folder: Path, scenario: str, *flags: str,
                  sink_args: tuple[str, ...] = ()) -> tuple[dict, dict]:
    """Start ``smtpbench sink`` from ``scenario`` (text; plus ``sink_args``), run the generator
    against it with ``flags``, stop the sink: (result, the sink's final counters). The run must
    not crash and must account for every message."""
    path = write_scenario(folder, scenario)
    sink = start_sink("--scenario", path, *sink_args)
    run = run_load(folder / "out", "--scenario", path, "--target", sink.address, *flags)
    final = sink.stop()
    assert "Traceback" not in run.stderr, run
    assert run.result is not None, run
    assert_accounted(run.result)
    return run.result, final


def failing_scenario(name: str, drain: float) -> str:
    """A scenario's text for runs against misbehaving servers: a short drain, short per-phase timeouts."""
    return f"""
name = "{name}"
[load]
drain = "{drain:g}s"
[load.timeouts]
connect = "1s"
banner = "0.5s"
command = "0.5s"
data_init = "0.5s"
data_end = "0.5s"
"""


def errors_by(result: dict) -> dict[tuple[str, int, str], int]:
    """``{(phase, code, kind): count}`` of a result's error list."""
    return {(e["phase"], e["code"], e["kind"]): e["count"] for e in result["errors"]}


def count_at_least(hist: dict, value_us: int) -> int:
    """How many recorded values are at least ``value_us`` (from a sparse result histogram)."""
    from smtpbench.metrics import bucket_bounds
    import numpy as np

    if not hist["buckets"]:
        return 0
    idx, counts = np.array(hist["buckets"]).T
    low, _ = bucket_bounds(idx)
    return int(counts[low >= value_us].sum())


# -- real peers -------------------------------------------------------------------------


class PostfixSink:
    """Postfix ``smtp-sink -c`` on a loopback port; :meth:`stop` returns the messages it received."""

    def __init__(self, program: str, port: int, *flags: str):
        user = ["-u", "nobody"] if os.geteuid() == 0 else []  # it refuses to run as root otherwise
        self.proc = subprocess.Popen([program, *user, "-c", *flags, f"{HOST}:{port}", "256"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.port = port
        self.output = ""

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def wait_ready(self) -> None:
        try:
            wait_port(HOST, self.port)
        except TimeoutError:
            self.proc.kill()
            raise RuntimeError(f"smtp-sink did not start: {self.proc.communicate()[0]!r}")

    def stop(self) -> int:
        """Stop it; the number of messages it received (its last ``mesg=`` counter)."""
        if self.proc.poll() is None:
            self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        self.output = out.decode("ascii", "replace")
        counts = re.findall(r"mesg=(\d+)", self.output)
        return int(counts[-1]) if counts else 0


class AiosmtpdSink:
    """aiosmtpd's threaded ``Controller`` with a handler that counts what it accepts."""

    def __init__(self, port: int):
        from aiosmtpd.controller import Controller

        self.messages = 0
        lock = threading.Lock()
        outer = self

        class Counting:
            async def handle_DATA(self, server, session, envelope):
                with lock:
                    outer.messages += 1
                return "250 OK"

        self.controller = Controller(Counting(), hostname=HOST, port=port)
        self.port = port

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def __enter__(self) -> "AiosmtpdSink":
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()


# -- scripted, misbehaving servers --------------------------------------------------------


DRIBBLE = b"250-still going\r\n"


class _Conn(asyncio.Protocol):
    def __init__(self, server: "ScriptedServer"):
        self.server = server
        self.session = ServerSession(ServerConfig(hostname="scripted.test", extensions=SCRIPTED_EXTENSIONS))
        self.transport: asyncio.Transport | None = None
        self.held: list[bytes] = []   # replies held back during a stall, in order

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.server.connections += 1
        self.server.live.add(self)
        if self.server.mode == "silent":
            return
        if self.server.greet_after:
            asyncio.get_running_loop().call_later(self.server.greet_after, self._send, self.session.greeting())
            return
        self._send(self.session.greeting())

    def data_received(self, data: bytes) -> None:
        mode = self.server.mode
        if mode == "silent":
            return
        if mode == "reset" and self.session.state == DATA:
            # Read a bit of the message, then abort with an RST (SO_LINGER 0).
            sock = self.transport.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.transport.abort()
            return
        if mode == "hang" and self.session.state == DATA:
            return  # take the message, never answer it
        if mode == "dribble" and self.session.envelope.helo:
            self._dribble(0)  # from MAIL on: a reply that keeps coming, an octet at a time, never ending
            return
        replies = self.session.feed(data)
        if mode == "garbage" and self.session.envelope.helo:
            replies = [b"this is not smtp\r\n"] * len(replies)
        self._send(replies)
        if self.session.closing:
            self.transport.close()

    def connection_lost(self, exc) -> None:
        self.server.live.discard(self)

    def _dribble(self, i: int) -> None:
        if not self.transport.is_closing():
            self.transport.write(DRIBBLE[i % len(DRIBBLE):i % len(DRIBBLE) + 1])
            asyncio.get_running_loop().call_later(0.1, self._dribble, i + 1)

    def _send(self, replies: list[bytes]) -> None:
        server = self.server
        wait = server.stall_left()
        if wait > 0 or self.held:
            if not self.held:
                asyncio.get_running_loop().call_later(max(wait, 0.0), self._release)
            self.held.extend(replies)
            return
        self.transport.writelines(replies)

    def _release(self) -> None:
        held, self.held = self.held, []
        if not self.transport.is_closing():
            self.transport.writelines(held)


class ThreadedServer:
    """A loopback server on an asyncio loop of its own, in a thread; a context manager that starts
    it and, on exit, closes it, aborts its connections and stops the thread. A subclass gives
    :meth:`_make` (the coroutine that makes the server) and :meth:`_transports` (the open ones)."""

    def __init__(self, port: int, name: str):
        self.port = port
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._server = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def _make(self):
        raise NotImplementedError

    def _transports(self) -> list:
        return []

    def __enter__(self):
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._make(), self._loop).result(10)
        return self

    def __exit__(self, *exc) -> None:
        async def close():
            self._server.close()
            for transport in self._transports():
                transport.abort()
            await self._server.wait_closed()

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        except Exception:
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class ScriptedServer(ThreadedServer):
    """An SMTP server in a thread: ``mode`` is normal, stall, reset, garbage, silent, hang
    (answers until the 354, then never again) or dribble (from MAIL on, a multi-line reply
    that never ends, an octet every 0.1 s).

    In ``stall`` mode the server answers normally, except that from ``stall_after``
    seconds after its first connection it holds every reply for ``stall_for``
    seconds, then sends what it held (a GC pause, a full disk, a slow DNS lookup).
    """

    def __init__(self, port: int, mode: str = "normal", stall_after: float = 1.5, stall_for: float = 1.0,
                 greet_after: float = 0.0):
        super().__init__(port, "scripted-smtp")
        self.mode = mode
        self.greet_after = greet_after   # seconds before the 220 banner (a slow, tarpitting server)
        self.stall_after = stall_after
        self.stall_for = stall_for
        self.connections = 0
        self.live: set[_Conn] = set()
        self.stall_start: float | None = None   # monotonic seconds

    def stall_left(self) -> float:
        if self.mode != "stall":
            return 0.0
        now = time.monotonic()
        if self.stall_start is None:
            self.stall_start = now + self.stall_after
        return self.stall_start + self.stall_for - now if now >= self.stall_start else 0.0

    def _make(self):
        return self._loop.create_server(lambda: _Conn(self), HOST, self.port, reuse_address=True)

    def _transports(self) -> list:
        return [conn.transport for conn in self.live]
