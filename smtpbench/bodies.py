"""Message bodies: rendered once per (kind, attachments, size) and shared, never per message.

Plain text (7-bit, 8-bit, UTF-8) cut from one deterministic block of lines,
and multipart/mixed MIME (RFC 2045-2049) with base64 attachments. Long bodies
are the same 64 KiB block repeated, so a 10 MiB body costs one block of memory
plus its tail. Every body is dot-stuffed (RFC 5321 §4.5.2) and ends with the
``.\r\n`` that closes DATA. :mod:`smtpbench.messages` adds the per-message headers.

A size is the message's own, before stuffing: what a server stores, what BDAT
sends, and what RFC 1870 §4 has ``SIZE=`` declare ("not ... the terminating dot
or doubled quoting dots"). DATA carries an octet more per line that starts with
a dot.
"""

from __future__ import annotations

import base64
from functools import cache

import numpy as np

from .protocol.data import dot_stuff

#: The 64 KiB blocks long bodies repeat (made on first use), so caches can count them once.
SHARED: list[bytes] = []
#: A body longer than this is made of shared blocks of about this size and a tail of its own.
BLOCK_OCTETS = 64 * 1024
#: Body text lines are at most this many octets before CRLF: under RFC 5322 §2.1.1's 78
#: characters, and far under its (and RFC 5321 §4.5.3.1.6's) limit of 998 octets.
LINE_OCTETS = 76
# RFC 2046 §5.1.1: a boundary must not occur in the parts. "=_" cannot start a base64 line
# nor occur in the generated text, and "=" makes the quotes required (RFC 2045 §5.1 tspecials).
BOUNDARY = "=_smtpbench_mixed"


def mime_headers(kind: str, attachments: int) -> list[str]:
    """RFC 2045 §4-§6 header fields; none for plain 7-bit text (RFC 2045 §5.2's default)."""
    if attachments:
        lines = ["MIME-Version: 1.0", f'Content-Type: multipart/mixed; boundary="{BOUNDARY}"']
        # RFC 2045 §6.4: a multipart's encoding is 7bit, 8bit or binary, and must cover its parts'.
        return lines + (["Content-Transfer-Encoding: 8bit"] if kind != "7bit" else [])
    if kind == "7bit":
        return []
    return ["MIME-Version: 1.0", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]


# ----------------------------------------------------------------------------------------------
# Body text: one deterministic block of lines per body kind, repeated and cut to length. Some
# lines start with "." (RFC 5321 §4.5.2 dot-stuffing), two are a lone ".", one starts with "From "
# (mbox quoting, for capturing sinks).

_ASCII_WORDS = (
    "the quick brown fox jumps over a lazy dog while benchmark messages flow through the sink "
    "latency throughput pipelining envelope recipient sender session transaction queue relay "
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt"
).split()
_EXTRA_WORDS = {
    "7bit": (),
    # Latin-1 range letters, UTF-8 encoded: 8-bit content (RFC 6152).
    "8bit": ("Grüße", "Straße", "Käse", "Übermut", "naïve", "café", "façade", "smörgåsbord",
             "Ærøskøbing", "jalapeño", "Ørsted", "señor", "garçon"),
    # Many scripts, UTF-8 sequences of 2 to 4 octets (RFC 3629), for SMTPUTF8 runs.
    "utf8": ("Grüße", "café", "Ελληνικά", "русский", "日本語", "中文", "한국어", "עברית", "العربية",
             "हिन्दी", "✉", "😀", "🚀", "ﬁnance", "Ἀθῆναι"),
}
_SPECIAL_LINES = (".", ". a line that starts with a dot", "..two dots", ".", "From the sender, a line mbox quotes",
                  "...three dots and a tab\t.")


