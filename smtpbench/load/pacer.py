"""The open loop's pacer: a thread that releases arrivals at their intended times."""

from __future__ import annotations

import asyncio
import math
import threading
import time
from time import monotonic_ns

from .pacing import Schedule

#: Shortest sleep of the pacer thread (s): bounds the hand-overs to the event loop.
PACER_QUANTUM = 0.0002
#: The GIL switch interval while pacing (s). Python's 5 ms default lets a busy event
#: loop keep the pacer waiting up to 5 ms for the GIL: arrivals would leave that late.
PACER_SWITCH_INTERVAL = 0.0002


def pacer_thread(loop: asyncio.AbstractEventLoop, schedule: Schedule, runner,
                 finished: asyncio.Future, stop: threading.Event) -> None:
    """Release arrivals at their intended times, from a thread.

    Why a thread: uvloop's timers have millisecond resolution and fire up to
    1 ms early or late; ``time.sleep`` (clock_nanosleep) wakes within tens of
    microseconds and ``call_soon_threadsafe`` wakes the loop at once. The thread
    never sends early, and sleeps at least :data:`PACER_QUANTUM`: arrivals that
    come due meanwhile are handed over in one batch, so a high rate costs one
    loop wake-up (and one GIL hand-over) per quantum, not per message, at the
    price of at most a quantum of send lag. Below 1/quantum msgs/s every arrival
    is released on time.
    """
    t0 = runner.t0_ns
    end_us, limit = runner.end_us, runner.limit
    issued = 0
    batch: list[int] = []
    while not stop.is_set():
        t = schedule.next_time()
        intended = int(t * 1e6) if math.isfinite(t) else 1 << 62
        if intended >= end_us or issued >= limit:
            break
        issued += 1
        wait = (intended - (monotonic_ns() - t0) // 1000) / 1e6
        if wait > 0:
            if batch:
                loop.call_soon_threadsafe(runner._arrivals, batch)
                batch = []
            time.sleep(max(wait, PACER_QUANTUM))
        batch.append(intended)
        if len(batch) >= 256:
            loop.call_soon_threadsafe(runner._arrivals, batch)
            batch = []
    if batch:
        loop.call_soon_threadsafe(runner._arrivals, batch)
    loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))
