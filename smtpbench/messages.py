"""The messages the generator sends: envelopes, headers and bodies, made cheaply.

A load generator that spends its CPU building messages measures itself, not
the server. So whatever does not change between messages is made once: a body
is rendered and dot-stuffed once per distinct size, and the very same ``bytes``
object is written on every send; the constant header lines are rendered once
per factory. Per message only a small header block is formatted (send time,
Date, Message-ID, From, To, Subject, sequence number), by one function compiled
per factory from the patterns (about 1 µs; all of next() 2-3 µs in a hot loop,
6-7 µs inside a real run against smtp-sink, where the caches are colder: measured).

The DATA payload is handed out as ``pieces``, ready for
``transport.writelines()``: the header block, then the body, each piece
dot-stuffed on its own (RFC 5321 §4.5.2; every piece starts at a line start and
ends with CRLF, so stuffing them apart equals stuffing them together), the last
one ending with the ``.\\r\\n`` that closes DATA (RFC 5321 §4.1.1.4). A body
over 64 KiB is the same shared 64 KiB block several times and a short tail of
its own, so even a heavy-tailed size mix (a lognormal with a p99 of megabytes)
renders little and keeps little in memory.

Sizes and recipient counts are drawn from the scenario's distributions with a
numpy Generator seeded from (seed, process index): a run can be repeated
exactly, and processes never share a stream. Sequence numbers interleave across
processes (process p of P sends p, p+P, p+2P, ...) so every message of a run has
its own number, Message-ID and, where the patterns use ``{n}``/``{seq}``,
addresses.
"""

from __future__ import annotations

import base64
import math
import os
import re
import string
import time
from collections import OrderedDict
from typing import Callable, Iterator

import numpy as np

from .bodies import BLOCK_OCTETS, SHARED, mime_headers, multipart, multipart_minimum, plain  # noqa: F401
from .protocol.client import Transaction
from .protocol.data import dot_stuff, normalise_crlf, stuffed_dots, unstuff
from .scenario import MAX_RECIPIENTS, PATTERN_FIELDS, Distribution, Message, ScenarioError, eml_names

#: z of the 99th percentile of the standard normal: a lognormal's p99 is exp(mu + Z99 * sigma).
Z99 = 2.3263478740408408

#: Rendered bodies kept per process (shared by all factories in it), least recently used out first.
#: Shared blocks are not counted; the body in use by a factory is always kept.
BODY_CACHE_BYTES = 64 * 1024 * 1024


#: Sizes drawn from a continuous distribution are rounded to 64 steps per power of two (a relative
#: error of at most 0.8%), so a run renders a few hundred distinct bodies, not one per message.
SIZE_STEPS_PER_OCTAVE = 64
_STEP_BITS = SIZE_STEPS_PER_OCTAVE.bit_length()  # a value of this many bits or fewer is kept exact

#: Values drawn per numpy call.
DRAW_BATCH = 1024


#: With ``body = "utf8"``, the default ASCII sender and recipient patterns give way to these,
#: so a UTF-8 run exercises RFC 6531 addresses too. Any other pattern is kept as written.
UTF8_SENDER = "expéditeur{n}@smtpbench.example"
UTF8_RECIPIENT = "empfänger{n}@smtpbench.example"


_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


class Outgoing(Transaction):
    """One message, ready to send; as a :class:`~smtpbench.protocol.client.Transaction`, its first attempt.

    ``mail_from`` and ``rcpts`` are the envelope; ``pieces`` is the DATA payload to
    write after the 354 reply: the header block, then body pieces, dot-stuffed and
    ending with ``b".\\r\\n"`` (so CRLF.CRLF overall); write it with
    ``transport.writelines(pieces)``. ``size`` is the message's own octet count:
    before stuffing and without the terminator, as RFC 1870 §4 has ``SIZE=`` declare
    it, as BDAT sends it and a server stores it. ``wire`` is what DATA carries:
    one more octet per line that starts with a dot (the bytes counted as sent).
    ``smtputf8``: addresses or headers are UTF-8 (RFC 6531 §3.4); ``eight_bit``:
    octets above 127 in the content (BODY=8BITMIME, RFC 6152).

    Being the transaction itself saves building a second object per message; a
    retry, or a BDAT attempt, gets a fresh one (:meth:`MessageFactory.attempt`).
    """

    __slots__ = ("seq", "sent")

    seq: int  #: sequence number, unique across the processes of a run
    sent: int  #: wall clock, µs since the epoch, when it was made: its ``X-Smtpbench-Sent`` header

    def raw(self) -> bytes:
        """The message itself: unstuffed, without the terminator (what a capturing sink stores)."""
        return unstuff(b"".join(self.pieces)[:-3])


