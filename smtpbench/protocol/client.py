"""The client role of SMTP (RFC 5321), with PIPELINING (RFC 2920) and LMTP (RFC 2033), without I/O.

A :class:`ClientSession` is driven by replies: :meth:`ClientSession.receive`
takes bytes from the server and returns events; the bytes the client must
send next accumulate in :attr:`ClientSession.outbox`, which the driver writes
(one ``writelines`` per batch) and clears. Phases are named so drivers can
time them: the driver timestamps each ``Reply`` event as it arrives.

Events are tuples, cheap on the hot path:

* ``(REPLY, phase, reply)``   — a reply to the command of ``phase``
* ``(READY, None, None)``     — greeting done; a transaction may start
* ``(DONE, ok, failure)``     — a transaction ended; ``failure`` is ``(phase, reply)`` or None
* ``(FAILED, phase, reply)``  — the session cannot go on (the driver closes)
* ``(CLOSED, phase, reply)``  — the server answered QUIT
* ``(TLS_START, None, None)`` — the server said 220 to STARTTLS: the driver upgrades the
  connection (RFC 3207 §4.2), then calls :meth:`ClientSession.tls_started`

After EHLO the session goes on by itself as configured: STARTTLS when asked
for (``tls="starttls"``, or ``"opportunistic"`` when offered), EHLO again
over TLS, AUTH PLAIN or LOGIN (RFC 4954) when credentials are set, then
READY. Messages go as DATA, or as one ``BDAT n LAST`` (RFC 3030) when the
server offers CHUNKING and the client prefers it.
"""

from __future__ import annotations

from collections import deque

import base64

from . import commands
from .capabilities import Capabilities
from .errors import ProtocolError
from .replies import Reply, ReplyReader

# Phases (also the names used in result files).
CONNECT, TLS, BANNER, EHLO, HELO, STARTTLS, AUTH = "connect", "tls", "banner", "ehlo", "helo", "starttls", "auth"
MAIL, RCPT, DATA, END_OF_DATA, BDAT, RSET, QUIT = "mail", "rcpt", "data", "end_of_data", "bdat", "rset", "quit"
PHASES = (CONNECT, TLS, BANNER, EHLO, HELO, STARTTLS, AUTH, MAIL, RCPT, DATA, END_OF_DATA, BDAT, RSET, QUIT)

REPLY, READY, DONE, FAILED, CLOSED, TLS_START = "reply", "ready", "done", "failed", "closed", "tls_start"

#: What a pipelined transaction with one recipient awaits, in order.
_MAIL_RCPT_DATA = (MAIL, RCPT, DATA)

# Session states.
S_BANNER, S_GREETING, S_READY, S_TXN, S_QUIT, S_CLOSED = range(6)


class Transaction:
    """One message in flight: its envelope, payload and progress."""

    __slots__ = ("mail_from", "rcpts", "pieces", "size", "wire", "smtputf8", "eight_bit", "bdat",
                 "accepted", "lmtp_left", "failure", "rcpt_failures", "data_sent")

    def __init__(self, mail_from: str, rcpts: list[str], pieces: tuple[bytes, ...] | list[bytes],
                 size: int, smtputf8: bool = False, eight_bit: bool = False,
                 bdat: tuple[bytes, ...] | None = None, wire: int | None = None):
        self.mail_from = mail_from
        self.bdat = bdat           # the unstuffed message, for BDAT (RFC 3030), when the client prefers it
        self.rcpts = rcpts
        self.pieces = pieces
        self.size = size           # the message's own octets (RFC 1870 §4: what SIZE= declares)
        self.wire = size if wire is None else wire  # the octets sent: with DATA, dot-stuffed
        self.smtputf8 = smtputf8
        self.eight_bit = eight_bit
        self.accepted = 0          # recipients the server took
        self.lmtp_left = 0         # LMTP: per-recipient replies still due after the data
        self.failure: tuple[str, Reply] | None = None
        self.rcpt_failures: list[Reply] = []
        self.data_sent = False


