"""One Locust user's SMTP connection: :class:`ClientSession` over a gevent-cooperative socket.

A :class:`Slot` is what a user is in smtpbench terms: one connection that
sends one message after another (closed loop) or takes released arrivals
(open loop), opening a new connection when it has none or after
``messages_per_connection``. Per read it feeds the bytes to the client core,
writes what the core queued in one ``sendall``, timestamps every reply and
attributes each phase the time since the later of "sent" and "previous
reply", exactly as :mod:`smtpbench.load.connection` does natively.

As natively: STARTTLS or implicit TLS (the handshake timed as phase ``tls``,
the last session offered again), AUTH, BDAT when offered, LMTP, and deferred
(4xx) messages sent again after the scenario's retry schedule with their
intended start kept.

Stopping (a Locust stop kills the user's greenlet with ``GreenletExit``): a
message in flight is let finish for up to the scenario's ``drain`` time,
then counted (``unfinished`` past it), so every message the server accepted
and answered is counted, and the kill goes on. A kill in the middle of a
write cannot be resumed (the bytes written are unknown): the message is
counted ``unfinished`` and the connection dropped, so the server never
accepts it.
"""

from __future__ import annotations

import socket
from typing import Callable

import gevent
from gevent import GreenletExit
from gevent import socket as gsocket

from ..load.plan import RECONNECT_BACKOFF, failed_at
from ..protocol.client import (BANNER, CLOSED, CONNECT, DONE, END_OF_DATA, FAILED, QUIT, READY, REPLY, TLS,
                               TLS_START, ClientSession)
from .work import Work

IDLE_POLL = 0.2            # s, how often an idle user looks again
QUIT_WAIT = 2.0            # s, at most, for the reply to QUIT when closing


class Lost(Exception):
    """The connection ended without an SMTP reply: ``kind`` is closed, reset, timeout or tls."""

    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind = kind
        self.text = text


class Outcome:
    """What one try of a message came to (for Locust's request event); ``retry`` = (outgoing, attempt) when deferred."""

    __slots__ = ("ok", "response_us", "size", "phase", "code", "kind", "text", "retry")

    def __init__(self, ok: bool, response_us: int, size: int, phase: str = "", code: int = 0, kind: str = "",
                 text: str = "", retry: tuple | None = None):
        self.ok = ok
        self.response_us = response_us
        self.size = size
        self.phase = phase
        self.code = code
        self.kind = kind
        self.text = text
        self.retry = retry


PhaseHook = Callable[[str, int, int], None]   # (phase, microseconds, reply code)


