"""One gevent process's share of a run: recorder, schedule, limits and the generator's self-watch.

A Locust worker (or a single ``--headless`` process) holds one :class:`Work`
per run, made from the *setup* the master sends at test start: the resolved
scenario, the target, the run id, the common start time, and this process's
slice ``p`` of ``P``. Its users (one SMTP connection each) share it.

It mirrors the native runner (:mod:`smtpbench.load.runner`): closed loop, each
user sends its next message when the last one ended (plus think time); open
loop, a pacer greenlet releases this slice's arrivals of the one shared
:class:`~smtpbench.load.pacing.Schedule` at their intended times into a FIFO
queue, and a free user takes the oldest, so waiting for a free connection
counts in response time while ``sched_lag`` measures only the pacer's own
lateness. Messages come from the same :class:`~smtpbench.messages.MessageFactory`,
numbered ``p, p+P, …`` so Message-IDs and addresses are unique across workers.

Exactness: :meth:`Work.take_delta` swaps the recorder for a fresh one and
returns the old one's export, numbered; the master adds the deltas (see
:mod:`smtpbench.integrations.collect`). Every arrival and every started
message ends as OK or as a failure with its phase and kind, as natively.
"""

from __future__ import annotations

import math
import os
import socket
import time
from time import monotonic_ns

import gevent
from gevent import ssl as gssl
from gevent.queue import Empty, PriorityQueue

from ..addresses import parse_address
from ..load.cpumeter import CpuMeter
from ..load.looptimer import TimerFile, has_timerfd
from ..load.pacing import Profile, Schedule
from ..load.recorder import INTERVAL_US, Recorder
from ..load.plan import phase_timeouts, split
from ..messages import MessageFactory
from ..scenario import Scenario

#: The run's common start is this long after test start: the users are spawned meanwhile (ScenarioShape
#: spawns them all within a second), so the first arrivals do not wait for connections that are not there.
START_DELAY = 1.0


def make_setup(scenario: Scenario, run_id: str, target: str, t0_wall: float, duration: float | None,
               slice_index: int, slices: int, phases: bool) -> dict:
    """What the master tells each worker at test start (plain data, sent as a Locust message)."""
    return {"run_id": run_id, "scenario": scenario.model_dump_json(), "target": target, "t0_wall": t0_wall,
            "duration": duration, "slice": slice_index, "slices": slices, "phases": phases}


class Clock:
    """Wakes a greenlet at an exact time: a timerfd the hub watches like a socket.

    The hub's own timers fire up to a millisecond late (epoll's timeout is in milliseconds):
    as much as the whole latency being measured on loopback. A timerfd wakes ``epoll_wait``
    within the kernel's timer slack, tens of microseconds, with no thread to hand the GIL
    over (see :mod:`smtpbench.load.looptimer`, the native runner's pacer). Off Linux the
    hub's timer, never early. One sleeper at a time: the pacer.
    """

    def __init__(self) -> None:
        self._hub = gevent.get_hub()
        self._file = TimerFile() if has_timerfd() else None
        if self._file is not None:
            self._watcher = self._hub.loop.io(self._file.fd, 1)  # 1: readable

    def sleep_until(self, deadline_ns: int) -> None:
        if self._file is None:
            while (wait := deadline_ns - monotonic_ns()) > 0:
                gevent.sleep(wait / 1e9)
            return
        self._file.set(deadline_ns)
        while True:
            self._hub.wait(self._watcher)
            if self._file.expired():
                return

    def close(self) -> None:
        if self._file is not None:
            self._watcher.close()
            self._file.close()


def tls_context(verify: bool) -> gssl.SSLContext:
    """A client context whose sockets are cooperative (gevent's), like :func:`smtpbench.tls.client_context`."""
    ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.load_default_certs()
    else:
        # A benchmark against loopback servers with throw-away certificates.
        ctx.check_hostname = False
        ctx.verify_mode = gssl.CERT_NONE
    return ctx


