"""SMTP replies: formatting (server side) and incremental parsing (client side).

RFC 5321 §4.2: a reply is a three-digit code, then either a space (last line)
or a hyphen (more lines follow), then text, then CRLF. RFC 2034/3463 add an
enhanced status code ``class.subject.detail`` at the start of the text.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import ProtocolError
from .limits import MAX_REPLY_LINE, MAX_REPLY_LINES


@dataclass(frozen=True, slots=True)
class Reply:
    """One complete (possibly multi-line) reply as read by a client."""

    code: int
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def status(self) -> str:
        """The RFC 3463 enhanced status code of the first line, or ''."""
        first = self.lines[0] if self.lines else ""
        head = first.split(" ", 1)[0]
        parts = head.split(".")
        if len(parts) == 3 and all(p.isdigit() for p in parts) and head[0] in "245":
            return head
        return ""

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 400


def format_reply(code: int, text: str | list[str], status: str = "") -> bytes:
    """Encode a reply; ``status`` (e.g. ``"2.0.0"``) is prefixed to each line.

    Pass ``status=""`` when ENHANCEDSTATUSCODES is not in effect (RFC 2034 §3:
    only after it was advertised may enhanced codes be sent).
    """
    lines = text if isinstance(text, list) else text.split("\n")
    prefix = f"{status} " if status else ""
    out = []
    last = len(lines) - 1
    for i, line in enumerate(lines):
        sep = " " if i == last else "-"
        out.append(f"{code}{sep}{prefix}{line}\r\n")
    return "".join(out).encode("utf-8")


def parse_reply_line(line: bytes) -> tuple[int, bool, str]:
    """Parse one reply line without its CRLF: (code, is_last, text).

    RFC 5321 §4.2.1 allows a bare code ("250") as a complete last line.
    """
    if len(line) < 3 or not line[:3].isdigit() or line[0:1] not in b"2345":
        raise ProtocolError(0, "", f"malformed reply line: {line[:80]!r}")
    code = int(line[:3])
    if len(line) == 3:
        return code, True, ""
    sep = line[3:4]
    if sep == b" ":
        last = True
    elif sep == b"-":
        last = False
    else:
        raise ProtocolError(0, "", f"malformed reply separator: {line[:80]!r}")
    return code, last, line[4:].decode("utf-8", "replace")


#: Reads parsed before, whole: the bytes of a read of complete replies -> its replies.
_KNOWN: dict[bytes, tuple[Reply, ...]] = {}
KNOWN_READ = 512     # octets: longer reads (an EHLO reply, say) are parsed every time
KNOWN_READS = 1024   # entries: the cache is cleared when it reaches this


class ReplyReader:
    """Incremental reader of replies from a byte stream (the client's side).

    Feed bytes with :meth:`feed`; it returns every reply completed so far, in
    order (RFC 2920: pipelined replies arrive in command order). Partial
    input is kept for the next call. Bounded: an over-long line or reply is a
    :class:`ProtocolError`, never unbounded growth.
    """

    __slots__ = ("_buf", "_pos", "_code", "_lines")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._code = 0
        self._lines: list[str] = []

    def feed(self, data: bytes) -> list[Reply] | tuple[Reply, ...]:
        if not self._buf and not self._lines:
            # A server under load repeats itself: most reads are the same few complete replies
            # ("250 2.0.0 Ok", or MAIL/RCPT/DATA's three pipelined), and a Reply is immutable.
            known = _KNOWN.get(data)
            if known is not None:
                return known
            if len(data) <= KNOWN_READ and data.endswith(b"\n"):
                replies = self._parse(data)
                if not self._buf and not self._lines:
                    if len(_KNOWN) >= KNOWN_READS:
                        _KNOWN.clear()  # bounded: a server that never repeats itself only churns it
                    _KNOWN[data] = tuple(replies)
                return replies
        return self._parse(data)

    def _parse(self, data: bytes) -> list[Reply]:
        buf = self._buf
        buf += data
        out: list[Reply] = []
        pos = self._pos
        try:  # (free in CPython 3.11 until something raises)
            while True:
                nl = buf.find(b"\n", pos)
                if nl < 0:
                    break
                end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
                if end - pos > MAX_REPLY_LINE:
                    raise ProtocolError(0, "", "reply line too long")
                code, last, text = parse_reply_line(bytes(buf[pos:end]))
                pos = nl + 1
                if self._lines and code != self._code:
                    raise ProtocolError(0, "", f"reply code changed mid-reply: {self._code} then {code}")
                self._code = code
                self._lines.append(text)
                if len(self._lines) > MAX_REPLY_LINES:
                    raise ProtocolError(0, "", "too many reply lines")
                if last:
                    out.append(Reply(code, tuple(self._lines)))
                    self._lines = []
        except ProtocolError as e:
            # The replies completed before the bad line go with the error (e.replies): a 250 to the
            # end of data followed by garbage in the same read accepted the message all the same.
            e.replies = out
            raise
        if pos:
            del buf[:pos]
        self._pos = 0
        if len(buf) > MAX_REPLY_LINE:
            e = ProtocolError(0, "", "reply line too long")
            e.replies = out
            raise e
        return out

    @property
    def pending(self) -> bool:
        """True when a partial reply is buffered."""
        return bool(self._buf) or bool(self._lines)