class Conn:
    """One open connection: socket, client core, and the phase clock."""

    __slots__ = ("work", "sock", "session", "mark", "sent", "broken", "drain_until", "dead", "on_phase", "tls")

    def __init__(self, work: Work, sock: socket.socket, session: ClientSession, mark: int, on_phase: PhaseHook | None):
        self.work = work
        self.sock = sock
        self.session = session
        self.mark = mark                 # µs: last send or reply, for phase latency
        self.sent = 0                    # messages begun on this connection
        self.broken = False              # a write was interrupted: the byte stream is unusable
        self.drain_until: int | None = None
        self.dead: tuple | None = None   # a FAILED or CLOSED event seen: close after recording
        self.on_phase = on_phase
        self.tls = False
        work.connections += 1

    def phase(self, name: str, us: int, code: int = 0) -> None:
        self.work.recorder.phase(name, us)
        if self.on_phase is not None:
            self.on_phase(name, us, code)

    def start_tls(self, started: int) -> None:
        """Handshake on this socket (implicit TLS, or after 220 to STARTTLS, RFC 3207 §4.2); phase ``tls``."""
        w = self.work
        t = w.target
        resume = w.load.tls_resume
        try:
            self.sock = w.tls_context.wrap_socket(self.sock, server_hostname=t.host or None,
                                                  session=w.tls_session if resume else None)
        except (OSError, ValueError) as e:   # ssl.SSLError is an OSError; ValueError: a session of another context
            raise Lost("tls", str(e) or "TLS handshake failed") from None
        now = w.now()
        self.phase(TLS, now - started)
        self.mark = now
        self.tls = True
        self.remember_tls()
        w.recorder.totals["tls_resumed" if self.sock.session_reused else "tls_full"] += 1

    def remember_tls(self) -> None:
        """Keep this connection's TLS session to offer on the next one. With TLS 1.3 the ticket comes after
        the handshake, so this is called again once the greeting is read."""
        if self.tls and self.work.load.tls_resume and self.sock.session is not None:
            self.work.tls_session = self.sock.session

    def write(self) -> None:
        out = self.session.outbox
        if not out:
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        try:
            self.sock.sendall(data)
        except GreenletExit:
            self.broken = True
            raise
        except OSError as e:
            raise Lost("reset", str(e) or "write failed") from None

    def read(self, want: str) -> tuple:
        """Read until an event of kind ``want`` (or the session fails or closes); return that event.

        Every reply on the way is timed; what the core queued in answer is written at once; a
        STARTTLS upgrade is done on the way. A FAILED or CLOSED event in the same read is kept
        in ``dead`` for the caller to act on.
        """
        w = self.work
        session = self.session
        timeouts = w.timeout_us
        self.dead = None
        deadline = 0  # µs: when the awaited reply is overdue (0: set it); part of a reply keeps it
        while True:
            expecting = session.expecting
            if not deadline:
                deadline = w.now() + (timeouts[expecting] if expecting else timeouts[QUIT])
            limit = deadline - w.now()
            if self.drain_until is not None:
                limit = min(limit, self.drain_until - w.now())
            sock = self.sock
            sock.settimeout(max(limit, 1) / 1e6)
            try:
                data = sock.recv(65536)
            except (socket.timeout, TimeoutError):
                raise Lost("timeout", f"no reply to {expecting} in time") from None
            except OSError as e:
                raise Lost("reset", str(e) or "connection reset") from None
            if not data:
                raise Lost("closed", "server closed the connection")
            now = w.now()
            events = session.receive(data)
            if events:
                deadline = 0  # a reply came: the next one gets its own phase's timeout
            self.write()
            found = None
            upgrade = False
            for event in events:
                kind = event[0]
                if kind is REPLY:
                    self.phase(event[1], now - self.mark, event[2].code)
                    self.mark = now
                elif kind is want and found is None:
                    found = event
                elif kind is FAILED or kind is CLOSED:
                    self.dead = event
                    if found is None:
                        found = event
                elif kind is TLS_START:
                    upgrade = True
            if found is not None:
                return found
            if upgrade:
                self.start_tls(now)
                session.tls_started()
                self.write()

    def close(self, quit: bool = True) -> None:
        """QUIT (waiting briefly for the reply, RFC 5321 §4.1.1.10) and close; safe to call twice."""
        if self.sock is None:
            return
        self.work.connections -= 1
        if quit and not self.broken and self.dead is None:
            try:
                self.session.quit()
                self.mark = now = self.work.now()   # the quit phase is QUIT's round trip, not the idle time before
                self.drain_until = now + int(QUIT_WAIT * 1e6)
                self.write()
                self.read(CLOSED)
            except (Lost, OSError, GreenletExit):
                pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.sock = None