class MessageFactory:
    """Makes the :class:`Outgoing` messages one process of a run sends.

    ``spec`` is the scenario's ``[message]`` table; ``seed`` the scenario seed;
    ``run_id`` goes into every message (``X-Smtpbench-Run`` and the Message-ID) so a
    sink can match what it received; process ``process_index`` of ``process_count``
    numbers its messages ``process_index + k * process_count``.

    Patterns: ``{seq}`` is the sequence number; ``{n}`` is the sequence number in the
    sender and subject, and in the recipient a recipient counter interleaved across
    processes the same way (so with ``{n}`` no two recipients of a run are alike);
    ``{process}`` is the process index.

    Size is the message's own octet count (:attr:`Outgoing.size`): exact for a fixed size
    or a ``choices`` value, rounded to SIZE_STEPS_PER_OCTAVE steps for ``uniform``
    and ``lognormal``; never less than the header block and, with attachments, the
    MIME skeleton.

    With ``eml_dir`` set, every ``*.eml`` file there is read once, here: CRLF-normalised
    and dot-stuffed. Messages cycle through the files (message ``seq`` sends file
    ``seq % count`` in name order); ``size`` is then unused, the envelope still comes
    from the patterns, and ``X-Smtpbench-Run``/``X-Smtpbench-Seq`` are put in front.
    A folder that is missing or has no ``.eml`` file raises :class:`ScenarioError`.
    """

    def __init__(self, spec: Message, seed: int, run_id: str, process_index: int = 0, process_count: int = 1):
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index must be in 0..{process_count - 1}, got {process_index}")
        if not run_id or not run_id.isascii() or not run_id.isprintable():
            raise ValueError(f"run_id must be printable ASCII, got {run_id!r}")
        self.spec = spec
        self.run_id = run_id
        self._p = process_index
        self._P = process_count
        self._k = 0  # messages made so far
        self._r = 0  # recipients made so far
        self._date_t = -1
        self._date = ""

        # Independent streams for sizes and recipient counts, so changing one
        # distribution leaves the other's draws as they were.
        size_seq, count_seq = np.random.SeedSequence([seed % 2**64, process_index]).spawn(2)
        self._size = max(1, spec.size) if isinstance(spec.size, int) else 0  # 0: draw; 0 and 1 give the same
        self._sizes = None if self._size else _draws(spec.size, np.random.default_rng(size_seq), sizes=True)
        self._nrcpt = spec.recipients if isinstance(spec.recipients, int) else 0
        self._counts = None if self._nrcpt else _draws(spec.recipients, np.random.default_rng(count_seq), sizes=False)

        sender, recipient = spec.sender, spec.recipient
        if spec.body == "utf8":
            if sender == Message.model_fields["sender"].default:
                sender = UTF8_SENDER
            if recipient == Message.model_fields["recipient"].default:
                recipient = UTF8_RECIPIENT
        self._sender = _compile(sender, process_index)
        self._rcpt = _compile(recipient, process_index)
        addr_utf8 = not (sender.isascii() and recipient.isascii())
        # RFC 6531 §3.4, RFC 6532 §3: with SMTPUTF8, header fields may carry raw UTF-8.
        self._smtputf8 = spec.body == "utf8" or addr_utf8
        self._encode_subject = not self._smtputf8 and not spec.subject.isascii()

        self._last_len = -1
        self._last_body: tuple[bytes, ...] = ()
        self._last_octets = 0
        self._last_wire = 0
        self._unstuffed: dict[tuple[int, bool], tuple[bytes, bytes]] = {}
        self._eml: list[tuple[bytes, int, bool, bool]] | None = None
        self._head_dots = 0
        if spec.eml_dir:
            self._eml = _load_eml(spec.eml_dir)
            return

        kind, atts = spec.body, spec.attachments
        self._kind = kind
        self._atts = atts
        self._min_body = multipart_minimum(kind, atts) if atts else 0
        user_8bit = any(not v.isascii() for v in spec.headers.values()) or not spec.subject.isascii()
        self._eight_bit = kind != "7bit" or (self._smtputf8 and (addr_utf8 or user_8bit))

        tail = [f"X-Smtpbench-Run: {run_id}"]
        for name, value in spec.headers.items():
            # RFC 2047 §4.1: non-ASCII in a header of a message sent without SMTPUTF8 is encoded.
            tail.append(f"{name}: {value if self._smtputf8 or value.isascii() else _encoded_words(value)}")
        tail.extend(mime_headers(kind, atts))
        tail_text = "\r\n".join(tail) + "\r\n\r\n"
        # A user header may start with "." (RFC 5322 §3.6.8 ftext allows it): stuff the constant lines once.
        self._head_dots = tail_text.startswith(".") + tail_text.count("\r\n.")  # octets stuffing adds
        self._tail = ("." if tail_text.startswith(".") else "") + tail_text.replace("\r\n.", "\r\n..")
        # RFC 5322 §3.6.4: the id-left of a msg-id is dot-atom-text; the run id is made to fit.
        mid = re.sub(r"[^A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+", "-", run_id) + "@smtpbench"
        self._render = _renderer(sender, recipient, spec.subject, process_index, mid, self._tail,
                                 self._encode_subject)

    def next(self) -> Outgoing:
        """The next message of this process (a few µs; only the header block is new)."""
        k = self._k
        self._k = k + 1
        P, p = self._P, self._p
        seq = p + k * P
        nr = self._nrcpt or next(self._counts)  # type: ignore[arg-type]
        r = self._r
        self._r = r + nr
        t = time.time_ns()
        sent = t // 1000
        if self._eml is not None:
            return self._next_eml(seq, r, nr, sent)
        second = t // 1_000_000_000
        if second != self._date_t:
            self._date_t = second
            self._date = _rfc5322_date(second)
        mail_from, first, head = self._render(seq, r * P + p, self._date, sent)
        rcpts = [first] if nr == 1 else [first, *[self._rcpt((r + j) * P + p, seq) for j in range(1, nr)]]
        head_octets = len(head) - self._head_dots
        want = (self._size or next(self._sizes)) - head_octets  # type: ignore[arg-type]
        if want != self._last_len:
            self._last_body, self._last_octets, self._last_wire = self._body(want)
            self._last_len = want
        out = Outgoing(mail_from, rcpts, (head, *self._last_body), head_octets + self._last_octets,
                       self._smtputf8, self._eight_bit, None, len(head) + self._last_wire)
        out.seq = seq
        out.sent = sent
        return out

    def attempt(self, out: Outgoing | None, bdat: bool) -> tuple[Outgoing, Transaction]:
        """``(message, transaction)`` for one attempt at sending ``out`` (None: the next message).

        A first attempt by DATA is the message itself (see :class:`Outgoing`); a retry gets a
        fresh :class:`~smtpbench.protocol.client.Transaction`, as does BDAT (``bdat``: the
        server offers CHUNKING and the scenario wants it), where the message goes unstuffed in
        one ``BDAT LAST`` (its size is the message's size).
        """
        if out is None:
            out = self.next()
            if not bdat:
                return out, out
        if not bdat:
            return out, Transaction(out.mail_from, out.rcpts, out.pieces, out.size, out.smtputf8, out.eight_bit,
                                    None, out.wire)
        pieces = self.bdat_pieces(out)
        return out, Transaction(out.mail_from, out.rcpts, out.pieces, out.size, out.smtputf8, out.eight_bit, pieces)

    def bdat_pieces(self, out: Outgoing) -> tuple[bytes, ...]:
        """The message of ``out`` unstuffed, as pieces, for BDAT chunks (RFC 3030 §2: no stuffing).

        Their lengths add up to ``len(out.raw())``. Body pieces are unstuffed once each and
        reused, so this costs little more than :meth:`next`.
        """
        pieces = out.pieces
        head = unstuff(pieces[0]) if self._head_dots else pieces[0]
        last = len(pieces) - 1
        return (head, *[self._unstuff(piece, i == last) for i, piece in enumerate(pieces[1:], 1)])

    def _unstuff(self, piece: bytes, last: bool) -> bytes:
        key = (id(piece), last)
        entry = self._unstuffed.get(key)
        if entry is None or entry[0] is not piece:
            if len(self._unstuffed) >= 256:
                self._unstuffed.clear()
            # The entry holds the piece itself, so its id cannot be reused while cached.
            entry = (piece, unstuff(piece[:-3] if last else piece))
            self._unstuffed[key] = entry
        return entry[1]

    def _body(self, want: int) -> tuple[tuple[bytes, ...], int, int]:
        """The body pieces for ``want`` octets, their size and their octets as sent (stuffed)."""
        if want < self._min_body:
            want = self._min_body  # the message is at least its header block (and MIME skeleton)
        elif want == 1:
            want = 2  # the smallest non-empty body is one empty line
        key = (self._kind, self._atts, want)
        entry = _CACHE.get(key)
        if entry is None:
            pieces = multipart(self._kind, self._atts, want) if self._atts else plain(self._kind, want)
            wire = sum(map(len, pieces)) - 3
            entry = (pieces, wire - stuffed_dots(pieces), wire)
            _CACHE.put(key, entry)
        return entry

    def _next_eml(self, seq: int, r: int, nr: int, sent: int) -> Outgoing:
        eml = self._eml
        body, octets, utf8, eight = eml[seq % len(eml)]  # type: ignore[index]
        P, p = self._P, self._p
        rcpts = [self._rcpt((r + j) * P + p, seq) for j in range(nr)]
        head = f"X-Smtpbench-Sent: {sent}\r\nX-Smtpbench-Run: {self.run_id}\r\nX-Smtpbench-Seq: {seq}\r\n".encode()
        smtputf8 = utf8 or self._smtputf8
        out = Outgoing(self._sender(seq, seq), rcpts, (head, body), len(head) + octets, smtputf8,
                       eight or smtputf8, None, len(head) + len(body) - 3)
        out.seq = seq
        out.sent = sent
        return out


