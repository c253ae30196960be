"""The client state machine driven against the server state machine, in memory.

No sockets: a :class:`Link` hands the client's outbox to ``ServerSession.feed`` and
the server's replies to ``ClientSession.receive`` (whole, or a byte at a time), and
drives transactions the way the load runner does: start one on READY, the next on
DONE, QUIT when there are no more.
"""

from __future__ import annotations

import pytest

from smtpbench.protocol.client import (BDAT, CLOSED, DATA, DONE, END_OF_DATA, FAILED, HELO, MAIL, RCPT, READY,
                                       REPLY, RSET, S_CLOSED, ClientSession, Transaction)
from smtpbench.protocol.server import DEFAULT_EXTENSIONS, ServerConfig, ServerHooks, ServerSession

from smtp_helpers import chunked, stuffed

BODY = b"Subject: test\r\n\r\nhello\r\n.leading dot\r\nbye\r\n"


def txn(rcpts=("r1@example.net",), body: bytes = BODY, bdat: bool = False) -> Transaction:
    wire = stuffed(body) + b".\r\n"  # the DATA form: dot-stuffed, then the terminator's last line
    return Transaction("s@example.org", list(rcpts), (wire,), len(wire) - 3, bdat=(body,) if bdat else None)


class Policy(ServerHooks):
    """Server-side policy: refuse some recipients, or answer a verb (its n-th use) with a reply."""

    def __init__(self, bad_rcpt: str = "bad", answer: dict | None = None, refuse_message=None):
        self.bad_rcpt = bad_rcpt
        self.answer = answer or {}          # verb -> (reply, from the n-th use on; 1 = first)
        self.refuse_message = refuse_message
        self.seen: dict[str, int] = {}
        self.bodies: list[bytes | None] = []

    def command(self, stage, session, arg):
        self.seen[stage] = self.seen.get(stage, 0) + 1
        if stage == "RCPT" and self.bad_rcpt.encode() in arg:
            return (550, "5.1.1", "No such user")
        if stage in self.answer:
            reply, nth = self.answer[stage]
            if self.seen[stage] >= nth:
                return reply
        return None

    def message(self, envelope, body, size):
        if self.refuse_message:
            return self.refuse_message
        self.bodies.append(body)
        return None


class Link:
    """A client and a server session joined in memory."""

    def __init__(self, client: ClientSession, chunk: int | None = None, policy: Policy | None = None,
                 chain: bool = False, **config):
        config.setdefault("keep_body", True)
        self.policy = policy or Policy()
        self.server = ServerSession(ServerConfig(**config), hooks=self.policy)
        self.client = client
        self.chunk = chunk
        self.events: list[tuple] = []
        self.client_writes: list[bytes] = []   # one entry per batch the client wrote
        self.todo: list[Transaction] = []
        self.done: list[tuple] = []            # (ok, failure) per finished transaction
        self.closed_server = False
        self.chain = chain                     # begin the next transaction behind the data (as the runner can)

    def run(self, *transactions: Transaction, quit: bool = True) -> "Link":
        self.todo = list(transactions)
        self.quit_at_end = quit
        self._deliver(self.server.greeting())
        return self

    def _deliver(self, replies: list[bytes]) -> None:
        while replies:
            for piece in chunked(b"".join(replies), self.chunk):
                for event in self.client.receive(piece):
                    self.events.append(event)
                    self._on(event)
                if self.chain and self.todo and self.client.can_chain:
                    self.client.start_transaction(self.todo.pop(0))
            out = b"".join(self.client.outbox)
            self.client.outbox.clear()
            if not out or self.closed_server:
                return
            self.client_writes.append(out)
            replies = self.server.feed(out)
            if self.server.closing:
                self.closed_server = True

    def _on(self, event: tuple) -> None:
        kind, a, b = event
        if kind == DONE:
            self.done.append((a, b))
        if kind in (READY, DONE) and self.client.state != S_CLOSED and self.client.txn is None:
            if self.todo:
                self.client.start_transaction(self.todo.pop(0))
            elif self.quit_at_end:
                self.client.quit()

    def replies(self, phase: str) -> list[int]:
        return [r.code for kind, p, r in self.events if kind == REPLY and p == phase]

    def kinds(self) -> list[str]:
        return [e[0] for e in self.events]


