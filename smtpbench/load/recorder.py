"""What one generator process records, cheaply on the hot path, exactly in the end.

Hot path: four ints appended to one flat list per transaction (numpy turns a
flat list of ints into an array several times faster than a list of tuples)
and an ``append`` of an int per phase reply. Once per interval tick the lists are bucketed in bulk
(numpy) into histograms: per 1 s interval for the time series, cumulative
(warm-up excluded) for the headline figures. All times are integer
microseconds since the run's common start (CLOCK_MONOTONIC is shared by the
processes of one machine).

Three latencies per transaction (the measurement model, see DESIGN.md):
``response`` from the *intended* start (free of coordinated omission),
``service`` from the actual start, and ``send_lag`` (actual − intended).
``sched_lag`` is how late the generator itself picked an arrival up: the
part of send lag that is the generator's fault, not the server's.

For benchmarks only: ``SMTPBENCH_NO_RECORD=1`` in the environment (read once,
at import) turns the per-transaction hot-path methods (``ok``, ``phase``,
``started``, ``scheduled``) into no-ops, so ``benchmarks/load_generator.py``
can measure what recording costs. Such a run reports no accepted messages
and no latencies (failures are still counted); its totals carry
``recording_disabled``. Never set it for a real measurement.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Iterator

import numpy as np

from ..metrics import Histogram

INTERVAL_US = 1_000_000

#: Benchmarks only (see the module docstring): skip per-transaction recording.
NO_RECORD = os.environ.get("SMTPBENCH_NO_RECORD") == "1"

SERIES = ("offered", "sent", "ok", "failed", "rcpt_failed", "bytes")
GAUGES = ("in_flight", "connections", "loop_lag_us", "cpu")


class Interval:
    __slots__ = ("response", "service", "counts", "gauges", "errors")

    def __init__(self) -> None:
        self.response = Histogram()
        self.service = Histogram()
        self.counts = dict.fromkeys(SERIES, 0)
        self.gauges: dict[str, float] = {}
        self.errors: dict[str, int] = defaultdict(int)  # reply class "4xx"/"5xx"/kind -> count


def cpu_series(intervals: dict) -> list[list]:
    """``[[t, CPU share], …]`` in time order, over the intervals whose share was measured (an
    interval before t0 or in the drain may have gauges but no tick)."""
    return sorted([int(k), iv["gauges"]["cpu"]] for k, iv in intervals.items() if "cpu" in iv["gauges"])


class Recorder:
    """Per-process measurements; :meth:`export` gives a mergeable dict."""

    def __init__(self, warmup_us: int = 0, record: bool | None = None):
        """``record=False`` (default: unless ``SMTPBENCH_NO_RECORD=1``) is the benchmarks' switch."""
        self.warmup_us = warmup_us
        self.recording = not NO_RECORD if record is None else record
        self._txn: list[int] = []   # intended, start, end, octets of each OK transaction, one after another
        # Per-phase values since the last flush. The connection appends to these lists itself on
        # its reply path (one call fewer per reply); everything else goes through phase().
        self.phase_values: dict[str, list[int]] = defaultdict(list)
        self._sched: list[int] = []
        self._loop_lag: list[int] = []
        self.response = Histogram()
        self.service = Histogram()
        self.send_lag = Histogram()
        self.sched_lag = Histogram()
        self.loop_lag = Histogram()
        self.phases: dict[str, Histogram] = defaultdict(Histogram)
        self.intervals: dict[int, Interval] = defaultdict(Interval)
        self.errors: dict[tuple, list] = {}
        self.totals = defaultdict(int)
        self._stepping: Iterator[None] | None = None  # a flush in steps, under way (see flush_steps)
        if not self.recording:
            self.ok = self.phase = self.started = self.scheduled = _ignore  # type: ignore[method-assign]
            self.totals["recording_disabled"] = 1

    # -- hot path -------------------------------------------------------------

    def ok(self, intended: int, start: int, end: int, size: int) -> None:
        self._txn += (intended, start, end, size)

    def phase(self, name: str, us: int) -> None:
        self.phase_values[name].append(us)

    def scheduled(self, intended: int, picked: int) -> None:
        """An open-loop arrival was offered at ``intended`` and picked up at ``picked``."""
        self._sched.append(picked - intended)
        self.intervals[intended // INTERVAL_US].counts["offered"] += 1

    def started(self, at: int) -> None:
        self.intervals[at // INTERVAL_US].counts["sent"] += 1

    def failed(self, at: int, intended: int, phase: str, code: int, kind: str, text: str) -> None:
        """A transaction failed: ``kind`` is reply, refused, reset, timeout or protocol."""
        iv = self.intervals[at // INTERVAL_US]
        iv.counts["failed"] += 1
        iv.errors[f"{code // 100}xx" if code else kind] += 1
        if intended >= self.warmup_us:
            self.totals["failed"] += 1
        else:
            self.totals["warmup_failed"] += 1
        self.error(at, phase, code, kind, text)

    def error(self, at: int, phase: str, code: int, kind: str, text: str) -> None:
        """Count an error by (phase, code, kind), with first/last time seen and an example."""
        key = (phase, code, kind)
        entry = self.errors.get(key)
        if entry is None:
            self.errors[key] = [1, at, at, text[:200]]
        else:
            entry[0] += 1
            entry[2] = at

    def refused_recipients(self, at: int, intended: int, refusals, failed_phase: str | None) -> None:
        """A finished transaction's refused recipients (``failed_phase``: None when the message
        was accepted; ``intended``: the message's, which puts it in the warm-up or not). Counted
        whether the message went on to the others or failed for want of any; then its own error
        entry stands for them in the errors. After a refused MAIL the RCPT replies are only its
        echo (503), not refusals."""
        if failed_phase == "mail":
            return
        listed = failed_phase != "rcpt"
        self.intervals[at // INTERVAL_US].counts["rcpt_failed"] += len(refusals)
        self.totals["rcpt_failed" if intended >= self.warmup_us else "warmup_rcpt_failed"] += len(refusals)
        if listed:
            for r in refusals:
                self.error(at, "rcpt", r.code, "reply", r.text)

    def end_warmup(self) -> None:
        """The warm-up window is over (called at its end): the phase values recorded so far are
        dropped. A message's figures are kept out of the headline by its intended start; a
        phase value carries no message, so the phases count the replies after the warm-up."""
        self.flush()
        self.phase_values = defaultdict(list)
        self.phases.clear()

    def probe_lag(self, now: int, lag: int) -> None:
        """A loop-lag probe woke ``lag`` µs late (may be < 0 when a timer fires early)."""
        self._loop_lag.append(max(0, lag))
        self.gauge(now, "loop_lag_us", lag)

    def end_interval(self, at: int, cpu_share: float, in_flight: int, connections: int) -> None:
        """The interval starting at ``at`` µs is over: bucket its samples, keep its gauges."""
        self.flush()
        self.gauge(at, "cpu", round(cpu_share, 3))
        self.gauge(at, "in_flight", in_flight)
        self.gauge(at, "connections", connections)

    def gauge(self, at: int, name: str, value: float) -> None:
        iv = self.intervals[at // INTERVAL_US]
        iv.gauges[name] = max(iv.gauges.get(name, value), value)

    # -- bulk work, once per tick ----------------------------------------------

    def flush(self) -> None:
        """Bucket what the hot path appended since the last flush (finishing a stepped flush)."""
        if self._stepping is not None:
            for _ in self._stepping:
                pass
        for _ in self._flush_steps():
            pass

    def flush_steps(self) -> Iterator[None]:
        """The work of :meth:`flush` in short steps (one histogram update each), for a caller
        that yields to the event loop between them: 0.1 s of records at thousands of msgs/s
        is about a millisecond of numpy, and done in one piece it would make every arrival
        due meanwhile that much late. :meth:`flush` finishes a stepped flush left half-done."""
        self._stepping = steps = self._flush_steps()
        return steps

    def _flush_steps(self) -> Iterator[None]:
        # Take the lists first: the hot path appends to fresh ones while this runs in steps.
        txn, self._txn = self._txn, []
        phases, self.phase_values = self.phase_values, defaultdict(list)
        if not self.recording:
            phases.clear()  # the reply path appended anyway (see phase_values)
        sched, self._sched = self._sched, []
        loop_lag, self._loop_lag = self._loop_lag, []
        if txn:
            arr = np.array(txn, dtype=np.int64).reshape(-1, 4)
            intended, start, end, size = arr[:, 0], arr[:, 1], arr[:, 2], arr[:, 3]
            resp = end - intended
            serv = end - start
            lag = start - intended
            ivs = end // INTERVAL_US
            # The intervals a flush spans (one, two at a boundary) by range, not np.unique: numpy 2
            # imports numpy.ma on its first np.unique, 15 ms that stalled the loop 50 ms into a run
            # (measured) and, in open loop, made arrivals wait and open connections they never needed.
            for iv_index in range(int(ivs.min()), int(ivs.max()) + 1):
                sel = ivs == iv_index
                n = int(sel.sum())
                if not n:
                    continue
                iv = self.intervals[iv_index]
                iv.response.record_many(resp[sel])
                iv.service.record_many(serv[sel])
                iv.counts["ok"] += n
                iv.counts["bytes"] += int(size[sel].sum())
                yield
            measured = intended >= self.warmup_us
            n_measured = int(measured.sum())
            self.totals["ok"] += n_measured
            self.totals["warmup_ok"] += int(arr.shape[0]) - n_measured
            self.totals["bytes"] += int(size[measured].sum())  # MB/s is a headline figure: warm-up out
            if n_measured:
                self.totals["first_end"] = min(self.totals.get("first_end") or 1 << 62, int(end[measured].min()))
                self.totals["last_end"] = max(self.totals.get("last_end", 0), int(end[measured].max()))
            self.response.record_many(resp[measured])
            yield
            self.service.record_many(serv[measured])
            self.send_lag.record_many(lag[measured])
            yield
        for name, values in phases.items():
            if values:
                self.phases[name].record_many(values)
                yield
        if sched:
            self.sched_lag.record_many(sched)
        if loop_lag:
            self.loop_lag.record_many(loop_lag)
        self._stepping = None

    def export(self) -> dict:
        """Everything as plain data (histograms sparse), mergeable with :func:`merge_exports`."""
        self.flush()
        return {
            "totals": dict(self.totals),
            "response": self.response.to_dict(),
            "service": self.service.to_dict(),
            "send_lag": self.send_lag.to_dict(),
            "sched_lag": self.sched_lag.to_dict(),
            "loop_lag": self.loop_lag.to_dict(),
            "phases": {k: h.to_dict() for k, h in self.phases.items()},
            "intervals": {
                str(k): {
                    "response": iv.response.to_dict(), "service": iv.service.to_dict(),
                    "counts": iv.counts, "gauges": iv.gauges, "errors": dict(iv.errors),
                }
                for k, iv in sorted(self.intervals.items())
            },
            "errors": [[*key, *val] for key, val in self.errors.items()],
        }


def _ignore(*_args) -> None:
    """The hot-path methods under ``SMTPBENCH_NO_RECORD=1``."""


def merge_exports(exports: list[dict]) -> dict:
    """Merge several processes' exports losslessly (histograms add, counters add)."""
    out: dict = {"totals": defaultdict(int), "phases": {}, "intervals": {}, "errors": {}}
    hists = {name: Histogram() for name in ("response", "service", "send_lag", "sched_lag", "loop_lag")}
    phases: dict[str, Histogram] = {}
    intervals: dict[int, dict] = {}
    for ex in exports:
        for k, v in ex["totals"].items():
            if k == "t0_wall_us":
                out["totals"][k] = min(out["totals"].get(k) or v, v)
            elif k == "interrupted_us":  # the first process stopped is when the run was
                out["totals"][k] = min(out["totals"][k], v) if k in out["totals"] else v
            elif k == "first_end":
                out["totals"][k] = min(out["totals"].get(k) or 1 << 62, v)
            elif k in ("last_end", "duration_us", "load_end_us"):  # processes share t0: the last one's
                out["totals"][k] = max(out["totals"].get(k, 0), v)
            else:
                out["totals"][k] += v
        for name, h in hists.items():
            h.merge(Histogram.from_dict(ex[name]))
        for name, data in ex["phases"].items():
            phases.setdefault(name, Histogram()).merge(Histogram.from_dict(data))
        for key, data in ex["intervals"].items():
            iv = intervals.setdefault(int(key), {"response": Histogram(), "service": Histogram(),
                                                 "counts": defaultdict(int), "gauges": defaultdict(float),
                                                 "errors": defaultdict(int)})
            iv["response"].merge(Histogram.from_dict(data["response"]))
            iv["service"].merge(Histogram.from_dict(data["service"]))
            for k, v in data["counts"].items():
                iv["counts"][k] += v
            for k, v in data["gauges"].items():
                # connections and in-flight add across processes; lag and CPU keep the worst.
                iv["gauges"][k] = iv["gauges"][k] + v if k in ("in_flight", "connections") else max(iv["gauges"][k], v)
            for k, v in data["errors"].items():
                iv["errors"][k] += v
        for phase, code, kind, count, first, last, text in ex["errors"]:
            key = (phase, code, kind)
            e = out["errors"].get(key)
            if e is None:
                out["errors"][key] = [count, first, last, text]
            else:
                e[0] += count
                e[1] = min(e[1], first)
                e[2] = max(e[2], last)
    # (seq, sent, accepted) rows of every process (flat int64 arrays, see Runner.relay_log).
    out["relay_accepted"] = np.concatenate([np.frombuffer(ex.get("relay_accepted", b""), dtype=np.int64)
                                            for ex in exports] or [np.zeros(0, np.int64)]).reshape(-1, 3)
    out["hist"] = hists
    out["phase_hist"] = phases
    out["interval_data"] = intervals
    out["totals"] = dict(out["totals"])
    return out
