"""One sink process: listening sockets, the connection set, idle sweeps, graceful drain."""

from __future__ import annotations

import asyncio
import os
import socket

from ..addresses import Address
from ..protocol.server import Envelope, ServerConfig, ServerHooks
from ..scenario import Sink
from .capture import Capture, open_capture
from .connection import SinkConnection
from .stats import SinkStats


class SinkHooks(ServerHooks):
    """Policy for the sink: store accepted messages when capturing."""

    def __init__(self, capture: Capture, stats: SinkStats):
        self.capture = capture
        self.stats = stats

    def message(self, envelope: Envelope, body: bytes | None, size: int):
        if body is not None:
            try:
                self.capture.store(envelope, body)
            except OSError as e:
                # A message we cannot store is not accepted (RFC 5321 §4.2.5: 451 local error).
                self.stats.capture_errors += 1
                return (451, "4.3.0", f"Cannot store message: {e.strerror}")
        return None

    def authenticate(self, mechanism: str, username: str, password: str) -> bool:
        self.stats.auth_ok += 1
        return True


def server_config(settings: Sink, keep_body: bool) -> ServerConfig:
    return ServerConfig(
        hostname=settings.hostname,
        extensions=tuple(settings.advertise),
        max_message_size=settings.max_message_size,
        max_recipients=settings.max_recipients,
        keep_body=keep_body,
        check_line_length=settings.check_line_length,
        lmtp=settings.lmtp,
    )


class SinkServer:
    """The sink in one process (a worker, or the only process)."""

    def __init__(self, settings: Sink, stats: SinkStats | None = None):
        self.settings = settings
        self.stats = stats or SinkStats()
        self.capture = open_capture(settings.capture)
        self.config = server_config(settings, self.capture.keep_body)
        self.hooks = SinkHooks(self.capture, self.stats)
        self.max_connections = settings.max_connections
        self.connections: set[SinkConnection] = set()
        self.draining = False
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task | None = None

    async def listen(self, address: Address, reuse_port: bool = False, sock: socket.socket | None = None) -> list[tuple]:
        """Start accepting; return the bound socket names (port 0 picks a free port)."""
        loop = asyncio.get_running_loop()
        factory = lambda: SinkConnection(self)  # noqa: E731
        if sock is not None:
            server = await loop.create_server(factory, sock=sock, backlog=4096)
        elif address.path:
            if os.path.exists(address.path):
                os.unlink(address.path)  # a stale socket file from an earlier run
            server = await loop.create_unix_server(factory, address.path, backlog=4096)
        else:
            server = await loop.create_server(factory, address.host, address.port, backlog=4096,
                                              reuse_port=reuse_port or None)
        self._servers.append(server)
        self._sweeper = self._sweeper or asyncio.ensure_future(self._sweep())
        return [s.getsockname() for s in server.sockets]

    def start_tls(self, conn: SinkConnection) -> None:
        # Wired by the TLS support (issue 5); without a context STARTTLS is never advertised.
        conn.transport.close()

    def connection_closed(self) -> None:
        pass

    async def _sweep(self) -> None:
        """Close connections idle for longer than ``idle_timeout`` (RFC 5321 §4.5.3.2.7).

        One timer for all connections, not one per read: a read only sets a flag.
        """
        timeout = self.settings.idle_timeout
        step = min(1.0, max(timeout / 4, 0.05))
        while True:
            await asyncio.sleep(step)
            for conn in list(self.connections):
                if conn.active:
                    conn.active = False
                    conn.idle = 0.0
                    continue
                conn.idle += step
                if conn.idle >= timeout and not conn.closed:
                    self.stats.timeouts += 1
                    conn.shutdown("Idle timeout, closing connection")

    async def drain(self, grace: float) -> None:
        """Stop accepting; let transactions in flight finish for up to ``grace`` s; close the rest.

        A connection between transactions is closed at once with 421; one in
        the middle of a transaction gets until its message is answered.
        """
        self.draining = True
        for server in self._servers:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self.connections:
            for conn in list(self.connections):
                if not conn.in_transaction:
                    conn.shutdown("Service shutting down")
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            conn.shutdown("Service shutting down")
        if self._sweeper:
            self._sweeper.cancel()
        await asyncio.sleep(0.05)  # let transports flush the 421s
        self.capture.close()
