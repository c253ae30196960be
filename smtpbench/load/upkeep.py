"""The native runner's background chores: the 1 s tick (interval gauges, progress), the
recorder's flushes in small steps, and the event-loop lag probe (the generator's own health)."""

from __future__ import annotations

import asyncio
from time import monotonic_ns
from typing import Callable

from ..protocol.client import BANNER
from .recorder import INTERVAL_US, Recorder

FLUSH_EVERY = 0.1  # s
# s: the loop-lag probe's sleep. Lateness is measured the same whatever the period; at 1 ms the
# probe's own wake-ups cost several per cent of the generator's CPU (measured: ~0.06 s of CPU per
# second of run), at 10 ms a tenth of that, and a 10 s run still has 1,000 samples for its p99.
LAG_SAMPLE = 0.01


async def tick(runner) -> None:
    """At the end of every interval: its gauges (CPU share, in flight, connections), and the
    progress line's figures."""
    rec = runner.recorder
    k = max(0, runner.now() // INTERVAL_US)
    while True:
        k += 1
        await asyncio.sleep(max(0.0, (k * INTERVAL_US - runner.now()) / 1e6))
        now = runner.now()
        rec.end_interval((k - 1) * INTERVAL_US, runner.cpu.share(), runner.in_flight + len(runner.waiting),
                         len(runner.connections))
        if runner.progress:
            runner.progress({"ok": runner.ok, "failed": runner.failed, "issued": runner.issued,
                             "p99": rec.response.percentile(99), "elapsed": now / 1e6})


async def flusher(rec: Recorder) -> None:
    """Bucket the recorder's lists often, in steps with the loop running between them: one big
    flush a second would stall the loop for ms, and so would one flush in a piece at high rates."""
    while True:
        await asyncio.sleep(FLUSH_EVERY)
        for _ in rec.flush_steps():
            await asyncio.sleep(0)


async def warmup_end(rec: Recorder, now: Callable[[], int]) -> None:
    """End the warm-up (:meth:`Recorder.end_warmup`) once ``now()`` has reached it, not before.

    A loop timer can fire early: uvloop's clock is libuv's, in whole ms and cached at the start
    of a loop pass, so on a busy loop a timer set then fires milliseconds early by our clock. The
    replies of messages begun in the warm-up's last milliseconds then entered the headline's
    phases (a test counted 14 more MAIL replies than accepted messages with 4 sessions, where 4
    can straddle). So check, and sleep again for what is left."""
    while (left := rec.warmup_us - now()) > 0:
        await asyncio.sleep(left / 1e6)
    rec.end_warmup()


async def watch_loop(rec: Recorder, now: Callable[[], int]) -> None:
    """Event-loop lag: how late a short sleep wakes up."""
    period_us = int(LAG_SAMPLE * 1e6)
    while True:
        before = monotonic_ns()
        await asyncio.sleep(LAG_SAMPLE)
        rec.probe_lag(now(), (monotonic_ns() - before) // 1000 - period_us)


SWEEP = 0.05  # s: how often the per-phase timeouts are checked


async def sweep(runner) -> None:
    """Per-phase timeouts (RFC 5321 §4.5.3.2) for all the runner's connections, one timer."""
    while True:
        await asyncio.sleep(SWEEP)
        now = runner.now()
        for conn in list(runner.connections):
            if conn.deadline and now > conn.deadline and not conn.closed:
                phase = conn.session.expecting or BANNER
                runner.conn_failed(conn, phase, 0, "timeout", f"no reply to {phase} in time", now)
                conn.deadline = 0
                conn.abort()
