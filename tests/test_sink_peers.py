"""The sink against real SMTP clients over loopback: smtplib, aiosmtplib, swaks,
Postfix smtp-source. What the clients sent is what the sink captured (byte-exact,
after unstuffing) and what it counted."""

import asyncio
import smtplib
import subprocess

import aiosmtplib
import pytest

from smtpbench.sink.capture import read_maildir, read_mbox

from conftest import require_command
from smtp_helpers import Wire, message, stuffed

SENDER = "sender@example.org"
RCPTS = ["one@example.net", "two@example.net", "three@example.net"]


def capture_args(kind: str, tmp_path) -> tuple[str, str]:
    where = tmp_path / ("maildir" if kind == "maildir" else "capture.mbox")
    return "--capture", f"{kind}:{where}"


def captured(kind: str, tmp_path) -> list[bytes]:
    if kind == "maildir":
        return read_maildir(str(tmp_path / "maildir"))
    return read_mbox(str(tmp_path / "capture.mbox"))


def assert_counted(final: dict, sent: list[bytes], recipients: int) -> None:
    """The sink's counters equal what the client sent (bytes as on the wire: stuffed)."""
    assert final["messages"] == len(sent)
    assert final["transactions"] == len(sent)
    assert final["recipients"] == recipients
    assert final["bytes"] == sum(len(stuffed(m)) for m in sent)
    assert final["replies"].get("354", 0) == len(sent)
    assert final["protocol_errors"] == 0
    assert final["connections_current"] == 0


@pytest.mark.parametrize("kind", ["maildir", "mbox"])
def test_smtplib_several_messages_and_recipients(start_sink, tmp_path, kind):
    sink = start_sink(*capture_args(kind, tmp_path))
    sent = [message(f"smtplib {i}", b"x" * (i * 300) + b"\r\n") for i in range(4)]
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        for i, msg in enumerate(sent):
            assert client.sendmail(SENDER, RCPTS[: i % 3 + 1], msg) == {}
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:  # a second connection
        sent.append(message("second connection"))
        client.sendmail(SENDER, RCPTS, sent[-1])
    final = sink.stop()
    assert captured(kind, tmp_path) == sent
    assert_counted(final, sent, recipients=1 + 2 + 3 + 1 + 3)


def test_aiosmtplib(start_sink, tmp_path):
    sink = start_sink(*capture_args("maildir", tmp_path))
    sent = [message(f"aiosmtplib {i}") for i in range(3)]

    async def send():
        async with aiosmtplib.SMTP(hostname=sink.host, port=sink.port, timeout=10) as client:
            for msg in sent:
                errors, response = await client.sendmail(SENDER, RCPTS, msg)
                assert errors == {} and response.startswith("2.0.0")

    asyncio.run(send())
    final = sink.stop()
    assert captured("maildir", tmp_path) == sent
    assert_counted(final, sent, recipients=3 * len(RCPTS))


