"""The protocol core's fast paths give exactly what the general code gives.

The sink takes shortcuts on its hot path (benchmarks/ shows why); each one
is a claim that the general code would have returned the same. These tests
check the claims against the general code, on inputs drawn to hit the
edges (special characters, limits, splits), not on speed.
"""

import re

import pytest
from hypothesis import given, strategies as st

from smtpbench.protocol.commands import _SIMPLE_PATHS, _parse_path, parse_path_and_params
from smtpbench.protocol.data import TERMINATOR, _long_line_after, find_terminator
from smtpbench.protocol.errors import ProtocolError
from smtpbench.protocol.limits import MAX_PATH, MAX_TEXT_LINE

PATH_PIECES = st.lists(
    st.sampled_from([b"a", b"Z", b"0", b"_", b".", b"..", b"+", b"=", b"-", b"@", b"<", b">", b'"', b"\\",
                     b" ", b":", b"[", b"]", b"\x00", b"\t", "é".encode(), b"\xff", b"x" * 120]),
    max_size=12,
).map(b"".join)


@pytest.mark.parametrize("prefix", [b"FROM:", b"TO:"])
@given(head=st.sampled_from([b"", b" ", b"  "]), path=PATH_PIECES, tail=st.sampled_from([b"", b" SIZE=10", b"x"]),
       case=st.sampled_from([bytes.upper, bytes.lower]))
def test_simple_path_is_what_the_general_parser_returns(prefix, head, path, tail, case):
    arg = case(prefix) + head + b"<" + path + b">" + tail
    m = _SIMPLE_PATHS[prefix].match(arg)
    if m is None or m.end(1) - m.start(1) + 2 > MAX_PATH:
        return  # the general parser handles it
    assert _parse_path(arg, prefix, allow_null=False) == (m.group(1).decode(), arg[m.end():])


@pytest.mark.parametrize("arg", [
    b"FROM:<a@b.c>", b"from: <user.name+tag@example.org> SIZE=1000 BODY=8BITMIME", b"FROM:<a@b..c>",
    b"FROM:<@route:a@b.c>", b"FROM:<>", b"FROM:<" + b"x" * 250 + b"@b.c>", b"FROM:<" + b"x" * 240 + b"@b.c>",
    b"FROM:<a@b.c>x", b"FROM:<a@b.>",
])
def test_parse_path_and_params_matches_general_parser(arg):
    def general():
        path, tail = _parse_path(arg, b"FROM:", True)
        return path, parse_path_and_params(b"FROM:<postmaster>" + tail, b"FROM:", True)[1]

    try:
        expected = general()
    except ProtocolError as e:
        with pytest.raises(ProtocolError) as got:
            parse_path_and_params(arg, b"FROM:", True)
        assert (got.value.code, got.value.status, got.value.text) == (e.code, e.status, e.text)
    else:
        assert parse_path_and_params(arg, b"FROM:", True) == expected


# -- DATA: terminator search and the 1000-octet line check --------------------

BODY = st.lists(
    st.sampled_from([b"x", b".", b"..", b"\r", b"\n", b"\r\n", b"\r\n.", b".\r\n", b"\r\n.\r\n", b"\n.\n",
                     b"x" * 80, b"x" * (MAX_TEXT_LINE - 2), b"x" * (MAX_TEXT_LINE - 1), b"x" * MAX_TEXT_LINE]),
    max_size=30,
).map(b"".join)

# The plain statement of the rule: an LF followed by MAX_TEXT_LINE non-LF octets.
LONG_LINE = re.compile(rb"\n[^\n]{%d}" % MAX_TEXT_LINE)


PAD = b"y\r\n" * 1500  # long chunks take the dot-by-dot search, short ones the general one


@given(BODY, st.booleans())
def test_find_terminator_is_find(body, long):
    body = PAD + body if long else body
    assert find_terminator(body) == body.find(TERMINATOR)


@pytest.mark.parametrize("pad", [b"", PAD])
def test_find_terminator_after_many_dots(pad):
    body = pad + b"a. b. c. d. e. f. g. h. i. j. k.\r\n.x\r\n..\r\n.\r\nMAIL"
    assert find_terminator(body) == body.find(TERMINATOR) > 0


@given(BODY, st.integers(0, 40), st.integers(0, 40))
def test_long_line_after_is_the_regex(body, skip, cut):
    end = max(0, len(body) - cut)
    lf = body.find(b"\n", min(skip, end), end)
    if lf < 0:
        return
    assert _long_line_after(body, lf, end) == bool(LONG_LINE.search(body[:end], lf))
