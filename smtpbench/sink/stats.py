"""Sink statistics: per-process counters, snapshots, merging, and their text forms.

A process keeps one :class:`SinkStats` shared by all its sessions (the
protocol core adds to it directly: an attribute increment is the cheapest
thing on the hot path). Worker processes send :meth:`SinkStats.snapshot`
dicts to the parent, which sums them with :func:`merge`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from ..protocol.server import ServerCounters

#: Scalar counters, in the order they are printed and exported.
COUNTERS = (
    "connections_current", "connections_total", "connections_refused", "transactions",
    "messages", "recipients", "bytes", "bdat_chunks", "protocol_errors", "timeouts",
    "tls_handshakes", "tls_failures", "auth_ok", "auth_failed", "faults_injected", "capture_errors",
    "relay_matched", "relay_foreign",
)


@dataclass
class SinkStats(ServerCounters):
    connections_current: int = 0
    connections_total: int = 0
    connections_refused: int = 0
    timeouts: int = 0
    tls_handshakes: int = 0
    tls_failures: int = 0
    auth_ok: int = 0
    auth_failed: int = 0
    faults_injected: int = 0
    capture_errors: int = 0
    relay_matched: int = 0
    relay_foreign: int = 0
    relay_runs: dict = field(default_factory=dict)  # run id -> stamped messages seen (relay mode)

    def snapshot(self) -> dict:
        snap = {name: getattr(self, name) for name in COUNTERS}
        snap["replies"] = {str(k): v for k, v in sorted(self.replies.items())}
        snap["relay_runs"] = dict(self.relay_runs)
        return snap


def merge(snapshots: list[dict]) -> dict:
    """Sum snapshots from several workers (counters add; reply codes add per code)."""
    total: dict = {name: 0 for name in COUNTERS}
    replies: dict[str, int] = {}
    runs: dict[str, int] = {}
    for snap in snapshots:
        for name in COUNTERS:
            total[name] += snap.get(name, 0)
        for code, n in snap.get("replies", {}).items():
            replies[code] = replies.get(code, 0) + n
        for run, n in snap.get("relay_runs", {}).items():
            runs[run] = runs.get(run, 0) + n
    total["replies"] = dict(sorted(replies.items()))
    total["relay_runs"] = runs
    return total


def stats_line(snap: dict, previous: dict | None, elapsed: float, interval: float) -> str:
    """One human line for ``--stats-interval`` output."""
    rate = ""
    if previous is not None and interval > 0:
        rate = f" ({(snap['messages'] - previous['messages']) / interval:,.0f}/s)"
    return (
        f"[{elapsed:7.1f}s] conns {snap['connections_current']}/{snap['connections_total']}"
        f"  msgs {snap['messages']:,}{rate}  rcpts {snap['recipients']:,}"
        f"  bytes {snap['bytes']:,}  errors {snap['protocol_errors']}  timeouts {snap['timeouts']}"
    )


def final_report(snap: dict, elapsed: float) -> str:
    """The multi-line summary printed when the sink exits."""
    lines = [f"smtpbench sink: {elapsed:.1f}s"]
    width = max(len(n) for n in COUNTERS)
    for name in COUNTERS:
        if name == "connections_current":
            continue
        lines.append(f"  {name:<{width}} {snap[name]:>14,}")
    if elapsed > 0:
        lines.append(f"  {'messages/s':<{width}} {snap['messages'] / elapsed:>14,.1f}")
    codes = "  ".join(f"{c}:{n:,}" for c, n in snap["replies"].items())
    lines.append(f"  {'replies':<{width}} {codes}")
    return "\n".join(lines)


def prometheus(snap: dict) -> str:
    """Prometheus text exposition format (version 0.0.4)."""
    out = []
    for name in COUNTERS:
        metric = f"smtpbench_sink_{name}"
        kind = "gauge" if name == "connections_current" else "counter"
        if kind == "counter":
            metric += "_total" if not name.endswith("_total") else ""
        out.append(f"# TYPE {metric} {kind}")
        out.append(f"{metric} {snap[name]}")
    out.append("# TYPE smtpbench_sink_replies_total counter")
    for code, n in snap["replies"].items():
        out.append(f'smtpbench_sink_replies_total{{code="{code}"}} {n}')
    return "\n".join(out) + "\n"


class Clock:
    """Monotonic elapsed time since the sink started (one place, for every printer)."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.start
