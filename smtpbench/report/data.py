"""Reading a result document for reports: histograms, measured intervals, spectra and log bins.

Everything here is a pure function of ``result.json`` (numpy only), so a report can be rebuilt
from files alone and the numbers behind each plot can be tested without looking at pixels.
"""

from __future__ import annotations

import math

import numpy as np

from ..metrics import Histogram, bucket_bounds
from ..results import load_window

#: HdrHistogram's default reporting resolution: five percentile levels per halving of 1 - p.
TICKS_PER_HALF = 5


def histogram(result: dict, name: str) -> Histogram:
    """The cumulative (warm-up excluded) histogram ``name``: response, service, … or ``phase.<name>``."""
    hists = result["histograms"]
    data = hists["phases"].get(name[6:]) if name.startswith("phase.") else hists.get(name)
    return Histogram.from_dict(data) if data else Histogram()


def interval_histograms(result: dict, name: str) -> list[tuple[int, Histogram]]:
    """``(t, histogram)`` per 1 s interval for ``response`` or ``service`` (warm-up included)."""
    return [(iv["t"], Histogram.from_dict(iv[name])) for iv in result.get("intervals", [])]


def measured(result: dict) -> np.ndarray:
    """Mask over ``timeseries.t``: complete intervals after the warm-up (what statistics use).

    Left out: intervals before the start (t < 0), inside the warm-up, and those not wholly inside
    the load (see :func:`~smtpbench.results.load_window`): the one its end cuts short, and the
    drain's (their rates would read low).
    """
    ts = result["timeseries"]
    t = np.asarray(ts["t"], dtype=float)
    if t.size == 0:
        return np.zeros(0, dtype=bool)
    step = ts.get("interval_s", 1)
    warm, end = load_window(result)
    mask = (t >= 0) & (t >= warm)
    if end is not None:
        mask &= t + step <= end + 1e-9
    else:
        mask &= t < t.max()
    return mask


def measured_rate(result: dict, key: str) -> float | None:
    """Mean per-second count of ``timeseries[key]`` over the measured intervals (None without any)."""
    mask = measured(result)
    if not mask.any():
        return None
    values = np.asarray(result["timeseries"][key], dtype=float)[mask]
    return float(values.mean() / result["timeseries"].get("interval_s", 1))


def offered_rate(result: dict) -> float | None:
    """Open loop: the schedule's mean msgs/s from the warm-up's end until the load ended (None: closed loop).

    The window of the other rates of the Throughput table: ``health.offered_rate`` averages the whole
    schedule, warm-up included, so a ramp (0 -> 400/s in 3 s, 400/s, -> 1,000/s) with a 1 s warm-up
    read 400 offered beside 447.6 accepted.
    """
    from types import SimpleNamespace

    from ..load.pacing import Profile

    load = result["load"]
    if load["model"] != "open":
        return None
    stages = [SimpleNamespace(duration=st["duration"], rate=st["rate"], ramp=bool(st.get("ramp")))
              for st in load.get("stages") or []]
    warm, end = load_window(result)
    profile = Profile(load.get("rate"), stages, load.get("duration_s"))
    return profile.mean_rate(end, warm)


def percentile_levels(total: int, ticks_per_half: int = TICKS_PER_HALF) -> np.ndarray:
    """Percentile levels (fractions) 0, 0.1, … 0.5, 0.55, … with ``ticks_per_half`` steps per halving.

    Levels stop where 1/(1-p) exceeds ``total`` (finer levels would all name the maximum);
    the last level is 1.0.
    """
    levels = []
    k = 0
    while True:
        start, width = 1.0 - 2.0 ** -k, 2.0 ** -(k + 1)
        for i in range(ticks_per_half):
            p = start + i * width / ticks_per_half
            if 1.0 / (1.0 - p) > total:
                return np.array(levels + [1.0])
            levels.append(p)
        k += 1


def spectrum(h: Histogram, ticks_per_half: int = TICKS_PER_HALF) -> dict[str, np.ndarray]:
    """The percentile spectrum: arrays ``percentile`` (0-1), ``value`` (µs) and ``count`` (≤ value).

    Values are the highest value of the bucket holding each rank, capped at the recorded maximum
    (as :meth:`Histogram.percentile`), so the spectrum is non-decreasing.
    """
    if h.total == 0:
        return {"percentile": np.zeros(0), "value": np.zeros(0, dtype=np.int64), "count": np.zeros(0, dtype=np.int64)}
    levels = percentile_levels(h.total, ticks_per_half)
    cum = np.cumsum(h.counts)
    ranks = np.maximum(1, np.ceil(levels * h.total - 1e-9)).astype(np.int64)
    idx = np.searchsorted(cum, ranks)
    _, high = bucket_bounds(idx)
    return {"percentile": levels, "value": np.minimum(high, h.max), "count": cum[idx]}


def log_bins(h: Histogram, per_decade: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Counts on log-spaced bins (µs edges, ``per_decade`` bins per factor of 10); counts sum to the total.

    Values below the first edge (including 0) fall in the first bin.
    """
    values, counts = h.values_and_counts()
    if values.size == 0:
        return np.array([1.0, 10.0]), np.zeros(1, dtype=np.int64)
    low = max(float(values.min()), 1.0)
    high = max(float(values.max()), low * 1.0001)
    first = math.floor(math.log10(low) * per_decade) / per_decade
    last = math.ceil(math.log10(high) * per_decade + 1e-9) / per_decade
    edges = 10.0 ** np.arange(first, last + 0.5 / per_decade, 1.0 / per_decade)
    binned, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges, weights=counts)
    return edges, binned.astype(np.int64)


def interval_values(result: dict, metric: str) -> np.ndarray:
    """One value per measured interval for a headline metric (what comparisons test).

    ``msgs_per_s``: OK messages per second; ``error_rate``: failed / (ok + failed), 0 when idle;
    ``response.p99`` etc.: the percentile of that interval's histogram in µs (idle intervals left out).
    """
    ts = result["timeseries"]
    mask = measured(result)
    step = ts.get("interval_s", 1)
    if metric == "msgs_per_s":
        return np.asarray(ts["ok"], dtype=float)[mask] / step
    if metric == "error_rate":
        ok = np.asarray(ts["ok"], dtype=float)[mask]
        failed = np.asarray(ts["failed"], dtype=float)[mask]
        done = ok + failed
        return np.divide(failed, done, out=np.zeros_like(done), where=done > 0)
    name, pct = metric.split(".", 1)
    keep = {t for t, m in zip(ts["t"], mask) if m}
    p = float(pct[1:])
    return np.array([h.percentile(p) for t, h in interval_histograms(result, name) if t in keep and h.total],
                    dtype=float)
