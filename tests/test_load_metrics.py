"""Latency histograms: percentiles within 1 % of numpy's exact ones, lossless merges (also of
whole per-process recorder exports), and out-of-range values counted, never dropped."""

from __future__ import annotations

import numpy as np
import pytest

from smtpbench.load.recorder import Recorder, cpu_series, merge_exports
from smtpbench.metrics import (EXACT, MAX_VALUE, NBUCKETS, PERCENTILES, Histogram, bucket_bounds, bucket_index,
                               summary_of)
from smtpbench.results import _cpu_share

RNG = np.random.default_rng(20240601)

DATASETS = {
    "lognormal-us": lambda n: RNG.lognormal(mean=7.0, sigma=1.5, size=n),        # ~1 ms median, long tail
    "uniform-small": lambda n: RNG.integers(0, 300, size=n),                     # mostly exact buckets
    "exponential-s": lambda n: RNG.exponential(2e6, size=n),                     # seconds
    "bimodal": lambda n: np.concatenate([RNG.normal(500, 50, n // 2), RNG.normal(2e6, 1e5, n - n // 2)]),
    "huge": lambda n: RNG.integers(MAX_VALUE // 2, MAX_VALUE, size=n),
}


def sample(name: str, n: int = 20_000) -> np.ndarray:
    return np.clip(DATASETS[name](n), 0, MAX_VALUE).astype(np.int64)


def test_layout():
    values = np.array([0, 1, EXACT - 1, EXACT, EXACT + 1, 10**6, MAX_VALUE])
    idx = bucket_index(values)
    assert idx[-1] == NBUCKETS - 1
    assert list(idx[:3]) == [0, 1, EXACT - 1]  # values below EXACT have a bucket each
    low, high = bucket_bounds(np.arange(NBUCKETS))
    assert low[0] == 0 and high[-1] == MAX_VALUE
    assert np.all(low[1:] == high[:-1] + 1)  # contiguous, no gaps, no overlaps
    assert np.all(bucket_index(low) == np.arange(NBUCKETS))
    assert np.all(bucket_index(high) == np.arange(NBUCKETS))
    # Relative width below 2**-7 everywhere above the exact range.
    wide = low >= EXACT
    assert np.all((high[wide] - low[wide]) / low[wide] < 1 / 128)


@pytest.mark.parametrize("name", DATASETS)
def test_percentiles_within_one_percent_of_numpy(name):
    values = sample(name)
    h = Histogram()
    for chunk in np.array_split(values, 7):  # recorded in batches, as the recorder does
        h.record_many(chunk)
    assert h.total == len(values)
    assert h.min == values.min() and h.max == values.max() and h.sum == values.sum()
    for p in (*PERCENTILES, 0.1, 25.0, 75.0, 100.0):
        exact = float(np.percentile(values, p, method="inverted_cdf"))
        got = h.percentile(p)
        assert exact <= got <= max(exact * 1.01, exact + 1), (p, exact, got)
    s = h.summary()
    assert s["count"] == len(values) and s["max"] == values.max()
    assert s["mean"] == pytest.approx(values.mean(), abs=0.1)
    assert s["p50"] <= s["p90"] <= s["p99"] <= s["p99.9"] <= s["p99.99"] <= s["max"]


def test_small_values_are_exact():
    values = RNG.integers(0, EXACT, size=5000)
    h = Histogram()
    h.record_many(values.tolist())  # a plain list works too
    for p in (1, 50, 90, 99, 99.9):
        assert h.percentile(p) == np.percentile(values, p, method="inverted_cdf")


def test_merge_is_lossless():
    values = sample("lognormal-us", 30_000)
    whole = Histogram()
    whole.record_many(values)
    parts = [Histogram() for _ in range(4)]
    for part, chunk in zip(parts, np.array_split(RNG.permutation(values), 4)):
        part.record_many(chunk)
    merged = Histogram()
    merged.merge(Histogram())  # merging an empty histogram changes nothing
    for part in parts:
        merged.merge(part)
    assert np.array_equal(merged.counts, whole.counts)
    assert (merged.total, merged.sum, merged.min, merged.max) == (whole.total, whole.sum, whole.min, whole.max)
    assert merged.summary() == whole.summary()


def test_serialisation_round_trip():
    h = Histogram()
    h.record_many(sample("bimodal", 1000))
    h.record_many([-3, MAX_VALUE + 10])
    data = h.to_dict()
    assert len(data["buckets"]) == np.count_nonzero(h.counts)  # sparse
    back = Histogram.from_dict(data)
    assert np.array_equal(back.counts, h.counts)
    assert back.summary() == h.summary() == summary_of(data)


def test_out_of_range_values_are_counted():
    h = Histogram()
    h.record_many([-5, -1, 0, 100, MAX_VALUE, MAX_VALUE + 1, 10 * MAX_VALUE])
    assert h.total == 7 and int(h.counts.sum()) == 7
    assert h.underflow == 2 and h.overflow == 2
    assert h.counts[0] >= 3                     # the negatives land in bucket 0 with the 0
    assert h.counts[NBUCKETS - 1] == 3          # the overflows in the top bucket with MAX_VALUE
    s = h.summary()
    assert s["underflow"] == 2 and s["overflow"] == 2
    assert s["min"] == -5 and s["max"] == 10 * MAX_VALUE
    other = Histogram()
    other.record_many([MAX_VALUE + 2])
    h.merge(other)
    assert h.overflow == 3 and h.total == 8


def test_in_range_summary_has_no_out_of_range_keys():
    h = Histogram()
    h.record_many([1, 2, 3])
    assert "overflow" not in h.summary() and "underflow" not in h.summary()


def test_empty_histogram():
    h = Histogram()
    h.record_many([])
    assert h.total == 0 and h.percentile(99) == 0
    s = h.summary()
    assert s["count"] == 0 and s["p99"] == 0 and s["max"] == 0


def _recorder(transactions, phases) -> Recorder:
    rec = Recorder(warmup_us=0)
    for intended, start, end in transactions:
        rec.ok(intended, start, end, 1000)
    for name, us in phases:
        rec.phase(name, us)
    rec.failed(2_500_000, 2_400_000, "rcpt", 450, "reply", "4.3.0 try later")
    return rec


def test_recorder_exports_merge_losslessly():
    """Two processes' exports merged == one process that saw everything."""
    n = 4000
    intended = np.sort(RNG.integers(0, 3_000_000, n))
    start = intended + RNG.integers(0, 2000, n)
    end = start + RNG.lognormal(7, 1, n).astype(np.int64)
    txns = list(zip(intended.tolist(), start.tolist(), end.tolist()))
    phases = [("mail", int(v)) for v in RNG.integers(10, 5000, n)]
    one = _recorder(txns, phases).export()
    halves = [_recorder(txns[i::2], phases[i::2]).export() for i in (0, 1)]
    merged, single = merge_exports(halves), merge_exports([one])
    for name in ("response", "service", "send_lag"):
        assert np.array_equal(merged["hist"][name].counts, single["hist"][name].counts), name
        assert merged["hist"][name].summary() == single["hist"][name].summary()
    assert merged["phase_hist"]["mail"].summary() == single["phase_hist"]["mail"].summary()
    assert merged["totals"]["ok"] == single["totals"]["ok"] == n
    assert merged["totals"]["bytes"] == 1000 * n
    assert merged["totals"]["failed"] == 2
    assert merged["errors"][("rcpt", 450, "reply")][0] == 2
    for k, iv in single["interval_data"].items():
        assert np.array_equal(merged["interval_data"][k]["response"].counts, iv["response"].counts)
        assert merged["interval_data"][k]["counts"]["ok"] == iv["counts"]["ok"]


def test_cpu_share_is_the_loads_not_diluted_by_empty_intervals():
    """The saturation check takes a process's CPU share over the load's whole intervals: the one
    before t0 (loop-lag gauges, no CPU tick) and the drain's do not halve a saturated process
    (it read 0.5 and passed); a run too short for a whole interval uses its CPU over its time."""
    intervals = {"-1": {"gauges": {"loop_lag_us": 40}}, "0": {"gauges": {"cpu": 1.0}},
                 "1": {"gauges": {"cpu": 0.99}}, "2": {"gauges": {"cpu": 0.1, "loop_lag_us": 10}}}
    series = cpu_series(intervals)
    assert series == [[0, 1.0], [1, 0.99], [2, 0.1]]
    busy = {"cpu": series, "totals": {"cpu_us": 2_000_000, "duration_us": 2_300_000}}
    assert _cpu_share(busy, 0, 2.0) == pytest.approx(0.995)
    short = {"cpu": [], "totals": {"cpu_us": 450_000, "cpu_wall_us": 500_000, "duration_us": 450_000}}
    assert _cpu_share(short, 0, 0.5) == pytest.approx(0.9)


def test_no_record_switch_makes_the_hot_path_a_no_op(monkeypatch):
    """SMTPBENCH_NO_RECORD=1 (benchmarks only) skips per-transaction recording; failures still count."""
    from smtpbench.load import recorder

    monkeypatch.setattr(recorder, "NO_RECORD", True)
    rec = Recorder()
    rec.started(10)
    rec.phase("mail", 100)
    rec.ok(0, 10, 500, 1024)
    rec.scheduled(0, 5)
    rec.failed(600, 0, "rcpt", 450, "reply", "try later")
    ex = rec.export()
    assert ex["totals"]["recording_disabled"] == 1
    assert ex["totals"].get("ok", 0) == 0 and ex["totals"]["failed"] == 1
    assert ex["response"]["total"] == 0 and ex["phases"] == {} and ex["sched_lag"]["total"] == 0


def test_a_stepped_flush_left_half_done_loses_nothing():
    """The runner flushes in steps, yielding to the loop between them, and its task may be
    cancelled between two steps; the final flush() finishes that work: nothing is lost or doubled."""
    rec = Recorder()
    for i in range(100):
        rec.ok(i, i + 1, i + 100, 10)
        rec.phase("mail", 5)
    steps = rec.flush_steps()
    next(steps)                       # suspended after its first step
    rec.ok(200, 201, 300, 10)         # the hot path goes on meanwhile
    rec.phase("mail", 7)
    rec.flush()
    assert rec.totals["ok"] == 101 and rec.response.total == 101 and rec.service.total == 101
    assert rec.phases["mail"].total == 101 and rec.totals["bytes"] == 1010
    assert list(steps) == []          # the suspended flusher then ends quietly
    rec.flush()
    assert rec.response.total == 101


def test_result_file_is_json_with_a_line_per_entry(tmp_path):
    """save() writes what load_result reads back unchanged, one line per top-level key and table entry."""
    import json

    from smtpbench.results import SCHEMA, load_result, save

    result = {"schema": SCHEMA, "name": "tést ✓", "totals": {"ok": 3, "failed": 0},
              "intervals": {str(i): {"t": i, "response": {"counts": [1, 2, 3]}} for i in range(5)},
              "errors": [], "thresholds": {}, "health": {"valid": True, "reasons": ["a\nb"]},
              "run_id": "r-1", "load": {}, "latency": {}, "histograms": {}, "timeseries": {}, "verdict": "ok"}
    path = save(result, str(tmp_path / "run"))
    assert load_result(str(tmp_path / "run")) == result
    text = open(path, encoding="utf-8").read()
    lines = text.splitlines()
    assert lines[0] == "{" and lines[-1] == "}"
    assert [ln for ln in lines if ln.startswith('  "') and '"t":' in ln] == \
        [f'  "{i}": {json.dumps(result["intervals"][str(i)])}' + ("," if i < 4 else "") for i in range(5)]
    assert ' "errors": [],' in lines and ' "thresholds": {},' in lines
    assert not (tmp_path / "run" / "result.json.tmp").exists()


def test_first_flush_imports_nothing():
    """The recorder's first flush runs inside a run, 50-100 ms after t0: an import there stalls the
    loop (numpy 2 imports numpy.ma on the first np.unique: 15 ms). Checked in a fresh interpreter,
    since other tests (matplotlib) import numpy.ma."""
    import subprocess
    import sys

    code = ("import sys\n"
            "import smtpbench.cli, smtpbench.load.procs, smtpbench.results\n"
            "from smtpbench.load.recorder import Recorder\n"
            "r = Recorder()\n"
            "for i in range(300):\n"
            "    t = 999_000 + i * 10\n"  # across an interval boundary
            "    r._txn.extend((t, t + 5, t + 300, 1024))\n"
            "    r.phase_values['mail'].append(150)\n"
            "    r._sched.append(10)\n"
            "r._loop_lag.append(300)\n"
            "before = set(sys.modules)\n"
            "r.flush()\n"
            "r.response.percentile(99)\n"
            "assert r.totals['ok'] == 300 and sorted(r.intervals) == [0, 1], (r.totals, sorted(r.intervals))\n"
            "print(sorted(set(sys.modules) - before))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_warmup_ends_by_the_runs_clock_not_when_a_timer_fires():
    """A loop timer can fire early by the run's clock (uvloop: whole ms, cached at the start of a
    loop pass); the replies of the warm-up's last messages then entered the headline's phases.
    Here the run's clock runs at half the loop's speed, so every timer fires early by it."""
    import asyncio
    import time

    import uvloop

    from smtpbench.load.upkeep import warmup_end

    rec = Recorder(warmup_us=20_000)
    t0 = time.monotonic_ns()
    now = lambda: (time.monotonic_ns() - t0) // 2000  # noqa: E731
    ended_at = []
    rec.end_warmup = lambda: ended_at.append(now())
    uvloop.run(warmup_end(rec, now))
    assert len(ended_at) == 1 and 20_000 <= ended_at[0] < 25_000, ended_at
