"""The message factory: sizes, envelopes, headers, MIME, .eml folders, and what a real sink receives."""

from __future__ import annotations

import email
import email.policy
import re
import smtplib
import time

import numpy as np
import pytest

from smtpbench.messages import BLOCK_OCTETS, MessageFactory, Outgoing
from smtpbench.protocol.data import DataReceiver, normalise_crlf
from smtpbench.scenario import Message, ScenarioError, build
from smtpbench.sink.capture import read_maildir

KINDS = ("7bit", "8bit", "utf8")


def factory(seed: int = 1, run: str = "run-1", p: int = 0, count: int = 1, **spec) -> MessageFactory:
    return MessageFactory(Message(**spec), seed, run, p, count)


def parse(out: Outgoing) -> email.message.EmailMessage:
    return email.message_from_bytes(out.raw(), policy=email.policy.default)


def unstuff_lines(payload: bytes) -> bytes:
    """RFC 5321 §4.5.2 receiver side, line by line (independent of protocol.data)."""
    assert payload.endswith(b"\r\n.\r\n") or payload == b".\r\n"
    lines = payload[:-3].split(b"\r\n")
    return b"\r\n".join(line[1:] if line.startswith(b".") else line for line in lines)


def check_payload(out: Outgoing) -> bytes:
    """What any DATA payload must be; returns the payload."""
    payload = b"".join(out.pieces)
    assert len(out.raw()) == out.size  # the message's own size (RFC 1870 §4: before stuffing)
    assert out.wire == len(payload) - 3  # what DATA carries, as the sink counts bytes
    assert payload.endswith(b"\r\n.\r\n")
    assert payload.find(b"\r\n.\r\n") == len(payload) - 5, "a terminator before the end"
    for line in payload[:-3].split(b"\r\n"):
        assert not (line.startswith(b".") and not line.startswith(b"..")), line
    for piece in out.pieces:
        assert piece.endswith(b"\r\n"), "every piece ends a line, so pieces can be stuffed apart"
    assert b"\r" not in payload.replace(b"\r\n", b"") and b"\n" not in payload.replace(b"\r\n", b"")
    assert unstuff_lines(payload) == out.raw()
    return payload


# -- sizes ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("attachments", [0, 2])
@pytest.mark.parametrize("size", [1024, 5000, BLOCK_OCTETS - 1, 3 * BLOCK_OCTETS + 1, 300_000])
def test_fixed_size_is_exact(kind, attachments, size):
    f = factory(size=size, body=kind, attachments=attachments)
    for _ in range(3):
        out = f.next()
        assert out.size == size
        check_payload(out)
        assert not parse(out).defects


@pytest.mark.parametrize("kind", KINDS)
def test_every_size_in_a_range_is_exact_and_valid_text(kind):
    # Sizes one octet apart cut the text everywhere: mid-character, mid-CRLF, right
    # after a line-leading "." (where stuffing makes the size jump by two).
    for size in range(900, 1300):
        out = factory(body=kind, size=size).next()
        assert out.size == size
        check_payload(out)
        out.raw().partition(b"\r\n\r\n")[2].decode("utf-8")  # never half a UTF-8 sequence


def test_size_below_the_header_block_is_the_header_block():
    assert factory(size=0).next().size == factory(size=10).next().size
    out = factory(size=10).next()
    assert out.pieces[-1] == b".\r\n"  # no body at all
    assert out.size == len(out.pieces[0])
    assert out.raw().endswith(b"X-Smtpbench-Run: run-1\r\n\r\n")
    multi = factory(size=10, attachments=2).next()
    assert len(list(parse(multi).iter_attachments())) == 2


def test_lognormal_median_and_p99():
    f = factory(size={"lognormal": {"median": 4000, "p99": 100_000}})
    sizes = np.array([f.next().size for _ in range(20_000)])
    assert abs(np.median(sizes) / 4000 - 1) < 0.10
    assert abs(np.percentile(sizes, 99) / 100_000 - 1) < 0.25


def test_uniform_stays_in_bounds_and_spreads():
    f = factory(size={"uniform": [2000, 6000]})
    sizes = np.array([f.next().size for _ in range(5000)])
    assert sizes.min() >= 2000 and sizes.max() <= 6000
    assert sizes.min() < 2200 and sizes.max() > 5800
    assert abs(sizes.mean() / 4000 - 1) < 0.03


