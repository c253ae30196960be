"""The sink as a server process: listening (IPv6, workers; unix sockets: test_sink_unix.py), limits,
timeouts, graceful shutdown, flow control, stats outputs, configuration errors
and hostile clients. Everything over real loopback sockets."""

import asyncio
import json
import random
import re
import select
import signal
import smtplib
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port, wait_port
from smtp_helpers import (
    Wire, child_workers, established, greeted, rss_kib, run_cli, run_clis, wait_for,
)

MSG = b"Subject: behaviour\r\n\r\nbody\r\n"


def send_messages(host: str, port: int, count: int, rcpts: int = 1) -> None:
    with smtplib.SMTP(host, port, timeout=10) as client:
        for _ in range(count):
            assert client.sendmail("a@example.org", [f"r{i}@example.net" for i in range(rcpts)], MSG) == {}


# -- where it listens ------------------------------------------------------------

def test_ipv6_loopback(start_sink):
    sink = start_sink(host="::1")
    send_messages("::1", sink.port, 3, rcpts=2)
    with pytest.raises(OSError):  # bound to ::1 only, not to IPv4
        socket.create_connection(("127.0.0.1", sink.port), timeout=2).close()
    final = sink.stop()
    assert (final["messages"], final["recipients"]) == (3, 6)


def test_two_workers_share_the_port_and_stats_add_up(start_sink):
    sink = start_sink("--workers", "2")
    # The port answers once the first worker listens; this line comes when both do.
    assert sink.proc.stdout.readline().rstrip().endswith("(2 workers)")
    workers = child_workers(sink.proc.pid)
    assert len(workers) == 2
    clients = [greeted((sink.host, sink.port)) for _ in range(16)]
    try:
        per_worker = [established(pid, sink.port) for pid in workers]
        assert sum(per_worker) == 16 and min(per_worker) > 0, per_worker
        for i, w in enumerate(clients):
            assert w.command(b"HELO client.example") == 250
            w.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nRCPT TO:<c@example.net>\r\nDATA\r\n")
            assert [w.code() for _ in range(4)] == [250, 250, 250, 354]
            w.send(MSG * (i + 1) + b".\r\n")
            assert w.code() == 250
            assert w.command(b"QUIT") == 221
    finally:
        for w in clients:
            w.close()
    final = sink.stop()
    assert sink.proc.returncode == 0
    assert (final["messages"], final["recipients"]) == (16, 32)
    assert final["bytes"] == len(MSG) * sum(range(1, 17))
    assert final["replies"]["221"] == 16


# -- limits and timeouts ------------------------------------------------------------

def test_max_connections(start_sink):
    sink = start_sink("--max-connections", "2")
    first, second = greeted((sink.host, sink.port)), greeted((sink.host, sink.port))
    with Wire((sink.host, sink.port)) as third:
        code, lines = third.reply()
        assert code == 421 and b"4.3.2" in lines[0]
        third.expect_close()
    first.close()
    # The freed slot is usable again once the sink has seen the close.
    assert wait_for(lambda: Wire((sink.host, sink.port)).code() == 220)
    assert second.command(b"NOOP") == 250
    second.close()
    final = sink.stop()
    assert final["connections_refused"] >= 1
    assert final["replies"]["421"] == final["connections_refused"]


def test_size_and_recipient_limits_with_smtplib(start_sink):
    sink = start_sink("--max-message-size", "2KiB", "--max-recipients", "100")
    rcpts = [f"r{i}@example.net" for i in range(101)]
    big = MSG + b"x" * 3000 + b"\r\n"
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "2048"
        refused = client.sendmail("a@example.org", rcpts, MSG)  # RFC 5321 §4.5.3.1.10
        assert list(refused) == [rcpts[-1]] and refused[rcpts[-1]][0] == 452
        with pytest.raises(smtplib.SMTPSenderRefused) as e:  # smtplib declares SIZE=: refused at MAIL
            client.sendmail("a@example.org", rcpts[:1], big)
        assert e.value.smtp_code == 552
        client.rset()
        # Not declared: the whole body is read, then refused after the terminator.
        assert client.docmd("MAIL", "FROM:<a@example.org>")[0] == 250
        assert client.docmd("RCPT", "TO:<b@example.net>")[0] == 250
        assert client.data(big)[0] == 552
        assert client.sendmail("a@example.org", rcpts[:1], MSG) == {}
    final = sink.stop()
    assert (final["messages"], final["recipients"]) == (2, 101)
    assert final["replies"]["552"] == 2 and final["replies"]["452"] == 1


