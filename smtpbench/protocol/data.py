"""The DATA body: terminator scan and unstuffing (server), dot-stuffing (client).

RFC 5321 §4.1.1.4: the body ends with CRLF "." CRLF; §4.5.2: a line that
starts with "." is sent with one more "." (dot-stuffing) and the receiver
drops it. Only CRLF.CRLF ends the body: LF.LF, CR.CR or a mix must not
(the 2023 "SMTP smuggling" flaw, CVE-2023-51764 and relatives).
"""

from __future__ import annotations

import re

from .limits import MAX_TEXT_LINE

TERMINATOR = b"\r\n.\r\n"


def dot_stuff(body: bytes) -> bytes:
    """Return ``body`` dot-stuffed and terminated, ready to follow DATA.

    The body is normalised to end with CRLF first, so the terminator is
    always recognised (RFC 5321 §4.1.1.4). Do this once per distinct body.
    """
    if body and not body.endswith(b"\r\n"):
        body += b"\r\n"
    if body.startswith(b"."):
        body = b"." + body
    body = body.replace(b"\r\n.", b"\r\n..")
    return body + b".\r\n"


def unstuff(body: bytes) -> bytes:
    """Undo dot-stuffing of a body received without its final ``.\\r\\n``."""
    if body.startswith(b"."):
        body = body[1:]
    return body.replace(b"\r\n..", b"\r\n.")


def normalise_crlf(raw: bytes) -> bytes:
    """Turn bare LF or CR line ends into CRLF (for .eml files read from disk)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


# A line longer than MAX_TEXT_LINE octets (CRLF included) has at least
# MAX_TEXT_LINE non-LF octets after an LF. The leading LF anchors the regex
# at line starts so each byte is looked at about twice, not once per line.
_LONG_LINE = re.compile(rb"\n[^\n]{%d}" % MAX_TEXT_LINE)


class DataReceiver:
    """Consumes a DATA body chunk by chunk until CRLF.CRLF.

    ``feed(buf, start)`` scans ``buf[start:]`` and returns the index just
    past the terminator, or -1 if the body goes on. Only a 4-byte tail is
    kept between chunks (RFC 5321 terminator can straddle reads); the body
    itself is kept only when ``keep`` is true, and never beyond ``limit``
    octets, so a hostile client cannot grow memory.

    After the end: ``size`` is the octet count as sent (stuffed, without the
    terminator), ``oversize`` tells whether ``limit`` was passed (RFC 1870:
    answer 552 after the terminator), ``long_line`` whether a text line was
    over MAX_TEXT_LINE octets, and :meth:`body` the unstuffed bytes.
    """

    __slots__ = ("keep", "limit", "check_lines", "size", "oversize", "long_line",
                 "_tail", "_parts", "_kept", "_run")

    def __init__(self, keep: bool, limit: int, check_lines: bool = True):
        self.keep = keep
        self.limit = limit
        self.check_lines = check_lines
        self.size = 0
        self.oversize = False
        self.long_line = False
        # The CRLF that ended the DATA command starts the body, so an empty
        # message (".\r\n" right away) is found by the same search.
        self._tail = b"\r\n"
        self._parts: list[bytes] = []
        self._kept = 0
        self._run = 0  # octets since the last LF, for the line-length check

    def feed(self, buf: bytes | bytearray, start: int = 0) -> int:
        chunk = buf if start == 0 and isinstance(buf, bytes) else bytes(buf[start:])
        tail = self._tail
        # The terminator may straddle the previous read: look across the
        # seam first (at most 8 octets), then in the chunk itself.
        end = (tail + chunk[:4]).find(TERMINATOR)
        if end < 0:
            end = chunk.find(TERMINATOR)
            if end < 0:
                self._account(chunk, len(chunk))
                self._tail = (tail + chunk)[-4:] if len(chunk) < 4 else chunk[-4:]
                return -1
            end += len(tail)
        # ``end`` indexes tail+chunk; the body keeps the CRLF before ".".
        body_len = end + 2 - len(tail)
        if body_len > 0:
            self._account(chunk[:body_len], body_len)
        elif body_len < 0:
            self._trim(-body_len)
        return start + end + 5 - len(tail)

    def _trim(self, k: int) -> None:
        # The "." (and CR) of the terminator arrived in an earlier read and
        # was counted as body; take it back.
        self.size -= k
        if self.keep and self._parts:
            self._parts = [b"".join(self._parts)[:-k]]
            self._kept -= k

    def _account(self, part: bytes, n: int) -> None:
        self.size += n
        if self.check_lines and not self.long_line:
            nl = part.find(b"\n")
            if nl < 0:
                self._run += n
            else:
                if self._run + nl + 1 > MAX_TEXT_LINE or _LONG_LINE.search(part, nl):
                    self.long_line = True
                self._run = n - part.rfind(b"\n") - 1
            if self._run >= MAX_TEXT_LINE:
                self.long_line = True
        if self.size > self.limit:
            self.oversize = True
            self._parts = []
            return
        if self.keep:
            self._parts.append(part)
            self._kept += n

    def body(self) -> bytes:
        """The received body, unstuffed, CRLF-terminated (empty if oversize)."""
        raw = b"".join(self._parts)
        return unstuff(raw)
