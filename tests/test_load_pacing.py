"""Open-loop pacing as pure functions: constant and Poisson schedules, stages with ramps,
and process slices that add up to exactly the single-process schedule."""

from __future__ import annotations

import math

import numpy as np
import pytest

from smtpbench.load.pacing import Profile, Schedule, closed_loop_next
from smtpbench.scenario import Stage

trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it


def times(schedule: Schedule, until: float) -> list[float]:
    """Every intended time of ``schedule`` before ``until`` (the runner's stop rule)."""
    out = []
    while True:
        t = schedule.next_time()
        if not t < until:
            return out
        out.append(t)


def stages(*spec: tuple) -> list[Stage]:
    """``(duration, rate)`` holds and ``(duration, rate, "ramp")`` ramps."""
    return [Stage(duration=d, rate=r, ramp=bool(rest)) for d, r, *rest in spec]


def test_constant_rate_is_evenly_spaced():
    got = times(Schedule(Profile(200.0, duration=3.0)), 3.0)
    assert len(got) == 600
    assert got[0] == 0.0
    assert np.allclose(np.diff(got), 1 / 200)


def test_constant_rate_without_duration_goes_on():
    s = Schedule(Profile(1000.0))
    got = [s.next_time() for _ in range(5000)]
    assert got[-1] == pytest.approx(4.999)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_poisson_counts_and_gaps(seed):
    rate, duration = 500.0, 20.0
    got = np.array(times(Schedule(Profile(rate, duration=duration), "poisson", seed), duration))
    expected = rate * duration
    assert abs(len(got) - expected) <= 5 * math.sqrt(expected)  # 5 sigma: never flaky
    gaps = np.diff(got)
    assert np.all(gaps >= 0)
    assert gaps.mean() == pytest.approx(1 / rate, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential: CV = 1


def test_poisson_is_reproducible_by_seed():
    a = times(Schedule(Profile(100.0, duration=2.0), "poisson", seed=7), 2.0)
    b = times(Schedule(Profile(100.0, duration=2.0), "poisson", seed=7), 2.0)
    c = times(Schedule(Profile(100.0, duration=2.0), "poisson", seed=8), 2.0)
    assert a == b and a != c


def test_stages_expected_counts_and_rates():
    # 100/s for 2 s, ramp to 300/s over 2 s, hold 300/s for 1 s, step down to 50/s for 2 s.
    profile = Profile(None, stages((2, 100), (2, 300, "ramp"), (1, 300), (2, 50)))
    assert profile.length == 7
    assert profile.expected_total == pytest.approx(200 + 400 + 300 + 100)
    assert profile.rate_at(1.0) == 100
    assert profile.rate_at(3.0) == pytest.approx(200)  # half-way up the ramp
    assert profile.rate_at(4.5) == 300
    assert profile.rate_at(6.0) == 50
    assert profile.rate_at(8.0) == 0
    got = np.array(times(Schedule(profile), profile.length))
    assert len(got) == 1000
    for start, end, n in [(0, 2, 200), (2, 4, 400), (4, 5, 300), (5, 7, 100)]:
        assert abs(int(((got >= start) & (got < end)).sum()) - n) <= 1, (start, end)
    # Within the ramp, arrivals speed up: the first half holds 1/3 of its 400 (Λ is quadratic).
    assert abs(int(((got >= 2) & (got < 3)).sum()) - 150) <= 1


def test_ramp_from_zero_at_the_start():
    profile = Profile(None, stages((2, 100, "ramp")))
    got = times(Schedule(profile), profile.length)
    assert len(got) == 100
    assert got[0] == 0.0
    # Λ(t) = 25 t²: arrival k at 2 * sqrt(k / 100).
    assert got[25] == pytest.approx(1.0)
    assert got[64] == pytest.approx(1.6)


def test_inverse_of_the_integral():
    profile = Profile(None, stages((1, 50), (3, 250, "ramp"), (1, 10)))
    ns = np.linspace(0, profile.expected_total, 97)
    ts = [profile.time_of(n) for n in ns]
    assert ts == sorted(ts) and ts[0] == 0.0 and ts[-1] == pytest.approx(profile.length)
    assert profile.time_of(profile.expected_total + 1) == math.inf
    # Numerically integrate the rate up to each time: it gives back n.
    for n, t in zip(ns[1::8], ts[1::8]):
        grid = np.linspace(0, t, 4001)
        rates = [profile.rate_at(x) for x in grid]
        assert trapezoid(rates, grid) == pytest.approx(n, rel=0.01, abs=0.5)


def test_a_pause_stage_sends_nothing():
    profile = Profile(None, stages((1, 100), (1, 0), (1, 100)))
    got = np.array(times(Schedule(profile), profile.length))
    assert not ((got > 1.0) & (got < 2.0)).any()
    assert len(got) == 200


def test_a_leading_pause_delays_the_start():
    profile = Profile(None, stages((1, 0), (1, 100)))
    got = times(Schedule(profile), profile.length)
    assert len(got) == 100
    assert got[0] == pytest.approx(1.0)


@pytest.mark.parametrize("arrival", ["constant", "poisson"])
@pytest.mark.parametrize("processes", [2, 3, 5])
@pytest.mark.parametrize("profile", [
    lambda: Profile(333.0, duration=2.0),
    lambda: Profile(None, stages((1, 100), (1, 400, "ramp"), (0.5, 50))),
], ids=["constant-rate", "stages"])
def test_process_slices_make_the_single_process_schedule(arrival, processes, profile):
    single = times(Schedule(profile(), arrival, seed=11), profile().length)
    slices = [times(Schedule(profile(), arrival, 11, p, processes), profile().length) for p in range(processes)]
    # Each process owns every P-th arrival; together they are exactly the one schedule.
    assert sorted(t for s in slices for t in s) == single
    for p, s in enumerate(slices):
        assert s == single[p::processes]


def test_closed_loop_next():
    assert closed_loop_next(1.5, 0.0) == 1.5
    assert closed_loop_next(1.5, 0.25) == 1.75
