"""The generator's per-connection driver: an ``asyncio.Protocol`` over :class:`ClientSession`.

It timestamps every reply once per read, attributes each phase the time
since the later of "command sent" and "previous reply" (with pipelining the
first reply of a batch carries the round trip, the rest their increments),
and hands transaction outcomes to the runner. No coroutine per message: the
next transaction starts from the callback that finished the last one.
"""

from __future__ import annotations

import asyncio
from time import monotonic_ns

from ..protocol.client import BANNER, CLOSED, DONE, FAILED, READY, REPLY, TLS_START, ClientSession, Transaction


class ClientConnection(asyncio.Protocol):
    __slots__ = ("runner", "session", "transport", "mark", "deadline", "txn_intended", "txn_start",
                 "txn_size", "txn", "out", "attempt", "retry", "pending", "opener", "sent", "closed",
                 "opened_at", "t0", "rec", "_paused", "idle",
                 "upgrading", "chained", "chaining", "cut")

    def __init__(self, runner, session: ClientSession, opened_at: int, opener: object = None,
                 retry: tuple | None = None):
        self.runner = runner
        self.opener = opener           # the key of the message waiting for it in runner.connecting
        self.pending: int | None = None  # µs: intended time of the message waiting for this connection (None: none)
        self.rec = runner.recorder
        self.t0 = runner.t0_ns
        self.session = session
        self.transport: asyncio.Transport | None = None
        self.opened_at = opened_at     # µs: when the connect began
        self.mark = opened_at          # µs: last send or reply, for phase latency
        self.deadline = 0              # µs: when the awaited reply is overdue (0: none)
        self.txn_intended: int | None = None         # µs: the transaction in flight (None: none)
        self.txn_start = 0
        self.txn_size = 0
        self.txn: Transaction | None = None
        self.out = None                # the message in flight (kept for a retry)
        self.attempt = 0               # 0 for a first try
        self.retry = retry             # (outgoing, attempt) the pending message is a retry of
        self.sent = 0                  # transactions started on this connection
        self.closed = False
        self.idle = False
        self._paused = False
        self.upgrading = False         # implicit TLS handshake in progress: hold writes (see flush)
        self.chained: tuple | None = None  # the next message, begun behind this one's data (see chain)
        self.chaining = runner.chaining    # pipeline_messages: begin the next message at 354
        self.cut = False                   # closed by this side (abort): its end was accounted for

    def now(self) -> int:
        return (monotonic_ns() - self.t0) // 1000

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.runner.connections.add(self)
        self.pending = self.runner.connecting.pop(self.opener, None)  # the message is this connection's now
        now = self.now()
        self.rec.phase("connect", now - self.opened_at)
        self.mark = now
        self.deadline = now + self.runner.timeout_us[BANNER]

    def data_received(self, data: bytes) -> None:
        now = (monotonic_ns() - self.t0) // 1000
        session = self.session
        events = session.receive(data)
        if not events:
            # Part of a reply: the deadline stays, so a phase's timeout bounds the wait for its
            # whole reply (RFC 5321 §4.5.3.2), not the silence between octets.
            return
        runner = self.runner
        phase_values = self.rec.phase_values  # rec.phase() inlined: this runs for every reply
        for kind, a, b in events:
            if kind is REPLY:
                phase_values[a].append(now - self.mark)
                self.mark = now
            elif kind is DONE:
                runner.txn_done(self, a, b, now)
            elif kind is READY:
                runner.conn_ready(self, now)
            elif kind is FAILED:
                runner.conn_failed(self, a, b.code, "reply" if b.code else "protocol", b.text, now)
                self.abort()
                return
            elif kind is CLOSED:
                self.abort()
                return
            elif kind is TLS_START:
                self.deadline = now + runner.timeout_us["tls"]
                runner.start_tls(self, now)
                return
        if self.chaining and session.can_chain:
            runner.chain(self, now)
        # What the session queued and what the runner's callbacks added: one write per read.
        out = session.outbox
        if out and not self.upgrading:
            self.transport.writelines(out)
            out.clear()
        awaiting = session.awaiting
        self.deadline = now + runner.timeout_us[awaiting[0]] if awaiting else 0

    def flush(self) -> None:
        """Write what the session queued (after a TLS upgrade) and arm the reply timeout."""
        out = self.session.outbox
        if out and not self.closed:
            self.transport.writelines(out)
            out.clear()
        expecting = self.session.expecting
        self.deadline = self.now() + self.runner.timeout_us[expecting] if expecting else 0

    def begin(self, txn: Transaction, intended: int, now: int, out, attempt: int) -> None:
        """Start a transaction (MAIL…DATA go out now, pipelined when offered)."""
        self.txn_intended = intended
        self.txn_start = now
        self.txn_size = txn.wire  # bytes as sent, as the sink counts them
        self.txn = txn
        self.out = out
        self.attempt = attempt
        self.sent += 1
        self.idle = False
        session = self.session
        session.start_transaction(txn)
        out = session.outbox
        self.transport.writelines(out)
        out.clear()
        self.mark = now
        self.deadline = now + self.runner.timeout_us[session.awaiting[0]]

    def chain(self, txn: Transaction, intended: int, now: int, out, attempt: int) -> None:
        """Begin the next transaction behind the data of this one (RFC 2920 §3.1; the caller writes).

        Its figures wait in :attr:`chained` until this one is done (:meth:`adopt_chained`).
        """
        self.chained = (intended, now, txn.wire, txn, out, attempt)
        self.sent += 1
        self.session.start_transaction(txn)

    def adopt_chained(self) -> None:
        """The transaction in flight is done: the chained one is now the one in flight."""
        self.txn_intended, self.txn_start, self.txn_size, self.txn, self.out, self.attempt = self.chained
        self.chained = None

    def quit(self) -> None:
        self.session.quit()
        if self.transport is not None and not self.closed:
            self.transport.writelines(self.session.outbox)
            self.session.outbox.clear()
            now = self.now()
            if not self.session.pipelining or self.session.expecting == "quit":
                self.mark = now  # time QUIT from its send, not from an idle connection's last reply
            self.deadline = now + self.runner.timeout_us["quit"]

    def abort(self) -> None:
        self.cut = True
        if self.transport is not None and not self.closed:
            self.transport.close()

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self.runner.conn_lost(self, exc, self.now())

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
