"""Command lines: the parser and writers in protocol/commands.py, and the
session's incremental command-line reader (whole, bytewise, trailing data,
RFC 5321 §4.5.3.1.4 line limit, lines that never end)."""

import pytest
from hypothesis import given, strategies as st

from smtpbench.protocol.commands import (
    format_params, mail_from, parse_command_line, parse_path_and_params, rcpt_to, simple,
)
from smtpbench.protocol.errors import ProtocolError
from smtpbench.protocol.limits import MAX_COMMAND_LINE, MAX_PATH

from smtpbench.protocol.replies import ReplyReader

from smtp_helpers import Dialog, dialog  # noqa: F401  (dialog is a fixture)


# -- parse_command_line -------------------------------------------------------

@pytest.mark.parametrize("line, verb, arg", [
    (b"EHLO client.example", b"EHLO", b"client.example"),
    (b"ehlo client.example", b"EHLO", b"client.example"),
    (b"MaIl FROM:<a@b.example>  ", b"MAIL", b"FROM:<a@b.example>"),
    (b"NOOP", b"NOOP", b""),
    (b"QUIT ", b"QUIT", b""),
    (b"STARTTLS", b"STARTTLS", b""),
])
def test_parse_command_line(line, verb, arg):
    cmd = parse_command_line(line)
    assert (cmd.verb, cmd.arg) == (verb, arg)


@pytest.mark.parametrize("line, status", [(b"", "5.5.2"), (b"FOO bar", "5.5.1"), (b"MAILFROM:<a@b>", "5.5.1"),
                                           (b"\xff\xfe", "5.5.1"), (b" NOOP", "5.5.2")])
def test_unknown_or_empty_verb_is_500(line, status):
    with pytest.raises(ProtocolError) as e:
        parse_command_line(line)
    assert (e.value.code, e.value.status) == (500, status)


# -- paths and ESMTP parameters -----------------------------------------------

@pytest.mark.parametrize("arg, address, params", [
    (b"FROM:<a@b.example>", "a@b.example", {}),
    (b"from: <a@b.example>", "a@b.example", {}),
    (b"FROM:<>", "", {}),
    (b"FROM:<a@b.example> SIZE=100 BODY=8BITMIME", "a@b.example", {"SIZE": "100", "BODY": "8BITMIME"}),
    (b"FROM:<a@b.example> smtputf8", "a@b.example", {"SMTPUTF8": None}),
    (b"FROM:<@relay.example,@other.example:a@b.example>", "a@b.example", {}),
    (b'FROM:<"odd>local"@b.example>', '"odd>local"@b.example', {}),
    (b"FROM:<a@[192.0.2.1]>", "a@[192.0.2.1]", {}),
    (b"FROM:<postmaster>", "postmaster", {}),
    ("FROM:<δοκιμή@παράδειγμα.δοκιμή> SMTPUTF8".encode(), "δοκιμή@παράδειγμα.δοκιμή", {"SMTPUTF8": None}),
])
def test_parse_path_and_params(arg, address, params):
    assert parse_path_and_params(arg, b"FROM:", allow_null=True) == (address, params)


@pytest.mark.parametrize("arg", [
    b"TO:a@b.example",                     # no angle brackets
    b"TO:<a@b.example",                    # unterminated
    b"TO:<>",                              # null forward-path
    b"TO:<a@b.example>SIZE=1",             # no space before parameters
    b"TO:<a@b.example> =x",                # parameter without keyword
    b"TO:<a@b.example> SIZE=",             # empty value
    b"TO:<a@b.example> A=b=c",             # '=' inside a value
    b"TO:<a@>",                            # no domain
    b"TO:<a@b..example>",                  # empty label
    b"TO:<a\x01@b.example>",               # control character
    b"TO:<\xff@b.example>",                # not UTF-8
    b"FROM:<a@b.example>",                 # wrong prefix
    b"TO:<" + b"a" * MAX_PATH + b"@b.example>",  # path over RFC 5321 §4.5.3.1.3
])
def test_bad_paths_are_501(arg):
    with pytest.raises(ProtocolError) as e:
        parse_path_and_params(arg, b"TO:", allow_null=False)
    assert e.value.code == 501


