"""The server state machine (RFC 5321, LMTP RFC 2033, BDAT RFC 3030, AUTH RFC 4954,
STARTTLS RFC 3207), fed scripted bytes whole, bytewise and in odd chunks."""

import ast
import base64
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from smtpbench.protocol.data import dot_stuff
from smtpbench.protocol.replies import ReplyReader
from smtpbench.protocol.server import INIT, READY, ServerConfig, ServerSession

from smtp_helpers import Dialog, Recorder, dialog  # noqa: F401  (dialog is a fixture)

ALL = ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING",
       "BINARYMIME", "DSN", "STARTTLS", "AUTH")


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


# -- greeting, EHLO/HELO ----------------------------------------------------------

def test_greeting_and_ehlo(dialog):
    d = dialog(hostname="mx.example", max_message_size=12345)
    assert d.greeting.code == 220 and d.greeting.lines[0].startswith("mx.example")
    (ehlo,) = d.send(b"EHLO client.example\r\n")
    assert ehlo.code == 250
    assert ehlo.lines == ("mx.example", "PIPELINING", "SIZE 12345", "8BITMIME", "SMTPUTF8",
                          "ENHANCEDSTATUSCODES", "CHUNKING", "DSN")


@pytest.mark.parametrize("ext", ["PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES"])
def test_each_extension_is_switchable(dialog, ext):
    offered = tuple(e for e in ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES") if e != ext)
    (ehlo,) = dialog(extensions=offered).send(b"EHLO client.example\r\n")
    keywords = {line.split()[0] for line in ehlo.lines[1:]}
    assert ext not in keywords and len(keywords) == 4


def test_helo_is_one_line(dialog):
    (helo,) = dialog(hostname="mx.example").send(b"HELO client.example\r\n")
    assert helo.lines == ("mx.example",)


def test_enhanced_status_codes_lead_the_text():
    """RFC 2034 §4: the enhanced code comes first in the text, and only when advertised."""
    d = Dialog()
    d.send(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n")
    assert d.wire.endswith(b"\r\n250 2.1.0 Sender OK\r\n")
    d = Dialog(extensions=("PIPELINING",))
    d.send(b"EHLO c.example\r\nMAIL FROM:<a@example.org>\r\n")
    assert d.wire.endswith(b"\r\n250 Sender OK\r\n")


# -- a transaction ----------------------------------------------------------------

BODY = b"Subject: t\r\n\r\n.dot\r\nFrom here\r\n\r\n..\r\nend\r\n"


def test_transaction_records_unstuffed_body(dialog):
    d = dialog(keep_body=True)
    assert d.begin(rcpts=3) == [250, 250, 250, 250, 250]
    assert d.codes(b"DATA\r\n") == [354]
    assert d.codes(dot_stuff(BODY)) == [250]
    (env, body, size), = d.hooks.messages
    assert body == BODY and size == len(dot_stuff(BODY)) - 3
    assert env.mail_from == "a@example.org" and env.rcpt_to == ["r0@example.net", "r1@example.net", "r2@example.net"]
    c = d.session.counters
    assert (c.transactions, c.messages, c.recipients, c.bytes) == (1, 1, 3, size)
    assert d.session.state == READY


def test_several_messages_pipelined_in_one_stream(dialog):
    d = dialog(keep_body=True)
    one = b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\n" + dot_stuff(BODY)
    assert d.codes(b"EHLO c.example\r\n" + one * 3 + b"QUIT\r\n") == [250] + [250, 250, 354, 250] * 3 + [221]
    assert d.bodies == [BODY] * 3


def test_rset_clears_the_transaction(dialog):
    d = dialog()
    d.begin()
    assert d.codes(b"RSET\r\nDATA\r\nMAIL FROM:<x@example.org>\r\n") == [250, 503, 250]


# -- reply codes named by the issue ---------------------------------------------------

@pytest.mark.parametrize("script, code", [
    (b"FOO\r\n", 500),
    (b"EHLO\r\n", 501),
    (b"MAIL FROM:nobrackets@example.org\r\n", 501),
    (b"MAIL FROM:<a@example.org>\r\nMAIL FROM:<a@example.org>\r\n", 503),
    (b"RCPT TO:<b@example.net>\r\n", 503),
    (b"MAIL FROM:<a@example.org>\r\nDATA\r\n", 503),
    (b"DATA\r\n", 503),
    (b"DATA now\r\n", 501),
    (b"MAIL FROM:<a@example.org> FOO=bar\r\n", 555),
    (b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net> FOO=1\r\n", 555),
    (b"MAIL FROM:<a@example.org> SIZE=abc\r\n", 501),
    (b"MAIL FROM:<a@example.org> SIZE=\xc2\xb2\r\n", 501),   # a Unicode digit is not a number
    (b"MAIL FROM:<a@example.org> SIZE=1001\r\n", 552),
    (b"VRFY postmaster\r\n", 252),
    (b"VRFY\r\n", 501),
    (b"EXPN list\r\n", 502),
    (b"HELP\r\n", 214),
    (b"NOOP\r\n", 250),
    (b"QUIT\r\n", 221),
])
def test_reply_codes(dialog, script, code):
    d = dialog(max_message_size=1000)
    assert d.codes(b"EHLO c.example\r\n" + script)[-1] == code


def test_mail_before_ehlo_is_503(dialog):
    assert dialog().codes(b"MAIL FROM:<a@example.org>\r\n") == [503]


def test_size_at_the_limit_is_accepted(dialog):
    assert dialog(max_message_size=1000).codes(b"EHLO c\r\nMAIL FROM:<a@example.org> SIZE=1000\r\n") == [250, 250]


def test_452_at_max_recipients(dialog):
    d = dialog(max_recipients=100, keep_body=True)
    codes = d.begin(rcpts=101)
    assert codes[-2:] == [250, 452] and codes.count(250) == 102
    assert d.codes(b"DATA\r\n" + dot_stuff(b"x\r\n")) == [354, 250]
    assert len(d.hooks.messages[0][0].rcpt_to) == 100


def test_recipients_over_the_limit_do_not_end_the_session(dialog):
    # RFC 5321 §4.5.3.1.10: beyond its limit the server answers 452 and the client sends the
    # rest in a later transaction. Pipelined, 30 over the limit cost the accepted 100 their
    # message: after 20 errors the session closed with 421 (max_errors).
    d = dialog(max_recipients=100)
    d.begin()
    script = b"".join(b"RCPT TO:<x%d@example.net>\r\n" % i for i in range(129)) + b"DATA\r\nhi\r\n.\r\n"
    assert d.codes(script) == [250] * 99 + [452] * 30 + [354, 250]
    assert len(d.hooks.messages[0][0].rcpt_to) == 100 and not d.session.closing


def test_552_is_sent_after_the_terminator_and_session_goes_on(dialog):
    d = dialog(max_message_size=100, keep_body=True)
    d.begin()
    assert d.codes(b"DATA\r\n" + b"x" * 70 + b"\r\n" + b"y" * 70 + b"\r\n") == [354]
    replies = d.send(b".\r\n")
    assert [(r.code, r.status) for r in replies] == [(552, "5.3.4")]
    assert d.hooks.messages == [] and d.session.counters.messages == 0
    assert d.begin()[-2:] == [250, 250]
    assert d.codes(b"DATA\r\nsmall\r\n.\r\n") == [354, 250]


def test_long_text_line_is_refused_after_the_terminator(dialog):
    d = dialog(keep_body=True)
    d.begin()
    replies = d.send(b"DATA\r\n" + b"z" * 1200 + b"\r\n.\r\n")
    assert [r.code for r in replies] == [354, 500] and "1000" in replies[1].text
    d.begin()
    assert d.codes(b"DATA\r\nfine\r\n.\r\n") == [354, 250]
    assert d.bodies == [b"fine\r\n"]


@pytest.mark.parametrize("fake", [b"\n.\n", b"\r\n.\n", b"\n.\r\n"])
def test_smuggled_commands_stay_in_the_body(dialog, fake):
    d = dialog(keep_body=True)
    d.begin()
    smuggled = b"hi" + fake + b"MAIL FROM:<evil@example.org>\r\nRCPT TO:<v@example.net>\r\nDATA\r\n"
    assert d.codes(b"DATA\r\n" + smuggled) == [354]
    assert d.codes(b".\r\n") == [250]
    # A line that starts with "." loses it (RFC 5321 §4.5.2; Postfix's smtpd does the same).
    assert d.bodies == [smuggled.replace(b"\r\n.", b"\r\n")]


def test_data_never_ends_memory_stays_bounded():
    d = Dialog(keep_body=True, max_message_size=1 << 20)
    d.begin()
    d.send(b"DATA\r\n")
    chunk = (b"w" * 510 + b"\r\n") * 128
    for _ in range(64):  # 4 MiB
        assert d.session.feed(chunk) == []
        assert len(d.session._buf) == 0
        assert sum(map(len, d.session._data._parts)) <= 1 << 20
    assert d.codes(b".\r\n") == [552]


def test_after_quit_nothing_is_read(dialog):
    d = dialog()
    assert d.codes(b"QUIT\r\nNOOP\r\n") == [221]
    assert d.session.closing and d.codes(b"NOOP\r\n") == []


def test_too_many_errors_closes_with_421(dialog):
    d = dialog(max_errors=3)
    assert d.codes(b"X\r\nX\r\nX\r\nNOOP\r\n") == [500, 500, 500, 421]
    assert d.session.closing


# -- SMTPUTF8, 8BITMIME, BODY ---------------------------------------------------------

UTF8_FROM = "MAIL FROM:<δοκιμή@παράδειγμα.δοκιμή>".encode()


@pytest.mark.parametrize("extensions, mail, code", [
    (None, UTF8_FROM + b" SMTPUTF8", 250),
    (None, UTF8_FROM, 553),
    (("8BITMIME",), UTF8_FROM + b" SMTPUTF8", 555),
    (None, b"MAIL FROM:<a@example.org> SMTPUTF8=yes", 501),
    (None, b"MAIL FROM:<a@example.org> BODY=8BITMIME", 250),
    (None, b"MAIL FROM:<a@example.org> BODY=7bit", 250),
    (None, b"MAIL FROM:<a@example.org> BODY=BINARYMIME", 501),
    (("8BITMIME", "CHUNKING", "BINARYMIME"), b"MAIL FROM:<a@example.org> BODY=BINARYMIME", 250),
    (None, b"MAIL FROM:<a@example.org> BODY=bogus", 501),
    (("SMTPUTF8",), b"MAIL FROM:<a@example.org> BODY=8BITMIME", 555),
])
def test_mail_parameters(dialog, extensions, mail, code):
    d = dialog(**({"extensions": extensions} if extensions else {}))
    assert d.codes(b"EHLO c\r\n" + mail + b"\r\n") == [250, code]


def test_utf8_recipient_needs_smtputf8_on_mail(dialog):
    rcpt = "RCPT TO:<用户@例子.广告>\r\n".encode()
    d = dialog()
    assert d.codes(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n" + rcpt) == [250, 250, 553]
    assert d.codes(b"RSET\r\nMAIL FROM:<a@example.org> SMTPUTF8\r\n" + rcpt) == [250, 250, 250]


def test_8bit_and_utf8_body_kept_byte_exact(dialog):
    body = "Subject: café\r\n\r\nnaïve — 中文 \xe9\r\n".encode("utf-8") + b"\xff\xfe raw octets\r\n"
    d = dialog(keep_body=True)
    d.begin(mail=UTF8_FROM + b" SMTPUTF8 BODY=8BITMIME")
    assert d.codes(b"DATA\r\n" + dot_stuff(body)) == [354, 250]
    assert d.bodies == [body] and d.hooks.messages[0][0].smtputf8


# -- LMTP ---------------------------------------------------------------------

def test_lmtp_replies_once_per_recipient(dialog):
    d = dialog(lmtp=True, keep_body=True)
    assert d.codes(b"EHLO c\r\nHELO c\r\n") == [500, 500]
    script = b"LHLO c\r\nMAIL FROM:<a@example.org>\r\n" + b"".join(
        b"RCPT TO:<r%d@example.net>\r\n" % i for i in range(3))
    assert d.codes(script) == [250] * 5
    replies = d.send(b"DATA\r\n" + dot_stuff(BODY))
    assert [r.code for r in replies] == [354, 250, 250, 250]
    assert [r.lines[0].split()[1] for r in replies[1:]] == [f"<r{i}@example.net>" for i in range(3)]


def test_lmtp_refusal_is_per_recipient(dialog):
    d = dialog(hooks=Recorder(refuse=(452, "4.2.2", "Mailbox full")), lmtp=True)
    d.codes(b"LHLO c\r\nMAIL FROM:<a@example.org>\r\nRCPT TO:<a@x.example>\r\nRCPT TO:<b@x.example>\r\n")
    assert d.codes(b"DATA\r\nx\r\n.\r\n") == [354, 452, 452]


def test_lhlo_is_refused_in_smtp(dialog):
    assert dialog().codes(b"LHLO c\r\n") == [500]


# -- BDAT (RFC 3030) ------------------------------------------------------------------

def test_bdat_chunks(dialog):
    d = dialog(keep_body=True)
    d.begin()
    # Chunk data is opaque: a terminator and command-like bytes inside are just data.
    first = b"one\r\n.\r\nQUIT\r\n"
    assert d.codes(b"BDAT %d\r\n" % len(first) + first) == [250]
    replies = d.send(b"BDAT 5 LAST\r\nfive!NOOP\r\n")
    assert [r.code for r in replies] == [250, 250]
    assert d.bodies == [first + b"five!"]
    assert d.session.counters.bdat_chunks == 2


def test_bdat_zero_last_and_data_after_bdat(dialog):
    d = dialog(keep_body=True)
    d.begin()
    assert d.codes(b"BDAT 3\r\nabcDATA\r\nBDAT 0 LAST\r\n") == [250, 503, 250]
    assert d.bodies == [b"abc"]


def test_data_after_empty_bdat_is_503(dialog):
    # RFC 3030 §2: "If a DATA statement is issued after a BDAT for the current transaction,
    # a 503 'Bad sequence of commands' MUST be issued" -- a BDAT 0 is a BDAT too.
    d = dialog(keep_body=True)
    d.begin()
    assert d.codes(b"BDAT 0\r\nDATA\r\nBDAT 2 LAST\r\nhi") == [250, 503, 250]
    assert d.bodies == [b"hi"]
    # The next transaction (after the message, or after RSET) may use DATA again.
    assert d.codes(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT 0\r\nRSET\r\n"
                   b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nDATA\r\nx\r\n.\r\n") == [250] * 6 + [354, 250]
    # A BDAT refused before any RCPT does not belong to a transaction: DATA is still allowed.
    assert d.codes(b"MAIL FROM:<a@example.org>\r\nBDAT 1\r\nxRCPT TO:<b@example.net>\r\nDATA\r\n") == [250, 503, 250, 354]


def test_bdat_out_of_sequence_chunk_is_read_and_refused(dialog):
    d = dialog(keep_body=True)
    assert d.codes(b"EHLO c\r\nBDAT 6 LAST\r\nNOOP\r\nNOOP\r\n") == [250, 503, 250]
    assert d.hooks.messages == []


def test_bdat_oversize_is_552(dialog):
    d = dialog(keep_body=True, max_message_size=10)
    d.begin()
    assert d.codes(b"BDAT 8\r\n12345678BDAT 8 LAST\r\n12345678") == [250, 552]
    assert d.begin()[-1] == 250


@pytest.mark.parametrize("script, code", [(b"BDAT x\r\n", 501), (b"BDAT 1 NOW\r\n", 501), (b"BDAT\r\n", 501)])
def test_bdat_bad_syntax_closes(dialog, script, code):
    d = dialog()
    d.begin()
    assert d.codes(script + b"NOOP\r\n") == [code]
    assert d.session.closing


def test_bdat_needs_chunking(dialog):
    d = dialog(extensions=("PIPELINING",))
    d.begin()
    assert d.codes(b"BDAT 1 LAST\r\n") == [502]


# -- AUTH (RFC 4954) --------------------------------------------------------------------

AUTH = dict(extensions=("AUTH", "ENHANCEDSTATUSCODES"))


@pytest.mark.parametrize("script", [
    b"AUTH PLAIN " + b64("\0user\0secret") + b"\r\n",
    b"AUTH PLAIN\r\n" + b64("\0user\0secret") + b"\r\n",
    b"AUTH LOGIN\r\n" + b64("user") + b"\r\n" + b64("secret") + b"\r\n",
    b"AUTH login " + b64("user") + b"\r\n" + b64("secret") + b"\r\n",
])
def test_auth_success(dialog, script):
    d = dialog(hooks=Recorder(password="secret"), **AUTH)
    codes = d.codes(b"EHLO c\r\n" + script)
    assert codes[0] == 250 and codes[-1] == 235 and set(codes[1:-1]) <= {334}
    assert [login[1:] for login in d.hooks.logins] == [("user", "secret")]
    assert d.session.authenticated
    assert d.codes(b"AUTH PLAIN " + b64("\0user\0secret") + b"\r\n") == [503]


def test_auth_login_prompts(dialog):
    d = dialog(**AUTH)
    replies = d.send(b"EHLO c\r\nAUTH LOGIN\r\n")
    assert base64.b64decode(replies[-1].lines[0]) == b"Username:"
    assert base64.b64decode(d.send(b64("user") + b"\r\n")[0].lines[0]) == b"Password:"


@pytest.mark.parametrize("script, code", [
    (b"AUTH PLAIN " + b64("\0user\0wrong") + b"\r\n", 535),
    (b"AUTH PLAIN " + b64("no separators") + b"\r\n", 501),
    (b"AUTH PLAIN !!notbase64\r\n", 501),
    (b"AUTH PLAIN\r\n*\r\n", 501),
    (b"AUTH PLAIN\r\n!!notbase64\r\n", 501),
    (b"AUTH PLAIN\r\n" + b64("one part") + b"\r\n", 501),
    (b"AUTH LOGIN\r\n*\r\n", 501),
    (b"AUTH LOGIN\r\n" + b64("user") + b"\r\n*\r\n", 501),
    (b"AUTH LOGIN\r\n" + b64("user") + b"\r\n%%%\r\n", 501),
    (b"AUTH CRAM-MD5\r\n", 504),
    (b"AUTH\r\n", 501),
])
def test_auth_failures_leave_session_usable(dialog, script, code):
    d = dialog(hooks=Recorder(password="secret"), **AUTH)
    assert d.codes(b"EHLO c\r\n" + script)[-1] == code
    assert not d.session.authenticated
    assert d.codes(b"NOOP\r\nMAIL FROM:<a@example.org>\r\n") == [250, 250]


@pytest.mark.parametrize("mech", [b"PLAIN", b"LOGIN"])
def test_overlong_auth_response_ends_the_exchange(dialog, mech):
    # RFC 4954 §4: the server's 500 to a response line over the limit is a final reply that
    # ends the AUTH exchange; the next line is a command again, not a SASL response
    # (it was answered 501 "Cannot decode response", the client's command lost).
    d = dialog(**AUTH)
    assert d.codes(b"EHLO c\r\nAUTH " + mech + b"\r\n" + b"A" * 2000 + b"\r\nNOOP\r\n") == [250, 334, 500, 250]
    assert d.codes(b"MAIL FROM:<a@example.org>\r\n") == [250]


def test_auth_not_offered_or_in_transaction(dialog):
    assert dialog().codes(b"EHLO c\r\nAUTH PLAIN " + b64("\0u\0p") + b"\r\n") == [250, 502]
    d = dialog(**AUTH)
    assert d.codes(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\nAUTH PLAIN " + b64("\0u\0p") + b"\r\n") == [250, 250, 503]


def test_auth_required_before_mail(dialog):
    d = dialog(auth_required=True, **AUTH)
    assert d.codes(b"EHLO c\r\nMAIL FROM:<a@example.org>\r\n") == [250, 530]
    assert d.codes(b"AUTH PLAIN " + b64("\0u\0p") + b"\r\nMAIL FROM:<a@example.org>\r\n") == [235, 250]


# -- STARTTLS (RFC 3207) ----------------------------------------------------------------

def test_starttls_discards_pipelined_commands(dialog):
    d = dialog(extensions=("STARTTLS", "PIPELINING"))
    (ehlo,) = d.send(b"EHLO c\r\n")
    assert "STARTTLS" in ehlo.lines
    # CVE-2011-0411: commands sent before the handshake must not be executed after it.
    assert d.codes(b"STARTTLS\r\nMAIL FROM:<evil@example.org>\r\nNOOP\r\n") == [220]
    assert d.session.starttls
    d.session.tls_started()
    assert d.session.state == INIT and len(d.session._buf) == 0
    assert d.codes(b"MAIL FROM:<a@example.org>\r\n") == [503]
    (ehlo,) = d.send(b"EHLO c\r\n")
    assert "STARTTLS" not in ehlo.lines
    assert d.codes(b"STARTTLS\r\n") == [503]


def test_starttls_not_offered(dialog):
    assert dialog().codes(b"EHLO c\r\nSTARTTLS\r\n") == [250, 502]


# -- properties -------------------------------------------------------------------------

TOKENS = [b"EHLO c\r\n", b"LHLO c\r\n", b"MAIL FROM:<a@b.example>\r\n", b"MAIL FROM:<a@b.example> SIZE=9\r\n",
          b"RCPT TO:<c@d.example>\r\n", b"DATA\r\n", b"BDAT 4\r\n", b"BDAT 3 LAST\r\n", b"AUTH PLAIN\r\n",
          b"AUTH LOGIN\r\n", b"*\r\n", b"STARTTLS\r\n", b"RSET\r\n", b".\r\n", b"\r\n", b"\n", b"\r", b".",
          b"x" * 600, b"QUIT\r\n", "MAIL FROM:<ü@ü.example> SMTPUTF8 SIZE=²\r\n".encode()]
CONFIGS = [ServerConfig(), ServerConfig(extensions=ALL, max_message_size=16, keep_body=True, max_errors=1000),
           ServerConfig(lmtp=True, extensions=ALL, keep_body=True, max_errors=1000)]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(TOKENS) | st.binary(max_size=40), max_size=40),
       st.lists(st.integers(1, 64), min_size=1, max_size=8), st.sampled_from(range(len(CONFIGS))))
def test_any_input_gets_replies_never_an_exception(parts, sizes, which):
    """Whatever arrives, in whatever chunks: proper replies (or a close), nothing else."""
    session = ServerSession(CONFIGS[which])
    reader = ReplyReader()
    data = b"".join(parts)
    pos = 0
    reader.feed(b"".join(session.greeting()))
    for i in range(len(data)):
        size = sizes[i % len(sizes)]
        out = session.feed(data[pos:pos + size])
        for reply in reader.feed(b"".join(out)):
            assert 200 <= reply.code <= 599
        assert not reader.pending  # every feed writes whole replies
        if session.starttls:
            session.tls_started()
        pos += size
        if pos >= len(data):
            break
    assert len(session._buf) <= 512 + 64


def test_protocol_core_does_no_io():
    """DESIGN.md layer 1: no asyncio/socket/time/uvloop/gevent/locust/selectors in protocol/."""
    banned = {"asyncio", "socket", "time", "uvloop", "gevent", "locust", "selectors"}
    root = pathlib.Path(__file__).parent.parent / "smtpbench" / "protocol"
    files = sorted(root.glob("*.py"))
    assert files
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in banned, f"{path.name} imports {name}"
