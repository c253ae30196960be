"""Capture of accepted messages: discard (count only), Maildir, or mbox.

Maildir stores each message byte-exact (after dot-unstuffing), one file each,
written to ``tmp/`` and renamed into ``new/`` so a reader never sees half a
message. mbox appends to one file with ``mboxrd`` quoting of "From " lines,
the only mbox variant that is reversible, so the original bytes can be
recovered (:func:`read_mbox`).
"""

from __future__ import annotations

import os
import re
import socket
import time

from ..protocol.server import Envelope


class Capture:
    """Discard: keep nothing (the default, and the fast path)."""

    keep_body = False

    def store(self, envelope: Envelope, body: bytes) -> None:  # pragma: no cover - never called
        pass

    def close(self) -> None:
        pass


class MaildirCapture(Capture):
    keep_body = True

    def __init__(self, root: str):
        self.root = root
        for sub in ("tmp", "new", "cur"):
            os.makedirs(os.path.join(root, sub), exist_ok=True)
        self._host = socket.gethostname().replace("/", "_").replace(":", "_")
        self._n = 0

    def store(self, envelope: Envelope, body: bytes) -> None:
        self._n += 1
        # Maildir unique name: time.pid_counter.host (cr.yp.to/proto/maildir.html)
        name = f"{time.time_ns()}.P{os.getpid()}Q{self._n}.{self._host}"
        tmp = os.path.join(self.root, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(body)
        os.rename(tmp, os.path.join(self.root, "new", name))


_FROM_LINE = re.compile(rb"^(>*From )", re.MULTILINE)


class MboxCapture(Capture):
    keep_body = True

    def __init__(self, path: str):
        parent = os.path.dirname(os.path.abspath(path))
        os.makedirs(parent, exist_ok=True)
        # O_APPEND keeps whole-message writes from several workers from interleaving.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def store(self, envelope: Envelope, body: bytes) -> None:
        sender = envelope.mail_from or "MAILER-DAEMON"
        stamp = time.asctime(time.gmtime())
        quoted = _FROM_LINE.sub(rb">\1", body)
        blob = b"From " + sender.encode("utf-8", "replace") + b" " + stamp.encode() + b"\n" + quoted + b"\n"
        os.write(self._fd, blob)

    def close(self) -> None:
        os.close(self._fd)


def open_capture(spec: str) -> Capture:
    """``none``, ``maildir:DIR`` or ``mbox:FILE`` (validated by the scenario already)."""
    kind, _, where = spec.partition(":")
    if kind == "maildir":
        return MaildirCapture(where)
    if kind == "mbox":
        return MboxCapture(where)
    return Capture()


def read_maildir(root: str) -> list[bytes]:
    """Every message in ``root/new``, oldest first (for tests and users checking what arrived)."""
    new = os.path.join(root, "new")
    names = sorted(os.listdir(new), key=lambda n: (int(n.split(".", 1)[0]), n))
    out = []
    for name in names:
        with open(os.path.join(new, name), "rb") as f:
            out.append(f.read())
    return out


def read_mbox(path: str) -> list[bytes]:
    """Split an mboxrd file written by :class:`MboxCapture` back into the original messages."""
    with open(path, "rb") as f:
        data = f.read()
    # The piece before the first "From " line is always empty; an empty piece
    # after it is an empty message. Each record ends with one LF added after the
    # message: the next separator takes it, so only the last piece keeps it.
    pieces = re.split(rb"(?:^|\n)From [^\n]*\n", data)[1:]
    if pieces:
        pieces[-1] = pieces[-1][:-1]
    return [re.sub(rb"^>(>*From )", rb"\1", body, flags=re.MULTILINE) for body in pieces]