@pytest.fixture(params=[None, 1], ids=["whole", "bytewise"])
def chunk(request):
    return request.param


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_messages_delivered(chunk, pipelining):
    link = Link(ClientSession(pipelining=pipelining), chunk).run(
        txn(("a@example.net", "b@example.net")), txn(), txn(("c@example.net",) * 3))
    assert link.done == [(True, None)] * 3
    assert link.policy.bodies == [BODY] * 3  # unstuffed by the server: what the client meant
    assert link.server.counters.recipients == 6
    assert link.kinds()[-1] == CLOSED
    assert link.client.pipelining is pipelining
    # Pipelined: MAIL, RCPTs and DATA in one write, the message in the next. Lockstep: one
    # command per write. Plus EHLO and QUIT.
    per_message = [2, 2, 2] if pipelining else [3 + 2, 3 + 1, 3 + 3]  # MAIL, DATA, message + RCPTs
    assert len(link.client_writes) == 1 + sum(per_message) + 1
    if pipelining:
        assert link.client_writes[1] == (b"MAIL FROM:<s@example.org> SIZE=44\r\nRCPT TO:<a@example.net>\r\n"
                                         b"RCPT TO:<b@example.net>\r\nDATA\r\n")
        assert link.client_writes[3] == b"MAIL FROM:<s@example.org> SIZE=44\r\nRCPT TO:<r1@example.net>\r\nDATA\r\n"
    else:
        assert link.client_writes[1:4] == [b"MAIL FROM:<s@example.org> SIZE=44\r\n", b"RCPT TO:<a@example.net>\r\n",
                                           b"RCPT TO:<b@example.net>\r\n"]


def test_pipelining_only_when_offered(chunk):
    no_pipe = tuple(e for e in DEFAULT_EXTENSIONS if e != "PIPELINING")
    link = Link(ClientSession(pipelining=True), chunk, extensions=no_pipe).run(txn(("a@x.net", "b@x.net")))
    assert not link.client.pipelining
    assert link.done == [(True, None)]
    assert all(w.count(b"\r\n") == 1 for w in link.client_writes if not w.startswith(b"Subject"))


def test_bdat_when_offered(chunk):
    link = Link(ClientSession(), chunk).run(txn(bdat=True), txn(bdat=True))
    assert link.done == [(True, None)] * 2
    assert link.replies(BDAT) == [250, 250] and link.replies(DATA) == []
    assert link.policy.bodies == [BODY] * 2
    assert b"BDAT %d LAST\r\n" % len(BODY) in link.client_writes[1]


def test_bdat_falls_back_to_data_when_not_offered(chunk):
    no_chunking = tuple(e for e in DEFAULT_EXTENSIONS if e != "CHUNKING")
    link = Link(ClientSession(), chunk, extensions=no_chunking).run(txn(bdat=True))
    assert link.done == [(True, None)]
    assert link.replies(DATA) == [354] and link.replies(BDAT) == []


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_some_recipients_rejected(chunk, pipelining):
    link = Link(ClientSession(pipelining=pipelining), chunk).run(
        txn(("a@x.net", "bad@x.net", "b@x.net")), txn())
    assert link.done == [(True, None), (True, None)]  # the message went to the two good ones
    assert link.replies(RCPT) == [250, 550, 250, 250]
    assert link.server.counters.recipients == 3


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_all_recipients_rejected(chunk, pipelining):
    link = Link(ClientSession(pipelining=pipelining), chunk).run(txn(("bad1@x.net", "bad2@x.net")), txn())
    (ok, failure), second = link.done
    assert not ok and failure[0] == RCPT and failure[1].code == 550
    assert second == (True, None)  # the session goes on (after RSET)
    assert link.server.counters.messages == 1
    if pipelining:
        assert link.replies(DATA)[0] >= 500  # DATA was pipelined; the server refused it (RFC 2920 §3.1)
        assert link.replies(RSET) == [250]
    else:
        # Lockstep: no DATA without a recipient; RSET right after the last refused RCPT.
        assert link.client_writes[1:5] == [b"MAIL FROM:<s@example.org> SIZE=44\r\n", b"RCPT TO:<bad1@x.net>\r\n",
                                           b"RCPT TO:<bad2@x.net>\r\n", b"RSET\r\n"]
        assert link.replies(DATA) == [354]


