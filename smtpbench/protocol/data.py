"""The DATA body: terminator scan and unstuffing (server), dot-stuffing (client).

RFC 5321 §4.1.1.4: the body ends with CRLF "." CRLF; §4.5.2: a line that
starts with "." is sent with one more "." (dot-stuffing) and the receiver
drops it. Only CRLF.CRLF ends the body: LF.LF, CR.CR or a mix must not
(the 2023 "SMTP smuggling" flaw, CVE-2023-51764 and relatives).
"""

from __future__ import annotations

from .limits import MAX_TEXT_LINE

TERMINATOR = b"\r\n.\r\n"
SEAM_STARTS = b"\r\n."  # the octets a terminator's part after a read boundary can start with


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


def stuffed_dots(pieces) -> int:
    """How many octets dot-stuffing added to ``pieces`` (each starting a line; the last ending
    with the ``.\r\n`` terminator, whose dot is not one of them): with it, a payload's RFC 1870
    size is its length less these and the terminator."""
    return sum(p.count(b"\r\n.") + p.startswith(b".") for p in pieces) - 1


def unstuff(body: bytes) -> bytes:
    """Undo dot-stuffing of a body received without its final ``.\\r\\n``: a line's first "." is
    deleted (RFC 5321 §4.5.2), the doubled one of a line that starts with "." and the lone one a
    client that did not stuff sent, alike, as the size limit counts it (:func:`unstuffed_size`)."""
    if body.startswith(b"."):
        body = body[1:]
    return body.replace(DOT_LINE, b"\r\n")


def normalise_crlf(raw: bytes) -> bytes:
    """Turn bare LF or CR line ends into CRLF (for .eml files read from disk)."""
    return raw.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


def find_terminator(chunk: bytes) -> int:
    """``chunk.find(TERMINATOR)``, fast for bodies with few dots.

    Every CRLF.CRLF has its "." two octets in, and "." is rare in most
    bodies while CRLF is everywhere: finding dots (memchr) and checking
    each one beats the general substring search, which stalls on every
    CRLF. After a few dots that were not the terminator the rest goes to
    the general search, so a dotty body costs a few checks more, no more.
    A short chunk goes to the general search at once (it is as fast there).
    """
    if len(chunk) < 4096:
        return chunk.find(TERMINATOR)
    dot = chunk.find(b".", 2)
    for _ in range(8):
        if dot < 0:
            return -1
        if chunk.startswith(TERMINATOR, dot - 2):
            return dot - 2
        dot = chunk.find(b".", dot + 1)
    # Any terminator left has its "." at ``dot`` or later.
    return chunk.find(TERMINATOR, dot - 2) if dot >= 0 else -1


DOT_LINE = b"\r\n."  # a line that starts with "." (the CRLF before it ends the previous line)


def find_terminator_counting(chunk: bytes) -> tuple[int, int]:
    """``(chunk.find(TERMINATOR), dot lines before it)``.

    The second is how many lines of ``chunk`` (those after a CRLF in it)
    start with "." before the terminator, or in the whole chunk when it has
    none: each such dot is stuffing (RFC 5321 §4.5.2), not message octets
    (RFC 1870 §3). A chunk without a "." is done with one memchr; else the
    terminator's search and one count, both in C (on 64 KiB of dotty text
    as fast as walking the dot lines in Python, and simpler; about twice
    :func:`find_terminator`: see :func:`dots_matter` for when it is spared).
    """
    dot = chunk.find(b".", 2)
    if dot < 0:
        return -1, 0
    end = chunk.find(TERMINATOR, dot - 2) if len(chunk) < 4096 else find_terminator(chunk)
    return end, chunk.count(DOT_LINE, dot - 2, end if end >= 0 else len(chunk))


def _long_line_after(data: bytes, lf: int, end: int) -> bool:
    """Whether an LF at or after ``lf`` in ``data[:end]`` has MAX_TEXT_LINE non-LF octets after it.

    Such a line is over MAX_TEXT_LINE octets with its CRLF (RFC 5321
    §4.5.3.1.6). From an LF, the last LF within the next MAX_TEXT_LINE
    octets is the next place a long line could start (the lines between are
    shorter); none there means a long line. One ``rfind`` per window, not
    per line: a 100 KiB body of short lines takes about a hundred.
    """
    last = end - MAX_TEXT_LINE  # an LF at or past this has fewer octets after it
    while lf < last:
        nxt = data.rfind(b"\n", lf + 1, lf + 1 + MAX_TEXT_LINE)
        if nxt < 0:
            return True
        lf = nxt
    return False


def dots_matter(declared: str | None, limit: int) -> bool:
    """Whether a DATA body must be scanned for dot lines to hold it to ``limit``
    (:func:`find_terminator_counting`, slower than :func:`find_terminator` on dotty text).

    Not when the client declared (RFC 1870 §6, ``SIZE=``, checked digits) a size that
    even stuffed stays within ``limit``: a line that starts with "." has at least three
    octets (".", CRLF), so stuffing adds at most a third, and a client may add a final
    CRLF. Its body is then held to ``limit`` as sent, which only a client that sent more
    than it declared can exceed.
    """
    if declared is None:
        return True
    n = int(declared)
    return n + n // 3 + 8 > limit


def unstuffed_size(body: bytes, n: int) -> int:
    """The RFC 1870 §3 size of ``body[:n]``, a whole body as received up to the CRLF before its
    terminator: less one octet per line starting with "." (the stuffing, RFC 5321 §4.5.2)."""
    return n - body.count(DOT_LINE, 0, n) - body.startswith(b".")


