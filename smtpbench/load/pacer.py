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


#: How far ahead of its intended time the pacer publishes an arrival (s): a busy event loop
#: releases it itself, from its next read, as soon as it is due (see Runner.release_due).
PACER_LOOKAHEAD = 0.002

#: Each wake-up of the pacer takes the GIL from the loop, which on a small VM costs tens of µs
#: (futex, context switches): at 10,000 arrivals/s, waking per arrival cost ~10 µs of CPU per
#: message. So it publishes in batches (refilling when half the look-ahead is left), and while
#: the loop is busy (it read within PACER_BUSY_US and releases due arrivals itself) it looks
#: back only PACER_GRACE_US after the head is due, in case the loop went idle meanwhile.
#: Measured (result.json totals.cpu_us / issued, one smtp-sink): at 3,000/s 182-186 -> 132-146 µs
#: per message, at 10,000/s 91-96 -> 85-96; send lag p50 +25 µs at 3,000/s, p99 no worse.
PACER_BUSY_US = 300
PACER_GRACE_US = 150


def pacer_thread(loop: asyncio.AbstractEventLoop, schedule: Schedule, runner,
                 finished: asyncio.Future, stop: threading.Event) -> None:
    """Publish arrivals ahead of time, and wake an idle event loop when one is due.

    The arrivals go into ``runner.upcoming`` (a deque: this thread only appends,
    the loop only pops) about :data:`PACER_LOOKAHEAD` before they are due. A
    loop busy with replies checks the head on every read and releases what is
    due at once, so under load an arrival leaves within one callback of its
    time, with no thread or GIL hand-over on the way. When the loop is idle
    (in epoll), nobody looks: the thread sleeps until the head is due and then
    wakes the loop with ``call_soon_threadsafe``. While the loop is busy it looks
    back only a grace period after each head is due (see :data:`PACER_GRACE_US`).

    Why a thread at all: uvloop's timers have millisecond resolution and fire
    up to 1 ms early or late; ``time.sleep`` (clock_nanosleep) wakes within
    tens of microseconds. The thread sleeps at least :data:`PACER_QUANTUM`, so
    a high rate costs one wake-up per quantum, not per message. Nothing is ever
    released before its intended time.
    """
    t0 = runner.t0_ns
    end_us, limit = runner.end_us, runner.limit
    upcoming = runner.upcoming
    ahead = int(PACER_LOOKAHEAD * 1e6)
    published = 0
    nxt = _next(schedule)
    while not stop.is_set():
        now = (monotonic_ns() - t0) // 1000
        while nxt < end_us and published < limit and nxt <= now + ahead:
            upcoming.append(nxt)
            published += 1
            nxt = _next(schedule)
        try:
            head = upcoming[0]
        except IndexError:  # all released
            head = None
        if head is not None and head <= now and not runner.wake_pending:
            runner.wake_pending = True
            loop.call_soon_threadsafe(runner.release_due)
        done = nxt >= end_us or published >= limit
        if done and head is None:
            break
        # Sleep until the head is due (to wake the loop if it is idle then) or the next arrival must be
        # published, whichever comes first.
        # (A head already due, with its wake-up not yet taken by the loop: look again after a quantum.)
        if head is None or head <= now:
            due = now
        elif now - runner.busy_at <= PACER_BUSY_US:
            due = head + PACER_GRACE_US  # the busy loop releases it; look back in case it went idle
        else:
            due = head
        wake = min(due, 1 << 62 if done else nxt - ahead // 2)
        time.sleep(max((wake - now) / 1e6, PACER_QUANTUM))
    loop.call_soon_threadsafe(lambda: finished.done() or finished.set_result(None))


def _next(schedule: Schedule) -> int:
    t = schedule.next_time()
    return int(t * 1e6) if math.isfinite(t) else 1 << 62
