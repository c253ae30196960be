"""One generator process: connections, the closed or open loop, stop and drain.

Closed loop: ``sessions`` slots, each sending its next message when the last
one ended (plus think time); a slot's message waits for its connection, so a
slow connect shows in response time. Open loop: arrivals come from the pure
:class:`~smtpbench.load.pacing.Schedule`; an arrival takes an idle connection,
or waits (FIFO) for one — opening a new one while fewer than
``max_connections`` exist — and its wait counts in its response time.

Nothing is dropped: every intended message ends as OK or as a failure with
its phase and kind (reply code, refused, reset, timeout, protocol,
not_sent when the run ended before it could be sent).
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from array import array
from collections import deque
from time import monotonic_ns

from ..addresses import Address
from ..protocol.client import BANNER, S_READY, ClientSession
from ..scenario import Scenario
from .connection import ClientConnection
from .cpumeter import CpuMeter
from .pacer import Pacer
from .pacing import Profile, Schedule
from .plan import RECONNECT_BACKOFF, failed_at, phase_timeouts, split
from .recorder import Recorder
from .upkeep import flusher, sweep, tick, warmup_end, watch_loop

BACKOFF_US = int(RECONNECT_BACKOFF * 1e6)

# s: at the end, how long connections that were sent QUIT get to answer and close before they are
# cut (within what is left of the drain): a polite end, and QUIT's own latency measured.
QUIT_WAIT = 1.0
# s: open loop, connections opened before t0, as many as this much of the starting rate's arrivals
# would take. A connection is ready 1-3 ms after it opens, and an arrival that finds none ready opens
# its own. Measured against smtp-sink at 5,000/s: 37-75 connections opened at the start and a first-
# second response p99 of 3.6-12.5 ms; with ten opened before t0, 13-19 and 0.7-1.6 ms (three runs each).
PREOPEN = 0.002


class Runner:
    def __init__(self, scenario: Scenario, target: Address, factory, t0_ns: int,
                 index: int = 0, count: int = 1, progress=None):
        load = scenario.load
        self.scenario = scenario
        self.load = load
        self.target = target
        self.factory = factory
        self.t0_ns = t0_ns
        self.index = index
        self.count = count
        self.progress = progress  # callable(dict) once per tick, or None
        self.recorder = Recorder(int(load.warmup * 1e6))
        self.timeout_us = phase_timeouts(scenario)
        self.open_loop = load.model == "open"
        self.limit = split(load.messages, index, count) if load.messages else math.inf
        self.end_us = int(load.duration * 1e6) if load.duration else 1 << 62
        self.mpc = load.messages_per_connection
        self.think = load.think_time
        self.think_us = int(load.think_time * 1e6)
        self.lmtp = scenario.target.lmtp or scenario.sink.lmtp
        self.ssl = None
        if load.tls != "none":
            from ..tls import client_context

            self.ssl = client_context(load.tls_verify, load.tls_resume)
        self.auth = (load.auth.mechanism, load.auth.username, load.auth.password) if load.auth else None
        self.bdat = load.bdat == "when-offered"
        self.chaining = load.pipeline_messages and not self.open_loop
        self.relay_log = array("q") if scenario.relay.enabled else None  # (seq, sent, accepted) flat: 24 octets each
        self.connections: set[ClientConnection] = set()
        self.idle: deque[ClientConnection] = deque()
        self.waiting: deque[int] = deque()   # open loop: intended times of arrivals without a connection
        self.retry_ready: deque[tuple] = deque()  # open loop: (intended, outgoing, attempt) due again
        self.retrying: dict[object, tuple] = {}   # timer handle -> (intended, outgoing, attempt) waiting to retry
        self.opening = 0
        self.openers: set[asyncio.Task] = set()   # connections being opened (see open)
        self.connecting: dict[object, int] = {}   # opener's token -> intended time of the message it holds
        self.greeting: set[ClientConnection] = set()  # open loop: connected, not READY yet
        self.issued = 0      # messages begun or failed before begin (counts toward the limit)
        self.in_flight = 0
        self.stopping = False
        self.ok = 0
        self.failed = 0
        self._all_done = asyncio.Event()
        self._all_closed = asyncio.Event()  # stopping and no connection left (see run)
        self.cpu = CpuMeter()
        self._paced: asyncio.Future | None = None  # open loop: done when the pacer has released all

    def now(self) -> int:
        return (monotonic_ns() - self.t0_ns) // 1000

    def interrupt(self) -> None:
        """End the load now, as at its duration (see :mod:`~smtpbench.load.stopping`): no new
        message; those in flight drain. ``totals.interrupted_us`` says when."""
        now = max(self.now(), 0)
        if self.stopping or now >= self.end_us:
            return
        self.end_us = now
        self.recorder.totals["interrupted_us"] = now
        if self._paced is not None and not self._paced.done():
            self._paced.set_result(None)  # the pacer releases nothing more (see _pace)

    # -- connections ----------------------------------------------------------

    def open(self, pending: int | None = None, delay: float = 0.0, retry: tuple | None = None) -> None:
        """Open a connection (after ``delay`` s); ``pending`` is the intended time of the message
        waiting for it (closed loop): its wait for the connection counts in its response time,
        so a caller that pauses on purpose (think time, back-off) intends it after the pause."""
        self.opening += 1
        task = asyncio.ensure_future(self._open(pending, retry, delay))
        self.openers.add(task)
        task.add_done_callback(self.openers.discard)

    async def _open(self, pending: int | None, retry: tuple | None, delay: float) -> None:
        loop = asyncio.get_running_loop()
        # The waiting message is the opener's until the connection is made, then the
        # connection's (ClientConnection.connection_made takes it): one owner, counted once,
        # whenever the run ends (a server that never accepts holds connects for minutes).
        token = object()
        if pending is not None:
            self.connecting[token] = pending
        if delay:
            await asyncio.sleep(delay)
        started = self.now()
        if pending is not None and pending > started:  # woken a little early (libuv timers tick in ms)
            self.connecting[token] = pending = started
        implicit = self.load.tls == "implicit"
        session = ClientSession(self.load.helo, self.load.pipelining, self.lmtp, tls=self.load.tls,
                                auth=self.auth, tls_active=implicit)
        factory = lambda: ClientConnection(self, session, started, token, retry)  # noqa: E731
        conn = None
        try:
            t = self.target
            coro = (loop.create_unix_connection(factory, t.path) if t.path
                    else loop.create_connection(factory, t.host, t.port))
            transport, made = await asyncio.wait_for(coro, self.load.timeouts.connect)
            conn = made
            if implicit:
                # RFC 8314 implicit TLS; the handshake is timed as its own phase.
                t_tls = self.now()
                # The banner may come with the end of the handshake, before start_tls returns the
                # TLS transport: the EHLO it prompts must not go out on the raw socket.
                conn.upgrading = True
                conn.transport = await asyncio.wait_for(
                    loop.start_tls(transport, conn, self.ssl, server_hostname=t.host or None),
                    self.load.timeouts.connect)
                conn.upgrading = False
                self._tls_done(conn, t_tls)
                conn.flush()
        except (OSError, asyncio.TimeoutError, ssl.SSLError) as e:
            self.opening -= 1
            now = self.now()
            kind = "timeout" if isinstance(e, asyncio.TimeoutError) else (
                "refused" if isinstance(e, ConnectionRefusedError) else "connect_error")
            text = str(e) or kind
            pending = self.connecting.pop(token, None)
            if conn is not None:  # made, then its TLS handshake failed: the connection had the message
                pending, conn.pending = conn.pending, None
                conn.abort()
            if pending is not None:
                self._fail(now, pending, "connect", 0, kind, text)
            elif self.open_loop and self.waiting:
                self._fail(now, self.waiting.popleft(), "connect", 0, kind, text)
            else:
                self.recorder.error(now, "connect", 0, kind, text)
            await asyncio.sleep(RECONNECT_BACKOFF)
            # A closed-loop slot goes on with a new connection; the open loop's next arrivals
            # open their own (a retry's failed connect issues no new message).
            if not self.open_loop and pending is not None and self._may_begin(self.now()):
                self.issued += 1
                self.open(self.now())
            else:
                if self.open_loop:
                    self._dispatch()
                self._check_done()
            return
        self.opening -= 1
        if conn.session.state < S_READY:
            self.greeting.add(conn)  # still on its way for _dispatch, which must not open another

    def start_tls(self, conn: ClientConnection, now: int) -> None:
        """The server said 220 to STARTTLS: upgrade (RFC 3207), then greet again."""
        asyncio.ensure_future(self._upgrade(conn, now))

    async def _upgrade(self, conn: ClientConnection, started: int) -> None:
        loop = asyncio.get_running_loop()
        try:
            conn.transport = await asyncio.wait_for(
                loop.start_tls(conn.transport, conn, self.ssl, server_hostname=self.target.host or None),
                self.load.timeouts.connect)
        except (OSError, asyncio.TimeoutError, ssl.SSLError, ConnectionError) as e:
            self.conn_failed(conn, "tls", 0, "tls", str(e) or "TLS handshake failed", self.now())
            conn.abort()
            return
        self._tls_done(conn, started)
        conn.session.tls_started()
        conn.flush()

    def _tls_done(self, conn: ClientConnection, started: int) -> None:
        now = self.now()
        self.recorder.phase("tls", now - started)
        conn.mark = now
        resumed = self.ssl.remember(conn.transport.get_extra_info("ssl_object"))
        self.recorder.totals["tls_resumed" if resumed else "tls_full"] += 1

    def conn_ready(self, conn: ClientConnection, now: int) -> None:
        self.greeting.discard(conn)
        if conn.session.state != S_READY:
            return  # a later reply of the same read ended the session: its FAILED event follows
        if self.open_loop:
            self._make_idle(conn)
            self._dispatch()
            return
        intended, conn.pending = conn.pending, None
        if intended is not None:
            retry, conn.retry = conn.retry, None
            self._begin(conn, intended, now, start=conn.opened_at, retry=retry)
        else:
            conn.quit()

    def _make_idle(self, conn: ClientConnection) -> None:
        conn.idle = True
        self.idle.append(conn)

    def conn_failed(self, conn: ClientConnection, phase: str, code: int, kind: str, text: str, now: int) -> None:
        """The session cannot go on (bad banner, 421, garbage): fail what waited on it."""
        if conn.txn_intended is not None:
            phase, code, kind = failed_at(self.recorder, now, phase, code, kind, text)
            self._fail(now, conn.txn_intended, phase, code, kind, text)
            conn.txn_intended = None
            self.in_flight -= 1
            self._fail_chained(conn, now, kind, text)
        elif conn.pending is not None:
            self._fail(now, conn.pending, phase, code, kind, text)
            conn.pending = None
        elif self.open_loop and self.waiting and not conn.sent:
            # Open loop: a connection that failed before it was ready fails the oldest waiting
            # arrival, as a failed connect does (see _open); no silent reconnect loop.
            self._fail(now, self.waiting.popleft(), phase, code, kind, text)
        else:
            self.recorder.error(now, phase, code, kind, text)
            return
        if not self.open_loop and self._may_begin(now):
            # The slot goes on with a new connection, as after a reset (see conn_lost), after
            # a short pause: a server that refuses every session must not get a tight loop.
            self.issued += 1
            self.open(now + BACKOFF_US, delay=RECONNECT_BACKOFF)

    def conn_lost(self, conn: ClientConnection, exc: Exception | None, now: int) -> None:
        self.connections.discard(conn)
        if self.stopping and not self.connections:
            self._all_closed.set()
        self.greeting.discard(conn)
        if conn.idle:
            try:
                self.idle.remove(conn)
            except ValueError:
                pass
        phase = conn.session.expecting or BANNER
        kind, text = ("reset", str(exc)) if exc else ("closed", "server closed the connection")
        # Messages this connection finished: the one in flight and one chained behind it were not.
        finished = conn.sent - (conn.txn_intended is not None) - (conn.chained is not None)
        if conn.txn_intended is not None:
            phase = failed_at(self.recorder, now, phase, 0, kind, text)[0]
            self._fail(now, conn.txn_intended, phase, 0, kind, text)
            conn.txn_intended = None
            self.in_flight -= 1
            self._fail_chained(conn, now, kind, text)
            replace = now
        else:
            replace, conn.pending = conn.pending, None
            if replace is not None:
                self._fail(now, replace, phase, 0, kind, text)
                replace = now
            elif self.open_loop and not conn.cut and conn.session.state < S_READY:
                # Lost by the server before it was ready: as in conn_failed (silent, each waiting
                # arrival opened another at once: a loop of 1,600 connections in 2 s at 50/s).
                if self.waiting:
                    self._fail(now, self.waiting.popleft(), phase, 0, kind, text)
                else:
                    self.recorder.error(now, phase, 0, kind, text)
        if not self.open_loop and replace is not None and self._may_begin(now):
            # The slot goes on with a new connection (RFC 5321 §3.8: a client reconnects after 421):
            # at once when this one carried a message before the one lost (a server that closes
            # after N), after RECONNECT_BACKOFF when it carried none. The pause is the generator's
            # choice, like think time: the next message is intended after it, not before.
            self.issued += 1
            if finished:  # (not conn.sent > 1: that counted a message chained at the 354)
                self.open(now)
            else:
                self.open(now + BACKOFF_US, delay=RECONNECT_BACKOFF)
        elif self.open_loop:
            self._dispatch()
        self._check_done()

    # -- transactions -----------------------------------------------------------

    def _may_begin(self, now: int) -> bool:
        return not self.stopping and now < self.end_us and self.issued < self.limit

    def _begin(self, conn: ClientConnection, intended: int, now: int, start: int | None = None,
               retry: tuple | None = None, chained: bool = False) -> None:
        """Start a message on a READY connection (or ``chained`` behind the one in flight):
        a new one, or ``retry`` = (outgoing, attempt)."""
        # A retry keeps its header block, X-Smtpbench-Sent too: its delivery latency (relay mode)
        # counts from the first attempt, as its response time does.
        bdat = self.bdat and conn.session.capabilities.has("CHUNKING")
        if retry is None and not bdat:
            out = txn = self.factory.next()  # the common case of MessageFactory.attempt, without its call
            attempt = 0
        else:
            out, attempt = retry if retry is not None else (None, 0)
            out, txn = self.factory.attempt(out, bdat)
        self.in_flight += 1
        self.recorder.started(now)
        if chained:
            conn.chain(txn, intended, now, out, attempt)
            return
        conn.begin(txn, intended, now, out, attempt)
        if start is not None:
            conn.txn_start = start

    def txn_done(self, conn: ClientConnection, ok: bool, failure, now: int) -> None:
        rec = self.recorder
        intended = conn.txn_intended
        conn.txn_intended = None
        self.in_flight -= 1
        txn = conn.txn
        if ok:
            rec.ok(intended, conn.txn_start, now, conn.txn_size)
            self.ok += 1
            if self.relay_log is not None:
                # What the server under test accepted, when (wall clock): joined with the sink's arrivals.
                self.relay_log.extend((conn.out.seq, conn.out.sent, time.time_ns() // 1000))
        elif 400 <= failure[1].code < 500 and conn.attempt < self.load.retries and failure[1].code != 421:
            # Deferred (RFC 5321 §4.2.5: 4xx means try again later) and the scenario asks to:
            # the same message goes again after the schedule's wait; its intended start stays,
            # so the wait shows in its response time.
            phase, reply = failure
            rec.error(now, phase, reply.code, "deferred", reply.text)
            rec.totals["retries"] += 1
            self._schedule_retry(conn, intended, conn.out, conn.attempt + 1)
            self._check_done()
            return
        else:
            phase, reply = failure
            self._fail(now, intended, phase, reply.code, "reply", reply.text)
        if txn.rcpt_failures:
            rec.refused_recipients(now, intended, txn.rcpt_failures, None if ok else failure[0])
        if self.open_loop:
            if self.mpc and conn.sent >= self.mpc:
                conn.quit()
            else:
                self._make_idle(conn)
            self._dispatch()
        else:
            intended_next = now + self.think_us
            if conn.chained is not None:
                conn.adopt_chained()  # the slot's next message is out already
            elif not self._may_begin(now):
                conn.quit()
            elif (self.mpc and conn.sent >= self.mpc) or conn.session.state != S_READY:
                # (Not READY: a reply later in the same read ended the session; its event follows.)
                conn.quit()
                self.issued += 1
                self.open(intended_next, delay=self.think)  # think time before the next, as on a kept one
            else:
                self.issued += 1
                if self.think > 0:
                    asyncio.get_running_loop().call_later(self.think, self._think_over, conn, intended_next)
                else:
                    self._begin(conn, intended_next, now)
        if self.stopping:  # only then can the run be done (see _check_done)
            self._check_done()

    def chain(self, conn: ClientConnection, now: int) -> None:
        """``pipeline_messages``: the slot's next message goes out behind the data of this one
        (RFC 2920 §3.1), as a closed loop without think time would send it on the 250."""
        if self._may_begin(now) and not (self.mpc and conn.sent >= self.mpc):
            self.issued += 1
            self.recorder.totals["chained"] += 1
            self._begin(conn, now, now, chained=True)

    def _fail_chained(self, conn: ClientConnection, now: int, kind: str, text: str) -> None:
        """The connection ended under a chained message too: it fails with the one in flight, at
        its own first reply (MAIL's: the ones before it belong to the message in flight). A reply
        or garbage that ended the session (a 421 to the message before) was not its own: it fails
        ``closed`` then; a reset, a timeout or the drain's end it shares."""
        if conn.chained is not None:
            self._fail(now, conn.chained[0], "mail", 0, "closed" if kind in ("reply", "protocol") else kind, text)
            conn.chained = None
            self.in_flight -= 1

    def _schedule_retry(self, conn: ClientConnection, intended: int, out, attempt: int) -> None:
        schedule = self.load.retry_schedule or [1.0]
        wait = schedule[min(attempt - 1, len(schedule) - 1)]
        item = (intended, out, attempt)
        loop = asyncio.get_running_loop()
        if self.open_loop:
            # The connection serves other arrivals meanwhile.
            if self.mpc and conn.sent >= self.mpc:
                conn.quit()
            else:
                self._make_idle(conn)
            handle = loop.call_later(wait, self._retry_due, None, item)
        else:
            # Closed loop: the session itself waits, then sends the same message again.
            handle = loop.call_later(wait, self._retry_due, conn, item)
        self.retrying[handle] = item
        if self.open_loop:
            self._dispatch()

    def _retry_due(self, conn: ClientConnection | None, item: tuple) -> None:
        for handle, it in list(self.retrying.items()):
            if it is item:
                del self.retrying[handle]
                break
        intended, out, attempt = item
        if conn is None:
            self.retry_ready.append(item)
            self._dispatch()
        elif not conn.closed and conn.session.state == S_READY:
            self._begin(conn, intended, self.now(), retry=(out, attempt))
        else:
            self.open(intended, retry=(out, attempt))

    def _think_over(self, conn: ClientConnection, intended: int) -> None:
        if conn.closed:
            self._fail(self.now(), intended, "connect", 0, "closed", "connection closed during think time")
            return
        now = self.now()
        self._begin(conn, min(intended, now), now)  # (a timer may wake a little early)

    def _fail(self, now: int, intended: int, phase: str, code: int, kind: str, text: str) -> None:
        self.recorder.failed(now, intended, phase, code, kind, text)
        self.failed += 1

    # -- open loop --------------------------------------------------------------

    def _dispatch(self) -> None:
        if not (self.waiting or self.retry_ready):
            return  # (the common case on each completion: nothing queued, so nothing to start or open)
        now = self.now()
        while (self.retry_ready or self.waiting) and self.idle:
            conn = self.idle.popleft()
            if conn.closed or conn.session.state != S_READY:  # ended by a later reply of its last read
                continue
            if self.retry_ready:
                intended, out, attempt = self.retry_ready.popleft()
                self._begin(conn, intended, now, retry=(out, attempt))
            else:
                self._begin(conn, self.waiting.popleft(), now)
        want = len(self.waiting) + len(self.retry_ready) - self.opening - len(self.greeting)
        room = self._connection_cap() - len(self.connections) - self.opening
        for _ in range(max(0, min(want, room))):
            self.open()

    def _connection_cap(self) -> int:
        """This process's share of ``max_connections`` (open loop), at least one."""
        total = self.load.max_connections
        return max(total // self.count + (1 if self.index < total % self.count else 0), 1)

    async def _pace(self) -> None:
        """Release the schedule's arrivals as they come due (see :class:`~smtpbench.load.pacer.Pacer`)."""
        load = self.load
        profile = Profile(load.rate, load.stages, load.duration)
        if load.stages:
            self.end_us = min(self.end_us, int(profile.length * 1e6)) if load.duration else int(profile.length * 1e6)
        schedule = Schedule(profile, load.arrival, self.scenario.seed, self.index, self.count)
        # Warm connections for the first arrivals (see PREOPEN); they open before t0, like the pacer.
        warm = max(1, math.ceil(profile.rate_at(0.0) / self.count * PREOPEN))
        for _ in range(min(warm, self._connection_cap(), self.limit)):
            self.open()
        loop = asyncio.get_running_loop()
        finished = self._paced = loop.create_future()
        pacer = Pacer(loop, schedule, self, finished)
        pacer.start()
        try:
            await finished
        finally:
            pacer.close()

    def arrived(self, due: list[int], now: int) -> None:
        """The pacer's arrivals now due (intended times, in order): queue them and start them."""
        rec = self.recorder
        for intended in due:
            rec.scheduled(intended, now)
        self.issued += len(due)
        self.waiting.extend(due)
        self._dispatch()

    # -- the run ----------------------------------------------------------------

    def _pending(self) -> int:
        return sum(1 for c in self.connections if c.pending is not None)

    def _check_done(self) -> None:
        if (self.stopping and self.in_flight == 0 and not self._pending() and not self.waiting and self.opening == 0
                and not self.retrying and not self.retry_ready):
            self._all_done.set()

    async def run(self) -> dict:
        """Run to the end (duration or message count), drain, and return the recorder's export."""
        cpu0, wall0 = time.process_time(), monotonic_ns()
        tasks = [asyncio.ensure_future(c) for c in (tick(self), watch_loop(self.recorder, self.now), sweep(self),
                                                    flusher(self.recorder))]
        if self.recorder.warmup_us:
            tasks.append(asyncio.ensure_future(warmup_end(self.recorder, self.now)))
        if self.open_loop:
            # The pacer starts before t0 with its timer set for the first arrival (it never sends
            # early): started after t0, its set-up would delay the first arrivals.
            await self._pace()
        else:
            while self.now() < 0:  # all processes start together at t0 (timers may fire early)
                await asyncio.sleep(max(-self.now() / 1e6, 0.0005))
            for _ in range(split(self.load.sessions, self.index, self.count)):
                if self.issued >= self.limit or self.now() >= self.end_us:  # (interrupted before t0: none)
                    break  # (once spun on: sessions = 10**9 with messages = 5 ran for minutes, past Ctrl-C)
                self.issued += 1
                self.open(self.now())
            while self.now() < self.end_us and (self.issued < self.limit or self.in_flight or self.opening
                                                or self._pending()):
                await asyncio.sleep(0.01)
        self.stopping = True
        # No new message from here on: the drain. An open loop that ran its schedule out (not its
        # message count) stopped at its last arrival, one gap before the schedule's end: the
        # load's window is the schedule's (a 3 s run at 300/s ended at 2.997 s and lost its
        # last whole interval from every rate; interrupted, end_us is when).
        ran_out = self.open_loop and self.issued < self.limit
        self.recorder.totals["load_end_us"] = self.end_us if ran_out else min(self.end_us, max(self.now(), 0))
        for conn in list(self.idle):
            conn.quit()
        self.idle.clear()
        self._check_done()
        drain_end = time.monotonic() + self.load.drain
        try:
            await asyncio.wait_for(self._all_done.wait(), self.load.drain)
            # Every message done: connections that served the drain's last ones say QUIT too
            # (RFC 5321 §4.1.1.10), and the QUITs get answered, within the drain.
            for conn in list(self.idle):
                conn.quit()
            self.idle.clear()
            if self.connections:
                await asyncio.wait_for(self._all_closed.wait(), min(QUIT_WAIT, drain_end - time.monotonic()))
        except asyncio.TimeoutError:
            pass
        now = self.now()
        for task in self.openers:
            task.cancel()
        for pending in self.connecting.values():
            self._fail(now, pending, "connect", 0, "not_sent", "run ended before a connection was made")
        self.connecting.clear()
        for conn in list(self.connections):
            if conn.txn_intended is not None:
                text = "still in flight when the drain period ended"
                phase = failed_at(self.recorder, now, conn.session.expecting or "end_of_data", 0, "unfinished", text)[0]
                self._fail(now, conn.txn_intended, phase, 0, "unfinished", text)
                conn.txn_intended = None
                self.in_flight -= 1
                self._fail_chained(conn, now, "unfinished", text)
            elif conn.pending is not None:  # connected, not yet greeted (or still in EHLO, TLS, AUTH)
                self._fail(now, conn.pending, conn.session.expecting or BANNER, 0, "not_sent",
                           "run ended before a connection was ready")
                conn.pending = None
            conn.abort()
        while self.waiting:
            self._fail(now, self.waiting.popleft(), "queue", 0, "not_sent", "run ended before a connection was free")
        for handle, (intended, _, _) in list(self.retrying.items()):
            handle.cancel()
            self._fail(now, intended, "retry", 0, "not_sent", "run ended before the retry was due")
        self.retrying.clear()
        while self.retry_ready:
            self._fail(now, self.retry_ready.popleft()[0], "retry", 0, "not_sent", "run ended before the retry was sent")
        # Let the connections cut above report their loss (connection_lost runs a loop pass later).
        for _ in range(50):
            if not self.connections:
                break
            await asyncio.sleep(0.01)
        for t in tasks:
            t.cancel()
        if self.now() < self.recorder.warmup_us:
            self.recorder.end_warmup()  # the run ended inside its warm-up: all its phase values are the warm-up's
        self.recorder.totals["duration_us"] = self.now()
        # The generator's CPU for the run itself: no interpreter start, imports or result file.
        self.recorder.totals["cpu_us"] = int((time.process_time() - cpu0) * 1e6)
        self.recorder.totals["cpu_wall_us"] = (monotonic_ns() - wall0) // 1000  # what cpu_us is over
        self.recorder.totals["issued"] = self.issued
        self.recorder.totals["t0_wall_us"] = time.time_ns() // 1000 - self.now()
        export = self.recorder.export()
        export["relay_accepted"] = self.relay_log if self.relay_log is not None else array("q")
        return export