def long_line_in(body: bytes, n: int) -> bool:
    """Whether ``body[:n]``, a whole body up to the CRLF before its terminator, has a text
    line over MAX_TEXT_LINE octets with its CRLF (RFC 5321 §4.5.3.1.6): what a
    :class:`DataReceiver` fed the body in one piece finds."""
    nl = body.find(b"\n", 0, n)  # there is one: body[:n] ends with CRLF
    return nl + 1 > MAX_TEXT_LINE or _long_line_after(body, nl, n)


class DataReceiver:
    """Consumes a DATA body chunk by chunk until CRLF.CRLF.

    ``feed(buf, start)`` scans ``buf[start:]`` and returns the index just
    past the terminator, or -1 if the body goes on. Only a 4-byte tail is
    kept between chunks (RFC 5321 terminator can straddle reads); the body
    itself is kept only when ``keep`` is true, and never beyond ``limit``
    octets, so a hostile client cannot grow memory.

    After the end: ``size`` is the octet count as sent (stuffed, without the
    terminator), ``dots`` the stuffing dots in it (counted when ``count_dots``,
    see :func:`dots_matter`; else 0), ``oversize`` tells whether
    the message (``size - dots``: RFC 1870 §3 counts neither the terminator
    nor the stuffing) is over ``limit`` (RFC 1870: answer 552 after the
    terminator), ``long_line`` whether a text line was over MAX_TEXT_LINE
    octets, and :meth:`body` the unstuffed bytes.
    """

    __slots__ = ("keep", "limit", "check_lines", "size", "dots", "oversize", "long_line", "head_limit",
                 "count_dots", "_tail", "_parts", "_kept", "_run", "_head")

    def __init__(self, keep: bool, limit: int, check_lines: bool = True, head_limit: int = 0,
                 count_dots: bool = True):
        self.keep = keep
        self.count_dots = count_dots
        self.head_limit = 0 if keep else head_limit  # keep the first octets even when discarding
        self._head = b""
        self.limit = limit
        self.check_lines = check_lines
        self.size = 0
        self.dots = 0
        self.oversize = False
        self.long_line = False
        # The CRLF that ended the DATA command starts the body, so an empty
        # message (".\r\n" right away) is found by the same search.
        self._tail = b"\r\n"
        self._parts: list[bytes] = []
        self._kept = 0
        self._run = 0  # octets since the last LF, for the line-length check

    def feed(self, buf: bytes | bytearray, start: int = 0) -> int:
        chunk = buf if start == 0 and type(buf) is bytes else bytes(buf[start:])
        if chunk and chunk[0] in SEAM_STARTS:
            # The terminator may straddle the previous read (then its part in
            # this chunk starts with CR, LF or "."): look across the seam
            # first, at most 8 octets; ``seam`` indexes tail+chunk.
            tail = self._tail
            seam = (tail + chunk[:4]).find(TERMINATOR)
            if seam >= 0:
                body_len = seam + 2 - len(tail)  # the body keeps the CRLF before "."
                if body_len > 0:
                    self._account(chunk, body_len)
                elif body_len < 0:
                    self._trim(-body_len)
                self._ended()
                return start + seam + 5 - len(tail)
            # A dot line whose CRLF (or its LF) ended the previous read; the
            # tail holds at least the last two octets (the first read's are the
            # CRLF of DATA, so a first line starting with "." counts too).
            if self.count_dots:
                self.dots += (tail[-2:] + chunk[:2]).count(DOT_LINE)
        if self.count_dots:
            end, dots = find_terminator_counting(chunk)
            self.dots += dots
        else:
            end = chunk.find(TERMINATOR) if len(chunk) < 4096 else find_terminator(chunk)
        if end < 0:
            self._account(chunk, len(chunk))
            self._tail = (self._tail + chunk)[-4:] if len(chunk) < 4 else chunk[-4:]
            return -1
        self._account(chunk, end + 2)  # the body keeps the CRLF before "."
        self._ended()
        return start + end + 5

    def _ended(self) -> None:
        if self.size - self.dots > self.limit:
            self.oversize = True
            self._parts = []

    def _trim(self, k: int) -> None:
        # The "." (and CR) of the terminator arrived in an earlier read and
        # was counted as body, its "." as a dot line; take them back.
        self.size -= k
        self.dots -= self.count_dots
        if self.keep and self._parts:
            self._parts = [b"".join(self._parts)[:-k]]
            self._kept -= k

    def _account(self, chunk: bytes, n: int) -> None:
        """Count ``chunk[:n]`` as body: its size, its line lengths, the kept copy."""
        self.size += n
        if self.check_lines and not self.long_line:
            nl = chunk.find(b"\n", 0, n)
            if nl < 0:
                self._run += n
            else:
                if self._run + nl + 1 > MAX_TEXT_LINE or _long_line_after(chunk, nl, n):
                    self.long_line = True
                # A body's last octets are its CRLF: no search for its last line then.
                self._run = 0 if chunk[n - 1] == 10 else n - chunk.rfind(b"\n", 0, n) - 1
            if self._run >= MAX_TEXT_LINE:
                self.long_line = True
        # One octet of slack: the "." and CR of a terminator that ends in the next
        # read count here as one octet until _trim takes them back. feed() decides.
        if self.size - self.dots > self.limit + 1:
            self.oversize = True
            self._parts = []
            return
        if self.keep:
            self._parts.append(chunk if n == len(chunk) else chunk[:n])
            self._kept += n
        elif self.head_limit and len(self._head) < self.head_limit:
            self._head += chunk[: min(n, self.head_limit - len(self._head))]

    def head(self) -> bytes:
        """The first octets of the body (at most ``head_limit``, or all of a kept body), as sent."""
        return b"".join(self._parts) if self.keep else self._head

    def body(self) -> bytes:
        """The received body, unstuffed, CRLF-terminated (empty if oversize)."""
        raw = b"".join(self._parts)
        return unstuff(raw)