def test_choices_are_exact_and_weighted():
    f = factory(size={"choices": [["1KiB", 3], [5000, 1]]})
    sizes = [f.next().size for _ in range(20_000)]
    assert set(sizes) == {1024, 5000}
    assert abs(sizes.count(1024) / len(sizes) - 0.75) < 0.02


def test_recipient_count_distributions():
    f = factory(recipients={"choices": [[1, 1], [4, 1]]})
    counts = [len(f.next().rcpts) for _ in range(4000)]
    assert set(counts) == {1, 4}
    assert abs(counts.count(4) / len(counts) - 0.5) < 0.05
    f = factory(recipients={"uniform": [1, 3]})
    assert {len(f.next().rcpts) for _ in range(500)} == {1, 2, 3}
    f = factory(recipients={"lognormal": {"median": 2, "p99": 30}})
    counts = [len(f.next().rcpts) for _ in range(2000)]
    assert min(counts) >= 1 and max(counts) > 5


def test_draws_are_reproducible_per_seed_and_process():
    spec = {"size": {"lognormal": {"median": 3000, "p99": 50_000}}, "recipients": {"uniform": [1, 5]}}

    def run(seed, p):
        f = factory(seed=seed, p=p, count=3, **spec)
        return [(o.size, len(o.rcpts)) for o in (f.next() for _ in range(300))]

    assert run(7, 1) == run(7, 1)
    assert run(7, 1) != run(8, 1)
    assert run(7, 1) != run(7, 2)


# -- envelopes and headers --------------------------------------------------------------------------

def test_sequence_numbers_ids_and_addresses_unique_across_processes():
    outs = []
    for p in range(3):
        f = factory(p=p, count=3, recipients=2)
        batch = [f.next() for _ in range(400)]
        assert [o.seq for o in batch] == list(range(p, 1200, 3))
        outs += batch
    assert sorted(o.seq for o in outs) == list(range(1200))
    ids = [re.search(rb"^Message-ID: (.*)\r$", o.pieces[0], re.M).group(1) for o in outs]
    assert len(set(ids)) == 1200
    assert len({o.mail_from for o in outs}) == 1200
    rcpts = [r for o in outs for r in o.rcpts]
    assert len(rcpts) == 2400 and len(set(rcpts)) == 2400


def test_headers():
    f = factory(p=1, count=2, subject="load {seq} from {process} {{braces}} it's \\ \"q\"",
                sender="s{seq}@example.org", recipient="r{n}.{process}@example.org",
                headers={"X-Campaign": "spring", "Reply-To": "noreply@example.org"})
    f.next()
    out = f.next()
    msg = parse(out)
    assert out.seq == 3
    assert out.mail_from == "s3@example.org" and out.rcpts == ["r3.1@example.org"]
    assert msg["Message-ID"] == "<3.run-1@smtpbench>"
    assert msg["From"] == "s3@example.org" and msg["To"] == "r3.1@example.org"
    assert msg["Subject"] == "load 3 from 1 {braces} it's \\ \"q\""
    assert msg["X-Smtpbench-Run"] == "run-1" and msg["X-Smtpbench-Seq"] == "3"
    assert msg["X-Campaign"] == "spring" and msg["Reply-To"] == "noreply@example.org"
    assert abs(msg["Date"].datetime.timestamp() - time.time()) < 5
    assert msg["Date"].datetime.utcoffset().total_seconds() == 0
    # The send time comes first (the relay sink reads it), in µs, and agrees with Date.
    assert out.pieces[0].startswith(b"X-Smtpbench-Sent: %d\r\n" % out.sent)
    assert abs(out.sent / 1e6 - msg["Date"].datetime.timestamp()) < 1.0
    assert not msg.defects and not msg["Message-ID"].defects


def test_message_id_from_an_awkward_run_id_is_still_valid():
    out = MessageFactory(Message(), 1, "run 1: [a.b]", 0, 1).next()
    msg = parse(out)
    assert re.fullmatch(r"<0\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+@smtpbench>", msg["Message-ID"])
    assert not msg["Message-ID"].defects
    assert msg["X-Smtpbench-Run"] == "run 1: [a.b]"
    with pytest.raises(ValueError):
        MessageFactory(Message(), 1, "bad\r\nrun", 0, 1)


def test_header_starting_with_a_dot_is_stuffed():
    f = factory(headers={".Odd": "yes"})
    out = f.next()
    assert b"\r\n..Odd: yes\r\n" in out.pieces[0]
    check_payload(out)
    assert parse(out)[".Odd"] == "yes"
    assert b"".join(f.bdat_pieces(out)) == out.raw()


