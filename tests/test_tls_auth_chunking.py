"""STARTTLS, implicit TLS, AUTH, CHUNKING and LMTP over loopback, on both halves: the sink
against swaks, smtplib and Postfix smtp-source, the generator against the sink, and the
STARTTLS command-injection case (CVE-2011-0411) with a raw socket."""

from __future__ import annotations

import smtplib
import ssl
import subprocess

import pytest

from conftest import require_command
from load_helpers import errors_by, run_with_sink
from smtp_helpers import Wire

#: Everything on offer, TLS and AUTH included.
ALL = "PIPELINING,SIZE,8BITMIME,ENHANCEDSTATUSCODES,STARTTLS,AUTH,CHUNKING"
USER, PASSWORD = "alice", "s3cret"
MSG = b"Subject: tls\r\n\r\nover TLS\r\n"


def unverified() -> ssl.SSLContext:
    """The sink's certificate is a throw-away self-signed one."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def full_sink(start_sink, *extra: str):
    return start_sink("--advertise", ALL, "--auth-user", f"{USER}:{PASSWORD}", *extra)


# -- swaks -------------------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
@pytest.mark.parametrize("good", [True, False], ids=["good-password", "bad-password"])
def test_swaks_starttls_and_auth(start_sink, mechanism, good):
    swaks = require_command("swaks")
    sink = full_sink(start_sink)
    done = subprocess.run([swaks, "--server", f"{sink.host}:{sink.port}", "--tls", "--auth", mechanism,
                           "--auth-user", USER, "--auth-password", PASSWORD if good else "wrong",
                           "--from", "a@example.org", "--to", "b@example.net", "--timeout", "10"],
                          capture_output=True, text=True, timeout=30)
    out = done.stdout + done.stderr
    assert "<-  220 2.0.0 Ready to start TLS" in out
    assert "TLS started" in out
    if good:
        assert done.returncode == 0, out
        assert "<~  235 2.7.0" in out  # "~": over TLS
    else:
        assert done.returncode != 0, out
        assert "<~* 535 5.7.8" in out
    final = sink.stop()
    assert final["tls_handshakes"] == 1 and final["tls_failures"] == 0
    assert (final["auth_ok"], final["auth_failed"]) == ((1, 0) if good else (0, 1))
    assert final["messages"] == (1 if good else 0)


# -- smtplib --------------------------------------------------------------------------------

@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_smtplib_starttls_login(start_sink, mechanism):
    sink = full_sink(start_sink, "--auth-required")
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        assert client.mail("a@example.org")[0] == 530  # RFC 4954 §6: authentication required
        client.rset()
        assert client.starttls(context=unverified())[0] == 220
        client.ehlo()
        assert not client.has_extn("starttls")  # RFC 3207 §4.2: not offered again over TLS
        assert client.has_extn("auth") and mechanism in client.esmtp_features["auth"].split()
        with pytest.raises(smtplib.SMTPAuthenticationError) as refused:
            client.user, client.password = USER, "wrong"
            client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"), initial_response_ok=False)
        assert refused.value.smtp_code == 535
        client.user, client.password = USER, PASSWORD
        assert client.auth(mechanism, getattr(client, f"auth_{mechanism.lower()}"))[0] == 235
        assert client.sendmail("a@example.org", ["b@example.net", "c@example.net"], MSG) == {}
    final = sink.stop()
    assert final["tls_handshakes"] == 1
    assert (final["auth_ok"], final["auth_failed"]) == (1, 1)
    assert (final["messages"], final["recipients"]) == (1, 2)



def test_starttls_forgets_an_authentication_made_in_the_clear(start_sink):
    # RFC 3207 §4.2: after the handshake the server MUST discard any knowledge obtained from the
    # client that was not obtained from the TLS negotiation itself. An AUTH done in plaintext
    # survived STARTTLS: with --auth-required, MAIL over TLS was accepted without an AUTH there,
    # and an AUTH there got 503 "Already authenticated" (a man in the middle can log the session
    # in as anyone before letting the client's STARTTLS through).
    sink = full_sink(start_sink, "--auth-required")
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        client.login(USER, PASSWORD)  # in the clear
        assert client.starttls(context=unverified())[0] == 220
        client.ehlo()
        assert client.mail("a@example.org")[0] == 530  # RFC 4954 §6: authentication required
        client.rset()
        client.login(USER, PASSWORD)  # over TLS, it is needed and accepted again
        assert client.sendmail("a@example.org", ["b@example.net"], MSG) == {}
    final = sink.stop()
    assert (final["auth_ok"], final["messages"], final["tls_handshakes"]) == (2, 1, 1)

def test_implicit_tls_with_smtp_ssl(start_sink):
    sink = full_sink(start_sink, "--implicit-tls")
    with smtplib.SMTP_SSL(sink.host, sink.port, timeout=10, context=unverified()) as client:
        client.ehlo()
        assert not client.has_extn("starttls")  # TLS from the first byte (RFC 8314)
        assert client.sock.version() in ("TLSv1.2", "TLSv1.3")
        client.login(USER, PASSWORD)
        for i in range(3):
            assert client.sendmail("a@example.org", [f"r{i}@example.net"], MSG) == {}
    final = sink.stop()
    assert final["messages"] == 3 and final["auth_ok"] == 1
    assert final["tls_handshakes"] == 1  # the fixture's port probe closes before any handshake


# -- STARTTLS command injection --------------------------------------------------------------

def test_commands_pipelined_behind_starttls_are_discarded(start_sink):
    """RFC 3207 §4.2 (CVE-2011-0411): "STARTTLS\\r\\nNOOP\\r\\n" in one write; the NOOP was sent in
    plaintext, before the handshake, so it must not be answered, neither before the handshake
    (the TLS layer would choke on it) nor after (an attacker's injected command). After the
    handshake and a fresh EHLO, the next thing read is the EHLO reply."""
    sink = full_sink(start_sink)
    with Wire((sink.host, sink.port)) as w:
        assert w.code() == 220
        assert w.command(b"EHLO injector.test") == 250
        w.send(b"STARTTLS\r\nNOOP\r\n")
        code, lines = w.reply()
        assert code == 220 and lines == [b"220 2.0.0 Ready to start TLS"]
        assert w.buf == b""  # nothing else came in the clear
        w.sock = unverified().wrap_socket(w.sock, server_hostname="localhost")
        w.send(b"EHLO injector.test\r\n")
        code, lines = w.reply()
        assert code == 250 and lines[0].startswith(b"250-"), lines  # the EHLO reply, not a NOOP's 250
        assert b"250-STARTTLS" not in lines and any(b"AUTH" in line for line in lines)
        assert w.command(b"NOOP") == 250  # and only now a NOOP is answered
        assert w.command(b"QUIT") == 221
    final = sink.stop()
    assert final["tls_handshakes"] == 1
    assert final["replies"]["250"] == 3  # EHLO, EHLO over TLS, the second NOOP


# -- LMTP with smtp-source --------------------------------------------------------------------

def test_smtp_source_lmtp(start_sink):
    """``smtp-source -L`` speaks LMTP (LHLO, one reply per recipient after the data): the sink
    counts what it sent, and answered each recipient once."""
    source = require_command("smtp-source")
    sink = start_sink("--lmtp")
    count, rcpts, sessions = 60, 3, 3
    done = subprocess.run([source, "-L", "-s", str(sessions), "-m", str(count), "-r", str(rcpts), "-l", "500",
                           "-f", "a@example.org", "-t", "rcpt@example.net", f"{sink.host}:{sink.port}"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr, done.stdout + done.stderr
    final = sink.stop()
    assert (final["messages"], final["recipients"]) == (count, count * rcpts)
    assert final["protocol_errors"] == 0
    # 250s: LHLO (one connection per message), MAIL, each RCPT, and each recipient after the data.
    assert final["replies"]["250"] == count * (1 + 1 + rcpts + rcpts)


# -- the generator against the sink, per extension -------------------------------------------

def generate(start_sink, tmp_path, load: str, *flags: str, sink_args: tuple[str, ...] = (),
             target: str = "", message: str = "") -> tuple[dict, dict]:
    return run_with_sink(start_sink, tmp_path, f"[target]\n{target}\n[load]\n{load}\n[message]\n{message}\n",
                         *flags, sink_args=sink_args)


def generator_connections(final: dict) -> int:
    """Connections the generator made: the sink's count less the start_sink fixture's port probe."""
    return final["connections_total"] - 1


@pytest.mark.parametrize("resume", [True, False], ids=["resumption", "full-handshakes"])
@pytest.mark.parametrize("mechanism", ["PLAIN", "LOGIN"])
def test_generator_starttls_auth(start_sink, tmp_path, resume, mechanism):
    """A new connection per message, each upgraded with STARTTLS and authenticated: every
    connection is one TLS handshake at the sink, and with resumption most are resumed."""
    n = 30
    load = (f'sessions = 2\nmessages_per_connection = 1\ntls = "starttls"\ntls_resume = {str(resume).lower()}\n'
            f'auth = {{ mechanism = "{mechanism}", username = "{USER}", password = "{PASSWORD}" }}')
    result, final = generate(start_sink, tmp_path, load, "--messages", str(n), sink_args=("--advertise", ALL,
                             "--auth-user", f"{USER}:{PASSWORD}", "--auth-required"))
    totals = result["totals"]
    assert totals["ok"] == n and final["messages"] == n
    assert final["tls_handshakes"] == generator_connections(final) == n
    assert totals.get("tls_resumed", 0) + totals.get("tls_full", 0) == n
    if resume:
        assert totals.get("tls_resumed", 0) > 0 and totals.get("tls_full", 0) < n
    else:
        assert totals.get("tls_resumed", 0) == 0
    assert final["auth_ok"] == n and final["auth_failed"] == 0
    phases = result["latency"]["phases"]
    assert phases["tls"]["count"] == phases["starttls"]["count"] == n
    assert phases["auth"]["count"] == (n if mechanism == "PLAIN" else 3 * n)  # LOGIN: 334, 334, 235
    assert phases["ehlo"]["count"] == 2 * n  # again over TLS


def test_generator_auth_refused_is_accounted(start_sink, tmp_path):
    load = f'sessions = 2\nauth = {{ mechanism = "PLAIN", username = "{USER}", password = "wrong" }}'
    result, final = generate(start_sink, tmp_path, load, "--messages", "10",
                             sink_args=("--advertise", ALL, "--auth-user", f"{USER}:{PASSWORD}"))
    assert result["totals"]["ok"] == 0 and final["messages"] == 0
    assert errors_by(result) == {("auth", 535, "reply"): 10} and final["auth_failed"] == 10


def test_generator_implicit_tls(start_sink, tmp_path):
    """A new connection per message, TLS from the first byte, sessions resumed. (A resumed
    handshake is quick enough for the banner to come with its end; the EHLO it prompted used
    to go out on the raw socket, and the sink closed the connection.)"""
    n = 20
    result, final = generate(start_sink, tmp_path, 'sessions = 2\nmessages_per_connection = 1\ntls = "implicit"',
                             "--messages", str(n), sink_args=("--implicit-tls",))
    totals = result["totals"]
    assert totals["ok"] == n and final["messages"] == n and result["errors"] == []
    assert final["tls_handshakes"] == n == result["latency"]["phases"]["tls"]["count"]
    assert totals.get("tls_resumed", 0) > 0
    assert "starttls" not in result["latency"]["phases"]


@pytest.mark.parametrize("offered", [True, False], ids=["offered", "not-offered"])
def test_generator_opportunistic_tls(start_sink, tmp_path, offered):
    advertise = ALL if offered else ALL.replace("STARTTLS,", "")
    result, final = generate(start_sink, tmp_path, 'sessions = 2\ntls = "opportunistic"', "--messages", "10",
                             sink_args=("--advertise", advertise))
    assert result["totals"]["ok"] == 10
    assert final["tls_handshakes"] == (2 if offered else 0)


@pytest.mark.parametrize("bdat", ["when-offered", "never"])
def test_generator_bdat_or_data(start_sink, tmp_path, bdat):
    n = 50
    result, final = generate(start_sink, tmp_path, f'sessions = 2\nbdat = "{bdat}"', "--messages", str(n),
                             message='size = "10KiB"')
    assert result["totals"]["ok"] == n and final["messages"] == n
    phases = result["latency"]["phases"]
    if bdat == "when-offered":
        assert final["bdat_chunks"] == n and "354" not in final["replies"]
        assert phases["bdat"]["count"] == n and "data" not in phases
    else:
        assert final["bdat_chunks"] == 0 and final["replies"]["354"] == n
        assert phases["data"]["count"] == phases["end_of_data"]["count"] == n
    assert final["bytes"] == result["totals"]["bytes"]


@pytest.mark.parametrize("bdat", ["when-offered", "never"])
def test_generator_lmtp_several_recipients(start_sink, tmp_path, bdat):
    """LMTP: LHLO, and after the data one reply per recipient (RFC 2033 §4.2), over DATA or BDAT."""
    n, rcpts = 30, 4
    result, final = generate(start_sink, tmp_path, f'sessions = 2\nbdat = "{bdat}"', "--messages", str(n),
                             sink_args=("--lmtp",), target="lmtp = true", message=f"recipients = {rcpts}")
    assert result["totals"]["ok"] == n and result["errors"] == []
    assert (final["messages"], final["recipients"]) == (n, n * rcpts)
    assert final["protocol_errors"] == 0
    end = result["latency"]["phases"]["bdat" if bdat == "when-offered" else "end_of_data"]
    assert end["count"] == n * rcpts