def test_utf8_parameter_values_only_with_smtputf8():
    arg = "TO:<a@b.example> ORCPT=rfc822;δ@b.example".encode()
    assert parse_path_and_params(arg, b"TO:", allow_null=False, utf8=True)[1] == {"ORCPT": "rfc822;δ@b.example"}
    with pytest.raises(ProtocolError):
        parse_path_and_params(arg, b"TO:", allow_null=False, utf8=False)


# -- writers: what the client writes, the server reads back -------------------

@pytest.mark.parametrize("address, params", [
    ("a@b.example", None), ("", {"SIZE": "10"}), ("ü@ñ.example", {"SMTPUTF8": None, "BODY": "8BITMIME"}),
])
def test_mail_from_and_rcpt_to_round_trip(address, params):
    line = mail_from(address, params)
    assert line.endswith(b"\r\n")
    cmd = parse_command_line(line[:-2])
    assert cmd.verb == b"MAIL"
    assert parse_path_and_params(cmd.arg, b"FROM:", allow_null=True) == (address, params or {})
    if address:
        cmd = parse_command_line(rcpt_to(address, params)[:-2])
        assert parse_path_and_params(cmd.arg, b"TO:", allow_null=False) == (address, params or {})


@given(st.dictionaries(st.from_regex(r"[A-Za-z0-9][A-Za-z0-9-]{0,8}", fullmatch=True),
                       st.none() | st.from_regex(r"[!-<>-~]{1,12}", fullmatch=True), max_size=4))
def test_params_round_trip(params):
    line = mail_from("x@y.example", params)[:-2]
    _, parsed = parse_path_and_params(parse_command_line(line).arg, b"FROM:", allow_null=True)
    assert parsed == {k.upper(): v for k, v in params.items()}
    assert format_params(params).count(" ") == len(params)


def test_simple():
    assert simple("EHLO", "client.example") == b"EHLO client.example\r\n"
    assert simple("QUIT") == b"QUIT\r\n"


# -- the session's command reader: whole, bytewise, trailing data ---------------

PIPELINE = (b"EHLO client.example\r\nNOOP\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\n"
            b"RSET\r\nVRFY someone\r\nHELP\r\nQUIT\r\n")


def test_pipelined_commands_answered_in_order(dialog):
    d = dialog()
    assert [r.code for r in d.send(PIPELINE)] == [250, 250, 250, 250, 250, 252, 214, 221]
    assert d.session.closing


def test_pipelined_commands_answered_in_one_feed():
    # RFC 2920: every complete command in a read is answered before feed returns.
    out = Dialog().session.feed(PIPELINE)
    assert [r.code for r in ReplyReader().feed(b"".join(out))] == [250, 250, 250, 250, 250, 252, 214, 221]


def test_trailing_partial_command_waits_for_its_line_end(dialog):
    d = dialog()
    assert d.codes(b"EHLO client.example\r\nNOOP") == [250]
    assert d.codes(b"\r") == []
    assert d.codes(b"\nNO") == [250]
    assert d.codes(b"OP\r\n") == [250]


def test_bare_lf_ends_a_command_line(dialog):
    assert dialog().codes(b"EHLO client.example\nNOOP\n") == [250, 250]


@pytest.mark.parametrize("octets, code", [(MAX_COMMAND_LINE, 250), (MAX_COMMAND_LINE + 1, 500),
                                          (MAX_COMMAND_LINE * 3, 500)])
def test_command_line_limit_and_session_stays_usable(dialog, octets, code):
    d = dialog()
    line = b"NOOP " + b"x" * (octets - len(b"NOOP \r\n")) + b"\r\n"
    assert len(line) == octets
    replies = d.send(b"EHLO client.example\r\n" + line + b"NOOP\r\n")
    assert [r.code for r in replies] == [250, code, 250]
    if code == 500:
        assert "512" in replies[1].text
    assert d.codes(b"MAIL FROM:<a@example.org>\r\n") == [250]


def test_a_line_that_never_ends_does_not_grow_the_buffer():
    d = Dialog()
    d.send(b"EHLO client.example\r\n")
    chunk = b"x" * 65536
    for _ in range(64):  # 4 MiB without a line end
        assert d.session.feed(chunk) == []
        assert len(d.session._buf) <= MAX_COMMAND_LINE
    assert d.codes(b"\r\nNOOP\r\n") == [500, 250]
    assert d.session.counters.protocol_errors == 1
