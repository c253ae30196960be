"""The sink against hostile clients, over real loopback sockets: clients that never read
their replies, STARTTLS handshakes that never come. What each must get: a proper reply or a clean close,
never a connection held for ever, never counters that drift."""

import select
import socket
import time

import pytest

from smtp_helpers import Wire, wait_for
from test_sink_behaviour import blast, send_messages


def _non_reader(host: str, port: int) -> socket.socket:
    """A client with a tiny receive buffer that floods EHLO and never reads a reply."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((host, port))
    sent = blast(sock, b"EHLO flood.example\r\n" * 5000, total=64 * 2**20, stall=1.0, seconds=10)
    assert sent > 2**20  # it stopped because the sink stopped reading (flow control)
    return sock


def test_idle_timeout_closes_a_client_that_never_reads(start_sink):
    # RFC 5321 §4.5.3.2.7: the server may close a connection idle past its timeout. A client
    # that stopped reading our replies cannot take the 421 either, and the transport only
    # closes once its buffer is flushed: the connection was held for ever, another 421 was
    # queued and counted as a timeout on every sweep (twice a second).
    sink = start_sink("--idle-timeout", "1s")
    sock = _non_reader(sink.host, sink.port)
    try:
        assert wait_for(lambda: sink.stats().get("connections_current") == 0, timeout=8)
        send_messages(sink.host, sink.port, 1)  # still serving
        time.sleep(1.5)  # a few more sweeps: nothing more is counted for it
    finally:
        sock.close()
    final = sink.stop()
    assert final["timeouts"] == 1
    assert final["replies"].get("421") == 1
    assert final["messages"] == 1


def test_shutdown_does_not_wait_the_grace_for_a_client_that_never_reads(start_sink):
    # RFC 5321 §3.8: on shutdown, 421 and close. A connection outside a transaction is not
    # waited for; one whose peer does not read was (the whole grace), its 421 queued anew
    # every 20 ms.
    sink = start_sink("--grace", "20s")
    sock = _non_reader(sink.host, sink.port)
    try:
        with Wire((sink.host, sink.port)) as idle:
            assert idle.code() == 220
            start = time.monotonic()
            final = sink.stop()
            took = time.monotonic() - start
    finally:
        sock.close()
    assert sink.proc.returncode == 0
    assert took < 10, f"shutdown took {took:.1f} s"
    assert final["replies"].get("421") == 2  # one each, not one per drain pass


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_idle_timeout_during_a_stalled_starttls_handshake(start_sink, loop):
    # RFC 3207 §4: after "220 Ready to start TLS" the next octets are the TLS handshake. A
    # client that never starts it used to get a plaintext 421 in the middle of it, and the
    # connection was never forgotten (the socket belonged to the TLS protocol, which did not
    # tell ours): connections_current stayed up for good, a handshake was counted, and on
    # asyncio the sweeper counted another timeout twice a second.
    sink = start_sink("--idle-timeout", "1s", "--advertise", "PIPELINING,STARTTLS", "--loop", loop)
    with Wire((sink.host, sink.port)) as w:
        assert w.code() == 220
        assert w.command(b"EHLO c.example") == 250
        assert w.command(b"STARTTLS") == 220
        w.expect_close()  # dropped, no plaintext reply
    assert wait_for(lambda: sink.stats().get("connections_current") == 0, timeout=8)
    send_messages(sink.host, sink.port, 1)
    final = sink.stop()
    assert (final["timeouts"], final["tls_failures"], final["tls_handshakes"]) == (1, 1, 0)
    assert final["messages"] == 1 and "421" not in final["replies"]


def test_a_command_sent_an_octet_at_a_time_does_not_hold_the_connection(start_sink):
    # RFC 5321 §4.5.3.2.7 times the wait for the next command. Every read used to reset the idle
    # timer, so a client trickling one octet every 0.2 s (slowloris) held its connection for as
    # long as it liked: a few hundred such clients fill max_connections.
    sink = start_sink("--idle-timeout", "1s")
    with Wire((sink.host, sink.port)) as w:
        assert w.code() == 220
        start = time.monotonic()
        closed = False
        for octet in b"EHLO " + b"x" * 100:
            try:
                w.sock.sendall(bytes([octet]))
                if select.select([w.sock], [], [], 0.2)[0]:  # the sink said something: its 421, or EOF
                    closed = w.sock.recv(4096)[:3] in (b"421", b"")
                    break
            except OSError:
                closed = True
                break
        took = time.monotonic() - start
    assert closed and took < 6, f"still open after {took:.1f} s"
    send_messages(sink.host, sink.port, 1)
    final = sink.stop()
    assert final["timeouts"] == 1 and final["messages"] == 1


def test_a_message_sent_slowly_is_not_cut_by_the_idle_timeout(start_sink):
    """Message data is progress (RFC 5321 §4.5.3.2.6 times a DATA block per send): a body
    trickling in over 2.5 s, three idle timeouts, is accepted."""
    sink = start_sink("--idle-timeout", "1s")
    with Wire((sink.host, sink.port)) as w:
        assert w.code() == 220
        assert w.command(b"EHLO c.example") == 250
        assert w.command(b"MAIL FROM:<a@example.com>") == 250
        assert w.command(b"RCPT TO:<b@example.com>") == 250
        assert w.command(b"DATA") == 354
        for _ in range(10):
            w.sock.sendall(b"Subject: slow\r\n")
            time.sleep(0.25)
        assert w.command(b"\r\nbody\r\n.") == 250
    assert sink.stop()["messages"] == 1


def test_a_stalled_implicit_tls_handshake_ends_with_the_idle_timeout(start_sink):
    # RFC 8314 implicit TLS: the handshake comes first, before our protocol sees the connection,
    # so the idle sweep cannot. It was held for asyncio's default 60 s whatever --idle-timeout said.
    sink = start_sink("--idle-timeout", "1s", "--implicit-tls")
    with socket.create_connection((sink.host, sink.port)) as sock:
        sock.settimeout(10)
        start = time.monotonic()
        try:
            assert sock.recv(1) == b""  # closed by the sink, no handshake ever sent
        except ConnectionResetError:
            pass
        took = time.monotonic() - start
    assert took < 5, f"held for {took:.1f} s"
    sink.stop()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("hello", [b"EHLO plain.example\r\n", b"\xff" * 64], ids=["plaintext", "garbage"])
def test_a_failed_implicit_tls_handshake_is_counted_and_closed(start_sink, loop, hello):
    # RFC 8314 implicit TLS: octets that are not a ClientHello end the handshake at once. The
    # handshake is the TLS layer's, before the connection reaches our protocol, so the failure
    # went uncounted (a failed STARTTLS one is counted). A client that closes before sending
    # anything (a port probe, the fixture's own) is no handshake and is not counted.
    sink = start_sink("--implicit-tls", "--loop", loop)
    with socket.create_connection((sink.host, sink.port)) as sock:
        sock.settimeout(10)
        start = time.monotonic()
        sock.sendall(hello)
        try:
            while sock.recv(4096):  # at most a TLS alert, then the close
                pass
        except ConnectionResetError:
            pass
        took = time.monotonic() - start
    assert took < 5, f"held for {took:.1f} s"
    final = sink.stop()
    assert (final["tls_failures"], final["tls_handshakes"], final["connections_current"]) == (1, 0, 0)


def test_implicit_tls_without_the_loops_tls_class_still_serves(monkeypatch):
    # The counted handshake builds the loop's own TLS protocol class, which is not public API. A
    # loop where it cannot be found must still serve implicit TLS, as create_server makes it.
    import asyncio
    import smtplib
    import ssl

    from smtpbench.addresses import Address
    from smtpbench.scenario import Sink
    from smtpbench.sink import server as sink_server
    from smtpbench.sink.server import SinkServer

    monkeypatch.setattr(sink_server, "loop_tls_protocol", lambda loop: None)
    server = SinkServer(Sink(implicit_tls=True))
    loop = asyncio.new_event_loop()
    try:
        (host, port, *_), = loop.run_until_complete(server.listen(Address("127.0.0.1", 0)))

        def send() -> dict:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            with smtplib.SMTP_SSL(host, port, context=context, timeout=10) as client:
                return client.sendmail("a@example.com", ["b@example.com"], b"Subject: t\r\n\r\nhi\r\n")

        refused = loop.run_until_complete(loop.run_in_executor(None, send))
        assert refused == {}
        assert (server.stats.tls_handshakes, server.stats.messages) == (1, 1)
    finally:
        loop.run_until_complete(server.drain(0))
        loop.close()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("after", [b"", b"\xff" * 64], ids=["silent-close", "garbage"])
def test_starttls_failures_are_counted_as_implicit_ones_are(start_sink, loop, after):
    # tls_failures counts failed handshakes, STARTTLS and implicit alike; a peer that closes
    # before the handshake ends is none (a port probe on the implicit port). A client that closed
    # right after our 220 to STARTTLS was counted as a failure, while the same close on the
    # implicit port was not: the two counts meant different things.
    sink = start_sink("--advertise", "PIPELINING,STARTTLS", "--loop", loop)
    with Wire((sink.host, sink.port)) as w:
        assert w.code() == 220
        assert w.command(b"EHLO c.example") == 250
        assert w.command(b"STARTTLS") == 220
        if after:
            w.send(after)  # not a ClientHello: a failed handshake
            try:
                while w.sock.recv(4096):  # at most a TLS alert, then the close
                    pass
            except ConnectionResetError:
                pass
    assert wait_for(lambda: sink.stats().get("connections_current") == 0, timeout=8)
    final = sink.stop()
    assert (final["tls_failures"], final["tls_handshakes"]) == (1 if after else 0, 0)


async def _behind_a_busy_loop(client, ready, tick=lambda: None) -> None:
    """Run ``client`` in a thread; once it is ``ready``, keep the loop busy for a moment (what it
    sends next piles up in the kernel, to come as one read), then call ``tick`` until it ends."""
    import asyncio
    import threading

    thread = threading.Thread(target=client)
    thread.start()
    while not ready.is_set():
        await asyncio.sleep(0.001)
    time.sleep(0.2)  # busy
    while thread.is_alive():
        await asyncio.sleep(0.01)
        tick()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_starttls_with_more_than_a_read_behind_it_upgrades_once(loop):
    # RFC 3207 §4.2: what a client pipelines behind STARTTLS is discarded. When more of it came
    # than one read takes (uvloop reads 256 kB, then again at once while the buffer fills), the
    # next read found the session still waiting for the handshake and started it again: one
    # upgrade task per read, all but one waiting for ever after the connection was gone (100 such
    # clients: 160 tasks and 60 MB). A sink busy for a moment lets the octets pile up; the
    # listening socket's large receive buffer lets the kernel hold them.
    import asyncio
    import ssl
    import threading

    from smtpbench.addresses import Address
    from smtpbench.scenario import Sink
    from smtpbench.sink.server import SinkServer

    async def attack() -> tuple[list, dict]:
        server = SinkServer(Sink(advertise=["PIPELINING", "STARTTLS"]))
        listening = socket.socket()
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        await server.listen(Address("127.0.0.1", 0), sock=listening)
        ready, seen = threading.Event(), {}

        def client() -> None:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            with socket.create_connection(listening.getsockname(), timeout=10) as sock:
                wire = Wire.__new__(Wire)
                wire.sock, wire.buf = sock, b""
                assert wire.code() == 220 and wire.command(b"EHLO c.example") == 250
                ready.set()
                time.sleep(0.05)  # the sink is busy now
                sock.sendall(b"STARTTLS\r\n" + b"NOOP\r\n" * 100_000)
                seen["starttls"] = wire.code()
                try:
                    with context.wrap_socket(sock, server_hostname="localhost") as tls:
                        tls.sendall(b"QUIT\r\n")
                        seen["quit"] = tls.recv(1000)[:3]
                except (OSError, ssl.SSLError) as e:  # the discarded octets may reach the handshake
                    seen["quit"] = repr(e)

        await _behind_a_busy_loop(client, ready)
        await asyncio.sleep(0.3)
        upgrades = [repr(t) for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "SinkServer._upgrade"]
        await server.drain(0)
        return upgrades, {"current": server.stats.connections_current, **seen}

    if loop == "uvloop":
        import uvloop

        upgrades, seen = uvloop.run(attack())
    else:
        upgrades, seen = asyncio.run(attack())
    assert upgrades == [] and seen["current"] == 0, seen


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_flow_control_still_holds_over_tls_after_starttls_with_replies_backed_up(loop):
    # STARTTLS that came in the read which pushed our replies over the plain transport's
    # high-water mark: that pause ("flow") belonged to the plain transport, whose resume_writing
    # went to the TLS protocol start_tls put in our place (an AssertionError in the loop's
    # handler), never to us. "flow" stayed held over TLS, so the next pause there did not stop
    # reading: a client pipelining over TLS without reading grew the sink by 37 MB in 4 s
    # (uvloop; about 1 MB when the upgrade began clean). The listening socket's small send
    # buffer (inherited by the accepted one) makes our replies back up at once; the loop kept
    # busy makes the burst one read.
    import asyncio
    import ssl
    import threading

    from smtpbench.addresses import Address
    from smtpbench.scenario import Sink
    from smtpbench.sink.server import SinkServer

    async def attack() -> dict:
        asyncio.get_running_loop().set_exception_handler(lambda _, c: seen["errors"].append(c["message"]))
        server = SinkServer(Sink(advertise=["PIPELINING", "STARTTLS"]))
        listening = socket.socket()
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        await server.listen(Address("127.0.0.1", 0), sock=listening)
        ready, flooding = threading.Event(), threading.Event()

        def client() -> None:
            context = ssl.create_default_context()
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # replies stay with the sink
                sock.settimeout(10)
                sock.connect(listening.getsockname())
                wire = Wire.__new__(Wire)
                wire.sock, wire.buf = sock, b""
                assert wire.code() == 220 and wire.command(b"EHLO c.example") == 250
                ready.set()
                time.sleep(0.05)  # the sink is busy now
                sock.sendall(b"EHLO c.example\r\n" * 4000 + b"STARTTLS\r\n")  # ~250 kB of replies
                while wire.code() == 250:
                    pass
                with context.wrap_socket(sock, server_hostname="localhost") as tls:
                    wire.sock = tls
                    assert wire.command(b"EHLO c.example") == 250
                    flooding.set()
                    seen["sent"] = blast(tls, b"NOOP\r\n" * 20_000, total=64 * 2**20, stall=0.5, seconds=3)

        def measure() -> None:
            if flooding.is_set() and server.connections:
                conn = next(iter(server.connections))
                seen["peak"] = max(seen["peak"], conn.transport.get_write_buffer_size())

        seen = {"errors": [], "peak": 0}
        await _behind_a_busy_loop(client, ready, measure)
        await server.drain(0)
        return seen

    if loop == "uvloop":
        import uvloop

        seen = uvloop.run(attack())
    else:
        seen = asyncio.run(attack())
    assert seen["errors"] == [] and seen["peak"] < 4 * 2**20, seen  # about 1.3 MB: one read's replies


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_starttls_behind_replies_never_read_ends_with_the_idle_timeout(loop):
    # The upgrade waits for the replies before our 220 to STARTTLS to drain (server._upgrade); a
    # client that never reads them must still be cut by the idle timeout and counted as a stalled
    # handshake is (test_idle_timeout_during_a_stalled_starttls_handshake), no task left waiting.
    import asyncio

    from smtpbench.addresses import Address
    from smtpbench.scenario import Sink
    from smtpbench.sink.server import SinkServer

    async def attack() -> tuple:
        server = SinkServer(Sink(advertise=["PIPELINING", "STARTTLS"], idle_timeout=0.5))
        listening = socket.socket()
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # our replies back up at once
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        await server.listen(Address("127.0.0.1", 0), sock=listening)
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, listening.getsockname())
            await asyncio.get_running_loop().sock_sendall(sock, b"EHLO c.example\r\n" * 4000 + b"STARTTLS\r\n")
            for _ in range(50):
                await asyncio.sleep(0.1)
                if not server.connections:
                    break
        upgrades = [t for t in asyncio.all_tasks() if t.get_coro().__qualname__ == "SinkServer._upgrade"]
        stats = server.stats
        await server.drain(0)
        return len(upgrades), stats.connections_current, stats.timeouts, stats.tls_failures, stats.tls_handshakes

    if loop == "uvloop":
        import uvloop

        assert uvloop.run(attack()) == (0, 0, 1, 1, 0)
    else:
        assert asyncio.run(attack()) == (0, 0, 1, 1, 0)
