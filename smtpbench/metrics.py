"""Latency histograms: HDR-style log-linear buckets, recorded in bulk with numpy.

Why our own and not the ``hdrhistogram`` package: its ``record_value`` runs
Python code per value (~1 µs); here recording is a list append (~50 ns) and
bucketing happens in bulk with numpy once per interval (benchmarks/ has the
comparison). The bucket layout is HDR's: values below 2**(SUB_BITS+1) are
exact, above that each power of two is split into 2**SUB_BITS linear
sub-buckets, so the relative error is below 2**-SUB_BITS (0.8 %).

Values are integer microseconds. Values above :data:`MAX_VALUE` (~71 min)
are counted in ``overflow`` and in the top bucket; negative values (clock
steps) in ``underflow`` and bucket 0: counted, never dropped silently.
Histograms with the same layout merge losslessly by adding counts.
"""

from __future__ import annotations

import numpy as np

SUB_BITS = 7
SUB = 1 << SUB_BITS                  # 128 sub-buckets per power of two
EXACT = SUB << 1                     # values below 256 have their own bucket
MAX_BITS = 32
MAX_VALUE = (1 << MAX_BITS) - 1      # 4,294,967,295 µs ≈ 71.6 minutes
NBUCKETS = (MAX_BITS - SUB_BITS) * SUB + EXACT - SUB  # 3456

PERCENTILES = (50.0, 90.0, 99.0, 99.9, 99.99)


def bucket_index(values: np.ndarray) -> np.ndarray:
    """Bucket index of each (already clamped, non-negative) value."""
    v = values.astype(np.int64, copy=False)
    _, bits = np.frexp(v.astype(np.float64))  # bits = bit_length(v) for v < 2**53
    shift = np.maximum(bits.astype(np.int64) - (SUB_BITS + 1), 0)
    return shift * SUB + (v >> shift)


def bucket_bounds(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lowest and highest value that fall into each bucket index."""
    idx = np.asarray(index, dtype=np.int64)
    shift = np.maximum(idx // SUB - 1, 0)
    sub = idx - shift * SUB
    low = sub << shift
    high = ((sub + 1) << shift) - 1
    return low, high


class Histogram:
    """Counts per bucket plus exact count, sum, min, max and out-of-range tallies."""

    __slots__ = ("counts", "total", "sum", "min", "max", "overflow", "underflow")

    def __init__(self) -> None:
        self.counts = np.zeros(NBUCKETS, dtype=np.int64)
        self.total = 0
        self.sum = 0
        self.min = 0
        self.max = 0
        self.overflow = 0
        self.underflow = 0

    def record_many(self, values) -> None:
        """Add a batch of integer microsecond values (a list or an array)."""
        v = np.asarray(values, dtype=np.int64)
        if v.size == 0:
            return
        lo, hi = int(v.min()), int(v.max())
        if lo < 0:
            self.underflow += int((v < 0).sum())
        if hi > MAX_VALUE:
            self.overflow += int((v > MAX_VALUE).sum())
        if lo < 0 or hi > MAX_VALUE:
            v = np.clip(v, 0, MAX_VALUE)
        self.counts += np.bincount(bucket_index(v), minlength=NBUCKETS)
        self.sum += int(v.sum())
        self.min = lo if self.total == 0 else min(self.min, lo)
        self.max = hi if self.total == 0 else max(self.max, hi)
        self.total += int(v.size)

    def merge(self, other: "Histogram") -> None:
        """Add another histogram's counts (lossless: same bucket layout)."""
        if other.total == 0:
            return
        self.counts += other.counts
        self.min = other.min if self.total == 0 else min(self.min, other.min)
        self.max = other.max if self.total == 0 else max(self.max, other.max)
        self.total += other.total
        self.sum += other.sum
        self.overflow += other.overflow
        self.underflow += other.underflow

    def percentile(self, p: float) -> int:
        """The value at percentile ``p`` (0-100): the highest value of its bucket, capped at max."""
        if self.total == 0:
            return 0
        return self._at(np.cumsum(self.counts), p)

    def _at(self, cum: np.ndarray, p: float) -> int:
        rank = max(1, int(np.ceil(p / 100.0 * self.total)))
        idx = int(np.searchsorted(cum, rank))
        _, high = bucket_bounds(np.array([idx]))
        return int(min(high[0], self.max))

    def summary(self) -> dict:
        """count, min, mean, p50…p99.99, max in µs (what result.json and reports show)."""
        out = {"count": self.total, "min": self.min, "mean": round(self.sum / self.total, 1) if self.total else 0}
        cum = np.cumsum(self.counts) if self.total else None
        for p in PERCENTILES:
            out[_pkey(p)] = self._at(cum, p) if self.total else 0
        out["max"] = self.max
        if self.overflow or self.underflow:
            out["overflow"] = self.overflow
            out["underflow"] = self.underflow
        return out

    # -- serialisation (sparse: only non-empty buckets) -------------------

    def to_dict(self) -> dict:
        nz = np.flatnonzero(self.counts)
        return {
            "total": self.total, "sum": self.sum, "min": self.min, "max": self.max,
            "overflow": self.overflow, "underflow": self.underflow,
            "buckets": [[int(i), int(self.counts[i])] for i in nz],
        }

    @classmethod
    def from_dict(cls, data: dict) -> "Histogram":
        h = cls()
        for idx, count in data.get("buckets", []):
            h.counts[idx] = count
        h.total = data["total"]
        h.sum = data["sum"]
        h.min = data["min"]
        h.max = data["max"]
        h.overflow = data.get("overflow", 0)
        h.underflow = data.get("underflow", 0)
        return h

    def values_and_counts(self) -> tuple[np.ndarray, np.ndarray]:
        """Non-empty buckets as (representative value, count), for plots and .hgrm export."""
        nz = np.flatnonzero(self.counts)
        low, high = bucket_bounds(nz)
        return (low + high) / 2.0, self.counts[nz]


def _pkey(p: float) -> str:
    """50.0 -> 'p50', 99.9 -> 'p99.9' (keys of result.json, easy to read with jq)."""
    return f"p{p:g}"


def summary_of(data: dict) -> dict:
    return Histogram.from_dict(data).summary()