class Slot:
    """One user's connection and its place in the closed or open loop."""

    def __init__(self, work: Work, on_phase: PhaseHook | None = None):
        self.work = work
        self.on_phase = on_phase
        self.conn: Conn | None = None
        self.next_intended: int | None = None

    # -- the user's task ------------------------------------------------------------

    def step(self) -> Outcome | None:
        """Send the next message if there is one now; None when there was nothing to report."""
        w = self.work
        w.wait_for_start()
        if w.open_loop:
            if w.stopping:
                return self._idle()
            item = w.next_item(IDLE_POLL)
            if item is None:
                if w.now() >= w.end_us or w.issued >= w.limit:
                    self.close()   # nothing more will come: QUIT now, as natively
                return None
            intended, out, attempt = item
            outcome = self.send(intended, out, attempt)
            if outcome.retry is not None:
                w.defer(intended, *outcome.retry)   # the connection serves other messages meanwhile
                return None
            return outcome
        now = w.now()
        intended = self.next_intended if self.next_intended is not None else now
        if intended > now:      # think time
            gevent.sleep((intended - now) / 1e6)
        if not w.may_begin(w.now()):
            return self._idle()
        w.take()
        outcome = self.send(intended)
        while outcome.retry is not None:
            # Closed loop: the session itself waits, then sends the same message again.
            out, attempt = outcome.retry
            try:
                gevent.sleep(w.retry_wait(attempt))
            except GreenletExit:
                w.fail(w.now(), intended, "retry", 0, "not_sent", "run ended before the retry was due", begun=False)
                raise
            outcome = self.send(intended, out, attempt)
        return outcome

    def _idle(self) -> None:
        self.close()
        gevent.sleep(IDLE_POLL)
        return None

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def send(self, intended: int, out=None, attempt: int = 0) -> Outcome:
        """One try of a message intended at ``intended`` (µs): a connection if needed, then the transaction."""
        w = self.work
        mpc = w.load.messages_per_connection
        conn = self.conn
        if conn is not None and mpc and conn.sent >= mpc:
            # The old connection says QUIT on its own while this one opens (as natively).
            self.conn = None
            gevent.spawn(conn.close)
            conn = None
        start = None
        if conn is None:
            opened_at = w.now()
            failure = self._open(intended)
            if failure is not None:
                return failure
            if not w.open_loop:
                start = opened_at   # closed loop: a new connection's set-up is part of the message's service
        return self._transaction(intended, start, out, attempt)

    # -- connection -------------------------------------------------------------------

    def _open(self, intended: int) -> Outcome | None:
        """Connect (and TLS), read the banner, EHLO, STARTTLS, AUTH; a failure fails the message waiting."""
        w = self.work
        load = w.load
        now = w.now()
        implicit = load.tls == "implicit"
        session = ClientSession(load.helo, load.pipelining, w.lmtp, tls=load.tls, auth=w.auth, tls_active=implicit)
        try:
            t = w.target
            if t.path:
                sock = gsocket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(load.timeouts.connect)
                sock.connect(t.path)
            else:
                sock = gsocket.create_connection((t.host, t.port), timeout=load.timeouts.connect)
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except GreenletExit:
            w.fail(w.now(), intended, CONNECT, 0, "not_sent", "run ended before a connection was ready", begun=False)
            raise
        except OSError as e:
            kind = ("timeout" if isinstance(e, (socket.timeout, TimeoutError)) else
                    "refused" if isinstance(e, ConnectionRefusedError) else "connect_error")
            out = self._failed(intended, CONNECT, 0, kind, str(e) or kind, begun=False)
            gevent.sleep(RECONNECT_BACKOFF)
            self.next_intended = w.now()
            return out
        connected = w.now()
        conn = self.conn = Conn(w, sock, session, connected, self.on_phase)
        conn.phase(CONNECT, connected - now)
        try:
            if implicit:   # RFC 8314
                sock.settimeout(load.timeouts.connect)
                conn.start_tls(connected)
            kind, a, b = conn.read(READY)
        except GreenletExit:
            w.fail(w.now(), intended, session.expecting or BANNER, 0, "not_sent",
                   "run ended before a connection was ready", begun=False)
            self._drop()
            raise
        except Lost as e:
            phase = TLS if e.kind == "tls" else session.expecting or BANNER
            self._drop()
            return self._pause(self._failed(intended, phase, 0, e.kind, e.text, begun=False))
        if kind is not READY:
            self._drop()
            return self._pause(self._failed(intended, a, b.code, "reply" if b.code else "protocol", b.text,
                                            begun=False))
        conn.remember_tls()
        return None

    def _pause(self, outcome: Outcome) -> Outcome:
        """Closed loop, after a session that failed before it carried a message, or was lost with its
        first: a short pause before the next, so a server refusing or resetting every session gets no
        tight loop. The pause is the generator's choice, like think time: the next message is
        intended after it."""
        if not self.work.open_loop:
            gevent.sleep(RECONNECT_BACKOFF)
            self.next_intended = self.work.now()
        return outcome

    def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close(quit=False)

    # -- one transaction -----------------------------------------------------------

    def _transaction(self, intended: int, start: int | None, out, attempt: int) -> Outcome:
        w = self.work
        conn = self.conn
        session = conn.session
        out, txn = w.factory.attempt(out, w.bdat and session.capabilities.has("CHUNKING"))
        now = w.now()
        w.started(now)
        conn.sent += 1
        session.start_transaction(txn)
        conn.mark = now
        start = now if start is None else start
        killed: BaseException | None = None
        try:
            while True:
                try:
                    if killed is None:
                        conn.write()
                    kind, a, b = conn.read(DONE)
                    break
                except GreenletExit as e:
                    if killed is not None or conn.broken:
                        raise Lost("unfinished", "stopped while in flight") from e
                    killed = e   # let it finish (bounded by the scenario's drain time), then stop
                    conn.drain_until = w.now() + w.drain_us
        except Lost as e:
            phase = TLS if e.kind == "tls" else session.expecting or END_OF_DATA
            self._drop()
            kind_ = "unfinished" if killed is not None and e.kind == "timeout" else e.kind
            phase = failed_at(w.recorder, w.now(), phase, 0, kind_, e.text)[0]
            outcome = self._failed(intended, phase, 0, kind_, e.text, begun=True)
            if killed is not None or e.kind == "unfinished":
                raise killed or GreenletExit()
            # Lost with its first message: pause before the next connection, as natively.
            return self._pause(outcome) if conn.sent == 1 else outcome
        end = w.now()
        if kind is not DONE:   # FAILED or CLOSED before the transaction ended (421, garbage)
            phase, code, kind_ = failed_at(w.recorder, end, a, b.code, "reply" if b.code else "protocol", b.text)
            outcome = self._failed(intended, phase, code, kind_, b.text, begun=True)
        elif a:
            w.succeeded(intended, start, end, txn.wire)
            outcome = Outcome(True, end - intended, txn.wire)
        else:
            phase, reply = b
            if 400 <= reply.code < 500 and attempt < w.load.retries:
                # Deferred (RFC 5321 §4.2.5: 4xx means try again later) and the scenario asks to.
                w.deferred(end, phase, reply.code, reply.text)
                outcome = Outcome(False, end - intended, 0, phase, reply.code, "deferred", reply.text,
                                  retry=(out, attempt + 1))
                txn.rcpt_failures = []   # counted with the try that ends the message, as natively
            else:
                outcome = self._failed(intended, phase, reply.code, "reply", reply.text, begun=True)
        if txn.rcpt_failures and kind is DONE:
            w.recorder.refused_recipients(end, intended, txn.rcpt_failures, None if a else b[0])
        if conn.dead is not None:
            self._drop()
        self.next_intended = end + int(w.load.think_time * 1e6)
        if killed is not None:
            self.close()
            raise killed
        if kind is not DONE:
            # A reply or garbage ended the session (a 421 at MAIL): the pause before the next, as
            # natively (Runner.conn_failed); a server closing every session got ~1,900 a second.
            return self._pause(outcome)
        return outcome

    def _failed(self, intended: int, phase: str, code: int, kind: str, text: str, begun: bool) -> Outcome:
        w = self.work
        now = w.now()
        w.fail(now, intended, phase, code, kind, text, begun)
        self.next_intended = now
        return Outcome(False, now - intended, 0, phase, code, kind, text)
