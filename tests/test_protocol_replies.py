"""Replies: formatting, line parsing and the incremental ReplyReader (RFC 5321 §4.2,
RFC 2034/3463 enhanced status codes)."""

import pytest
from hypothesis import given, settings, strategies as st

from smtpbench.protocol.errors import ProtocolError
from smtpbench.protocol.limits import MAX_REPLY_LINE, MAX_REPLY_LINES
from smtpbench.protocol.replies import Reply, ReplyReader, format_reply, parse_reply_line

from smtp_helpers import CHUNKINGS, chunked

EHLO = (b"250-smtp.example greets you\r\n250-PIPELINING\r\n250-SIZE 1000\r\n250 8BITMIME\r\n")


def read_all(data: bytes, chunk: int | None) -> tuple[list[Reply], ReplyReader]:
    reader = ReplyReader()
    replies = []
    for piece in chunked(data, chunk):
        replies += reader.feed(piece)
    return replies, reader


def test_format_reply():
    assert format_reply(250, "OK") == b"250 OK\r\n"
    assert format_reply(250, "Sender OK", "2.1.0") == b"250 2.1.0 Sender OK\r\n"
    assert format_reply(250, ["a", "b", "c"]) == b"250-a\r\n250-b\r\n250 c\r\n"
    assert format_reply(451, "one\ntwo", "4.7.1") == b"451-4.7.1 one\r\n451 4.7.1 two\r\n"


@pytest.mark.parametrize("line, parsed", [
    (b"250 OK", (250, True, "OK")),
    (b"250-PIPELINING", (250, False, "PIPELINING")),
    (b"250", (250, True, "")),
    (b"554 5.7.1 \xff", (554, True, "5.7.1 \ufffd")),
])
def test_parse_reply_line(line, parsed):
    assert parse_reply_line(line) == parsed


@pytest.mark.parametrize("line", [b"", b"25", b"2x0 OK", b"650 OK", b"250_OK", b"OK 250", b"\xff\xff\xff"])
def test_malformed_reply_lines(line):
    with pytest.raises(ProtocolError):
        parse_reply_line(line)


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_reader_multiline_whole_and_bytewise(chunk):
    replies, reader = read_all(EHLO, chunk)
    assert replies == [Reply(250, ("smtp.example greets you", "PIPELINING", "SIZE 1000", "8BITMIME"))]
    assert not reader.pending


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_reader_keeps_trailing_data(chunk):
    replies, reader = read_all(b"220 hello\r\n250-first\r\n250 second\r\n354 go", chunk)
    assert [r.code for r in replies] == [220, 250]
    assert reader.pending
    assert reader.feed(b" ahead\r\n") == [Reply(354, ("go ahead",))]
    assert not reader.pending


@pytest.mark.parametrize("chunk", CHUNKINGS)
def test_reader_pipelined_replies_in_order(chunk):
    data = b"250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no\r\n354 go\r\n"
    replies, _ = read_all(data, chunk)
    assert [(r.code, r.status, r.ok) for r in replies] == [
        (250, "2.1.0", True), (250, "2.1.5", True), (550, "5.1.1", False), (354, "", True)]


def test_reader_accepts_bare_lf_line_ends():
    assert ReplyReader().feed(b"250-a\n250 b\n") == [Reply(250, ("a", "b"))]


@pytest.mark.parametrize("data", [
    b"250-a\r\n251 b\r\n",                                   # code changed mid-reply
    b"250 " + b"x" * MAX_REPLY_LINE + b"\r\n",               # line over 512 octets
    b"250-x\r\n" * (MAX_REPLY_LINES + 1),                    # endless multi-line reply
    b"HTTP/1.1 200 OK\r\n",                                  # not SMTP at all
])
def test_reader_rejects_hostile_replies(data):
    with pytest.raises(ProtocolError) as e:
        read_all(data, None)
    assert e.value.code == 0


def test_reader_line_that_never_ends_is_an_error_not_growth():
    reader = ReplyReader()
    with pytest.raises(ProtocolError):
        for _ in range(100):
            reader.feed(b"250 " + b"x" * 100)
    assert len(reader._buf) < 2 * MAX_REPLY_LINE


def test_reply_status_and_text():
    r = Reply(250, ("2.0.0 first", "second"))
    assert (r.status, r.text, r.ok) == ("2.0.0", "2.0.0 first\nsecond", True)
    assert Reply(250, ("smtp.example",)).status == ""
    assert Reply(421, ("9.9.9 no",)).status == ""


reply_text = st.text(st.characters(min_codepoint=32, max_codepoint=0x2FFF, blacklist_characters="\x7f"),
                     max_size=60)


@given(st.integers(200, 599), st.lists(reply_text, min_size=1, max_size=5),
       st.sampled_from(["", "2.0.0", "5.7.1"]), st.sampled_from(CHUNKINGS))
def test_format_then_read_round_trip(code, lines, status, chunk):
    replies, reader = read_all(format_reply(code, lines, status), chunk)
    prefix = f"{status} " if status else ""
    assert replies == [Reply(code, tuple(prefix + line for line in lines))]
    assert not reader.pending


@settings(max_examples=300)
@given(st.lists(st.binary(max_size=80) | st.sampled_from([b"250-", b"250 ", b"\r\n", b"\n", b"354", b"5"]),
                max_size=30),
       st.integers(1, 40))
def test_reader_parses_or_raises_protocol_error(parts, chunk):
    """Any byte stream, in any chunks: replies, or ProtocolError, never another exception."""
    try:
        replies, _ = read_all(b"".join(parts), chunk)
    except ProtocolError:
        return
    for reply in replies:
        assert 200 <= reply.code <= 599 and reply.lines


@pytest.mark.parametrize("bad", [b"this is not smtp\r\n", b"x" * 600], ids=["garbage", "long"])
def test_reader_error_keeps_the_replies_before_the_bad_line(bad):
    """RFC 5321 §4.2: each reply stands on its own. The replies completed before a malformed line
    (or one over 512 octets, §4.5.3.1.5) in the same read come with the error, so what they said
    does not depend on where TCP cut the stream."""
    reader = ReplyReader()
    with pytest.raises(ProtocolError) as err:
        reader.feed(b"250 ok\r\n250-a\r\n250 b\r\n" + bad)
    assert [(r.code, r.lines) for r in err.value.replies] == [(250, ("ok",)), (250, ("a", "b"))]