@pytest.mark.parametrize("limit", [2048, 300 * 1024])  # a body in one read, and in many
def test_message_at_the_size_limit_fits_however_many_dot_lines(start_sink, limit):
    """RFC 1870 §3/§4: SIZE counts the message's octets, not the dots stuffing adds to lines
    that start with "." (RFC 5321 §4.5.2): a message of exactly the advertised size is accepted."""
    sink = start_sink("--max-message-size", str(limit))
    head = b"Subject: dots\r\n\r\n"
    lines = b".dot line\r\nplain line\r\n" * ((limit - len(head)) // 23)
    msg = head + lines + b"x" * (limit - len(head) - len(lines) - 2) + b"\r\n"
    assert len(msg) == limit
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == str(limit)
        assert client.sendmail("a@example.org", ["b@example.net"], msg) == {}  # declares SIZE=limit
        for body, code in ((msg, 250), (b"x" + msg, 552)):  # undeclared; then one octet more
            assert client.docmd("MAIL", "FROM:<a@example.org>")[0] == 250
            assert client.docmd("RCPT", "TO:<b@example.net>")[0] == 250
            assert client.data(body)[0] == code
    final = sink.stop()
    assert final["messages"] == 2 and final["replies"]["552"] == 1


def test_hidden_extensions_are_not_offered(start_sink):
    sink = start_sink("--hide", "SMTPUTF8", "--hide", "PIPELINING")
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        assert not client.has_extn("smtputf8") and not client.has_extn("pipelining")
        assert client.has_extn("size") and client.has_extn("8bitmime")
        with pytest.raises(smtplib.SMTPNotSupportedError):
            client.sendmail("δ@example.org", ["b@example.net"], MSG, mail_options=["SMTPUTF8"])
    sink.stop()


def test_idle_timeout(start_sink):
    sink = start_sink("--idle-timeout", "1s")
    idle = greeted((sink.host, sink.port))
    busy = greeted((sink.host, sink.port))
    for _ in range(12):  # 3 s: a client that keeps talking is not idle
        assert busy.command(b"NOOP") == 250
        time.sleep(0.25)
    code, lines = idle.reply()  # one that sent nothing was told why and closed
    assert code == 421 and b"timeout" in lines[0].lower()
    idle.expect_close()
    assert busy.command(b"QUIT") == 221
    final = sink.stop()
    assert final["timeouts"] == 1


@pytest.mark.parametrize("workers", ["1", "2"])
def test_graceful_shutdown_lets_data_in_flight_finish(start_sink, workers):
    sink = start_sink("--workers", workers)
    assert "listening" in sink.proc.stdout.readline()  # every worker is up
    idle = greeted((sink.host, sink.port))
    w = greeted((sink.host, sink.port))
    assert w.command(b"EHLO client.example") == 250
    w.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
    assert [w.code() for _ in range(3)] == [250, 250, 354]
    w.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
    sink.proc.send_signal(signal.SIGTERM)
    # It stops accepting, and says goodbye to the connection with no transaction.
    assert idle.code() == 421
    assert wait_for(lambda: _refused(sink.host, sink.port))
    w.send(b"second half\r\n.\r\n")
    assert w.code() == 250
    assert w.code() == 421
    w.close()
    final = sink.stop()
    assert sink.proc.returncode == 0
    assert final["messages"] == 1
    assert "smtpbench sink:" in sink.output and re.search(r"^\s+messages\s+1$", sink.output, re.M)


def test_grace_period_expires_for_a_stuck_transaction(start_sink):
    sink = start_sink("--grace", "1s")
    with greeted((sink.host, sink.port)) as w:
        w.send(b"HELO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nnever ends\r\n")
        assert [w.code() for _ in range(4)] == [250, 250, 250, 354]
        sink.proc.send_signal(signal.SIGTERM)
        code, lines = w.reply()  # the grace period ran out
        assert code == 421 and b"shutting down" in lines[0]
        w.expect_close()
    final = sink.stop(timeout=10)
    assert sink.proc.returncode == 0
    assert final["messages"] == 0 and final["connections_current"] == 0


ABANDONED = [
    b"",
    b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nhalf a body",
    b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 1000\r\nabc",
    b"NOOP with a line that does not end",
]


def test_abrupt_disconnects_are_forgotten(start_sink):
    sink = start_sink()
    for script in ABANDONED:
        for reset in (False, True):
            w = greeted((sink.host, sink.port))
            w.send(script)
            if reset:  # SO_LINGER 0: close with RST
                w.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            w.close()
    send_messages(sink.host, sink.port, 1)
    final = sink.stop()
    assert final["connections_current"] == 0
    assert final["messages"] == 1 and final["transactions"] == 1


def _refused(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def blast(sock: socket.socket, data: bytes, total: int, stall: float, seconds: float) -> int:
    """Send ``data`` over and over, never reading; stop after ``total`` octets, when the
    peer has taken nothing for ``stall`` seconds (flow control at work), or after ``seconds``."""
    sock.setblocking(False)
    view, off, sent = memoryview(data), 0, 0
    now = time.monotonic()
    deadline, progress = now + seconds, now
    while sent < total and now < deadline and now - progress < stall:
        try:
            n = sock.send(view[off:])
        except (BlockingIOError, ssl.SSLWantWriteError):  # the latter: a TLS socket
            select.select([], [sock], [], 0.1)
        else:
            sent += n
            off = (off + n) % len(data)
            progress = time.monotonic()
        now = time.monotonic()
    return sent


def test_client_that_never_reads_cannot_grow_memory(start_sink):
    sink = start_sink()
    send_messages(sink.host, sink.port, 20)  # warm up the allocator
    before = rss_kib(sink.proc.pid)
    with Wire((sink.host, sink.port)) as w:
        w.send(b"EHLO blaster.example\r\n")
        # EHLO has the largest reply (about 20 octets out for each one in), so a sink
        # that kept reading would show it within seconds; one that honours flow
        # control stops taking our bytes once its reply buffer is full.
        sent = blast(w.sock, b"NOOP\r\nEHLO blaster.example\r\n" * 20_000, total=200 * 2**20,
                     stall=1.5, seconds=20)
        grown = rss_kib(sink.proc.pid) - before
        send_messages(sink.host, sink.port, 1)  # the sink still serves others meanwhile
    assert sent > 2**20
    assert grown < 50 * 1024, f"RSS grew by {grown} KiB while a client sent {sent} octets without reading"
    assert sink.stop()["messages"] == 21


# -- stats outputs --------------------------------------------------------------------

def get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


@pytest.mark.parametrize("workers", ["1", "2"])
def test_http_stats_endpoint(start_sink, workers):
    port = free_port()
    sink = start_sink("--stats-listen", f"127.0.0.1:{port}", "--workers", workers)
    wait_port("127.0.0.1", port)
    for _ in range(3):  # separate connections, so that with workers both may count
        send_messages(sink.host, sink.port, 1, rcpts=2)

    def stats():  # workers report to the parent every 250 ms
        status, ctype, body = get(f"http://127.0.0.1:{port}/stats")
        assert status == 200 and ctype.startswith("application/json")
        snap = json.loads(body)
        return snap if snap["messages"] == 3 else None

    stats = wait_for(stats)
    assert stats and (stats["recipients"], stats["replies"]["354"]) == (6, 3)
    status, ctype, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    samples = [line for line in body.splitlines() if not line.startswith("#")]
    assert all(re.fullmatch(r'smtpbench_sink_[a-z_]+(\{code="\d{3}"\})? \d+', s) for s in samples), samples
    assert "smtpbench_sink_messages_total 3" in samples
    assert 'smtpbench_sink_replies_total{code="354"} 3' in samples
    assert get(f"http://127.0.0.1:{port}/nothing")[0] == 404
    sink.stop()


def _ask_stats_endpoint(monkeypatch, request: bytes, timeout: float = 0.3) -> tuple[bytes, float]:
    """Send ``request`` to the stats endpoint, in-process (its request timeout cut to ``timeout``);
    return what came back before the close and how long the close took."""
    from smtpbench.sink import http
    monkeypatch.setattr(http, "REQUEST_TIMEOUT", timeout, raising=False)

    async def main():
        server = await http.serve_stats("127.0.0.1", 0, lambda: {"messages": 7})
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        start = time.monotonic()
        writer.write(request)
        try:
            got = await asyncio.wait_for(reader.read(), 5)  # to EOF
        finally:
            writer.close()
            server.close()
        return got, time.monotonic() - start

    return asyncio.run(main())


@pytest.mark.parametrize("request_", [b"", b"GET /sta", b"GET /stats HTTP/1.1\r\nHost: x\r\n"],
                         ids=["nothing", "partial-line", "unfinished-head"])
def test_stats_endpoint_does_not_wait_for_ever_for_a_request(monkeypatch, request_):
    # A client that connected and sent nothing, or part of a request, held its connection (and
    # buffer) for ever: many such accumulate. It gets 408 after the request timeout, then the close.
    got, took = _ask_stats_endpoint(monkeypatch, request_)
    assert got.startswith(b"HTTP/1.1 408 ") and got.endswith(b"\r\n\r\nrequest timeout\n")
    assert 0.25 <= took < 3, f"closed after {took:.2f} s"


def test_stats_endpoint_caps_the_request_and_still_answers(monkeypatch):
    got, took = _ask_stats_endpoint(monkeypatch, b"GET /" + b"x" * 9000)  # no line end yet: over 8 KiB
    assert got.startswith(b"HTTP/1.1 431 ") and took < 0.25
    got, took = _ask_stats_endpoint(monkeypatch, b"GET /stats HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 431 "), got[:40]  # over 8 KiB, though whole and in one write
    got, took = _ask_stats_endpoint(monkeypatch, b"GET /stats HTTP/1.1\r\nHost: x\r\n\r\n")
    assert got.startswith(b"HTTP/1.1 200 ") and json.loads(got.split(b"\r\n\r\n", 1)[1]) == {"messages": 7}


def test_stats_interval_prints_lines(start_sink):
    sink = start_sink("--stats-interval", "200ms")
    send_messages(sink.host, sink.port, 2)
    time.sleep(0.7)
    sink.stop()
    lines = re.findall(r"^\[\s*[\d.]+s\] conns \d+/\d+\s+msgs (\d+).*$", sink.output, re.M)
    assert len(lines) >= 2
    assert lines[-1] == "2"


# -- configuration errors -------------------------------------------------------------

BAD_SCENARIOS = [
    ("[sink]\nbogus = 1\n", "unknown key 'sink.bogus'"),
    ("[sink]\nmax_recipients = 5\n", "'sink.max_recipients'"),
    ("[sink]\nidle_timeout = \"soon\"\n", "'sink.idle_timeout'"),
    ("[sink]\nadvertise = [\"PIPELINING\", \"TELEPATHY\"]\n", "'sink.advertise"),
    ("[sink]\ncapture = \"tape:/dev/null\"\n", "'sink.capture'"),
    ("[sink\nworkers = 2\n", "not valid TOML"),
    (None, "no such scenario file"),
]
BAD_FLAGS = [
    (["--idle-timeout", "soon"], "sink.idle_timeout"),
    (["--workers", "0"], "sink.workers"),
    (["--capture", "tape:/dev/null"], "sink.capture"),
    (["--listen", "127.0.0.1:99999"], "sink.listen"),
    (["--listen", "::1:25"], "sink.listen"),
    (["--max-recipients", "5"], "sink.max_recipients"),
    (["--max-connections", "0"], "sink.max_connections"),
    (["--max-message-size", "lots"], "sink.max_message_size"),
    (["--advertise", "PIPELINING,TELEPATHY"], "sink.advertise"),
    (["--stats-interval", "often"], "sink.stats_interval"),
    (["--workers", "2", "--listen", "unix:/tmp/smtpbench-never.sock"], "sink.workers"),
]
UNPARSEABLE_FLAGS = [
    (["--max-connections", "many"], "--max-connections"),
    (["--no-such-flag"], "--no-such-flag"),
    (["--loop", "trio"], "--loop"),
]


@pytest.fixture(scope="module")
def cli_errors(tmp_path_factory):
    """Every bad configuration above, each in its own ``smtpbench sink`` process, run at once."""
    folder = tmp_path_factory.mktemp("scenarios")
    argvs, paths = [], []
    for i, (content, _) in enumerate(BAD_SCENARIOS):
        path = folder / f"scenario-{i}.toml"
        if content is not None:
            path.write_text(content)
        paths.append(str(path))
        argvs.append(["sink", "--scenario", str(path), "--listen", "127.0.0.1:0"])
    argvs += [["sink", *flags] for flags, _ in BAD_FLAGS + UNPARSEABLE_FLAGS]
    done = run_clis(argvs)
    n = len(BAD_SCENARIOS)
    return {"scenario": list(zip(paths, done[:n])), "flag": done[n:n + len(BAD_FLAGS)],
            "unparseable": done[n + len(BAD_FLAGS):]}


def one_error_line(done: subprocess.CompletedProcess) -> str:
    """Exit 2, nothing on stdout, no traceback, and exactly one line on stderr."""
    assert done.returncode == 2, done
    assert "Traceback" not in done.stderr and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    return lines[0]


@pytest.mark.parametrize("case", range(len(BAD_SCENARIOS)))
def test_bad_scenario_exits_2_with_one_line(cli_errors, case):
    path, done = cli_errors["scenario"][case]
    line = one_error_line(done)
    assert path in line and BAD_SCENARIOS[case][1] in line


@pytest.mark.parametrize("case", range(len(BAD_FLAGS)))
def test_bad_flag_value_exits_2_with_one_line(cli_errors, case):
    assert BAD_FLAGS[case][1] in one_error_line(cli_errors["flag"][case])


@pytest.mark.parametrize("case", range(len(UNPARSEABLE_FLAGS)))
def test_unparseable_flag_exits_2(cli_errors, case):
    done = cli_errors["unparseable"][case]
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    assert UNPARSEABLE_FLAGS[case][1] in done.stderr.strip().splitlines()[-1]


def test_port_in_use_exits_2(start_sink):
    sink = start_sink()
    done = run_cli("sink", "--listen", f"127.0.0.1:{sink.port}")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and str(sink.port) in done.stderr


# -- hostile clients ---------------------------------------------------------------------

REPLY_LINE = re.compile(rb"[2-5]\d\d([ -].*)?")


def test_garbage_lines_get_error_replies(sink):
    rng = random.Random(7)
    garbage = [bytes(rng.choice(range(32, 256)) for _ in range(rng.randrange(1, 200))) for _ in range(10)]
    with greeted((sink.host, sink.port)) as w:
        w.send(b"".join(line + b"\r\n" for line in garbage) + b"QUIT\r\n")
        codes = [w.code() for _ in range(11)]
        assert all(500 <= c < 600 for c in codes[:10]) and codes[10] == 221, codes
        w.expect_close()
    assert sink.stop()["protocol_errors"] == 10


def test_random_bytes_blast_gets_replies_or_a_clean_close(sink):
    rng = random.Random(11)
    with greeted((sink.host, sink.port)) as w:
        try:
            w.send(rng.randbytes(1 << 20))
        except (BrokenPipeError, ConnectionResetError):
            pass  # the sink gave up on us (too many errors) while we were still sending
        lines = []
        try:
            while line := w.line():
                lines.append(line)
        except ConnectionResetError:
            pass
    assert all(REPLY_LINE.fullmatch(line) for line in lines), lines[:5]
    send_messages(sink.host, sink.port, 1)
    final = sink.stop()
    assert final["messages"] == 1 and final["protocol_errors"] > 0


def test_http_request_and_huge_lines_keep_the_session_usable(sink):
    with greeted((sink.host, sink.port)) as w:
        w.send(b"GET / HTTP/1.1\r\nHost: mx.example\r\nUser-Agent: curl\r\n\r\n")
        assert [w.code() for _ in range(4)] == [500] * 4
        w.send(b"A" * (4 << 20))  # a line that never seems to end
        assert w.command(b"") == 500
        assert w.command(b"EHLO client.example") == 250
        w.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n")
        assert [w.code() for _ in range(3)] == [250, 250, 354]
        w.send(b"Subject: long\r\n\r\n" + b"B" * (2 << 20) + b"\r\n.\r\n")  # a text line over 1000 octets
        assert w.code() == 500
        w.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n" + MSG + b".\r\n")
        assert [w.code() for _ in range(4)] == [250, 250, 354, 250]
        w.send(b"MAIL FROM:<\xff\xfe@example.org>\r\nQUIT\r\n")
        assert [w.code() for _ in range(2)] == [501, 221]
    send_messages(sink.host, sink.port, 1)  # and other clients are served
    final = sink.stop()
    # 4 for the HTTP lines, 1 for the endless line, 1 for the bad address; the long
    # text line is a refused message (500 after the terminator), not a command error.
    assert final["messages"] == 2 and final["protocol_errors"] == 6
    assert final["replies"]["500"] == 6 and final["replies"]["501"] == 1
