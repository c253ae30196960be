"""One sink process: listening sockets, the connection set, idle sweeps, graceful drain."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
import stat
from typing import Callable

from ..addresses import Address
from ..protocol.server import Envelope, ServerConfig, ServerHooks
from ..scenario import Sink
from .capture import Capture, open_capture
from .connection import SinkConnection
from .faults import FaultHooks, FaultPolicy
from .relay import HEAD_OCTETS, RelayLog
from .stats import SinkStats


class StartError(Exception):
    """The sink cannot start: one line naming the key (and its flag) that failed and why."""


def open_capture_checked(spec: str) -> Capture:
    try:
        return open_capture(spec)
    except OSError as e:
        raise StartError(f"key 'sink.capture' (--capture): cannot store messages at {spec!r}: {e.strerror or e} "
                         f"(maildir:DIR takes a folder, mbox:FILE a file)") from None


def _missing_tls_file(cert: str, key: str) -> str:
    """Which of the configured certificate and key files is not there ("" when both are)."""
    for path, name, flag in ((cert, "tls_cert", "--tls-cert"), (key, "tls_key", "--tls-key")):
        if path and not os.path.isfile(path):
            return f"key 'sink.{name}' ({flag}): no such file {path!r}"
    return ""


class SinkHooks(ServerHooks):
    """Policy for the sink: store accepted messages when capturing."""

    def __init__(self, capture: Capture, stats: SinkStats, users: dict[str, str] | None = None,
                 relay: RelayLog | None = None):
        self.capture = capture
        self.stats = stats
        self.users = users or {}
        self.relay = relay
        #: message() has nothing to do for a message whose body is not kept (FaultHooks skips it then).
        self.quiet = relay is None

    def message(self, envelope: Envelope, body: bytes | None, size: int):
        if self.relay is not None:
            self.relay.record(envelope.head or body or b"")
        if body is not None:
            try:
                self.capture.store(envelope, body)
            except OSError as e:
                # A message we cannot store is not accepted (RFC 5321 §4.2.5: 451 local error).
                self.stats.capture_errors += 1
                return (451, "4.3.0", f"Cannot store message: {e.strerror}")
        return None

    def authenticate(self, mechanism: str, username: str, password: str) -> bool:
        users = self.users
        ok = not users or users.get(username) == password
        if ok:
            self.stats.auth_ok += 1
        else:
            self.stats.auth_failed += 1
        return ok


def server_config(settings: Sink, keep_body: bool) -> ServerConfig:
    return ServerConfig(
        hostname=settings.hostname,
        extensions=tuple(settings.advertise),
        max_message_size=settings.max_message_size,
        max_recipients=settings.max_recipients,
        keep_body=keep_body,
        keep_head=HEAD_OCTETS if settings.relay_log else 0,
        check_line_length=settings.check_line_length,
        lmtp=settings.lmtp,
        tls_active=settings.implicit_tls,
        auth_mechanisms=tuple(settings.auth_mechanisms),
        auth_required=settings.auth_required,
    )


def _clear_stale_socket(path: str) -> None:
    """Remove a unix socket file left by an earlier run, so its path can be bound again; raise
    OSError for anything else there: a file that is not a socket, or a socket a server answers on."""
    try:
        found = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(found.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket (not removed)")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: stale
        return
    except OSError:
        return  # cannot tell (permissions, say): binding will say what is wrong
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another server is listening on {path}")


def handshake_failed(exc: BaseException | None) -> bool:
    """Whether a TLS handshake (STARTTLS or implicit) that ended with ``exc`` counts in ``tls_failures``.

    Octets that are not a ClientHello (ssl.SSLError) and a stall past the timeout do; a handshake
    that succeeded (None) does not, nor a peer that closed before it ended (ConnectionResetError:
    a port probe or health check on the implicit port, a client that left after our 220 to
    STARTTLS). One rule for both, so the count means one thing.
    """
    return exc is not None and not isinstance(exc, ConnectionResetError)


def loop_tls_protocol(loop: asyncio.AbstractEventLoop) -> type | None:
    """The class ``loop.create_server(ssl=...)`` wraps each connection in, or None when it cannot be
    found: it is not public API (uvloop's is ``uvloop.loop.SSLProtocol``, asyncio's
    ``asyncio.sslproto.SSLProtocol``), and a uvloop without it must still serve implicit TLS."""
    try:
        if type(loop).__module__.startswith("uvloop"):
            from uvloop.loop import SSLProtocol
        else:
            from asyncio.sslproto import SSLProtocol
    except ImportError:
        return None
    return SSLProtocol


class SinkServer:
    """The sink in one process (a worker, or the only process)."""

    def __init__(self, settings: Sink, stats: SinkStats | None = None, seed: int = 1):
        self.settings = settings
        self.stats = stats or SinkStats()
        self.capture = open_capture_checked(settings.capture)
        self.config = server_config(settings, self.capture.keep_body)
        self.relay = RelayLog(settings.relay_log, self.stats) if settings.relay_log else None
        self.hooks = SinkHooks(self.capture, self.stats, settings.auth_users, self.relay)
        policy = FaultPolicy(settings, seed, self.stats)
        self.policy = policy if policy.active else None
        self.ssl = self.tls_context(settings)
        self.max_connections = settings.max_connections
        self.connections: set[SinkConnection] = set()
        self.draining = False
        self._servers: list[asyncio.AbstractServer] = []
        self._sweeper: asyncio.Task | None = None
        self._shared_hooks: FaultHooks | None = None
        self._socket_files: list[tuple[str, int, int]] = []  # (path, st_dev, st_ino) of unix sockets we made

    def fault_hooks(self, client: str) -> FaultHooks:
        """The fault policy's hooks for a connection from ``client``.

        Only greylisting asks the hooks who the client is; without it, one
        instance serves every connection (a connection costs less to open).
        """
        policy = self.policy
        if policy.greylist is not None:
            return FaultHooks(policy, self.hooks, client)
        shared = self._shared_hooks
        if shared is None or shared.policy is not policy:
            shared = self._shared_hooks = FaultHooks(policy, self.hooks, "")
        return shared

    def set_faults(self, rules: list) -> None:
        """Replace the fault rules while running (the HTTP endpoint's PUT /faults)."""
        if self.policy is None:
            self.policy = FaultPolicy(self.settings.model_copy(update={"faults": rules}), 1, self.stats)
        else:
            self.policy.set_rules(rules)

    def _implicit_tls(self, loop: asyncio.AbstractEventLoop) -> tuple[Callable | None, dict]:
        """The protocol factory for implicit TLS (RFC 8314): the TLS protocol over each connection,
        made as ``create_server(ssl=...)`` makes it (the loop's own class), but with a waiter of
        ours. The handshake comes before the connection reaches SinkConnection, which never hears
        of one that failed: counted here, by the rule a failed STARTTLS one is (handshake_failed). The handshake is
        bounded by the idle timeout (asyncio's default, 60 s, held a stalled one past it). Returns the
        factory (None: the plain one) and create_server's TLS arguments."""
        timeout = self.settings.idle_timeout
        timeout = timeout if timeout > 0 else None  # (it must be > 0)
        SSLProtocol = loop_tls_protocol(loop)
        if SSLProtocol is None:  # TLS as create_server makes it, its failures uncounted
            return None, {"ssl": self.ssl, **({"ssl_handshake_timeout": timeout} if timeout else {})}
        stats = self.stats

        def handshake_done(waiter: asyncio.Future) -> None:
            if not waiter.cancelled() and handshake_failed(waiter.exception()):
                stats.tls_failures += 1

        def factory() -> asyncio.BaseProtocol:
            waiter = loop.create_future()
            waiter.add_done_callback(handshake_done)
            return SSLProtocol(loop, SinkConnection(self), self.ssl, waiter, server_side=True,
                               ssl_handshake_timeout=timeout)
        return factory, {}

    async def listen(self, address: Address, reuse_port: bool = False, sock: socket.socket | None = None) -> list[tuple]:
        """Start accepting; return the bound socket names (port 0 picks a free port)."""
        loop = asyncio.get_running_loop()
        factory, tls = self._implicit_tls(loop) if self.settings.implicit_tls else (None, {})
        factory = factory or (lambda: SinkConnection(self))
        if sock is not None:
            server = await loop.create_server(factory, sock=sock, backlog=4096, **tls)
        elif address.path:
            _clear_stale_socket(address.path)
            server = await loop.create_unix_server(factory, address.path, backlog=4096, **tls)
            try:
                made = os.lstat(address.path)
                self._socket_files.append((address.path, made.st_dev, made.st_ino))
            except (OSError, ValueError):  # not a file system path (abstract namespace)
                pass
        else:
            server = await loop.create_server(factory, address.host, address.port, backlog=4096,
                                              reuse_port=reuse_port or None, **tls)
        self._servers.append(server)
        self._sweeper = self._sweeper or asyncio.ensure_future(self._sweep())
        return [s.getsockname() for s in server.sockets]

    def remove_socket_files(self) -> None:
        """Remove the unix socket files :meth:`listen` created, each only if it is still the
        socket made then (same device and inode): never a file another process put there since."""
        while self._socket_files:
            path, dev, ino = self._socket_files.pop()
            try:
                now = os.lstat(path)
                if (now.st_dev, now.st_ino) == (dev, ino) and stat.S_ISSOCK(now.st_mode):
                    os.unlink(path)
            except OSError:
                pass  # gone already, or not ours to remove

    @staticmethod
    def tls_context(settings: Sink):
        if not settings.wants_tls:
            return None
        from ..tls import self_signed, server_context

        cert, key = settings.tls_cert, settings.tls_key
        if not cert:
            cert, key = self_signed(hostname=settings.hostname)
        try:
            return server_context(cert, key or cert)
        except OSError as e:  # ssl.SSLError too: "[SSL] PEM lib" alone does not say which file
            raise StartError(_missing_tls_file(cert, settings.tls_key) or
                             f"key 'sink.tls_cert' (--tls-cert): cannot load {cert!r}"
                             + (f" with key {key!r}" if key and key != cert else "")
                             + f": {e.strerror or e}; expected a PEM certificate and its PEM key "
                               f"(--tls-key, or in the same file)") from None

    def start_tls(self, conn: SinkConnection) -> None:
        """Upgrade after our 220 to STARTTLS (RFC 3207 §4); the session restarts from scratch."""
        asyncio.ensure_future(self._upgrade(conn))

    async def _upgrade(self, conn: SinkConnection) -> None:
        """The TLS handshake. Until it ends the socket belongs to the TLS protocol: the
        connection is not told when it closes, so a failed or interrupted handshake is
        accounted here (connection_lost), or the connection stayed counted for ever."""
        if conn.closed:
            return
        loop = asyncio.get_running_loop()
        old = conn.transport
        old.pause_reading()
        # Replies still over the plain transport's high-water mark ("flow": STARTTLS came in the
        # read that filled it): wait for its resume_writing. After start_tls it would go to the
        # TLS protocol (an AssertionError there), never to us, and "flow" would stay held over
        # TLS, so the next pause there would not stop reading (a client pipelining over TLS
        # without reading grew the sink without bound). It costs the client nothing: it starts
        # the handshake only once it has read our 220, the last of those replies (RFC 3207 §4).
        # A client that never reads is cut by the idle timeout (connection_lost reaches us),
        # counted as a stalled handshake is.
        await conn.writable()
        if conn.closed:
            self.stats.tls_failures += conn.shut
            return
        try:
            new = await loop.start_tls(old, conn, self.ssl, server_side=True, ssl_handshake_timeout=30)
        except (OSError, ConnectionError, asyncio.TimeoutError, ssl.SSLError) as e:
            if conn.shut or handshake_failed(e):  # shut: we cut a stalled one (idle timeout, drain)
                self.stats.tls_failures += 1
            old.close()
            conn.connection_lost(None)
            return
        if new is None or conn.shut or conn.closed:
            # Shut down (idle timeout, drain) while the handshake was in flight: start_tls
            # hands back None (asyncio) or a transport (uvloop); the connection is over.
            self.stats.tls_failures += 1
            if new is not None:
                new.abort()
            conn.connection_lost(None)
            return
        self.stats.tls_handshakes += 1
        conn.tls_started(new)

    async def _sweep(self) -> None:
        """Close connections idle for longer than ``idle_timeout`` (RFC 5321 §4.5.3.2.7).

        One timer for all connections, not one per read: a read only sets a flag.
        The relay log is flushed on the same beat.
        """
        timeout = self.settings.idle_timeout
        step = min(1.0, max(timeout / 4, 0.05))
        while True:
            await asyncio.sleep(step)
            if self.relay is not None:
                self.relay.flush()
            for conn in list(self.connections):
                if conn.active:
                    conn.active = False
                    conn.idle = 0.0
                    continue
                conn.idle += step
                if conn.idle >= timeout and not conn.closed:
                    if not conn.shut:  # counted once; a second pass aborts one that did not close
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
        self.remove_socket_files()  # no new client can find us; the ones connected go on
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
        if self.relay is not None:
            self.relay.close()