class _Source:
    """Python source for compiled patterns, with the patterns' own text kept out of it.

    Patterns run for every message, and ``str.format`` with keywords costs several
    times what an f-string does; so patterns become f-strings. Only names made here
    enter the source: every literal (the pattern's text, the run id) is passed in as
    a value under a name of its own.
    """

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    def value(self, value: object) -> str:
        """A name for ``value`` in the compiled code."""
        name = f"_{len(self.values)}"
        self.values[name] = value
        return name

    def pattern(self, pattern: str, process: int, n: str) -> str:
        """The inside of an f-string for ``pattern``: ``{n}`` becomes the variable ``n``, ``{seq}`` ``seq``."""
        out = []
        for literal, field, spec, conv in string.Formatter().parse(pattern):
            if field == "process":
                literal, field = literal + str(process), None
            if literal:
                out.append("{%s}" % self.value(literal))
            if field is not None:
                if field not in PATTERN_FIELDS or spec or conv:
                    raise ScenarioError(f"pattern {pattern!r}: unknown placeholder {{{field}}}")
                out.append("{%s}" % ("seq" if field == "seq" else n))
        return "".join(out)

    def function(self, source: str, name: str) -> Callable:
        exec(source, self.values)  # noqa: S102 - no user text in the source (see the class docstring)
        return self.values[name]  # type: ignore[return-value]


