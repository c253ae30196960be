"""Helpers shared by the protocol and sink tests.

Protocol side: :class:`Dialog` scripts a :class:`ServerSession` as lists of
byte chunks (h11's habit: the same exchange fed whole, one byte at a time and
in odd-sized pieces must give the same replies).

Sink side: a raw line client (:class:`Wire`) that reads replies with its own
tiny parser, so the sink is not checked with the code under test; starting a
sink on any address (unix sockets included); running the CLI; and /proc
probes for RSS and per-process TCP connections.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from smtpbench.protocol.replies import Reply, ReplyReader
from smtpbench.protocol.server import Envelope, ServerConfig, ServerHooks, ServerSession

# -- protocol core ----------------------------------------------------------

#: Chunk sizes every scripted exchange is fed with: whole, byte by byte, odd pieces.
CHUNKINGS = (None, 1, 7)


def chunked(data: bytes, size: int | None) -> list[bytes]:
    if size is None or not data:
        return [data]
    return [data[i:i + size] for i in range(0, len(data), size)]


def stuffed(body: bytes) -> bytes:
    """RFC 5321 §4.5.2 transparency, written independently of the code under test."""
    lines = body.split(b"\r\n")
    return b"\r\n".join(b"." + line if line.startswith(b".") else line for line in lines)


class Recorder(ServerHooks):
    """Hooks that keep every accepted message and can refuse or deny on demand."""

    def __init__(self, refuse: tuple[int, str, str] | None = None, password: str | None = None):
        self.messages: list[tuple[Envelope, bytes | None, int]] = []
        self.logins: list[tuple[str, str, str]] = []
        self.refuse = refuse
        self.password = password

    def message(self, envelope, body, size):
        if self.refuse is None:
            self.messages.append((envelope, body, size))
        return self.refuse

    def authenticate(self, mechanism, username, password):
        self.logins.append((mechanism, username, password))
        return self.password is None or password == self.password


class Dialog:
    """A server session fed scripted bytes in chunks of ``chunk`` octets."""

    def __init__(self, chunk: int | None = None, hooks: ServerHooks | None = None, **config):
        self.chunk = chunk
        self.hooks = hooks or Recorder()
        self.session = ServerSession(ServerConfig(**config), hooks=self.hooks)
        self.reader = ReplyReader()
        self.wire = b""  # every octet the server wrote, greeting included
        self.greeting = self._read(self.session.greeting())[0]

    def _read(self, out: list[bytes]) -> list[Reply]:
        data = b"".join(out)
        self.wire += data
        return self.reader.feed(data)

    def send(self, data: bytes) -> list[Reply]:
        replies = []
        for piece in chunked(data, self.chunk):
            replies += self._read(self.session.feed(piece))
        return replies

    def codes(self, data: bytes) -> list[int]:
        return [r.code for r in self.send(data)]

    def begin(self, rcpts: int = 1, mail: bytes = b"MAIL FROM:<a@example.org>") -> list[int]:
        """EHLO, MAIL and ``rcpts`` RCPTs; the codes of those replies."""
        script = b"EHLO client.example\r\n" + mail + b"\r\n"
        script += b"".join(b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(rcpts))
        return self.codes(script)

    @property
    def bodies(self) -> list[bytes | None]:
        return [body for _, body, _ in self.hooks.messages]


@pytest.fixture(params=CHUNKINGS, ids=["whole", "bytewise", "chunks7"])
def dialog(request):
    """Factory: ``dialog(**ServerConfig fields)``, parametrised over the chunkings."""
    return lambda hooks=None, **config: Dialog(request.param, hooks, **config)


# -- sink over real sockets --------------------------------------------------


class Wire:
    """A raw SMTP client socket reading replies with a parser of its own."""

    def __init__(self, address, family: int = socket.AF_INET, timeout: float = 10.0):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(address)
        self.buf = b""

    def line(self) -> bytes:
        """One reply line without CRLF; b"" at EOF."""
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                rest, self.buf = self.buf, b""
                return rest
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def reply(self) -> tuple[int, list[bytes]]:
        """(code, lines) of the next whole reply; (0, []) at EOF."""
        lines = []
        while True:
            line = self.line()
            if not line:
                return 0, lines
            assert line[:3].isdigit() and line[3:4] in (b" ", b"-", b""), line
            lines.append(line)
            if line[3:4] != b"-":
                return int(line[:3]), lines

    def code(self) -> int:
        return self.reply()[0]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: bytes) -> int:
        self.send(line + b"\r\n")
        return self.code()

    def expect_close(self) -> None:
        """Assert the server closes (EOF or reset) without sending anything more."""
        extra = self.buf
        try:
            while data := self.sock.recv(65536):
                extra += data
        except ConnectionResetError:
            pass
        assert extra == b"", extra

    def close(self) -> None:
        self.sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def greeted(address, family: int = socket.AF_INET) -> Wire:
    """A :class:`Wire` connected to ``address`` whose 220 greeting is read (asserted)."""
    w = Wire(address, family)
    assert w.code() == 220
    return w


def message(tag: str, extra: bytes = b"") -> bytes:
    """A CRLF message with the lines that need care: leading dots, mbox "From " lines."""
    return (b"From: a@example.org\r\nTo: b@example.net\r\nSubject: " + tag.encode() + b"\r\n\r\n"
            b".leading dot\r\n..two dots\r\nFrom the start of a line\r\n>From quoted\r\n"
            b"." + b"\r\n" + extra + b"last line\r\n")


def run_clis(argvs: list[list[str]], timeout: float = 60.0) -> list[subprocess.CompletedProcess]:
    """Run several ``smtpbench`` command lines at once (each its own process); their results."""
    procs = [subprocess.Popen([sys.executable, "-m", "smtpbench", *argv], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for argv in argvs]
    done = []
    try:
        for argv, proc in zip(argvs, procs):
            out, err = proc.communicate(timeout=timeout)
            done.append(subprocess.CompletedProcess(argv, proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return done


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return run_clis([list(args)])[0]


def spawn_sink(listen: str, stats_file: str, *args: str) -> subprocess.Popen:
    """Start ``smtpbench sink`` on any address; returns once it says it is listening."""
    proc = subprocess.Popen([sys.executable, "-m", "smtpbench", "sink", "--listen", listen,
                             "--stats-file", stats_file, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first = proc.stdout.readline()
    if "listening" not in first:
        proc.kill()
        raise RuntimeError(f"sink did not start: {first}{proc.communicate()[0]}")
    return proc


def wait_for(predicate, timeout: float = 10.0, step: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(step)


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def child_workers(pid: int) -> list[int]:
    """Worker processes (spawned multiprocessing children) of ``pid``."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            out.append(int(entry))
    return sorted(out)


def established(pid: int, port: int) -> int:
    """TCP connections in state ESTABLISHED on local ``port`` held open by process ``pid``."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for row in f:
                fields = row.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                if local_port == port and fields[3] == "01" and fields[9] in inodes:
                    count += 1
    return count
