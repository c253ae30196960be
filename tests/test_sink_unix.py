"""The sink on a unix socket: serving SMTP and LMTP there, and the socket file's life (made at
start, removed at exit; never a file it did not make, nor another server's socket)."""

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile

import pytest

from conftest import SinkProcess, require_command
from smtp_helpers import greeted, spawn_sink

MSG = b"Subject: unix\r\n\r\nbody\r\n"


@pytest.fixture
def unix_sink(tmp_path):
    """Factory: a sink listening on a unix socket (short path: sun_path is 108 octets)."""
    started = []

    def start(*args: str) -> SinkProcess:
        folder = tempfile.mkdtemp(prefix="smtpbench-", dir="/tmp")
        stats = str(tmp_path / f"unix-stats-{len(started)}.jsonl")
        sink = SinkProcess(spawn_sink(f"unix:{folder}/sink.sock", stats, *args), "", 0, stats)
        sink.path = f"{folder}/sink.sock"
        started.append((sink, folder))
        return sink

    yield start
    for sink, folder in started:
        if sink.proc.poll() is None:
            sink.proc.kill()
            sink.proc.communicate()
        shutil.rmtree(folder, ignore_errors=True)


def test_unix_socket_smtp_source(unix_sink):
    source = require_command("smtp-source")
    sink = unix_sink()
    done = subprocess.run([source, "-s", "2", "-m", "20", "-r", "2", f"unix:{sink.path}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    final = sink.stop()
    assert sink.proc.returncode == 0
    assert (final["messages"], final["recipients"], final["protocol_errors"]) == (20, 40, 0)


def test_unix_socket_lmtp_per_recipient_replies(unix_sink):
    sink = unix_sink("--lmtp")
    with greeted(sink.path, socket.AF_UNIX) as w:
        assert w.command(b"LHLO client.example") == 250
        w.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<x@example.net>\r\nRCPT TO:<y@example.net>\r\n"
               b"RCPT TO:<z@example.net>\r\nDATA\r\n")
        assert [w.code() for _ in range(5)] == [250, 250, 250, 250, 354]
        w.send(MSG + b".\r\n")
        for name in (b"x", b"y", b"z"):  # RFC 2033 §4.2: one reply per recipient, in order
            code, lines = w.reply()
            assert code == 250 and b"<%s@example.net>" % name in lines[0]
        assert w.command(b"QUIT") == 221
    final = sink.stop()
    assert (final["messages"], final["recipients"]) == (1, 3)


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_unix_socket_file_is_removed_on_exit(unix_sink, sig, loop):
    """The socket file the sink made goes when it stops: nothing is left behind at the path."""
    sink = unix_sink("--loop", loop)
    assert stat.S_ISSOCK(os.lstat(sink.path).st_mode)
    with greeted(sink.path, socket.AF_UNIX) as w:
        w.send(b"HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        assert [w.code() for _ in range(4)] == [250, 250, 250, 354]
        w.send(MSG + b".\r\n")
        assert w.code() == 250
        assert w.command(b"QUIT") == 221
    final = sink.stop(sig)
    assert sink.proc.returncode == 0, sink.output
    assert final["messages"] == 1
    assert not os.path.lexists(sink.path), os.listdir(os.path.dirname(sink.path))


def _sink_on(path: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smtpbench", "sink", "--listen", f"unix:{path}"],
                          capture_output=True, text=True, timeout=30)


def test_unix_path_that_is_not_a_socket_is_not_removed(tmp_path):
    """A path that holds a file (a mistake on the command line) is never deleted to make room."""
    folder = tempfile.mkdtemp(prefix="smtpbench-", dir="/tmp")
    try:
        precious = os.path.join(folder, "notes.txt")
        with open(precious, "w") as f:
            f.write("precious")
        done = _sink_on(precious)
        assert done.returncode == 2 and "not a socket" in done.stderr and "Traceback" not in done.stderr, done
        with open(precious) as f:
            assert f.read() == "precious"
    finally:
        shutil.rmtree(folder)


def test_unix_socket_of_a_running_sink_is_not_taken_over(unix_sink):
    """A second sink on the same path exits 2; the first keeps its socket and serves on."""
    sink = unix_sink()
    done = _sink_on(sink.path)
    assert done.returncode == 2 and "another server is listening" in done.stderr, done
    with greeted(sink.path, socket.AF_UNIX) as w:
        assert w.command(b"NOOP") == 250
    sink.stop()
    assert sink.proc.returncode == 0


def test_stale_unix_socket_is_replaced(tmp_path):
    """A socket file nothing listens on (a sink killed with SIGKILL, say) is removed and bound again."""
    folder = tempfile.mkdtemp(prefix="smtpbench-", dir="/tmp")
    path = os.path.join(folder, "sink.sock")
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(path)
    stale.close()  # the file stays, nobody listens
    proc = spawn_sink(f"unix:{path}", str(tmp_path / "stats.jsonl"))
    try:
        with greeted(path, socket.AF_UNIX) as w:
            assert w.command(b"QUIT") == 221
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)
    assert proc.returncode == 0


def test_unix_socket_path_taken_over_meanwhile_is_left_alone(unix_sink):
    """When another socket has replaced the sink's at the path (another server started there),
    the sink removes nothing on exit: only the very file it made (same device and inode) is its own."""
    sink = unix_sink()
    os.unlink(sink.path)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as other:
        other.bind(sink.path)
        theirs = os.lstat(sink.path)
        sink.stop()
        assert sink.proc.returncode == 0, sink.output
        now = os.lstat(sink.path)  # still there, and still theirs
        assert stat.S_ISSOCK(now.st_mode) and (now.st_dev, now.st_ino) == (theirs.st_dev, theirs.st_ino)