def _compile(pattern: str, process: int) -> Callable[[int, int], str]:
    """A ``{n}``/``{seq}``/``{process}`` pattern as a function ``(n, seq) -> str``."""
    src = _Source()
    return src.function("def f(n, seq): return f'%s'" % src.pattern(pattern, process, "n"), "f")


def _renderer(sender: str, recipient: str, subject: str, process: int, mid: str, tail: str,
              encode_subject: bool) -> Callable[[int, int, str, int], tuple[str, str, bytes]]:
    """``(seq, rcpt_n, date, sent) -> (sender, first recipient, header block)``, one call per message.

    The header block: X-Smtpbench-Sent first (the relay sink reads it), then Date, Message-ID,
    From, To, Subject (RFC 5322 §3.6: Date and From are required, Message-ID we rely on),
    X-Smtpbench-Seq, and ``tail``: the constant lines, already dot-stuffed, and the blank line.
    """
    src = _Source()
    subj = src.pattern(subject, process, "seq")
    if encode_subject:
        subj = '{%s(f"%s")}' % (src.value(_encoded_words), subj)
    source = (f"def render(seq, rn, date, sent):\n"
              f"    f = f'{src.pattern(sender, process, 'seq')}'\n"
              f"    t = f'{src.pattern(recipient, process, 'rn')}'\n"
              f"    return f, t, (f'X-Smtpbench-Sent: {{sent}}\\r\\nDate: {{date}}\\r\\n"
              f"Message-ID: <{{seq}}.{{{src.value(mid)}}}>\\r\\nFrom: {{f}}\\r\\nTo: {{t}}\\r\\n"
              f"Subject: {subj}\\r\\nX-Smtpbench-Seq: {{seq}}\\r\\n{{{src.value(tail)}}}').encode()\n")
    return src.function(source, "render")