# -- bodies ---------------------------------------------------------------------------------------

def test_body_bytes_are_rendered_once_and_reused():
    a = factory(size=2000)
    first, second = a.next(), a.next()
    assert first.pieces[0] is not second.pieces[0]  # the header block is per message
    assert all(x is y for x, y in zip(first.pieces[1:], second.pieces[1:]))
    other = factory(seed=9, p=1, count=2, size=2000).next()  # another factory, same shape
    assert all(x is y for x, y in zip(first.pieces[1:], other.pieces[1:]))
    big = factory(size=5 * BLOCK_OCTETS).next()  # a long body repeats one shared block
    assert len(big.pieces) > 4 and big.pieces[1] is big.pieces[2] is big.pieces[3]


@pytest.mark.parametrize("kind", KINDS)
def test_dot_stuffing_is_exercised_and_correct(kind):
    for size in (3000, 4 * BLOCK_OCTETS + 77):
        out = factory(size=size, body=kind).next()
        payload = check_payload(out)
        raw = out.raw()
        assert b"\r\n.\r\n" in raw and b"\r\n..two dots" in raw  # lines starting with "."
        # The sink's own receiver agrees (it is what a server runs on these bytes).
        rx = DataReceiver(keep=True, limit=1 << 30)
        assert rx.feed(b"".join(out.pieces)) == len(payload)
        # rx.size is the octets as sent (stuffed); the message's size is before stuffing.
        assert rx.size == len(payload) - 3 > out.size == len(raw) and rx.body() == raw


@pytest.mark.parametrize("kind", KINDS)
def test_body_lines_are_short(kind):
    out = factory(size=40_000, body=kind, attachments=1).next()
    head, _, body = out.raw().partition(b"\r\n\r\n")
    assert max(map(len, head.split(b"\r\n"))) <= 998  # RFC 5322 §2.1.1
    assert max(map(len, body.split(b"\r\n"))) <= 78


def test_7bit_is_ascii():
    out = factory(body="7bit").next()
    assert not out.smtputf8 and not out.eight_bit
    assert out.raw().isascii()
    assert "MIME-Version" not in parse(out)


def test_8bit_body_with_ascii_headers():
    out = factory(body="8bit", size=4000).next()
    assert out.eight_bit and not out.smtputf8
    head, _, body = out.raw().partition(b"\r\n\r\n")
    assert head.isascii() and "Grüße".encode() in body
    msg = parse(out)
    assert msg["Content-Transfer-Encoding"] == "8bit" and msg.get_content_charset() == "utf-8"
    assert "Grüße" in msg.get_content()


def test_utf8_body_and_addresses():
    out = factory(body="utf8", recipients=2, size=4000).next()
    assert out.smtputf8 and out.eight_bit
    assert not out.mail_from.isascii() and not any(r.isascii() for r in out.rcpts)
    text = out.raw().decode("utf-8")
    assert "日本語" in text or "русский" in text
    assert parse(out)["From"] == out.mail_from
    # A pattern the user chose is kept, and SMTPUTF8 still flagged for the UTF-8 body.
    kept = factory(body="utf8", sender="bench{n}@example.org").next()
    assert kept.mail_from == "bench0@example.org" and kept.smtputf8


def test_non_ascii_address_in_7bit_needs_smtputf8():
    out = factory(sender="jörg{n}@example.org").next()
    assert out.smtputf8 and out.eight_bit  # the From: header carries raw UTF-8 (RFC 6532)
    assert out.mail_from == "jörg0@example.org"


def test_non_ascii_subject_without_smtputf8_is_rfc2047_encoded():
    out = factory(subject="Grüße aus der Benchmark-Werkstatt Nummer {seq}", headers={"X-Note": "Ärger"}).next()
    assert not out.smtputf8 and not out.eight_bit and out.raw().isascii()
    msg = parse(out)
    assert msg["Subject"] == "Grüße aus der Benchmark-Werkstatt Nummer 0"
    assert msg["X-Note"] == "Ärger"
    assert max(map(len, out.pieces[0].split(b"\r\n"))) <= 998


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("n", [1, 3])
def test_attachments_parse(kind, n):
    out = factory(body=kind, attachments=n, size=60_000).next()
    check_payload(out)
    msg = parse(out)
    assert msg.get_content_type() == "multipart/mixed" and not msg.defects
    atts = list(msg.iter_attachments())
    assert len(atts) == n
    sizes = [len(a.get_content()) for a in atts]
    assert all(isinstance(a.get_content(), bytes) for a in atts)
    # The room is split evenly over the text and the attachments; base64 is 78 octets a 57 bytes.
    assert max(sizes) - min(sizes) <= 3
    assert abs(sum(sizes) / (60_000 * n / (n + 1) * 57 / 78) - 1) < 0.1
    assert [a.get_filename() for a in atts] == [f"smtpbench-{i}.bin" for i in range(1, n + 1)]
    body = msg.get_body(("plain",))
    assert body is not None and body.get_content().strip()
    assert out.eight_bit == (kind != "7bit")