def test_8bit_body(start_sink, tmp_path):
    sink = start_sink(*capture_args("maildir", tmp_path))
    msg = (b"Subject: 8bit\r\nContent-Type: text/plain; charset=latin-1\r\n"
           b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9 na\xefve \x80\xff\r\n.\xe9\r\n")
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("8bitmime")
        client.sendmail(SENDER, RCPTS[:1], msg, mail_options=["BODY=8BITMIME"])
    final = sink.stop()
    assert captured("maildir", tmp_path) == [msg]
    assert_counted(final, [msg], recipients=1)


def test_smtputf8_addresses_and_body(start_sink, tmp_path):
    sink = start_sink(*capture_args("mbox", tmp_path))
    sender, rcpts = "δοκιμή@παράδειγμα.δοκιμή", ["用户@例子.广告", "josé@café.example"]
    msg = "From: δοκιμή@παράδειγμα.δοκιμή\r\nSubject: Grüße 你好\r\n\r\n.Ünïcödé body — ✓\r\n".encode()
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("smtputf8")
        assert client.sendmail(sender, rcpts, msg, mail_options=["SMTPUTF8", "BODY=8BITMIME"]) == {}
    final = sink.stop()
    assert captured("mbox", tmp_path) == [msg]
    raw = (tmp_path / "capture.mbox").read_bytes()
    assert raw.startswith(("From " + sender + " ").encode())  # the envelope sender, as received
    assert_counted(final, [msg], recipients=2)


def test_mbox_edge_messages_read_back_exactly(start_sink, tmp_path):
    """An empty DATA body and BDAT bodies without a final CRLF survive the mbox round trip."""
    sink = start_sink(*capture_args("mbox", tmp_path))
    bdat_bodies = [b"ends in CR\r", b"ends in LF\n", b"no line end"]
    with Wire((sink.host, sink.port)) as w:
        assert w.code() == 220
        assert w.command(b"EHLO client.example") == 250
        for body in [None, *bdat_bodies, None]:
            assert w.command(b"MAIL FROM:<a@example.org>") == 250
            assert w.command(b"RCPT TO:<b@example.net>") == 250
            if body is None:
                assert w.command(b"DATA") == 354
                assert w.command(b".") == 250
            else:
                w.send(b"BDAT %d LAST\r\n" % len(body) + body)
                assert w.code() == 250
        assert w.command(b"QUIT") == 221
    final = sink.stop()
    assert captured("mbox", tmp_path) == [b"", *bdat_bodies, b""]
    assert final["messages"] == 5 and final["bdat_chunks"] == 3


@pytest.mark.parametrize("pipeline", [False, True])
def test_swaks(start_sink, tmp_path, pipeline):
    swaks = require_command("swaks")
    sink = start_sink(*capture_args("maildir", tmp_path))
    data = message("swaks").removesuffix(b"\r\n")  # swaks adds the final CRLF before the dot
    (tmp_path / "data.eml").write_bytes(data)
    cmd = [swaks, "--server", f"{sink.host}:{sink.port}", "--from", SENDER, "--to", ",".join(RCPTS),
           "--data", f"@{tmp_path / 'data.eml'}", "--timeout", "10"]
    runs = 2
    for _ in range(runs):
        done = subprocess.run(cmd + (["--pipeline"] if pipeline else []), capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stdout + done.stderr
        assert "PIPELINING" in done.stdout
        if pipeline:  # the envelope went out in one batch, before any reply came back
            assert " -> MAIL FROM:<sender@example.org>\n -> RCPT TO:<one@example.net>" in done.stdout
    final = sink.stop()
    assert captured("maildir", tmp_path) == [data + b"\r\n"] * runs
    assert_counted(final, [data + b"\r\n"] * runs, recipients=runs * len(RCPTS))


@pytest.mark.parametrize("reuse", [False, True], ids=["new-connection-each", "reuse-connection"])
def test_smtp_source(start_sink, tmp_path, reuse):
    source = require_command("smtp-source")
    sink = start_sink(*capture_args("maildir", tmp_path))
    sessions, count, rcpts = 5, 200, 2
    cmd = [source, "-s", str(sessions), "-m", str(count), "-r", str(rcpts), "-l", "600",
           "-f", SENDER, "-t", "rcpt@example.net", *(["-d"] if reuse else []), f"{sink.host}:{sink.port}"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    final = sink.stop()
    stored = captured("maildir", tmp_path)
    assert len(stored) == count and all(m.endswith(b"\r\n") and b"\r\n\r\n" in m for m in stored)
    assert final["messages"] == count and final["transactions"] == count
    assert final["recipients"] == count * rcpts
    assert final["bytes"] == sum(len(stuffed(m)) for m in stored)
    # One QUIT per connection smtp-source made: one per message, or one per session with -d.
    assert final["replies"]["221"] == (sessions if reuse else count)
    assert final["protocol_errors"] == 0
