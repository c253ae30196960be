"""The DATA body: dot-stuffing, unstuffing and the CRLF.CRLF terminator scan
(RFC 5321 §4.1.1.4, §4.5.2; only CRLF.CRLF ends a body: SMTP smuggling)."""

import pytest
from hypothesis import given, strategies as st

from smtpbench.protocol.data import DataReceiver, dot_stuff, dots_matter, normalise_crlf, unstuff
from smtpbench.protocol.limits import MAX_TEXT_LINE

from smtp_helpers import CHUNKINGS, chunked, stuffed

BODY = b"Subject: hi\r\n\r\n.starts with a dot\r\n..two\r\nplain\r\n.\r\nafter a lone dot\r\n"


def receive(wire: bytes, chunk: int | None, keep: bool = True, limit: int = 1 << 20,
            check_lines: bool = True) -> tuple[DataReceiver, int, int]:
    """Feed ``wire`` in chunks; return (receiver, index of the chunk that ended it, offset past the end)."""
    rx = DataReceiver(keep, limit, check_lines)
    for i, piece in enumerate(chunked(wire, chunk)):
        end = rx.feed(piece)
        if end >= 0:
            return rx, i, end
    return rx, -1, -1


# -- dot-stuffing ----------------------------------------------------------------

@pytest.mark.parametrize("body, wire", [
    (b"", b".\r\n"),
    (b"hello\r\n", b"hello\r\n.\r\n"),
    (b"no final line end", b"no final line end\r\n.\r\n"),
    (b".\r\n", b"..\r\n.\r\n"),
    (b"a\r\n.b\r\n..c\r\n", b"a\r\n..b\r\n...c\r\n.\r\n"),
    (b"a\n.b\n", b"a\n.b\n\r\n.\r\n"),  # bare LF is not a line start (RFC 5321 §2.3.8)
])
def test_dot_stuff(body, wire):
    assert dot_stuff(body) == wire


@pytest.mark.parametrize("wire, body", [(b"..x\r\n", b".x\r\n"), (b"a\r\n...\r\n", b"a\r\n..\r\n"),
                                        (b"x.\r\n", b"x.\r\n"),
                                        # an unstuffed line: its "." goes (RFC 5321 §4.5.2), as counted
                                        (b".x\r\n.y\r\n", b"x\r\ny\r\n")])
def test_unstuff(wire, body):
    assert unstuff(wire) == body


@given(st.binary(max_size=300) | st.lists(st.sampled_from([b".", b"\r\n", b"\r", b"\n", b"x", b".."]),
                                          max_size=40).map(b"".join))
def test_stuff_unstuff_round_trip(body):
    wire = dot_stuff(body)
    expected = body if not body or body.endswith(b"\r\n") else body + b"\r\n"
    # The terminator appears once, at the very end; everything before it unstuffs back.
    assert (b"\r\n" + wire).find(b"\r\n.\r\n") == len(wire) - 3
    assert unstuff(wire[:-3]) == expected
    assert wire[:-3] == stuffed(expected)


def test_normalise_crlf():
    assert normalise_crlf(b"a\nb\r\nc\rd") == b"a\r\nb\r\nc\r\nd"


# -- the terminator scan ----------------------------------------------------------

@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_receiver_whole_bytewise_and_trailing_data(chunk):
    wire = dot_stuff(BODY) + b"QUIT\r\n"
    rx, i, end = receive(wire, chunk)
    consumed = sum(len(p) for p in chunked(wire, chunk)[:i]) + end
    assert consumed == len(dot_stuff(BODY))  # trailing "QUIT" is left for the command reader
    assert rx.body() == BODY
    assert rx.size == len(dot_stuff(BODY)) - 3
    assert not rx.oversize and not rx.long_line


def test_receiver_start_offset():
    buf = bytearray(b"DATA\r\nhello\r\n.\r\nQUIT\r\n")
    rx = DataReceiver(True, 1000)
    end = rx.feed(buf, 6)
    assert buf[end:] == b"QUIT\r\n"
    assert rx.body() == b"hello\r\n"


@pytest.mark.parametrize("split", range(1, 5))
def test_terminator_straddling_reads(split):
    rx = DataReceiver(True, 1000)
    wire = b"abc\r\n.\r\n"
    cut = len(wire) - 5 + split
    assert rx.feed(wire[:cut]) == -1
    assert rx.feed(wire[cut:] + b"NOOP\r\n") == len(wire) - cut
    assert rx.body() == b"abc\r\n"
    assert rx.size == 5


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_empty_message(chunk):
    rx, _, end = receive(b".\r\nNOOP\r\n", chunk)
    assert end >= 0 and rx.body() == b"" and rx.size == 0


