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
"""

from __future__ import annotations

from collections import deque

from . import commands
from .capabilities import Capabilities
from .errors import ProtocolError
from .replies import Reply, ReplyReader

# Phases (also the names used in result files).
CONNECT, TLS, BANNER, EHLO, HELO, STARTTLS, AUTH = "connect", "tls", "banner", "ehlo", "helo", "starttls", "auth"
MAIL, RCPT, DATA, END_OF_DATA, BDAT, RSET, QUIT = "mail", "rcpt", "data", "end_of_data", "bdat", "rset", "quit"
PHASES = (CONNECT, TLS, BANNER, EHLO, HELO, STARTTLS, AUTH, MAIL, RCPT, DATA, END_OF_DATA, BDAT, RSET, QUIT)

REPLY, READY, DONE, FAILED, CLOSED = "reply", "ready", "done", "failed", "closed"

# Session states.
S_BANNER, S_GREETING, S_READY, S_TXN, S_QUIT, S_CLOSED = range(6)


class Transaction:
    """One message in flight: its envelope, payload and progress."""

    __slots__ = ("mail_from", "rcpts", "pieces", "size", "smtputf8", "eight_bit",
                 "accepted", "lmtp_left", "failure", "rcpt_failures", "data_sent")

    def __init__(self, mail_from: str, rcpts: list[str], pieces: tuple[bytes, ...] | list[bytes],
                 size: int, smtputf8: bool = False, eight_bit: bool = False):
        self.mail_from = mail_from
        self.rcpts = rcpts
        self.pieces = pieces
        self.size = size
        self.smtputf8 = smtputf8
        self.eight_bit = eight_bit
        self.accepted = 0          # recipients the server took
        self.lmtp_left = 0         # LMTP: per-recipient replies still due after the data
        self.failure: tuple[str, Reply] | None = None
        self.rcpt_failures: list[Reply] = []
        self.data_sent = False


class ClientSession:
    """One client connection's protocol state."""

    def __init__(self, helo: str = "smtpbench.client", pipelining: bool = True, lmtp: bool = False):
        self.helo = helo
        self.use_pipelining = pipelining
        self.lmtp = lmtp
        self.state = S_BANNER
        self.capabilities = Capabilities()
        self.outbox: list[bytes] = []
        self.txn: Transaction | None = None
        self._reader = ReplyReader()
        self._expect: deque[str] = deque([BANNER])
        self._pending: deque[tuple[str, bytes]] = deque()  # commands held back without PIPELINING
        self._pipelining = False

    @property
    def expecting(self) -> str | None:
        """The phase whose reply is awaited next (for the driver's timeouts)."""
        return self._expect[0] if self._expect else None

    @property
    def pipelining(self) -> bool:
        """True when PIPELINING is both wanted and offered (RFC 2920 §3.1)."""
        return self._pipelining

    # -- starting things ----------------------------------------------------

    def start_transaction(self, txn: Transaction) -> None:
        """Queue MAIL, RCPT… and DATA (all at once when pipelining; else one by one)."""
        if self.state != S_READY:
            raise RuntimeError("start_transaction() needs a READY session")
        self.state = S_TXN
        self.txn = txn
        caps = self.capabilities.keywords
        params: dict[str, str | None] = {}
        if "SIZE" in caps:
            params["SIZE"] = str(txn.size)  # RFC 1870 §6
        if txn.eight_bit and "8BITMIME" in caps:
            params["BODY"] = "8BITMIME"  # RFC 6152
        if txn.smtputf8:
            params["SMTPUTF8"] = None  # RFC 6531 §3.4 (sent even if not offered: the server decides)
        cmds = [(MAIL, commands.mail_from(txn.mail_from, params))]
        cmds += [(RCPT, commands.rcpt_to(r)) for r in txn.rcpts]
        cmds.append((DATA, b"DATA\r\n"))
        self._queue(cmds)

    def quit(self) -> None:
        """Queue QUIT (RFC 5321 §4.1.1.10)."""
        self.state = S_QUIT
        self._queue([(QUIT, b"QUIT\r\n")])

    def rset(self) -> None:
        self._queue([(RSET, b"RSET\r\n")])

    def _queue(self, cmds: list[tuple[str, bytes]]) -> None:
        if self._pipelining or not (self._expect or self._pending):
            if self._pipelining:
                for phase, line in cmds:
                    self._expect.append(phase)
                    self.outbox.append(line)
                return
            phase, line = cmds[0]
            self._expect.append(phase)
            self.outbox.append(line)
            self._pending.extend(cmds[1:])
        else:
            self._pending.extend(cmds)

    def _next_pending(self) -> None:
        if self._pending and not self._expect:
            phase, line = self._pending.popleft()
            self._expect.append(phase)
            self.outbox.append(line)

    # -- replies --------------------------------------------------------------

    def receive(self, data: bytes) -> list[tuple]:
        """Feed bytes from the server; return the events they complete, in order."""
        events: list[tuple] = []
        try:
            replies = self._reader.feed(data)
        except ProtocolError as e:
            phase = self.expecting or QUIT
            events.append((FAILED, phase, Reply(0, (e.text,))))
            self.state = S_CLOSED
            return events
        for reply in replies:
            if not self._expect:
                # RFC 5321 §4.2: replies arrive only for commands; anything else is a
                # hostile or broken server (a 421 shutdown notice is the exception).
                events.append((FAILED, QUIT if reply.code == 421 else "unsolicited", reply))
                self.state = S_CLOSED
                return events
            phase = self._expect.popleft()
            events.append((REPLY, phase, reply))
            self._on_reply(phase, reply, events)
            if self.state == S_CLOSED:
                break
            self._next_pending()
        return events

    def _on_reply(self, phase: str, reply: Reply, events: list) -> None:
        code = reply.code
        if code == 421 and phase not in (QUIT,):
            # RFC 5321 §3.8: the server is closing the channel.
            self._fail_txn(phase, reply, events)
            events.append((FAILED, phase, reply))
            self.state = S_CLOSED
            return
        if phase == BANNER:
            if code == 220:
                self._expect.append(EHLO)
                self.outbox.append(commands.simple("LHLO" if self.lmtp else "EHLO", self.helo))
                self.state = S_GREETING
            else:
                events.append((FAILED, phase, reply))
                self.state = S_CLOSED
        elif phase in (EHLO, HELO):
            if code == 250:
                if phase == EHLO:
                    self.capabilities = Capabilities.parse(reply.lines)
                self._pipelining = self.use_pipelining and self.capabilities.has("PIPELINING")
                self.state = S_READY
                events.append((READY, None, None))
            elif phase == EHLO and not self.lmtp and code >= 500:
                # RFC 5321 §3.2: a server that does not know EHLO gets HELO.
                self._expect.append(HELO)
                self.outbox.append(commands.simple("HELO", self.helo))
            else:
                events.append((FAILED, phase, reply))
                self.state = S_CLOSED
        elif phase == MAIL:
            if code != 250:
                self._fail_txn(phase, reply, None)
                if not self._pipelining:
                    self._pending.clear()
                    self._end_txn(events)
        elif phase == RCPT:
            txn = self.txn
            if code in (250, 251):
                txn.accepted += 1
            else:
                txn.rcpt_failures.append(reply)
            if not self._pipelining and not self._pending_has(RCPT):
                if txn.failure is None and txn.accepted == 0:
                    self._fail_txn(phase, reply, None)
                    self._pending.clear()
                    self._end_txn(events)
        elif phase == DATA:
            txn = self.txn
            if code == 354:
                if txn.failure is None and txn.accepted > 0:
                    self.outbox.extend(txn.pieces)
                    txn.data_sent = True
                    if self.lmtp:
                        txn.lmtp_left = txn.accepted - 1
                        self._expect.extend([END_OF_DATA] * txn.accepted)
                    else:
                        self._expect.append(END_OF_DATA)
                else:
                    # RFC 2920 §3.1: 354 with no valid recipient: send the bare terminator.
                    self.outbox.append(b".\r\n")
                    self._expect.append(END_OF_DATA)
                    if txn.failure is None:
                        self._fail_txn(RCPT, txn.rcpt_failures[-1] if txn.rcpt_failures else reply, None)
            else:
                if txn.failure is None:
                    if txn.accepted == 0 and txn.rcpt_failures:
                        self._fail_txn(RCPT, txn.rcpt_failures[-1], None)
                    else:
                        self._fail_txn(phase, reply, None)
                self._end_txn(events)
        elif phase == END_OF_DATA:
            txn = self.txn
            if code != 250 and txn.failure is None:
                self._fail_txn(phase, reply, None)
            if self.lmtp and txn.lmtp_left > 0:
                txn.lmtp_left -= 1
                return
            self._end_txn(events)
        elif phase == QUIT:
            events.append((CLOSED, phase, reply))
            self.state = S_CLOSED
        # RSET replies need no action.

    def _pending_has(self, phase: str) -> bool:
        return any(p == phase for p, _ in self._pending)

    def _fail_txn(self, phase: str, reply: Reply, events: list | None) -> None:
        txn = self.txn
        if txn is not None and txn.failure is None:
            txn.failure = (phase, reply)
        if events is not None and txn is not None and self.state == S_TXN:
            self._end_txn(events)

    def _end_txn(self, events: list) -> None:
        txn = self.txn
        self.txn = None
        if self.state == S_TXN:
            self.state = S_READY
        events.append((DONE, txn.failure is None, txn.failure))
        if txn.failure is not None and self.state == S_READY and txn.failure[0] != END_OF_DATA:
            # Leave no half transaction behind (RFC 5321 §4.1.1.5).
            self.rset()