def test_bdat_taken_with_every_recipient_refused_is_a_failure():
    """A broken server refuses every RCPT yet answers 250 to BDAT LAST: the message reached
    nobody, so it fails at RCPT, as it does by DATA (scripted replies: our own server says 554)."""
    s = ClientSession(pipelining=True)
    s.receive(b"220 broken.example ESMTP\r\n")
    s.receive(b"250-broken.example\r\n250-PIPELINING\r\n250 CHUNKING\r\n")
    s.outbox.clear()
    s.start_transaction(txn(("bad1@x.net", "bad2@x.net"), bdat=True))
    assert b"BDAT" in b"".join(s.outbox)
    events = s.receive(b"250 ok\r\n550 no\r\n550 no\r\n250 2.0.0 queued anyway\r\n")
    [(_, ok, failure)] = [e for e in events if e[0] == DONE]
    assert not ok and failure[0] == RCPT and failure[1].code == 550


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_data_refused(chunk, pipelining):
    policy = Policy(answer={"DATA": ((451, "4.3.0", "Try again later"), 1)})
    link = Link(ClientSession(pipelining=pipelining), chunk, policy).run(txn(), txn())
    assert [ok for ok, _ in link.done] == [False, False]
    assert {(f[0], f[1].code) for _, f in link.done} == {(DATA, 451)}
    assert link.replies(RSET) == [250, 250]  # each half transaction is reset
    assert link.kinds()[-1] == CLOSED


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_mail_refused(chunk, pipelining):
    policy = Policy(answer={"MAIL": ((452, "4.3.1", "Insufficient storage"), 1)})
    link = Link(ClientSession(pipelining=pipelining), chunk, policy).run(txn())
    [(ok, failure)] = link.done
    assert not ok and failure[0] == MAIL and failure[1].code == 452
    if not pipelining:
        assert link.replies(RCPT) == []  # lockstep stops at the refused MAIL


def test_end_of_data_refused(chunk):
    link = Link(ClientSession(), chunk, Policy(refuse_message=(554, "5.7.1", "Spam"))).run(txn(), txn())
    assert [(ok, f[0], f[1].code) for ok, f in link.done] == [(False, END_OF_DATA, 554)] * 2
    assert link.replies(RSET) == []  # the transaction is over; nothing to reset


def test_chained_transactions_go_out_behind_the_data(chunk):
    """RFC 2920 §3.1: message content may be the first command of a group, so the next MAIL,
    RCPT and DATA leave with the dot: one write per message after the first, all delivered."""
    link = Link(ClientSession(), chunk, chain=True).run(txn(), txn(("a@x", "b@x")), txn())
    assert link.done == [(True, None)] * 3
    assert len(link.policy.bodies) == 3 and link.server.counters.messages == 3
    chained = [w for w in link.client_writes if w.startswith(b"Subject") and b"MAIL FROM" in w]
    assert len(chained) == 2, link.client_writes
    assert link.replies(END_OF_DATA) == [250] * 3 and link.replies(RCPT) == [250] * 4
    assert link.kinds().count(DONE) == 3 and link.kinds()[-1] == CLOSED


def test_chaining_waits_for_the_data():
    """Nothing chains before the 354 put the data out, nor without PIPELINING, nor over LMTP."""
    link = Link(ClientSession(pipelining=False), chain=True).run(txn(), txn())
    assert link.done == [(True, None)] * 2
    assert not any(b"MAIL FROM" in w and w.startswith(b"Subject") for w in link.client_writes)
    session = ClientSession()
    assert not session.can_chain
    with pytest.raises(RuntimeError):
        session.start_transaction(txn())  # not READY, and nothing in flight to chain behind


def test_chained_after_a_refused_message(chunk):
    """The first message refused at the dot (554): the chained one goes on, no RSET between."""
    policy = Policy(refuse_message=(554, "5.7.1", "Spam"))
    link = Link(ClientSession(), chunk, policy, chain=True).run(txn(), txn())
    assert [(ok, f[0], f[1].code) for ok, f in link.done] == [(False, END_OF_DATA, 554)] * 2
    assert link.replies(RSET) == []


def test_chained_message_refused_at_mail(chunk):
    """The chained message's MAIL refused: it fails at MAIL and is reset; the next one goes on."""
    policy = Policy(answer={"MAIL": ((451, "4.7.1", "Slow down"), 2)})
    link = Link(ClientSession(), chunk, policy, chain=True).run(txn(), txn())
    assert link.done[0] == (True, None)
    assert [(ok, f[0], f[1].code) for ok, f in link.done[1:]] == [(False, MAIL, 451)]
    assert link.replies(RSET) == [250]


def test_421_at_the_dot_with_a_message_chained(chunk):
    """421 for the dot ends the session (RFC 5321 §3.8): one FAILED event, no DONE, and the
    chained message is still there for the driver to fail with it (Runner._fail_chained)."""
    policy = Policy(refuse_message=(421, "4.3.2", "Shutting down"))
    link = Link(ClientSession(), chunk, policy, chain=True).run(txn(), txn())
    failed = [e for e in link.events if e[0] == FAILED]
    assert [(p, r.code) for _, p, r in failed] == [(END_OF_DATA, 421)]
    assert link.done == []
    assert link.client.state == S_CLOSED
    assert link.client.chained is not None and link.client.chained.failure is None


