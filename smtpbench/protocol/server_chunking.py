"""CHUNKING (RFC 3030): BDAT chunks for the server session, counted without scanning.

A mixin of :class:`~smtpbench.protocol.server.ServerSession`; it uses the
session's state, reply() and _finish().
"""

from __future__ import annotations

from .errors import ProtocolError
from .server_types import BDAT, MAIL, RCPT, READY


class ChunkingMixin:
    __slots__ = ()  # the session's slots hold the state

    def _bdat(self, arg: bytes, refuse: tuple[int, str, str] | None = None) -> None:
        """BDAT size [LAST]; ``refuse``: a policy's reply, sent once the chunk is read."""
        if not self._has("CHUNKING"):
            raise ProtocolError(502, "5.5.1", "CHUNKING not offered")
        parts = arg.split()
        if not parts or len(parts) > 2 or not parts[0].isdigit() or (
            len(parts) == 2 and parts[1].upper() != b"LAST"
        ):
            # RFC 3030 §2: without a valid size we cannot find the next
            # command; the only safe continuation is to close.
            self.reply(501, "5.5.4", "Syntax: BDAT size [LAST]; closing")
            self._close()
            return
        size = int(parts[0])
        self._bdat_left = size
        self._bdat_last = len(parts) == 2
        if self.state not in (RCPT,):
            # RFC 3030 §2: the chunk must still be read and discarded.
            self.counters.protocol_errors += 1
            self._bdat_refuse = (503, "5.5.1", "Need RCPT command" if self.state == MAIL else "Need MAIL command")
        else:
            self._bdat_refuse = refuse
        self._bdat_prev = self.state
        self.state = BDAT
        if size == 0:
            self._bdat_done()

    def _bdat_chunk(self, buf: bytearray, pos: int, n: int) -> int:
        take = min(self._bdat_left, n - pos)
        self._bdat_left -= take
        if self._bdat_refuse is None:
            self._bdat_size += take
            if self.config.keep_body and self._bdat_size <= self.config.max_message_size:
                self._bdat_parts.append(bytes(buf[pos:pos + take]))
            elif self.config.keep_head and len(self.envelope.head) < self.config.keep_head:
                room = self.config.keep_head - len(self.envelope.head)
                self.envelope.head += bytes(buf[pos:pos + min(take, room)])
        pos += take
        if self._bdat_left == 0:
            self._bdat_done()
        return pos

    def _bdat_done(self) -> None:
        self.state = self._bdat_prev
        if self._bdat_refuse is not None:
            self.reply(*self._bdat_refuse)
            if self._bdat_prev == RCPT:
                # A policy refused the chunk: the transaction failed, and chunks still in
                # the pipeline are discarded (RFC 3030 §4.2), refused as out of sequence.
                self._reset()
                self.state = READY
            return
        self.counters.bdat_chunks += 1
        if not self._bdat_last:
            self.reply(250, "2.0.0", f"{self._bdat_size} octets received")
            return
        size = self._bdat_size
        if size > self.config.max_message_size:
            self._finish(None, size, (552, "5.3.4", "Message size exceeds fixed limit"))
        else:
            body = b"".join(self._bdat_parts) if self.config.keep_body else None
            self._finish(body, size, None)