class ClientSession:
    """One client connection's protocol state."""

    def __init__(self, helo: str = "smtpbench.client", pipelining: bool = True, lmtp: bool = False,
                 tls: str = "none", auth: tuple[str, str, str] | None = None, tls_active: bool = False):
        self.helo = helo
        self.use_pipelining = pipelining
        self.lmtp = lmtp
        self.tls = tls                  # none | starttls | opportunistic (implicit TLS: tls_active=True)
        self.tls_active = tls_active
        self.auth = auth                # (mechanism, username, password)
        self.authenticated = False
        self.state = S_BANNER
        self.capabilities = Capabilities()
        self.outbox: list[bytes] = []
        self.txn: Transaction | None = None
        self.chained: Transaction | None = None  # the next transaction, begun behind txn's data
        self._reader = ReplyReader()
        # The phases whose replies are due, in order (RFC 2920 §3.1: replies come in command order).
        self.awaiting: deque[str] = deque([BANNER])
        self._pending: deque[tuple[str, bytes]] = deque()  # commands held back without PIPELINING
        self._pipelining = False

    @property
    def expecting(self) -> str | None:
        """The phase whose reply is awaited next (for the driver's timeouts)."""
        return self.awaiting[0] if self.awaiting else None

    @property
    def pipelining(self) -> bool:
        """True when PIPELINING is both wanted and offered (RFC 2920 §3.1)."""
        return self._pipelining

    @property
    def can_chain(self) -> bool:
        """True when the next transaction may go out now, behind this one's message data.

        RFC 2920 §3.1: "the actual transfer of message content is explicitly allowed
        to be the first command in a group", so MAIL, RCPT… and DATA of the next message
        may follow the end-of-data dot before its reply. Only once the message data is
        queued (after 354), with nothing else awaited, over plain SMTP with DATA (LMTP
        answers the dot once per recipient; BDAT is not chained).
        """
        txn = self.txn
        return (self.state == S_TXN and self._pipelining and self.chained is None and not self.lmtp
                and txn is not None and txn.data_sent and txn.failure is None and txn.bdat is None
                and len(self.awaiting) == 1)

    # -- starting things ----------------------------------------------------

    def start_transaction(self, txn: Transaction) -> None:
        """Queue MAIL, RCPT… and DATA (all at once when pipelining; else one by one).

        On a READY session; or, when :attr:`can_chain`, behind the transaction in flight:
        it becomes :attr:`txn` when that one's DONE event is out.
        """
        if self.state == S_READY:
            self.state = S_TXN
            self.txn = txn
        elif self.can_chain:
            self.chained = txn
        else:
            raise RuntimeError("start_transaction() needs a READY session (or one that can chain)")
        caps = self.capabilities.keywords
        params = f" SIZE={txn.size}" if "SIZE" in caps else ""  # RFC 1870 §6
        if txn.eight_bit or txn.smtputf8 or txn.bdat is not None:
            params += self._mail_extras(txn, caps)
        mail = f"MAIL FROM:<{txn.mail_from}>{params}\r\n"
        rcpts = txn.rcpts
        if self._pipelining and txn.bdat is None:
            # MAIL, RCPT… and DATA as one piece: one buffer for the driver's write (RFC 2920 §3.1).
            if len(rcpts) == 1:
                self.outbox.append(f"{mail}RCPT TO:<{rcpts[0]}>\r\nDATA\r\n".encode())
                self.awaiting.extend(_MAIL_RCPT_DATA)
            else:
                self.outbox.append((mail + "".join([f"RCPT TO:<{r}>\r\n" for r in rcpts]) + "DATA\r\n").encode())
                self.awaiting.extend((MAIL, *[RCPT] * len(rcpts), DATA))
            return
        if txn.bdat is None:
            last = (DATA, b"DATA\r\n")
        else:
            # RFC 3030 §2: the chunk follows its BDAT line at once, and may be pipelined.
            size = sum(map(len, txn.bdat))
            last = (BDAT, (f"BDAT {size} LAST\r\n".encode(), *txn.bdat))
        cmds = [(MAIL, mail.encode())]
        cmds += [(RCPT, f"RCPT TO:<{r}>\r\n".encode()) for r in rcpts]
        cmds.append(last)
        self._queue(cmds)

    @staticmethod
    def _mail_extras(txn: Transaction, caps) -> str:
        """MAIL parameters beyond SIZE: BODY= and SMTPUTF8; drops BDAT when CHUNKING is not offered."""
        body = "8BITMIME" if txn.eight_bit and "8BITMIME" in caps else ""  # RFC 6152
        if txn.bdat is not None and "CHUNKING" in caps:
            if txn.eight_bit and "BINARYMIME" in caps:
                body = "BINARYMIME"  # RFC 3030 §3
        else:
            txn.bdat = None
        params = f" BODY={body}" if body else ""
        if txn.smtputf8:
            params += " SMTPUTF8"  # RFC 6531 §3.4 (sent even if not offered: the server decides)
        return params

    def quit(self) -> None:
        """Queue QUIT (RFC 5321 §4.1.1.10)."""
        self.state = S_QUIT
        self._queue([(QUIT, b"QUIT\r\n")])

    def rset(self) -> None:
        self._queue([(RSET, b"RSET\r\n")])

    def _queue(self, cmds: list[tuple[str, bytes | tuple[bytes, ...]]]) -> None:
        if self._pipelining or not (self.awaiting or self._pending):
            if self._pipelining:
                for phase, line in cmds:
                    self._send(phase, line)
                return
            self._send(*cmds[0])
            self._pending.extend(cmds[1:])
        else:
            self._pending.extend(cmds)

    def _send(self, phase: str, line: bytes | tuple[bytes, ...]) -> None:
        self.awaiting.append(phase)
        if type(line) is bytes:
            self.outbox.append(line)
        else:
            self.outbox.extend(line)

    def tls_started(self) -> None:
        """The driver finished the TLS handshake: greet again (RFC 3207 §4.2)."""
        self.tls_active = True
        self.capabilities = Capabilities()
        self._send(EHLO, commands.simple("LHLO" if self.lmtp else "EHLO", self.helo))

    # -- replies --------------------------------------------------------------

    def receive(self, data: bytes) -> list[tuple]:
        """Feed bytes from the server; return the events they complete, in order."""
        events: list[tuple] = []
        try:
            replies = self._reader.feed(data)
            bad = None
        except ProtocolError as e:
            # What came before the bad line is taken first: it does not depend on where TCP cut the
            # stream whether a message the server accepted (a 250 at the dot, then garbage) counts.
            replies, bad = e.replies, Reply(0, (e.text,))
        expect = self.awaiting
        pending = self._pending
        excess = None
        if len(replies) > len(expect) and not self.lmtp:
            # Every command awaited now was written before this read; the ones queued while it is
            # parsed (EHLO after the banner, a held-back command) go out after it. So a read with
            # more replies than that answers commands not yet sent: the rest are unsolicited
            # (RFC 5321 §4.2: a reply answers a command; RFC 2920 §3.1: in command order), such as
            # a 250 sent with the banner, which would be taken for EHLO's. (Not under LMTP: with
            # BDAT its per-recipient replies are added to the awaited ones as they come.)
            excess = replies[len(expect)]
            replies = replies[:len(expect)]
        for reply in replies:
            if not expect:
                # RFC 5321 §4.2: replies arrive only for commands; anything else is a
                # hostile or broken server (a 421 shutdown notice is the exception).
                events.append((FAILED, QUIT if reply.code == 421 else "unsolicited", reply))
                self.state = S_CLOSED
                return events
            phase = expect.popleft()
            events.append((REPLY, phase, reply))
            code = reply.code
            if code == 250 and phase is RCPT:
                self.txn.accepted += 1  # all _on_rcpt does for its commonest reply, without the call
            elif code != 250 or phase is not MAIL:  # (_on_mail does nothing on 250)
                if code == 421 and phase != QUIT:
                    # RFC 5321 §3.8: the server is closing the channel. The transaction ends with the
                    # session (FAILED, no DONE): a driver must not start the next one on a closed session.
                    self._fail_txn(phase, reply, None)
                    events.append((FAILED, phase, reply))
                    self.state = S_CLOSED
                    break
                _ON_REPLY[phase](self, phase, reply, events)
                if self.state == S_CLOSED:
                    break
            if pending and not expect:
                self._send(*pending.popleft())
        if excess is not None and self.state != S_CLOSED:
            events.append((FAILED, QUIT if excess.code == 421 else "unsolicited", excess))
            self.state = S_CLOSED
        if bad is not None and self.state != S_CLOSED:
            events.append((FAILED, self.expecting or QUIT, bad))
            self.state = S_CLOSED
        return events

    # One handler per phase (dispatched by _ON_REPLY below): called with the reply to that phase.

    def _on_banner(self, phase: str, reply: Reply, events: list) -> None:
        if reply.code == 220:
            self.awaiting.append(EHLO)
            self.outbox.append(commands.simple("LHLO" if self.lmtp else "EHLO", self.helo))
            self.state = S_GREETING
        else:
            events.append((FAILED, phase, reply))
            self.state = S_CLOSED

    # Success is any 2yz, not 250 alone (RFC 5321 §4.2.1: a client that receives an unexpected code
    # determines its next action by the first digit): a 251 or 252 to EHLO, MAIL, RCPT or the dot is
    # taken as done. Only these handlers see it; 250 itself keeps receive()'s fast path.

    def _on_hello(self, phase: str, reply: Reply, events: list) -> None:
        code = reply.code
        if 200 <= code < 300:
            if phase == EHLO:
                self.capabilities = Capabilities.parse(reply.lines)
            self._pipelining = self.use_pipelining and self.capabilities.has("PIPELINING")
            self._after_greeting(events)
        elif phase == EHLO and not self.lmtp and code >= 500:
            # RFC 5321 §3.2: a server that does not know EHLO gets HELO.
            self.awaiting.append(HELO)
            self.outbox.append(commands.simple("HELO", self.helo))
        else:
            events.append((FAILED, phase, reply))
            self.state = S_CLOSED

    def _on_mail(self, phase: str, reply: Reply, events: list) -> None:
        if not 200 <= reply.code < 300:
            self._fail_txn(phase, reply, None)
            if not self._pipelining:
                self._pending.clear()
                self._end_txn(events)

    def _on_rcpt(self, phase: str, reply: Reply, events: list) -> None:
        txn = self.txn
        if 200 <= reply.code < 300:  # 251 "will forward" (RFC 5321 §3.4), and any other 2yz
            txn.accepted += 1
        else:
            txn.rcpt_failures.append(reply)
        # Without pipelining the RCPTs go one by one, straight after MAIL: the last one's
        # reply is in when the next command held back is not a RCPT.
        pending = self._pending
        if not self._pipelining and not (pending and pending[0][0] is RCPT):
            if txn.failure is None and txn.accepted == 0:
                self._fail_txn(phase, reply, None)
                pending.clear()
                self._end_txn(events)

    def _on_data(self, phase: str, reply: Reply, events: list) -> None:
        txn = self.txn
        if reply.code == 354:
            if txn.failure is None and txn.accepted > 0:
                self.outbox.extend(txn.pieces)
                txn.data_sent = True
                if self.lmtp:
                    txn.lmtp_left = txn.accepted - 1
                    self.awaiting.extend([END_OF_DATA] * txn.accepted)
                else:
                    self.awaiting.append(END_OF_DATA)
            else:
                # RFC 2920 §3.1: 354 with no valid recipient: send the bare terminator.
                self.outbox.append(b".\r\n")
                self.awaiting.append(END_OF_DATA)
                if txn.failure is None:
                    self._fail_txn(RCPT, txn.rcpt_failures[-1] if txn.rcpt_failures else reply, None)
        else:
            if txn.failure is None:
                if txn.accepted == 0 and txn.rcpt_failures:
                    self._fail_txn(RCPT, txn.rcpt_failures[-1], None)
                else:
                    self._fail_txn(phase, reply, None)
            self._end_txn(events)

    def _on_end_of_data(self, phase: str, reply: Reply, events: list) -> None:
        txn = self.txn
        if not 200 <= reply.code < 300 and txn.failure is None:
            self._fail_txn(phase, reply, None)
        if self.lmtp and txn.lmtp_left > 0:
            txn.lmtp_left -= 1
            return
        self._end_txn(events)

    def _on_quit(self, phase: str, reply: Reply, events: list) -> None:
        events.append((CLOSED, phase, reply))
        self.state = S_CLOSED

    def _on_starttls(self, phase: str, reply: Reply, events: list) -> None:
        if reply.code == 220:
            events.append((TLS_START, None, None))
        elif self.tls == "opportunistic":  # (a 421 ended the session before this)
            # Opportunistic: TLS when it can be had, else the session goes on in the clear (RFC 7435
            # §1.2; RFC 3207 §4: after a 454 "the client must decide whether or not to continue",
            # and a 5xx refusal is no different). The state is as before STARTTLS: no new EHLO. The
            # reply stays in the starttls phase's figures; tls = "starttls" insists and fails.
            self.tls = "none"
            self._after_greeting(events)
        else:
            events.append((FAILED, phase, reply))
            self.state = S_CLOSED

    def _on_bdat(self, phase: str, reply: Reply, events: list) -> None:
        txn = self.txn
        first = not txn.data_sent
        txn.data_sent = True
        if self.lmtp:
            # RFC 2033 §4.2 with RFC 3030: one reply per accepted recipient after BDAT LAST.
            if first:
                txn.lmtp_left = max(txn.accepted, 1) - 1
                self.awaiting.extend([BDAT] * txn.lmtp_left)
            else:
                txn.lmtp_left -= 1
        # No recipient accepted: the message went nowhere, whatever a (broken) server answers to
        # BDAT LAST (RFC 3030 §2 wants 554 there; DATA's path checks the same).
        if txn.failure is None and (not 200 <= reply.code < 300 or txn.accepted == 0):
            if txn.accepted == 0 and txn.rcpt_failures:
                self._fail_txn(RCPT, txn.rcpt_failures[-1], None)
            else:
                self._fail_txn(phase, reply, None)
        if txn.lmtp_left > 0:
            return
        self._end_txn(events)

    def _on_rset(self, phase: str, reply: Reply, events: list) -> None:
        pass  # RSET replies need no action

    def _after_greeting(self, events: list) -> None:
        """EHLO done: STARTTLS, then AUTH, then READY, as configured."""
        caps = self.capabilities
        if not self.tls_active and (self.tls == "starttls" or (self.tls == "opportunistic" and caps.has("STARTTLS"))):
            self._send(STARTTLS, b"STARTTLS\r\n")
            return
        if self.auth is not None and not self.authenticated:
            mech, user, password = self.auth
            if mech == "PLAIN":
                token = base64.b64encode(f"\0{user}\0{password}".encode()).decode()
                self._send(AUTH, f"AUTH PLAIN {token}\r\n".encode())
            else:
                self._auth_step = 0
                self._send(AUTH, b"AUTH LOGIN\r\n")
            return
        self.state = S_READY
        events.append((READY, None, None))

    def _on_auth(self, phase: str, reply: Reply, events: list) -> None:
        mech, user, password = self.auth
        if reply.code == 235:
            self.authenticated = True
            self._after_greeting(events)
        elif reply.code == 334 and mech == "LOGIN" and self._auth_step < 2:
            # RFC 4954 §4 challenge/response; LOGIN asks for the user name, then the password.
            secret = user if self._auth_step == 0 else password
            self._auth_step += 1
            self._send(AUTH, base64.b64encode(secret.encode()) + b"\r\n")
        else:
            events.append((FAILED, AUTH, reply))
            self.state = S_CLOSED

    def _fail_txn(self, phase: str, reply: Reply, events: list | None) -> None:
        txn = self.txn
        if txn is not None and txn.failure is None:
            txn.failure = (phase, reply)
        if events is not None and txn is not None and self.state == S_TXN:
            self._end_txn(events)

    def _end_txn(self, events: list) -> None:
        txn = self.txn
        if self.chained is not None:
            # The chained transaction's replies come next (its MAIL was sent after this one's dot).
            self.txn, self.chained = self.chained, None
        else:
            self.txn = None
            if self.state == S_TXN:
                self.state = S_READY
        events.append((DONE, txn.failure is None, txn.failure))
        if txn.failure is not None and self.state == S_READY and txn.failure[0] != END_OF_DATA:
            # Leave no half transaction behind (RFC 5321 §4.1.1.5).
            self.rset()


_ON_REPLY = {
    BANNER: ClientSession._on_banner, EHLO: ClientSession._on_hello, HELO: ClientSession._on_hello,
    MAIL: ClientSession._on_mail, RCPT: ClientSession._on_rcpt, DATA: ClientSession._on_data,
    END_OF_DATA: ClientSession._on_end_of_data, QUIT: ClientSession._on_quit,
    STARTTLS: ClientSession._on_starttls, AUTH: ClientSession._on_auth, BDAT: ClientSession._on_bdat,
    RSET: ClientSession._on_rset,
}