@pytest.mark.parametrize("verb, phase", [("MAIL", MAIL), ("RCPT", RCPT), ("DATA", DATA)])
@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelined", "lockstep"])
def test_421_mid_session(chunk, verb, phase, pipelining):
    """RFC 5321 §3.8: 421 closes the session. The second transaction fails with it: one FAILED
    event (no DONE for it, so a driver never starts another on the closed session)."""
    policy = Policy(answer={verb: ((421, "4.3.2", "Shutting down"), 2)})
    link = Link(ClientSession(pipelining=pipelining), chunk, policy).run(txn(), txn(), txn())
    assert link.done == [(True, None)]
    failed = [e for e in link.events if e[0] == FAILED]
    assert [(p, r.code) for _, p, r in failed] == [(phase, 421)]
    assert link.kinds()[-1] == FAILED
    assert link.client.state == S_CLOSED
    assert link.client.txn is not None and link.client.txn.failure[1].code == 421
    assert link.client.outbox == []  # no RSET or QUIT queued to a closing server
    with pytest.raises(RuntimeError):
        link.client.start_transaction(txn())
    assert link.server.counters.messages == 1


def test_421_banner(chunk):
    link = Link(ClientSession(), chunk)
    link.todo = [txn()]
    link.quit_at_end = True
    link._deliver(link.server.refuse())
    assert [(k, p, r.code) for k, p, r in link.events if k == FAILED] == [(FAILED, "banner", 421)]
    assert link.done == [] and link.client_writes == []


def test_ehlo_refused_falls_back_to_helo(chunk):
    policy = Policy(answer={"EHLO": ((502, "5.5.1", "Not implemented"), 1)})
    link = Link(ClientSession(), chunk, policy).run(txn(("a@x.net", "b@x.net")))
    assert link.replies(HELO) == [250]
    assert not link.client.pipelining  # no EHLO, no extensions
    assert link.done == [(True, None)]


@pytest.mark.parametrize("lmtp_refusal", [None, (452, "4.2.2", "Mailbox full")], ids=["accepted", "refused"])
def test_lmtp(chunk, lmtp_refusal):
    """RFC 2033: LHLO, and one reply per accepted recipient after the data."""
    policy = Policy(refuse_message=lmtp_refusal)
    link = Link(ClientSession(lmtp=True), chunk, policy, lmtp=True).run(
        txn(("a@x.net", "bad@x.net", "b@x.net")), txn())
    assert link.client_writes[0].startswith(b"LHLO ")
    eod = link.replies(END_OF_DATA)
    assert len(eod) == 2 + 1  # two accepted recipients in the first message, one in the second
    if lmtp_refusal is None:
        assert eod == [250] * 3 and link.done == [(True, None)] * 2
    else:
        assert eod == [452] * 3
        assert [(ok, f[0], f[1].code) for ok, f in link.done] == [(False, END_OF_DATA, 452)] * 2
    assert link.kinds()[-1] == CLOSED


def test_lmtp_bdat(chunk):
    link = Link(ClientSession(lmtp=True), chunk, lmtp=True).run(txn(("a@x.net", "b@x.net"), bdat=True))
    assert link.replies(BDAT) == [250, 250]
    assert link.done == [(True, None)]


def test_garbage_reply_fails_the_session():
    client = ClientSession()
    assert client.receive(b"220 ok\r\n")[0][0] == REPLY
    events = client.receive(b"this is not smtp\r\n")
    assert [(k, p, r.code) for k, p, r in events] == [(FAILED, "ehlo", 0)]
    assert client.state == S_CLOSED


def test_unsolicited_reply_fails_the_session():
    client = ClientSession()
    client.receive(b"220 ok\r\n")
    client.receive(b"250 hi\r\n")
    client.outbox.clear()
    events = client.receive(b"250 what?\r\n")
    assert [(k, p) for k, p, _ in events] == [(FAILED, "unsolicited")]


def test_multiline_replies_in_odd_pieces():
    """A multi-line EHLO reply split anywhere gives the same capabilities."""
    ehlo = b"250-srv\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n"
    for cut in range(1, len(ehlo)):
        client = ClientSession()
        client.receive(b"220 ok\r\n")
        events = client.receive(ehlo[:cut]) + client.receive(ehlo[cut:])
        assert [k for k, _, _ in events] == [REPLY, READY], cut
        assert client.pipelining and client.capabilities.has("SIZE")
