"""The sink's per-connection driver: an ``asyncio.Protocol`` over :class:`ServerSession`.

Thin by design (httpcore's shape): bytes in go to the protocol core, the
replies it returns go out in one ``writelines`` call per read (asyncpg and
uvloop's habit), and flow control is honoured: when the peer stops reading
our replies, we stop reading its commands, so it cannot grow our memory.
"""

from __future__ import annotations

import asyncio
import logging

from ..protocol.server import CLOSED, INIT, READY, ServerSession

log = logging.getLogger("smtpbench.sink")


class SinkConnection(asyncio.Protocol):
    __slots__ = ("server", "session", "transport", "active", "idle", "closed", "_paused")

    def __init__(self, server):
        self.server = server
        self.session = ServerSession(server.config, server.stats, server.hooks)
        self.transport: asyncio.Transport | None = None
        self.active = True   # set on every read; the idle sweeper clears it
        self.idle = 0.0      # seconds without input, counted by the sweeper
        self.closed = False
        self._paused = False

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        server = self.server
        stats = server.stats
        stats.connections_total += 1
        if len(server.connections) >= server.max_connections or server.draining:
            # RFC 5321 §3.8: 421 when the service is not available, then close.
            stats.connections_refused += 1
            transport.writelines(self.session.refuse(421, "4.3.2", "Too many connections, try later"))
            transport.close()
            self.closed = True
            return
        server.connections.add(self)
        stats.connections_current += 1
        if server.settings.implicit_tls:
            stats.tls_handshakes += 1  # asyncio calls connection_made after the handshake
        transport.writelines(self.session.greeting())

    def data_received(self, data: bytes) -> None:
        self.active = True
        session = self.session
        out = session.feed(data)
        if out:
            self.transport.writelines(out)
        if session.closing:
            self.transport.close()
        elif session.starttls:
            self.server.start_tls(self)

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self.closed:
            return
        self.closed = True
        server = self.server
        server.connections.discard(self)
        server.stats.connections_current -= 1
        server.connection_closed()

    def pause_writing(self) -> None:
        if not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def resume_writing(self) -> None:
        if self._paused and self.transport is not None:
            self._paused = False
            if not self.closed:
                self.transport.resume_reading()

    @property
    def in_transaction(self) -> bool:
        """True between MAIL and the end of the message (graceful shutdown waits for these)."""
        return self.session.state not in (READY, INIT, CLOSED)

    def shutdown(self, text: str) -> None:
        """Close with 421 (RFC 5321 §3.8: the server is shutting down)."""
        if self.closed or self.transport is None:
            return
        self.transport.writelines(self.session.refuse(421, "4.3.2", text))
        self.transport.close()