def test_large_attachment_is_shared_blocks_and_decodes():
    out = factory(attachments=1, size=2 * 1024 * 1024).next()
    assert out.size == 2 * 1024 * 1024
    assert len(out.pieces) > 20
    data = next(parse(out).iter_attachments()).get_content()
    assert len(data) > 700_000 and len(set(data)) == 256


# -- .eml folders ---------------------------------------------------------------------------------

def test_eml_dir_round_trip(tmp_path):
    files = {
        "a.eml": b"Subject: first\r\nFrom: a@example.org\r\n\r\nplain\r\n.starts with a dot\r\n",
        "b.eml": "Subject: second\nFrom: b@example.org\n\nGrüße\n.\n..two\nno final newline".encode(),
        "c.EML": "Subject: Grüße\r\n\r\nUTF-8 in the header\r\n".encode(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "notes.txt").write_bytes(b"not a message")
    f = factory(p=1, count=2, eml_dir=str(tmp_path), sender="s{n}@example.org")
    expected = [normalise_crlf(files[n]) for n in ("a.eml", "b.eml", "c.EML")]
    expected[1] += b"\r\n"
    for k in range(6):
        out = f.next()
        seq = 1 + 2 * k
        assert out.seq == seq and out.mail_from == f"s{seq}@example.org"
        head = f"X-Smtpbench-Sent: {out.sent}\r\nX-Smtpbench-Run: run-1\r\nX-Smtpbench-Seq: {seq}\r\n".encode()
        assert out.raw() == head + expected[seq % 3]
        assert abs(out.sent - time.time_ns() // 1000) < 5_000_000
        check_payload(out)
        assert out.eight_bit == (seq % 3 != 0) and out.smtputf8 == (seq % 3 == 2)
        assert b"".join(f.bdat_pieces(out)) == out.raw()
    # Read once, at start: the same stuffed bytes on every send of a file.
    again = [f.next() for _ in range(6)]
    assert again[0].pieces[1] is again[3].pieces[1]


def test_eml_dir_missing_or_empty(tmp_path):
    with pytest.raises(ScenarioError, match="key 'message.eml_dir': no such folder"):
        build({"message": {"eml_dir": str(tmp_path / "nope")}}, "s.toml")
    (tmp_path / "readme.txt").write_text("no messages here")
    with pytest.raises(ScenarioError, match="key 'message.eml_dir': no .eml files"):
        build({"message": {"eml_dir": str(tmp_path)}}, "s.toml")
    # The folder emptied after validation: the factory still says so, with the key.
    (tmp_path / "a.eml").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    spec = build({"message": {"eml_dir": str(tmp_path)}}, "s.toml").message
    (tmp_path / "a.eml").unlink()
    with pytest.raises(ScenarioError, match="message.eml_dir.*no .eml files"):
        MessageFactory(spec, 1, "run-1")


@pytest.mark.parametrize("key, value", [("size", "2KiB"), ("subject", "hi"), ("headers", {"X-A": "b"}),
                                        ("attachments", 1), ("body", "8bit")])
def test_eml_dir_takes_no_key_it_would_ignore(tmp_path, key, value):
    (tmp_path / "a.eml").write_bytes(b"Subject: x\r\n\r\nbody\r\n")
    with pytest.raises(ScenarioError) as e:
        build({"message": {"eml_dir": str(tmp_path), key: value}}, "s.toml")
    assert str(e.value).startswith("s.toml: key 'message': eml_dir sends its .eml files as they are; "
                                   f"{key} would be ignored"), e.value


# -- BDAT -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", [{}, {"size": 5 * BLOCK_OCTETS}, {"attachments": 2, "size": 300_000}])
def test_bdat_pieces_are_the_unstuffed_message(spec):
    f = factory(**spec)
    out = f.next()
    pieces = f.bdat_pieces(out)
    assert b"".join(pieces) == out.raw()
    assert sum(map(len, pieces)) == out.size < len(b"".join(out.pieces)) - 3  # stuffing made DATA longer
    _, txn = f.attempt(out, bdat=True)
    assert txn.size == txn.wire == out.size < out.wire  # BDAT sends the message as it is
    again = f.bdat_pieces(f.next())
    assert all(x is y for x, y in zip(pieces[1:], again[1:]))


# -- scenario validation ----------------------------------------------------------------------------

@pytest.mark.parametrize("table, key, words", [
    ({"sender": "s{x}@example.org"}, "message.sender", "unknown placeholder {x}"),
    ({"recipient": "nobody"}, "message.recipient", "local@domain"),
    ({"subject": "oops {"}, "message.subject", "bad braces"),
    ({"subject": "two\r\nlines"}, "message.subject", "CR or LF"),
    ({"headers": {"Subject": "x"}}, "message.headers", "message.subject"),
    ({"headers": {"Message-ID": "<x@y>"}}, "message.headers", "written by smtpbench"),
    ({"headers": {"Bad Name": "x"}}, "message.headers", "printable ASCII"),
    ({"size": {"lognormal": {"median": "2KiB", "p99": "1KiB"}}}, "message.size", "median <= p99"),
    ({"size": {"uniform": [1, 2], "choices": [[1, 1]]}}, "message.size", "exactly one"),
    ({"size": {"choices": [[1000, 0]]}}, "message.size", "not all 0"),
    ({"recipients": {"uniform": [0, 3]}}, "message.recipients", "at least 1"),
])
def test_bad_message_tables_name_the_key(table, key, words):
    with pytest.raises(ScenarioError) as e:
        build({"message": table}, "s.toml")
    assert f"key '{key}'" in str(e.value) and words in str(e.value)


# -- through a real server ------------------------------------------------------------------------

def test_messages_arrive_byte_exact_at_a_capturing_sink(start_sink, tmp_path):
    maildir = tmp_path / "maildir"
    (tmp_path / "eml").mkdir()
    (tmp_path / "eml" / "one.eml").write_bytes("Subject: from disk\n\nGrüße\n.\n".encode())
    sink = start_sink("--capture", f"maildir:{maildir}")
    makers = [
        factory(run="rt", size=3000),
        factory(run="rt", body="8bit", size=20_000, recipients=2),
        factory(run="rt", body="utf8", size=5000, recipients=3),
        factory(run="rt", attachments=2, size=30_000),
        factory(run="rt", size=3 * BLOCK_OCTETS + 5),
        factory(run="rt", eml_dir=str(tmp_path / "eml")),
    ]
    sent = []
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        client.ehlo()
        for i, f in enumerate(makers):
            for _ in range(2):
                out = f.next()
                opts = (["SMTPUTF8"] if out.smtputf8 else []) + (["BODY=8BITMIME"] if out.eight_bit else [])
                if len(sent) % 2 == 0:  # smtplib stuffs raw() itself
                    assert client.sendmail(out.mail_from, out.rcpts, out.raw(), mail_options=opts) == {}
                else:  # our pieces, as the load generator writes them
                    assert client.mail(out.mail_from, opts)[0] == 250
                    for rcpt in out.rcpts:
                        assert client.rcpt(rcpt)[0] == 250
                    client.putcmd("data")
                    assert client.getreply()[0] == 354
                    for piece in out.pieces:
                        client.send(piece)
                    assert client.getreply()[0] == 250
                sent.append(out.raw())
    final = sink.stop()
    assert final["messages"] == len(sent)
    assert sorted(read_maildir(str(maildir))) == sorted(sent)


def test_a_lognormal_recipient_count_is_cut_at_the_cap():
    # Its p99 is within MAX_RECIPIENTS (validated); the 1 % beyond is drawn, then cut to the cap.
    from itertools import islice

    from smtpbench.messages import _draws
    from smtpbench.scenario import MAX_RECIPIENTS, Distribution

    dist = Distribution(lognormal={"median": MAX_RECIPIENTS // 2, "p99": MAX_RECIPIENTS})
    counts = np.array(list(islice(_draws(dist, np.random.default_rng(7), sizes=False), 20_000)))
    assert counts.max() == MAX_RECIPIENTS and (counts == MAX_RECIPIENTS).sum() > 20  # ~1 % went beyond
    assert counts.min() >= 1
