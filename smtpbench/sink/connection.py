"""The sink's per-connection driver: an ``asyncio.Protocol`` over :class:`ServerSession`.

Thin by design (httpcore's shape): bytes in go to the protocol core, the
replies it returns go out in one ``writelines`` call per read (asyncpg and
uvloop's habit), and flow control is honoured: when the peer stops reading
our replies, we stop reading its commands, so it cannot grow our memory.

Faults the policy asks for are carried out here, the only place with a clock
and a socket: a delayed reply pauses reading until the core is resumed, a
tarpit writes the reply a few octets at a time, a bandwidth cap pauses
reading in proportion to what arrived, a disconnect aborts the transport.
"""

from __future__ import annotations

import asyncio

from ..protocol.server import BDAT, CLOSED, DATA, INIT, READY, ServerSession

TARPIT_TICK = 0.05  # s between the pieces of a tarpitted reply
_BODY = (DATA, BDAT)  # session states in which octets are message data


class SinkConnection(asyncio.Protocol):
    __slots__ = ("server", "session", "transport", "active", "idle", "closed", "shut", "client", "_holds", "_rate",
                 "_drained")

    def __init__(self, server):
        self.server = server
        self.session: ServerSession | None = None
        self.transport: asyncio.Transport | None = None
        self.active = True   # set by a read that made progress (see data_received); the sweeper clears it
        self.idle = 0.0      # seconds without input, counted by the sweeper
        self.closed = False
        self.shut = False    # shutdown() sent its 421 and asked the transport to close
        self.client = ""
        self._holds: set[str] = set()  # why reading is paused: flow, fault, tarpit, bandwidth, tls
        self._rate = 0.0               # bandwidth cap in octets/s (a connect fault)
        self._drained: asyncio.Future | None = None  # what writable() waits on

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        server = self.server
        stats = server.stats
        stats.connections_total += 1
        policy = server.policy
        if policy is None:
            hooks = server.hooks
        else:
            if policy.needs_client:
                peer = transport.get_extra_info("peername")
                self.client = peer[0] if isinstance(peer, tuple) else "local"
            hooks = server.fault_hooks(self.client)
        self.session = session = ServerSession(server.config, stats, hooks)
        if len(server.connections) >= server.max_connections or server.draining:
            # RFC 5321 §3.8: 421 when the service is not available, then close.
            stats.connections_refused += 1
            transport.writelines(session.refuse(421, "4.3.2", "Too many connections, try later"))
            transport.close()
            self.closed = True
            return
        server.connections.add(self)
        stats.connections_current += 1
        if server.settings.implicit_tls:
            stats.tls_handshakes += 1  # asyncio calls connection_made after the handshake
        if policy is None or not policy.on_accept:
            transport.write(session.greeting()[0])
            return
        if policy.counts_clients:
            policy.client_opened(self.client)
        self._greet(policy)

    def _greet(self, policy) -> None:
        """Connect- and banner-stage faults (RFC 5321 §3.1: a 554 greeting refuses service)."""
        session = self.session
        for stage in ("connect", "banner"):
            hit = policy.on_connect(self.client) if stage == "connect" else policy.decide("banner", self.client)
            if hit is None:
                continue
            if type(hit) is tuple:
                self.transport.writelines(session.refuse(*hit))
                self.transport.close()
                return
            if hit.kind == "disconnect":
                self.transport.abort()
                return
            if hit.kind == "bandwidth":
                self._rate = hit.rate
            elif hit.kind == "delay":
                self._hold("fault")
                asyncio.get_running_loop().call_later(hit.seconds, self._late_greeting, hit.reply)
                return
            elif hit.kind == "tarpit":
                self._slow_write(b"".join(session.greeting()), hit.rate)
                return
        self.transport.writelines(session.greeting())

    def _late_greeting(self, reply) -> None:
        if self.closed:
            return
        if reply is not None:
            self.transport.writelines(self.session.refuse(*reply))
            self.transport.close()
            return
        self.transport.writelines(self.session.greeting())
        self._release("fault")

    def data_received(self, data: bytes) -> None:
        session = self.session
        out = session.feed(data)
        if out or session.state in _BODY:
            # Progress resets the idle timer: a command answered, or message data (RFC 5321
            # §4.5.3.2.6 times a DATA block per send). A command line arriving an octet at a time
            # does not: it would hold the connection open for ever (RFC 5321 §4.5.3.2.7 times the
            # wait for the next command, not for its next octet).
            self.active = True
        if session.attention or self._rate:
            self._carry_out(out, len(data))  # close, abort, pause, tarpit, STARTTLS, bandwidth
            return
        # Most reads answer one command: write() skips writelines' list handling.
        if len(out) == 1:
            self.transport.write(out[0])
        elif out:
            self.transport.writelines(out)

    # -- faults ---------------------------------------------------------------

    def _carry_out(self, out: list[bytes], received: int = 0) -> None:
        session = self.session
        transport = self.transport
        if session.abort:
            transport.abort()  # a silent drop: RST, no reply
            return
        if session.tarpit and out:
            rate, session.tarpit = session.tarpit, 0.0
            self._slow_write(b"".join(out), rate)
            return
        if out:
            transport.writelines(out)
        if session.closing:
            transport.close()
            return
        if session.starttls:
            # Once, reading paused now: what the client pipelined behind STARTTLS is discarded
            # (RFC 3207 §4.2), and uvloop reads again at once after a full buffer: that read found
            # the session still waiting for the handshake and started another (one per read, all
            # but one waiting for ever). The handshake's own transport reads for itself.
            if "tls" not in self._holds:
                self._hold("tls")
                self.server.start_tls(self)
            return
        if session.paused:
            self._hold("fault")
            asyncio.get_running_loop().call_later(session.paused, self._resume)
        if self._rate and received:
            self._hold("bandwidth")
            asyncio.get_running_loop().call_later(received / self._rate, self._release, "bandwidth")

    def _resume(self) -> None:
        if self.closed:
            return
        out = self.session.resume()
        if not self.session.paused:
            self._release("fault")
        self._carry_out(out)

    def _slow_write(self, blob: bytes, rate: float) -> None:
        """Tarpit: write ``blob`` at ``rate`` octets/s, reading nothing meanwhile."""
        self._hold("tarpit")
        step = max(1, int(rate * TARPIT_TICK))
        loop = asyncio.get_running_loop()
        start = loop.time()
        size = len(blob)

        # Each piece leaves when its last octet is due at ``rate`` (deadlines from the start, so
        # timer jitter does not add up): never ahead of the rate, n octets take n/rate.
        def tick(pos: int) -> None:
            if self.closed:
                return
            end = min(pos + step, size)
            self.transport.write(blob[pos:end])
            if end < size:
                loop.call_at(start + min(end + step, size) / rate, tick, end)
                return
            self._release("tarpit")
            self._carry_out([])

        loop.call_at(start + min(step, size) / rate, tick, 0)

    def _hold(self, why: str) -> None:
        if not self._holds and self.transport is not None and not self.closed:
            self.transport.pause_reading()
        self._holds.add(why)

    def _release(self, why: str) -> None:
        self._holds.discard(why)
        if not self._holds and self.transport is not None and not self.closed:
            self.transport.resume_reading()

    # -- lifecycle --------------------------------------------------------------

    def tls_started(self, transport: asyncio.Transport) -> None:
        """The STARTTLS handshake is done: go on over ``transport``, the session from scratch."""
        self.transport = transport
        self._holds.discard("tls")  # the old transport stays paused; the new one reads
        self.session.tls_started()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        self._wake()
        server = self.server
        server.connections.discard(self)
        server.stats.connections_current -= 1
        policy = server.policy
        if policy is not None and policy.counts_clients:
            policy.client_closed(self.client)

    def pause_writing(self) -> None:
        self._hold("flow")

    def resume_writing(self) -> None:
        self._release("flow")
        self._wake()

    async def writable(self) -> None:
        """Until the transport takes our replies again (resume_writing) or the connection is lost."""
        while "flow" in self._holds and not self.closed:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def _wake(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    @property
    def in_transaction(self) -> bool:
        """True between MAIL and the end of the message (graceful shutdown waits for these)."""
        return self.session is not None and (self.session.state not in (READY, INIT, CLOSED) or bool(self.session.paused))

    def shutdown(self, text: str) -> None:
        """Close with 421 (RFC 5321 §3.8: the server is shutting down).

        A transport closes only once its write buffer is flushed; a peer that
        does not read (a pipelining flood that never takes its replies) keeps
        it open for ever. So a second call, once the first has had its chance
        (the next idle sweep, the next drain pass), aborts the connection: the
        421 went out once, and the connection's slot and buffers are freed.
        """
        if self.closed or self.transport is None:
            return
        if self.shut or self.session.starttls:
            # RFC 3207 §4: after our 220 to STARTTLS the next octets are TLS; a plaintext
            # 421 would be garbage to the handshake. Drop the connection (the TLS upgrade
            # then accounts for it, server._upgrade).
            self.shut = True
            self.transport.abort()
            return
        self.shut = True
        self.transport.writelines(self.session.refuse(421, "4.3.2", text))
        self.transport.close()