@cache
def _master(kind: str) -> bytes:
    """About 12 KiB of text lines of at most LINE_OCTETS octets each, ending with CRLF."""
    words = list(_ASCII_WORDS) + list(_EXTRA_WORDS[kind]) * 3
    rng = np.random.default_rng(5322)  # fixed: the same bodies in every run and process
    picks = rng.integers(0, len(words), size=4096).tolist()
    widths = rng.integers(20, LINE_OCTETS + 1, size=256).tolist()
    lines, w = [], 0
    for i, width in enumerate(widths):
        if i % 8 == 5:
            lines.append(_SPECIAL_LINES[(i // 8) % len(_SPECIAL_LINES)].encode())
            continue
        line = b""
        while True:
            word = words[picks[w % len(picks)]].encode()
            w += 1
            if len(line) + 1 + len(word) > width:
                break
            line = line + b" " + word if line else word
        lines.append(line or b"-")
    return b"\r\n".join(lines) + b"\r\n"


@cache
def _text_block(kind: str) -> tuple[bytes, int]:
    """Whole copies of the master text, about BLOCK_OCTETS, dot-stuffed: shared by every long
    body; and its length before stuffing."""
    master = _master(kind)
    raw = master * max(1, round(BLOCK_OCTETS / len(master)))
    block = _stuff(raw)
    SHARED.append(block)
    return block, len(raw)


@cache
def _attachment_block() -> tuple[bytes, bytes]:
    """Pseudo-random bytes and their base64 lines (RFC 2045 §6.8), about BLOCK_OCTETS encoded.

    57 bytes make one 76-character line, so the block ends on a line and a 3-byte
    boundary: base64 of the block repeated is the block's base64 repeated.
    """
    data = np.random.default_rng(2049).bytes(57 * (BLOCK_OCTETS // 78))
    block = base64.encodebytes(data).replace(b"\n", b"\r\n")
    SHARED.append(block)
    return data, block


def _stuff(raw: bytes) -> bytes:
    """``raw`` (starting a line, ending with CRLF or empty) dot-stuffed, without the terminator."""
    return dot_stuff(raw)[:-3]


def _text(master: bytes, length: int) -> bytes:
    """Exactly ``length`` octets of text (1 gives 2: one empty line), ending with CRLF."""
    if length <= 0:
        return b""
    if length <= 2:
        return b"\r\n"
    cut = bytearray((master * ((length - 2) // len(master) + 1))[:length - 2])
    # Do not leave half a UTF-8 sequence (RFC 3629) or a lone CR at the cut.
    back = len(cut) - 1
    while back >= 0 and 0x80 <= cut[back] < 0xC0 and len(cut) - back < 4:
        back -= 1
    if back >= 0 and cut[back] >= 0xC0:
        need = 2 if cut[back] < 0xE0 else 3 if cut[back] < 0xF0 else 4
        if len(cut) - back < need:
            cut[back:] = b"x" * (len(cut) - back)
    if cut.endswith(b"\r"):
        cut[-1:] = b"x"
    return bytes(cut) + b"\r\n"


def _text_pieces(kind: str, target: int) -> list[bytes]:
    """Text of exactly ``target`` octets before stuffing (``target`` != 1), stuffed: shared
    blocks, then a tail of its own."""
    block, raw_octets = _text_block(kind)
    count, rest = divmod(target, raw_octets)
    if count and rest == 1:
        count, rest = count - 1, rest + raw_octets
    return [block] * count + [_stuff(_text(_master(kind), rest))]


def _join(parts: list[bytes]) -> tuple[bytes, ...]:
    """Stuffed parts as DATA pieces: shared blocks as they are, the rest joined, the terminator last."""
    out, run = [], []
    for part in parts:
        if any(part is b for b in SHARED):
            if run:
                out.append(b"".join(run))
                run = []
            out.append(part)
        elif part:
            run.append(part)
    run.append(b".\r\n")  # RFC 5321 §4.1.1.4: CRLF "." CRLF ends the data
    out.append(b"".join(run))
    return tuple(out)


def plain(kind: str, target: int) -> tuple[bytes, ...]:
    """A text/plain body of ``target`` octets (before stuffing), as DATA pieces."""
    return _join(_text_pieces(kind, target))


def _text_part_headers(kind: str) -> bytes:
    cs, cte = ("us-ascii", "7bit") if kind == "7bit" else ("utf-8", "8bit")
    return (f"--{BOUNDARY}\r\nContent-Type: text/plain; charset={cs}\r\n"
            f"Content-Transfer-Encoding: {cte}\r\n\r\n").encode()


def _attachment_headers(i: int) -> bytes:
    return (f"--{BOUNDARY}\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n"
            f'Content-Disposition: attachment; filename="smtpbench-{i}.bin"\r\n\r\n').encode()


_CLOSE = f"--{BOUNDARY}--\r\n".encode()


def _base64_len(n: int) -> int:
    """Octets of ``n`` bytes in base64 with CRLF after every 76 characters (RFC 2045 §6.8)."""
    chars = 4 * ((n + 2) // 3)
    return chars + 2 * ((chars + 75) // 76)


def _base64_pieces(n: int) -> list[bytes]:
    """``n`` pseudo-random bytes in base64 lines: shared blocks, then a tail of its own."""
    data, block = _attachment_block()
    count, rest = divmod(n, len(data))
    return [block] * count + ([base64.encodebytes(data[:rest]).replace(b"\n", b"\r\n")] if rest else [])


def multipart_minimum(kind: str, attachments: int) -> int:
    """The smallest multipart body: an empty text line and one byte per attachment."""
    fixed = len(_text_part_headers(kind)) + len(_CLOSE)
    return fixed + 2 + sum(len(_attachment_headers(i)) + _base64_len(1) for i in range(1, attachments + 1))


def multipart(kind: str, attachments: int, target: int) -> tuple[bytes, ...]:
    """multipart/mixed (RFC 2046 §5.1.3): a text part, then ``attachments`` base64 parts.

    The size before stuffing is exactly ``target``: the room left by the part headers is split
    evenly over the text and the attachments, and the text takes up what base64's
    4-octet granularity leaves over. The boundary lines start right after the CRLF
    ending each part (RFC 2046 §5.1.1: that CRLF belongs to the boundary).
    """
    heads = [_attachment_headers(i) for i in range(1, attachments + 1)]
    text_head = _text_part_headers(kind)
    room = target - len(text_head) - len(_CLOSE) - sum(map(len, heads))
    share = room // (attachments + 1)
    parts: list[bytes] = []
    encoded = 0
    for head in heads:
        n = max(1, share * 57 // 78)  # 57 bytes are one 76-character line and its CRLF
        while _base64_len(n + 1) <= share:
            n += 1
        parts += [head, *_base64_pieces(n)]
        encoded += _base64_len(n)
    text = _text_pieces(kind, max(2, room - encoded))
    return _join([text_head, *text, *parts, _CLOSE])
