"""The relay test bench itself: a real, private Postfix relaying to the smtpbench sink.

    smtplib ──> PrivatePostfix (127.0.0.1:fresh port) ──relayhost──> smtpbench sink (maildir)

What these prove before any relay measurement is built on them: every message Postfix accepted
reaches the sink exactly once; when the sink is gone Postfix keeps the mail queued (it does not
bounce or drop it), and once the sink is back a flush delivers it.
"""

from __future__ import annotations

import email.parser
import email.policy
import os
import smtplib
import socket
import time
import uuid

import pytest

from smtpbench.sink.capture import read_maildir

from conftest import free_port
from postfix_helpers import PrivatePostfix, require_root_postfix, start_postfix  # noqa: F401 - fixture

pytestmark = pytest.mark.timeout(30)

SENDER = "bench@example.org"
RECIPIENT = "sink@example.net"


@pytest.fixture(autouse=True)
def _postfix_present():
    require_root_postfix()


def relay_message(run: str, seq: int) -> tuple[str, bytes]:
    """A small message with a unique Message-ID; returns (message_id, bytes)."""
    message_id = f"<{run}.{seq}@smtpbench.test>"
    msg = (f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: relay {seq}\r\n"
           f"Message-ID: {message_id}\r\n\r\nmessage {seq} of run {run}\r\n").encode()
    return message_id, msg


def send(port: int, messages: list[bytes]) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        for msg in messages:
            assert client.sendmail(SENDER, [RECIPIENT], msg) == {}


def arrived_ids(maildir) -> list[str]:
    """Message-IDs of everything the sink captured, in arrival order (duplicates kept)."""
    if not os.path.isdir(os.path.join(maildir, "new")):
        return []
    parser = email.parser.BytesHeaderParser(policy=email.policy.default)
    return [str(parser.parsebytes(raw)["Message-ID"]) for raw in read_maildir(str(maildir))]


def wait_arrived(maildir, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        ids = arrived_ids(maildir)
        if len(ids) >= count or time.monotonic() > deadline:
            return ids
        time.sleep(0.1)


@pytest.fixture
def relay(start_sink, start_postfix, tmp_path):
    """A capturing sink, a Postfix relaying to it, and 20 distinct messages to send through it."""
    maildir = tmp_path / "md"
    sink = start_sink("--capture", f"maildir:{maildir}")
    pf = start_postfix(sink.port)
    run = uuid.uuid4().hex[:8]
    return sink, pf, maildir, [relay_message(run, i) for i in range(20)]


def test_private_postfix_is_ours_and_stops_clean(tmp_path):
    sink_port = free_port()
    pf = PrivatePostfix(tmp_path, free_port(), sink_port)
    try:
        pf.start()
        assert pf.running()  # `postfix -c DIR status`: the master of *our* configuration
        assert pf.postconf("-h", "relayhost").strip() == f"[127.0.0.1]:{sink_port}"
        assert pf.postconf("-h", "queue_directory").strip() == str(pf.queue_dir)
        with socket.create_connection(("127.0.0.1", pf.listen_port), timeout=5) as s:
            assert pf.tag.encode() in s.recv(512)  # the banner names this instance
        master = pf.master_pid
        assert master and os.path.exists(f"/proc/{master}")
        assert pf.queue_size() == 0 and pf.queue_files() == 0
    finally:
        pf.stop()
    assert not os.path.exists(f"/proc/{master}/status") or "zombie" in open(f"/proc/{master}/status").read()
    with socket.socket() as s:  # the port is free again
        s.bind(("127.0.0.1", pf.listen_port))
    assert "daemon started" in pf.log()  # saved to tmp_path after stop


def test_every_message_relayed_exactly_once(relay):
    sink, pf, maildir, sent = relay
    send(pf.listen_port, [m for _, m in sent])

    pf.wait_empty(timeout=20)
    ids = wait_arrived(maildir, 20, timeout=5)
    assert sorted(ids) == sorted(mid for mid, _ in sent)  # all 20, none twice, nothing else
    assert pf.log().count("status=sent") == 20
    final = sink.stop()
    assert final["messages"] == 20


def test_sink_down_mail_stays_queued_then_flush_delivers(relay, start_sink):
    sink, pf, maildir, sent = relay

    send(pf.listen_port, [m for _, m in sent[:10]])
    pf.wait_empty(timeout=15)
    assert len(wait_arrived(maildir, 10, timeout=5)) == 10

    sink.stop()  # the final destination goes away mid-run
    send(pf.listen_port, [m for _, m in sent[10:]])
    assert pf.wait_queued(10, timeout=10) == 10
    time.sleep(1.5)  # at least one retry (queue_run_delay = minimal_backoff_time = 1s): still there
    queued = pf.queue()
    assert len(queued) == 10 and pf.queue_files() == 10
    assert all(r["delay_reason"] for q in queued for r in q["recipients"]), queued
    assert len(arrived_ids(maildir)) == 10  # nothing more arrived, nothing bounced
    assert "status=bounced" not in pf.log()

    start_sink("--capture", f"maildir:{maildir}", port=sink.port)  # back, on the same port
    pf.flush()
    pf.wait_empty(timeout=15)
    ids = wait_arrived(maildir, 20, timeout=5)
    assert sorted(ids) == sorted(mid for mid, _ in sent)
