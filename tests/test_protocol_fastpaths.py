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
from smtpbench.protocol.data import TERMINATOR, _long_line_after, find_terminator, find_terminator_counting
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


@given(BODY, st.booleans(), st.integers(0, 3))
def test_find_terminator_counting_is_find_and_count(body, long, dot_lines):
    body = (PAD if long else b"") + b"x\r\n.y" * (40 * dot_lines) + body  # past its dot-by-dot and find loops
    end = body.find(TERMINATOR)
    assert find_terminator_counting(body) == (end, body.count(b"\r\n.", 0, end if end >= 0 else len(body)))


@given(BODY, st.integers(0, 40), st.integers(0, 40))
def test_long_line_after_is_the_regex(body, skip, cut):
    end = max(0, len(body) - cut)
    lf = body.find(b"\n", min(skip, end), end)
    if lf < 0:
        return
    assert _long_line_after(body, lf, end) == bool(LONG_LINE.search(body[:end], lf))


@given(BODY, st.sampled_from([b"", b"\r\n.\r\n", b"\r\n.\r\nNOOP\r\n", b"\r\n.\r\nMAIL FROM:<a@example.org>\r\n"]),
       st.booleans())
def test_body_in_one_read_is_what_the_receiver_finds(body, end, keep):
    """A body that ends in its first read is checked without a DataReceiver when it is not
    kept: the replies, counts and state are the receiver's (fed the same octets as a bytearray,
    which takes the general path). Bare-LF dot lines never end it (SMTP smuggling)."""
    seen = []
    for wrap in (bytes, bytearray):
        session = ServerSession(ServerConfig(max_message_size=2500, keep_body=keep))
        session.greeting()
        session.feed(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        out = session.feed(wrap(body + end))
        c = session.counters
        seen.append((out, session.state, c.messages, c.transactions, c.bytes, c.replies, c.protocol_errors))
    assert seen[0] == seen[1]


# -- the server session's memos and canned replies -------------------------------

from smtpbench.protocol import commands, server as server_module  # noqa: E402
from smtpbench.protocol.replies import format_reply  # noqa: E402
from smtpbench.protocol.server import Action, ServerConfig, ServerHooks, ServerSession  # noqa: E402

from smtp_helpers import Dialog  # noqa: E402


def test_remembered_path_gives_each_caller_its_own_params():
    arg = b"FROM:<a@b.example> SIZE=10 BODY=8BITMIME"
    first = commands.parse_path_and_params(arg, b"FROM:", True)
    first[1]["SIZE"] = "tampered"
    assert commands.parse_path_and_params(arg, b"FROM:", True) == ("a@b.example", {"SIZE": "10", "BODY": "8BITMIME"})


def test_path_memo_is_bounded():
    for i in range(commands._PARSED_MAX + 10):
        commands.parse_path_and_params(b"TO:<u%d@example.org>" % i, b"TO:", False)
    memo = commands.path_memo(b"TO:", False, True)
    assert 0 < len(memo) <= commands._PARSED_MAX
    assert memo is commands.path_memo(b"TO:", False, True)  # cleared in place: sessions hold it


def test_line_memo_is_bounded_and_keeps_no_auth_line():
    d = Dialog(extensions=("AUTH",))
    d.send(b"EHLO c.example\r\n")
    for i in range(server_module._LINES_MAX + 10):
        d.send(b"VRFY u%d\r\n" % i)
    d.send(b"AUTH PLAIN AHVzZXIAc2VjcmV0\r\n")
    assert 0 < len(server_module._LINES) <= server_module._LINES_MAX
    assert not any(line.startswith(b"AUTH") for line in server_module._LINES)


def test_remembered_sender_params_are_each_envelopes_own():
    d = Dialog(extensions=("SIZE", "8BITMIME"))
    envelopes = []
    for _ in range(2):
        d.codes(b"EHLO c.example\r\nMAIL FROM:<a@example.org> SIZE=10 BODY=8BITMIME\r\n")
        envelopes.append(d.session.envelope)
        envelopes[-1].mail_params["SIZE"] = "tampered"
    assert envelopes[0].mail_params is not envelopes[1].mail_params
    d.codes(b"RSET\r\nMAIL FROM:<a@example.org> SIZE=10 BODY=8BITMIME\r\n")
    assert d.session.envelope.mail_params == {"SIZE": "10", "BODY": "8BITMIME"}


@pytest.mark.parametrize("order", [(True, False), (False, True)])
def test_remembered_paths_are_per_configuration(order):
    """Whether a parameter value may be UTF-8 depends on SMTPUTF8 being offered (RFC 6531 §3.3):
    the same line parsed under one configuration is not taken for another's."""
    line = "MAIL FROM:<a@example.org> X-TRY=\u00e9\r\n".encode()
    for utf8 in order:
        d = Dialog(extensions=("SMTPUTF8",) if utf8 else ("SIZE",))
        assert d.codes(b"EHLO c.example\r\n" + line) == [250, 555 if utf8 else 501]


@pytest.mark.parametrize("lmtp", [False, True])
def test_reply_counts_are_the_replies_sent(lmtp):
    """Replies are counted by code, those of a transaction's steps apart from the rest: together, what was sent."""
    d = Dialog(lmtp=lmtp, extensions=("ENHANCEDSTATUSCODES", "PIPELINING"))
    codes = [d.greeting.code]
    hello = b"LHLO" if lmtp else b"EHLO"
    for script in [hello + b" c.example\r\nNOOP\r\nBOGUS\r\n", b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n",
                   b"RCPT TO:<c@example.org>\r\nDATA\r\n", b"x\r\n.\r\nDATA\r\nRSET\r\nQUIT\r\n"]:
        codes += d.codes(script)
    assert d.session.counters.replies == {code: codes.count(code) for code in codes}


def test_new_envelope_is_what_the_class_makes():
    from smtpbench.protocol.server_types import Envelope, new_envelope

    made = new_envelope("a@example.org", {"SIZE": "10"}, "c.example", True)
    assert made == Envelope("a@example.org", {"SIZE": "10"}, [], "c.example", True)  # every field set
    assert made.rcpt_to is not new_envelope("", {}, "", False).rcpt_to


@pytest.mark.parametrize("tls", [False, True])
def test_greeting_replies_are_canned_ones(tls):
    """HELO gets the one-line reply, EHLO the extensions (without STARTTLS once TLS is up, RFC 3207 §4.2)."""
    config = dict(hostname="mx.example", extensions=("STARTTLS", "SIZE"), tls_active=tls)
    canned = ServerConfig(**config).canned
    for line, wire in [(b"HELO c.example\r\n", canned.helo), (b"EHLO c.example\r\n", canned.ehlo_tls if tls else canned.ehlo)]:
        d = Dialog(**config)
        d.send(line)
        assert d.wire.endswith(wire)
    assert canned.helo == b"250 mx.example\r\n"


@pytest.mark.parametrize("line", [b"NOOP\r\n", b"NOOP\n"])
def test_remembered_line_after_an_overlong_one_is_its_tail(line):
    """A line seen before, arriving as the end of a too-long line, is that line's end (RFC 5321 §4.5.3.1.4)."""
    d = Dialog()
    assert d.codes(b"EHLO c.example\r\n" + line) == [250, 250]  # now remembered
    assert d.codes(b"X" * 600) == []
    assert d.codes(line) == [500]
    assert d.codes(line) == [250]


def test_bare_lf_line_seen_before_is_one_command():
    d = Dialog()
    assert d.codes(b"EHLO c.example\r\nRSET\n") == [250, 250]
    assert d.codes(b"RSET\n") == [250]


@pytest.mark.parametrize("extensions", [("PIPELINING",), ("ENHANCEDSTATUSCODES", "STARTTLS", "AUTH", "SIZE")])
def test_canned_replies_are_what_reply_formats(extensions):
    config = ServerConfig(hostname="mx.example", extensions=extensions, max_message_size=999)
    session = ServerSession(config)
    canned = config.canned
    for wire, (code, status, text) in [
        (canned.banner, (220, "", "mx.example ESMTP smtpbench")), (canned.helo, (250, "", "mx.example")),
        (canned.sender_ok, (250, "2.1.0", "Sender OK")), (canned.recipient_ok, (250, "2.1.5", "Recipient OK")),
        (canned.start_data, (354, "", "End data with <CR><LF>.<CR><LF>")),
        (canned.accepted, (250, "2.0.0", "Message accepted")), (canned.reset_ok, (250, "2.0.0", "Reset OK")),
        (canned.bye, (221, "2.0.0", "mx.example closing connection")),
    ]:
        session._out = []
        session.reply(code, status, text)
        assert session._out == [wire]
    assert (b"STARTTLS" in canned.ehlo) == ("STARTTLS" in extensions)  # EHLO's lines: test_protocol_server
    assert b"STARTTLS" not in canned.ehlo_tls


class Stages(ServerHooks):
    """A command hook that says which stages it wants, and logs the calls."""

    def __init__(self, stages):
        self.command_stages = stages
        self.calls = []

    def command(self, stage, session, arg):
        self.calls.append(stage)
        return (450, "4.2.0", "no") if stage == "RCPT" else None


def test_command_hook_is_called_for_its_stages_only_and_sees_changes():
    hooks = Stages({"RCPT"})
    d = Dialog(hooks=hooks)
    assert d.begin(rcpts=1) == [250, 250, 450]
    assert hooks.calls == ["RCPT"]
    hooks.command_stages.add("MAIL")  # changed in place: the open session sees it
    d.codes(b"RSET\r\nMAIL FROM:<a@example.org>\r\n")
    assert hooks.calls == ["RCPT", "MAIL"]


def test_command_hook_without_stages_sees_every_command_also_remembered_ones():
    """``command_stages = None`` means all stages, for lines seen before (the memo) as for new ones."""
    hooks = Stages(None)
    d = Dialog(hooks=hooks)
    line = b"VRFY someone.unseen.before@example.org\r\n"
    assert d.codes(b"EHLO c.example\r\n" + line) == [250, 252]
    assert d.codes(line) == [252]  # a whole remembered line: the fast path
    assert hooks.calls == ["EHLO", "VRFY", "VRFY"]


class Acting(ServerHooks):
    """Answers RCPT with the action it is given (the driver's business: delay, tarpit, disconnect)."""

    def __init__(self, action):
        self.action = action

    def command(self, stage, session, arg):
        return self.action if stage == "RCPT" else None


FLAGS = ("closing", "abort", "paused", "tarpit", "starttls")


@pytest.mark.parametrize("action", [Action("delay", 0.5), Action("tarpit", rate=100.0), Action("disconnect"),
                                    Action("delay", 0.5, (451, "4.3.0", "later")), None])
@pytest.mark.parametrize("tail", [b"QUIT\r\n", b"STARTTLS\r\n", b"NOOP\r\n"])
def test_attention_is_set_whenever_the_driver_has_more_to_do(action, tail):
    """The sink's driver looks at the session's flags only when ``attention`` is set."""
    d = Dialog(hooks=Acting(action), extensions=("STARTTLS", "PIPELINING"))
    s = d.session
    for piece in (b"EHLO c.example\r\n", b"MAIL FROM:<a@example.org>\r\n", b"RCPT TO:<b@example.org>\r\n", tail):
        s.feed(piece)
        assert s.attention or not any(getattr(s, flag) for flag in FLAGS)
        if s.paused:
            s.resume()
            assert s.attention or not any(getattr(s, flag) for flag in FLAGS)
