"""Relay mode: the sink as the final destination behind a server under test.

Each arriving message stamped by the generator (``X-Smtpbench-Run``,
``X-Smtpbench-Seq``, ``X-Smtpbench-Sent``) is logged with its arrival time:
one line ``run seq sent_us arrival_us`` per message, appended in batches to
the relay log (O_APPEND: several workers can share the file). Only the header
block is looked at; the body stays unparsed. ``smtpbench bench --relay``
joins this log with the generator's record of what was accepted.
"""

from __future__ import annotations

import os
import re
import time
from array import array

#: Octets of each message kept for header parsing (an MTA adds Received: lines on top).
HEAD_OCTETS = 16384

_FIELDS = re.compile(rb"^X-Smtpbench-(Run|Seq|Sent):[ \t]*(\S+)", re.IGNORECASE | re.MULTILINE)


def parse_stamp(head: bytes) -> tuple[str, int, int] | None:
    """(run id, sequence number, send time µs) from a message's header block, or None."""
    end = head.find(b"\r\n\r\n")
    block = head if end < 0 else head[:end]
    found = {k.lower(): v for k, v in _FIELDS.findall(block)}
    try:
        return found[b"run"].decode("ascii", "replace"), int(found[b"seq"]), int(found.get(b"sent", b"0"))
    except (KeyError, ValueError):
        return None


class RelayLog:
    """Per sink process: stamped arrivals, buffered and appended to one file."""

    def __init__(self, path: str, stats):
        self.stats = stats
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._lines: list[bytes] = []

    def record(self, head: bytes) -> None:
        arrival = time.time_ns() // 1000
        stamp = parse_stamp(head)
        if stamp is None:
            self.stats.relay_foreign += 1  # e.g. a bounce the server under test sent
            return
        run, seq, sent = stamp
        self.stats.relay_matched += 1
        runs = self.stats.relay_runs
        if run in runs or len(runs) < 64:  # bounded: a sink sees few runs
            runs[run] = runs.get(run, 0) + 1
        self._lines.append(b"%s %d %d %d\n" % (run.encode(), seq, sent, arrival))
        if len(self._lines) >= 256:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            os.write(self._fd, b"".join(self._lines))
            self._lines = []

    def close(self) -> None:
        self.flush()
        os.close(self._fd)


def read_relay_log(path: str, run_id: str):
    """(seq, sent_us, arrival_us) rows, int64, of every arrival of ``run_id`` (duplicates included)."""
    import numpy as np

    out = array("q")  # 24 octets a row while it is read (a tuple of three ints takes ~150)
    key = run_id.encode("ascii", "replace")
    try:
        with open(path, "rb") as f:
            for line in f:
                parts = line.split()
                if len(parts) == 4 and parts[0] == key:
                    out.extend((int(parts[1]), int(parts[2]), int(parts[3])))
    except FileNotFoundError:
        pass
    return np.frombuffer(out, dtype=np.int64).reshape(-1, 3)