class _LRU:
    """Bodies by (kind, attachments, stuffed length), bounded by the octets they hold alone."""

    def __init__(self, budget: int):
        self.budget = budget
        self.octets = 0
        self._d: OrderedDict[tuple, tuple[tuple[bytes, ...], int]] = OrderedDict()

    def get(self, key: tuple) -> tuple[tuple[bytes, ...], int] | None:
        entry = self._d.get(key)
        if entry is not None:
            self._d.move_to_end(key)
        return entry

    def put(self, key: tuple, entry: tuple[tuple[bytes, ...], int]) -> None:
        self._d[key] = entry
        self.octets += _own_octets(entry[0])
        while self.octets > self.budget and len(self._d) > 1:
            _, old = self._d.popitem(last=False)
            self.octets -= _own_octets(old[0])


def _own_octets(pieces: tuple[bytes, ...]) -> int:
    return sum(len(p) for p in pieces if not any(p is b for b in SHARED))


_CACHE = _LRU(BODY_CACHE_BYTES)


def _draws(dist: Distribution, rng: np.random.Generator, sizes: bool) -> Iterator[int]:
    """Endless values from ``dist``, drawn DRAW_BATCH at a time (one numpy call per batch).

    ``sizes``: round continuous draws to SIZE_STEPS_PER_OCTAVE steps; otherwise (recipient
    counts) make every value at least 1.
    """
    while True:
        if dist.uniform is not None:
            lo, hi = dist.uniform
            v = rng.integers(lo, hi + 1, size=DRAW_BATCH)
        elif dist.lognormal is not None:
            median, p99 = dist.lognormal["median"], dist.lognormal["p99"]
            # median = exp(mu), p99 = exp(mu + Z99 * sigma)
            v = np.rint(rng.lognormal(math.log(median), math.log(p99 / median) / Z99, size=DRAW_BATCH))
        else:
            values = np.array([c[0] for c in dist.choices], dtype=np.int64)  # type: ignore[union-attr]
            weights = np.array([c[1] for c in dist.choices], dtype=float)  # type: ignore[union-attr]
            v = rng.choice(values, size=DRAW_BATCH, p=weights / weights.sum())
        v = np.asarray(v, dtype=np.int64)
        if sizes and dist.choices is None:
            bits = np.floor(np.log2(np.maximum(v, 1))).astype(np.int64) + 1
            step = np.left_shift(1, np.maximum(bits - _STEP_BITS, 0))
            v = (v + step // 2) // step * step
            if dist.uniform is not None:
                v = np.clip(v, dist.uniform[0], dist.uniform[1])  # a range keeps its bounds
        if not sizes:
            v = np.clip(v, 1, MAX_RECIPIENTS)  # a message has at least one recipient; a lognormal's tail is cut
        yield from v.tolist()


def _rfc5322_date(t: int) -> str:
    """RFC 5322 §3.3 date-time in UTC, independent of the locale (unlike strftime's %a, %b)."""
    tm = time.gmtime(t)
    return (f"{_DAYS[tm.tm_wday]}, {tm.tm_mday:02d} {_MONTHS[tm.tm_mon - 1]} {tm.tm_year} "
            f"{tm.tm_hour:02d}:{tm.tm_min:02d}:{tm.tm_sec:02d} +0000")


def _encoded_words(text: str) -> str:
    """``text`` as RFC 2047 "B" encoded-words in UTF-8, folded one word a line.

    RFC 2047 §2: an encoded-word is at most 75 characters; 11 characters are at most
    44 octets of UTF-8, 60 of base64, 72 with the ``=?utf-8?b?...?=`` frame. §6.2:
    the folding white space between two encoded-words is not part of the text.
    """
    return "\r\n ".join("=?utf-8?b?" + base64.b64encode(text[i:i + 11].encode()).decode() + "?="
                        for i in range(0, len(text), 11))


def _load_eml(folder: str) -> list[tuple[bytes, int, bool, bool]]:
    """Each ``*.eml`` in ``folder`` by name: (stuffed and terminated, its size before stuffing,
    needs SMTPUTF8, has 8-bit)."""
    try:
        names = eml_names(folder)  # validated with the scenario; the folder may have changed since
    except ValueError as e:
        raise ScenarioError(f"key 'message.eml_dir': {e}") from None
    out = []
    for name in names:
        try:
            with open(os.path.join(folder, name), "rb") as f:
                data = normalise_crlf(f.read())
        except OSError as e:
            raise ScenarioError(f"key 'message.eml_dir': cannot read {name!r}: {e.strerror}") from None
        end = data.find(b"\r\n\r\n")
        header = data if end < 0 else data[:end]
        # RFC 6532 §3: raw UTF-8 in header fields needs an SMTPUTF8 transaction.
        stuffed = dot_stuff(data)
        out.append((stuffed, len(stuffed) - 3 - stuffed_dots((stuffed,)), not header.isascii(), not data.isascii()))
    return out
