"""Open-loop pacing: intended arrival times as pure functions of the arrival count.

A rate profile is piecewise linear in time (constant stages and ramps). Its
integral Λ(t) is the expected number of arrivals by time t; the k-th arrival
is intended at Λ⁻¹(k) for constant pacing and at Λ⁻¹(E₁+…+E_k), with unit
exponential E, for Poisson arrivals (the time-change theorem), so one seeded
sequence serves any rate profile. Nothing here keeps time or sleeps: the
runner asks "when is arrival k due?" (vegeta's and wrk2's pacer shape).

With P processes, process p owns arrivals p, p+P, p+2P, …: the total offered
schedule stays exactly the scenario's whatever the process count.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    start: float      # seconds since the run began
    duration: float
    rate0: float      # msgs/s at the start of the segment
    rate1: float      # msgs/s at its end (== rate0 unless ramping)

    def arrivals(self) -> float:
        return (self.rate0 + self.rate1) / 2.0 * self.duration

    def time_for(self, n: float) -> float:
        """Time since segment start by which ``n`` arrivals are expected (0 <= n <= arrivals())."""
        a = (self.rate1 - self.rate0) / self.duration if self.duration > 0 else 0.0
        if abs(a) < 1e-12:
            return n / self.rate0 if self.rate0 > 0 else math.inf
        # Solve rate0*t + a*t²/2 = n for the root in [0, duration].
        disc = self.rate0 * self.rate0 + 2.0 * a * n
        return (-self.rate0 + math.sqrt(max(disc, 0.0))) / a


class Profile:
    """A rate profile: a constant rate, or stages (each a hold or a linear ramp)."""

    def __init__(self, rate: float | None, stages: list | None = None, duration: float | None = None):
        segs: list[Segment] = []
        t = 0.0
        current = rate or 0.0
        if stages:
            for st in stages:
                start_rate = current if st.ramp else st.rate
                segs.append(Segment(t, st.duration, start_rate, st.rate))
                t += st.duration
                current = st.rate
        else:
            segs.append(Segment(0.0, duration if duration else math.inf, current, current))
        self.segments = segs
        self.length = t if stages else (duration if duration else math.inf)
        cum = [0.0]
        for s in segs:
            cum.append(cum[-1] + (s.arrivals() if math.isfinite(s.duration) else math.inf))
        self._cum = cum

    @property
    def expected_total(self) -> float:
        return self._cum[-1]

    def expected_by(self, t: float) -> float:
        """Λ(t): the arrivals expected from the start until ``t`` (finite ``t``; none after the profile ends)."""
        total = 0.0
        for s in self.segments:
            d = min(max(t - s.start, 0.0), s.duration)
            if d > 0:
                slope = (s.rate1 - s.rate0) / s.duration if s.duration > 0 else 0.0
                total += s.rate0 * d + slope * d * d / 2
        return total

    def mean_rate(self, duration: float | None, start: float = 0.0) -> float:
        """Arrivals per second the profile offers on average from ``start`` over its length (cut at
        ``duration``, None for no cut; nothing left after ``start``, a run stopped before it began
        say, offers the rate at ``start``)."""
        end = min(self.length, math.inf if duration is None else duration)
        if not math.isfinite(end) or end <= start:
            return self.rate_at(start)
        return (self.expected_by(end) - self.expected_by(start)) / (end - start)

    def rate_at(self, t: float) -> float:
        for s in self.segments:
            if t < s.start + s.duration:
                frac = (t - s.start) / s.duration if math.isfinite(s.duration) and s.duration > 0 else 0.0
                return s.rate0 + (s.rate1 - s.rate0) * frac
        return 0.0

    def time_of(self, n: float) -> float:
        """Λ⁻¹(n): when ``n`` arrivals are expected; inf when the profile ends first."""
        cum = self._cum
        for i, s in enumerate(self.segments):
            if n <= cum[i + 1] and cum[i + 1] > cum[i]:  # a zero-rate stage holds no arrival
                return s.start + s.time_for(n - cum[i])
        return math.inf


class Schedule:
    """Intended start times (seconds since the run's start) of one process's arrivals."""

    def __init__(self, profile: Profile, arrival: str = "constant", seed: int = 1,
                 process_index: int = 0, process_count: int = 1):
        self.profile = profile
        self.poisson = arrival == "poisson"
        self.p = process_index
        self.P = process_count
        self._rng = np.random.default_rng(seed)  # the same stream in every process
        self._level = 0.0     # Σ E_i so far (Poisson), for global arrival index `_global`
        self._global = 0
        self._buffer = np.empty(0)
        self._bpos = 0

    def _exp(self) -> float:
        if self._bpos >= len(self._buffer):
            self._buffer = self._rng.standard_exponential(65536)
            self._bpos = 0
        v = self._buffer[self._bpos]
        self._bpos += 1
        return float(v)

    def next_time(self) -> float:
        """Intended time of this process's next arrival (inf: no more)."""
        if not self.poisson:
            # Global arrival k is due when Λ(t) = k; k = p, p+P, …
            k = self._global * self.P + self.p
            self._global += 1
            return self.profile.time_of(float(k))
        # Walk the shared exponential stream; keep every P-th arrival from offset p.
        while True:
            self._level += self._exp()
            k = self._global
            self._global += 1
            if k % self.P == self.p:
                return self.profile.time_of(self._level)


def closed_loop_next(previous_end: float, think_time: float) -> float:
    """Closed loop: a session's next message is intended when its last one ended plus think time."""
    return previous_end + think_time
