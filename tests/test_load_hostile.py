"""The generator against hostile SMTP servers over loopback: replies sent before their command,
2xx codes other than 250, servers that close before the greeting is over or right after a 354,
STARTTLS refused. Each run ends on time, without a traceback, and accounts for every message.

:class:`RawServer` is a line-based server in a thread whose every reply is scripted by a
function of the command line (the sans-IO server core of :mod:`load_helpers` cannot misbehave
this way).
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from conftest import free_port
from load_helpers import HOST, ThreadedServer, assert_accounted, errors_by, failing_scenario, run_load, write_scenario
from smtpbench.protocol.client import DONE, FAILED, READY, S_CLOSED, ClientSession, Transaction

DURATION = 2.0
DRAIN = 1.0
SLACK = 6.0   # interpreter start-up and the result file, on a noisy 2-core box

SCENARIO = failing_scenario("hostile-peer", DRAIN)

EHLO = b"250-hostile.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
CLOSE = object()   # an answer that closes the connection (after what was sent before it)


def normal(verb: bytes) -> bytes:
    """What a well-behaved server answers (DATA: 354; "." is the end of the message data)."""
    if verb in (b"EHLO", b"LHLO"):
        return EHLO
    if verb == b"DATA":
        return b"354 go ahead\r\n"
    if verb == b"QUIT":
        return b"221 bye\r\n"
    return b"250 ok\r\n"


class RawServer(ThreadedServer):
    """A loopback server in a thread: sends ``banner``, then answers each command line with
    ``answer(verb)`` (bytes, or :data:`CLOSE`); the message data after a 354 is read up to its
    dot, which is answered as the verb ``"."``. ``after_banner="halfclose"`` shuts its side
    down after the banner (FIN) and reads on; ``connections`` counts the accepted ones."""

    def __init__(self, answer=normal, banner: bytes = b"220 hostile.test ESMTP\r\n", after_banner: str = ""):
        self.answer = answer
        self.banner = banner
        self.after_banner = after_banner
        super().__init__(free_port(), "raw-smtp")
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            writer.write(self.banner)
            await writer.drain()
            if self.after_banner == "halfclose":
                writer.get_extra_info("socket").shutdown(socket.SHUT_WR)
                while await reader.read(65536):
                    pass
                return
            while line := await reader.readline():
                verb = line[:4].upper()
                out = self.answer(verb)
                if out is CLOSE:
                    return
                writer.write(out)
                await writer.drain()
                if verb == b"DATA" and out.startswith(b"354"):
                    while await reader.readline() not in (b".\r\n", b""):
                        pass
                    out = self.answer(b".")
                    if out is CLOSE:
                        return
                    writer.write(out)
                    await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    def _make(self):
        return asyncio.start_server(self._handle, HOST, self.port, reuse_address=True)

    def _transports(self) -> list:
        return [w.transport for w in self._writers]


def run_hostile(tmp_path, server: RawServer, *flags: str, scenario: str = SCENARIO):
    """Run the generator against ``server`` for DURATION: no traceback, on time, a result
    that accounts for every message, and a documented exit code (0 or 1)."""
    path = write_scenario(tmp_path, scenario)
    run = run_load(tmp_path / "out", "--scenario", path, "--target", server.address,
                   "--duration", f"{DURATION:g}s", *flags)
    assert "Traceback" not in run.stderr, run
    assert run.wall <= DURATION + DRAIN + SLACK, run
    assert run.result is not None, run
    assert run.returncode in (0, 1, 3), run   # 3: the generator marked its own run invalid (a busy box)
    assert_accounted(run.result)
    return run


def txn() -> Transaction:
    return Transaction("s@example.org", ["r@example.net"], (b"hi\r\n.\r\n",), 4)


# -- replies before their command ---------------------------------------------------------------


def test_a_reply_in_the_read_of_the_one_before_it_is_unsolicited():
    """RFC 5321 §4.2: a reply answers a command. A 250 that comes with the banner, before EHLO
    was even sent, is not EHLO's reply (it was taken for it, and the real EHLO reply for MAIL's)."""
    client = ClientSession()
    events = client.receive(b"220 hi\r\n250 unsolicited\r\n")
    assert [(k, p) for k, p, _ in events][-1] == (FAILED, "unsolicited")
    assert client.state == S_CLOSED


def test_more_replies_than_commands_sent_end_the_session_after_the_ones_due():
    """The replies due are taken (READY, a message's DONE); the extra one then ends the session
    (an end-of-data 250 sent twice, RFC 5321 §4.1.1.4 gives the dot one reply)."""
    client = ClientSession()
    client.receive(b"220 hi\r\n")
    client.receive(EHLO)
    client.start_transaction(txn())
    client.receive(b"250 ok\r\n250 ok\r\n354 go\r\n")
    events = client.receive(b"250 queued\r\n250 queued again\r\n")
    assert [(k, p) for k, p, _ in events][-2:] == [(DONE, True), (FAILED, "unsolicited")]


def test_unsolicited_reply_after_the_ehlo_reply_is_no_traceback(tmp_path):
    """EHLO's reply and an unsolicited one in one read: READY, then the session ends in the same
    read. The closed loop began its message on the dead session (RuntimeError from
    start_transaction, a traceback, the slot lost); it must fail the message and go on."""
    answer = lambda verb: EHLO + b"250 and another thing\r\n" if verb == b"EHLO" else normal(verb)  # noqa: E731
    with RawServer(answer) as server:
        run = run_hostile(tmp_path, server, "--sessions", "2")
    errors = errors_by(run.result)
    assert set(errors) == {("unsolicited", 250, "reply")}, errors
    assert run.result["totals"]["failed"] >= 10    # the slots went on, with new connections
    assert server.connections >= 10


def test_250_with_the_banner(tmp_path):
    with RawServer(banner=b"220 hostile.test\r\n250 unsolicited\r\n") as server:
        run = run_hostile(tmp_path, server, "--sessions", "2", "--no-pipelining")
    errors = errors_by(run.result)
    assert set(errors) == {("unsolicited", 250, "reply")}, errors
    assert run.result["totals"]["failed"] >= 10


# -- 2xx codes other than 250 ---------------------------------------------------------------------


def session(pipelining: bool = True) -> ClientSession:
    client = ClientSession(pipelining=pipelining)
    client.receive(b"220 hi\r\n")
    client.receive(EHLO)
    client.outbox.clear()
    return client


def deliver(client: ClientSession, mail: bytes, rcpt: bytes, dot: bytes) -> list:
    client.start_transaction(txn())
    if client.pipelining:
        events = client.receive(mail + rcpt + b"354 go\r\n")
    else:
        events = client.receive(mail) + client.receive(rcpt) + client.receive(b"354 go\r\n")
    return events + client.receive(dot)


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "one-by-one"])
@pytest.mark.parametrize("mail, rcpt, dot", [
    (b"251 ok\r\n", b"250 ok\r\n", b"250 ok\r\n"),
    (b"252 ok\r\n", b"250 ok\r\n", b"250 ok\r\n"),
    (b"250 ok\r\n", b"252 cannot verify, will accept\r\n", b"250 ok\r\n"),
    (b"250 ok\r\n", b"251 will forward\r\n", b"251 ok\r\n"),
    (b"250 ok\r\n", b"250 ok\r\n", b"252 queued\r\n"),
], ids=["mail-251", "mail-252", "rcpt-252", "rcpt-251+dot-251", "dot-252"])
def test_any_2yz_is_success(mail, rcpt, dot, pipelining):
    """RFC 5321 §4.2.1: the first digit says how it went, 2 = done ("an unsophisticated SMTP
    client, or one that receives an unexpected code, will be able to determine its next action
    ... by examining this first digit"). A 251 to MAIL or 252 at the dot failed the message."""
    client = session(pipelining)
    events = deliver(client, mail, rcpt, dot)
    assert [(k, ok) for k, ok, _ in events if k == DONE] == [(DONE, True)], events


def test_a_251_to_ehlo_is_a_greeting():
    client = ClientSession()
    client.receive(b"220 hi\r\n")
    events = client.receive(b"251-hostile.test\r\n251 PIPELINING\r\n")
    assert [k for k, _, _ in events][-1] == READY and client.pipelining


def test_a_2yz_to_data_is_still_a_failure():
    """DATA needs its 354 (RFC 5321 §4.1.1.4): a 250 there sends no message."""
    client = session()
    client.start_transaction(txn())
    events = client.receive(b"250 ok\r\n250 ok\r\n250 ok\r\n")
    assert [(k, ok, f and (f[0], f[1].code)) for k, ok, f in events if k == DONE] == [(DONE, False, ("data", 250))]


# -- servers that close ---------------------------------------------------------------------------


@pytest.mark.parametrize("after_banner", ["halfclose", "close"])
def test_open_loop_connection_lost_before_ready_fails_an_arrival(tmp_path, after_banner):
    """A server that ends every session after its banner (a FIN, RFC 5321 §3.8 without the 421):
    each connection lost before it was ready fails the oldest waiting arrival, at ehlo, as a
    connection that failed then does. It was silent: each waiting arrival opened another at once
    (1,600 connections in 2 s at 50/s) and every one ended as queue/not_sent."""
    if after_banner == "close":
        server = RawServer(lambda verb: CLOSE)
    else:
        server = RawServer(after_banner="halfclose")
    with server:
        run = run_hostile(tmp_path, server, "--rate", "50")
    errors = errors_by(run.result)
    assert errors.get(("ehlo", 0, "closed"), 0) >= 80, errors
    assert set(errors) <= {("ehlo", 0, "closed"), ("ehlo", 0, "reset"), ("queue", 0, "not_sent")}, errors
    assert server.connections <= 150, server.connections   # about one per arrival, not a loop


def test_closing_at_each_354_with_chained_messages_is_no_reconnect_loop(tmp_path):
    """--pipeline-messages chains the next message at the 354 (RFC 2920 §3.1). A server that closes
    then lost both; the slot reconnected at once, as after a connection that had carried a
    message, and never paused (600 connections in 2 s for 2 sessions, not ~80)."""
    answer = lambda verb: CLOSE if verb == b"." else normal(verb)  # noqa: E731
    with RawServer(answer) as server:
        run = run_hostile(tmp_path, server, "--sessions", "2", "--pipeline-messages")
    errors = errors_by(run.result)
    assert run.result["totals"]["ok"] == 0
    assert {phase for phase, _, _ in errors} <= {"end_of_data", "mail"}, errors
    # 50 ms back-off per failed connection, 2 sessions, 2 s: about 80 (as without chaining).
    assert 10 <= server.connections <= 2 * DURATION / 0.05 + 10, server.connections


# -- STARTTLS refused -------------------------------------------------------------------------------


@pytest.mark.parametrize("refusal", [b"454 4.7.0 TLS not available due to temporary reason\r\n",
                                     b"502 5.5.1 not here\r\n"])
@pytest.mark.parametrize("tls, outcome", [("opportunistic", READY), ("starttls", FAILED)])
def test_starttls_refused(tls, outcome, refusal):
    """RFC 3207 §4: after a 454 to STARTTLS "the client must decide whether or not to continue".
    Opportunistic TLS goes on in the clear (RFC 7435 §1.2) with what the EHLO offered; it failed
    the session. With tls = "starttls" TLS is required: the session fails at starttls."""
    client = ClientSession(tls=tls)
    client.receive(b"220 hi\r\n")
    client.receive(b"250-hostile.test\r\n250-PIPELINING\r\n250 STARTTLS\r\n")
    assert client.outbox[-1] == b"STARTTLS\r\n"
    client.outbox.clear()
    events = client.receive(refusal)
    assert [(k, p) for k, p, _ in events if k != "reply"] == [(outcome, "starttls" if outcome == FAILED else None)]
    if outcome == READY:
        assert client.outbox == [] and client.pipelining and not client.tls_active
        events = deliver(client, b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\n")
        assert [(k, ok) for k, ok, _ in events if k == DONE] == [(DONE, True)]


# -- garbage after a good reply -----------------------------------------------------------------------


def test_a_250_at_the_dot_then_garbage_in_the_same_read_delivers_the_message():
    """The server accepted the message (RFC 5321 §4.1.1.4: the 250 at the dot), then sent a line
    that is no reply. The message is OK and the garbage ends the session; the whole read was
    dropped and the message counted failed (end_of_data, protocol), as it was not when TCP
    delivered the garbage in a read of its own."""
    client = session()
    events = deliver(client, b"250 ok\r\n", b"250 ok\r\n", b"250 ok\r\nthis is not smtp\r\n")
    assert [(k, p if k == FAILED else None) for k, p, _ in events if k in (DONE, FAILED)] == [
        (DONE, None), (FAILED, "quit")]
    assert [ok for k, ok, _ in events if k == DONE] == [True]
    assert client.state == S_CLOSED


def test_250_at_the_dot_then_garbage_end_to_end(tmp_path):
    answer = lambda verb: b"250 ok\r\nthis is not smtp\r\n" if verb == b"." else normal(verb)  # noqa: E731
    with RawServer(answer) as server:
        run = run_hostile(tmp_path, server, "--sessions", "2")
    totals = run.result["totals"]
    assert totals["ok"] >= 10 and totals["failed"] == 0, totals
    assert set(errors_by(run.result)) == {("quit", 0, "protocol")}