class Work:
    """The shared state of one process's users for one run."""

    def __init__(self, setup: dict):
        scenario = Scenario.model_validate_json(setup["scenario"])
        load = scenario.load
        self.setup = setup
        self.scenario = scenario
        self.load = load
        self.run_id = setup["run_id"]
        self.target = parse_address(setup["target"])
        self.slice = setup["slice"]
        self.slices = setup["slices"]
        self.phases = bool(setup.get("phases"))
        # The master's wall-clock start, in this machine's monotonic clock (intervals line up across machines
        # as well as their clocks agree; on one machine exactly).
        self.t0_ns = monotonic_ns() + int((setup["t0_wall"] - time.time()) * 1e9)
        self.warmup_us = int(load.warmup * 1e6)
        duration = setup["duration"]
        self.end_us = int(duration * 1e6) if duration else 1 << 62
        self.drain_us = int(load.drain * 1e6)
        self.limit = split(load.messages, self.slice, self.slices) if load.messages else math.inf
        self.open_loop = load.model == "open"
        self.timeout_us = phase_timeouts(scenario)
        self.recorder = Recorder(self.warmup_us)
        self.factory = MessageFactory(scenario.message, scenario.seed, self.run_id, self.slice, self.slices)
        # Open loop: what free users take, retries first: (0, n, (intended, outgoing, attempt)) for a
        # deferred message due again, (1, intended, None) for an arrival.
        self.queue: PriorityQueue = PriorityQueue()
        self.retrying: dict[gevent.Greenlet, tuple] = {}   # timers of deferred messages (open loop)
        self._retries = 0
        self.lmtp = scenario.target.lmtp or scenario.sink.lmtp
        self.auth = (load.auth.mechanism, load.auth.username, load.auth.password) if load.auth else None
        self.bdat = load.bdat == "when-offered"
        self.tls_context = tls_context(load.tls_verify) if load.tls != "none" else None
        self.tls_session = None          # the last TLS session, offered again (resumption) when tls_resume
        self.issued = 0        # messages this process took on (counts toward the limit)
        self.limit_at = 1 << 62  # µs: when the last message of the limit was taken on
        self.in_flight = 0
        self.connections = 0
        self.ok = 0
        self.failed = 0
        self.seq = 0           # deltas handed out
        self.stopping = False
        self.finished = False
        self.cpu_warnings = 0
        self.worker_index: int | None = None   # Locust's, for the per-worker figures
        self.locust_cpu_max = 0.0
        self._schedule: Schedule | None = None
        self._held: int | None = None   # the arrival the pacer is sleeping towards
        self._greenlets: list[gevent.Greenlet] = []
        self.cpu = CpuMeter()

    # -- time and limits ----------------------------------------------------------

    def now(self) -> int:
        """Microseconds since the run's common start (negative before it)."""
        return (monotonic_ns() - self.t0_ns) // 1000

    def wait_for_start(self) -> None:
        if self.now() < 0:
            gevent.sleep(-self.now() / 1e6)

    def may_begin(self, now: int) -> bool:
        return not self.stopping and now < self.end_us and self.issued < self.limit

    @property
    def done(self) -> bool:
        """Nothing more will be sent (the message limit is reached and nothing is in flight)."""
        return self.issued >= self.limit and self.in_flight == 0 and self.queue.empty() and not self.retrying

    # -- recording (the native runner's accounting) -------------------------------

    def take(self) -> None:
        """A closed-loop user takes on its next message."""
        self.issued += 1
        self.recorder.totals["issued"] += 1
        if self.issued >= self.limit:
            self.limit_at = self.now()

    def started(self, now: int) -> None:
        self.in_flight += 1
        self.recorder.started(now)

    def succeeded(self, intended: int, start: int, end: int, size: int) -> None:
        self.in_flight -= 1
        self.ok += 1
        self.recorder.ok(intended, start, end, size)

    def fail(self, now: int, intended: int, phase: str, code: int, kind: str, text: str, begun: bool) -> None:
        if begun:
            self.in_flight -= 1
        self.failed += 1
        self.recorder.failed(now, intended, phase, code, kind, text)

    def deferred(self, now: int, phase: str, code: int, text: str) -> None:
        """A message got a 4xx and will be sent again (its intended start stays)."""
        self.in_flight -= 1
        rec = self.recorder
        rec.error(now, phase, code, "deferred", text)
        rec.totals["retries"] += 1

    def retry_wait(self, attempt: int) -> float:
        """Seconds before try ``attempt`` (1 = the first retry); the schedule's last wait repeats."""
        schedule = self.load.retry_schedule or [1.0]
        return schedule[min(attempt - 1, len(schedule) - 1)]

    # -- open loop ----------------------------------------------------------------

    def next_item(self, timeout: float) -> tuple | None:
        """``(intended, outgoing or None, attempt)`` of the next message for a free user, retries first;
        None when nothing came within ``timeout`` s."""
        try:
            prio, key, item = self.queue.get(timeout=timeout)
        except Empty:
            return None
        return item if prio == 0 else (key, None, 0)

    def defer(self, intended: int, out, attempt: int) -> None:
        """Open loop: put a deferred message back in the queue after its retry wait."""
        item = (intended, out, attempt)
        timer = gevent.spawn_later(self.retry_wait(attempt), self._retry_due, item)
        self.retrying[timer] = item

    def _retry_due(self, item: tuple) -> None:
        self.retrying.pop(gevent.getcurrent(), None)
        self._retries += 1
        self.queue.put((0, self._retries, item))

    def _pace(self) -> None:
        load = self.load
        profile = Profile(load.rate, load.stages, self.end_us / 1e6 if self.end_us < 1 << 62 else None)
        if load.stages:
            self.end_us = min(self.end_us, int(profile.length * 1e6))
        self._schedule = Schedule(profile, load.arrival, self.scenario.seed, self.slice, self.slices)
        clock = Clock()
        try:
            while True:
                intended = self._next_intended()
                if intended is None:
                    return
                self._held = intended
                if intended > self.now():
                    clock.sleep_until(self.t0_ns + intended * 1000)
                self._held = None
                self._release(intended, self.now())
        finally:
            clock.close()

    def _next_intended(self) -> int | None:
        if self.issued >= self.limit:
            return None
        t = self._schedule.next_time()
        intended = int(t * 1e6) if math.isfinite(t) else 1 << 62
        return intended if intended < self.end_us else None

    def _release(self, intended: int, now: int) -> None:
        self.issued += 1
        if self.issued >= self.limit:
            self.limit_at = intended
        rec = self.recorder
        rec.totals["issued"] += 1
        rec.scheduled(intended, now)
        self.queue.put((1, intended, None))

    # -- the generator watching itself ----------------------------------------------

    def _tick(self) -> None:
        """Once per interval: bucket the hot-path lists, record CPU share, in-flight and connections."""
        k = max(0, self.now() // INTERVAL_US)
        while True:
            k += 1
            gevent.sleep(max(0.0, (k * INTERVAL_US - self.now()) / 1e6))
            self.recorder.end_interval((k - 1) * INTERVAL_US, self.cpu.share(), self.in_flight + self.queue.qsize(),
                                       self.connections)

    def _watch_hub(self) -> None:
        """Hub lag: how late a 1 ms sleep wakes up (what event-loop lag is natively)."""
        while True:
            before = monotonic_ns()
            gevent.sleep(0.001)
            self.recorder.probe_lag(self.now(), (monotonic_ns() - before) // 1000 - 1000)

    def _end_warmup(self) -> None:
        while (left := self.warmup_us - self.now()) > 0:  # a timer may wake early (load.upkeep.warmup_end)
            gevent.sleep(left / 1e6)
        self.recorder.end_warmup()

    def start(self) -> None:
        def at_t0(fn):
            def run():
                self.wait_for_start()
                self.cpu.restart()
                fn()
            return gevent.spawn(run)

        self._greenlets = [at_t0(self._tick), at_t0(self._watch_hub)]
        if self.warmup_us:
            self._greenlets.append(at_t0(self._end_warmup))
        if self.open_loop:
            # Started now, not at t0: it sleeps to each arrival itself (never early), and set up after
            # t0 it would make the first arrivals late.
            self._greenlets.append(gevent.spawn(self._pace))

    # -- deltas ----------------------------------------------------------------------

    def info(self) -> dict:
        return {"hostname": socket.gethostname(), "pid": os.getpid(), "worker_index": self.worker_index,
                "cpu_warnings": self.cpu_warnings, "locust_cpu_max": self.locust_cpu_max}

    def take_delta(self) -> dict:
        """What was recorded since the last delta, numbered; the recorder starts afresh."""
        rec, self.recorder = self.recorder, Recorder(self.warmup_us)
        if self.now() < self.warmup_us:
            rec.end_warmup()  # its phase values are all the warm-up's
        self.seq += 1
        return {"run_id": self.run_id, "seq": self.seq, "export": rec.export(), "info": self.info()}

    def finish(self) -> dict:
        """End the run in this process (users already stopped): account for what was never sent; the final delta."""
        if self.finished:
            raise RuntimeError("finish() twice")
        self.finished = True
        self.stopping = True
        gevent.killall(self._greenlets, block=True)
        now = self.now()
        if self.open_loop and self._schedule is not None:
            # Arrivals due by now that no user took, or that the pacer had not released yet (it was late).
            if self._held is not None and self._held <= now:
                self._release(self._held, now)
            while (intended := self._next_intended()) is not None and intended <= now:
                self._release(intended, now)
        for timer, (intended, _, _) in list(self.retrying.items()):
            timer.kill(block=False)
            self.fail(now, intended, "retry", 0, "not_sent", "run ended before the retry was due", begun=False)
        self.retrying.clear()
        while not self.queue.empty():
            prio, key, item = self.queue.get_nowait()
            if prio == 0:
                self.fail(now, item[0], "retry", 0, "not_sent", "run ended before the retry was sent", begun=False)
            else:
                self.fail(now, key, "queue", 0, "not_sent", "run ended before a connection was free", begun=False)
        rec = self.recorder
        rec.totals["duration_us"] = max(now, 0)
        # The load ended at its duration or its message count, whichever came first; the users'
        # drain after it is not load (the native runner marks the same moment).
        rec.totals["load_end_us"] = max(0, min(now, self.end_us, self.limit_at))
        part = self.take_delta()
        part["final"] = True
        return part