@pytest.mark.parametrize("fake", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\r\r\n", b"\r\n. \r\n"])
@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_only_crlf_dot_crlf_ends_the_body(fake, chunk):
    """SMTP smuggling (CVE-2023-51764 and relatives): no other dot line ends DATA."""
    smuggled = b"hello" + fake + b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<victim@example.net>\r\n"
    rx, i, end = receive(smuggled, chunk)
    assert end == -1
    rx, _, end = receive(smuggled + b"\r\n.\r\n", chunk)
    assert end >= 0
    # Each line's first "." goes (RFC 5321 §4.5.2), the fake terminator's too: it has more after it.
    assert rx.body() == smuggled.replace(b"\r\n.", b"\r\n") + b"\r\n"


@pytest.mark.parametrize("chunk", [None, 1, 999, 1000, 1001])
@pytest.mark.parametrize("octets, long", [(MAX_TEXT_LINE, False), (MAX_TEXT_LINE + 1, True)])
def test_text_line_limit(chunk, octets, long):
    line = b"y" * (octets - 2) + b"\r\n"
    rx, _, end = receive(b"short\r\n" + line + b"short\r\n.\r\n", chunk)
    assert end >= 0
    assert rx.long_line is long
    rx, _, _ = receive(b"short\r\n" + line + b".\r\n", chunk, check_lines=False)
    assert rx.long_line is False


def test_first_line_counts_towards_the_limit():
    rx, _, _ = receive(b"z" * MAX_TEXT_LINE + b"\r\n.\r\n", 100)
    assert rx.long_line


@pytest.mark.parametrize("keep", [True, False])
def test_oversize_body_is_counted_not_kept(keep):
    limit = 64 * 1024
    rx = DataReceiver(keep, limit)
    chunk = (b"x" * 98 + b"\r\n") * 655  # ~64 KiB a read
    for _ in range(64):  # ~4 MiB
        assert rx.feed(chunk) == -1
        assert sum(map(len, rx._parts)) <= limit
        assert len(rx._tail) <= 4
    assert rx.feed(b".\r\n") == 3
    assert rx.oversize
    assert rx.size == 64 * len(chunk)
    assert rx.body() == b""


def test_discard_mode_keeps_nothing():
    rx, _, _ = receive(dot_stuff(BODY), 3, keep=False)
    assert rx._parts == [] and rx.size == len(dot_stuff(BODY)) - 3


@given(st.binary(max_size=400), st.binary(max_size=20), st.lists(st.integers(1, 50), min_size=1, max_size=6))
def test_receiver_any_body_any_chunking(body, trailing, sizes):
    """The scan stops exactly after the terminator and gives the body back, however it is split."""
    wire = dot_stuff(body)
    data = wire + trailing
    rx = DataReceiver(True, 1 << 20, check_lines=False)
    pos, i = 0, 0
    while True:
        size = sizes[i % len(sizes)]
        end = rx.feed(data[pos:pos + size])
        if end >= 0:
            break
        pos += size
        i += 1
    assert pos + end == len(wire)
    assert rx.body() == (body if not body or body.endswith(b"\r\n") else body + b"\r\n")
    assert rx.size - rx.dots == len(rx.body())  # RFC 1870 §3: the message, not the stuffing


DOTTY = b"Subject: dots\r\n\r\n" + b"".join(b".%d\r\nplain\r\n" % i for i in range(40)) + b".\r\n..\r\n"


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("chunk", CHUNKINGS + (4, 5, 6))
def test_size_limit_counts_the_message_not_the_stuffing(chunk, keep):
    """RFC 1870 §3/§4: a message of exactly ``limit`` octets fits, however many of its lines
    start with "." (each sent with one more, RFC 5321 §4.5.2); one octet more does not."""
    wire = dot_stuff(DOTTY)
    assert len(wire) - 3 > len(DOTTY) + 40  # the stuffing alone would pass the limit
    rx, _, end = receive(wire, chunk, keep=keep, limit=len(DOTTY))
    assert end >= 0 and not rx.oversize
    assert rx.size == len(wire) - 3 and rx.dots == len(wire) - 3 - len(DOTTY)
    if keep:
        assert rx.body() == DOTTY
    rx, _, end = receive(wire, chunk, keep=keep, limit=len(DOTTY) - 1)
    assert end >= 0 and rx.oversize and rx.body() == b""


@pytest.mark.parametrize("declared, counted", [(None, True), ("0", False), ("744", False), ("745", True),
                                               ("1000", True)])
def test_dots_are_counted_unless_a_declared_size_cannot_reach_the_limit(declared, counted):
    """With SIZE=n (RFC 1870 §6) far enough under the limit the body, even stuffed (a third
    more at most, and a final CRLF), stays under it: the scan for dot lines is spared."""
    assert dots_matter(declared, 1000) is counted
    body = b".\r\n" * 248  # 744 octets, 992 as sent
    assert len(body) + len(body) // 3 + 8 >= len(dot_stuff(body)) - 3


@pytest.mark.parametrize("split", range(1, 5))
def test_size_limit_with_the_terminator_straddling_reads(split):
    """The terminator's "." (and CR) in one read and the rest in the next count as the
    message's for a moment; a message at the limit still fits, and is kept whole."""
    rx = DataReceiver(True, 4)
    wire = b"..c\r\n.\r\n"  # the message is ".c\r\n", 4 octets
    cut = len(wire) - 5 + split
    assert rx.feed(wire[:cut]) == -1
    assert rx.feed(wire[cut:]) == len(wire) - cut
    assert not rx.oversize and rx.body() == b".c\r\n"


@given(st.lists(st.integers(990, 1002), min_size=1, max_size=5), st.integers(1, 1500))
def test_long_line_flag_matches_a_naive_count(lengths, chunk):
    lines = [b"x" * (n - 2) for n in lengths]
    rx, _, end = receive(b"\r\n".join(lines) + b"\r\n.\r\n", chunk)
    assert end >= 0
    assert rx.long_line is any(len(line) + 2 > MAX_TEXT_LINE for line in lines)
