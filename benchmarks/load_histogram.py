"""Histogram choice: our numpy-bucketed histogram against the ``hdrhistogram`` package, per value recorded.

``smtpbench/metrics.py`` claims its own histogram beats ``hdrh`` for
recording because the hot path is a list append and bucketing happens in
bulk. Measured here on the same 1e6 integer latencies (µs, lognormal around
700 µs with a long tail, seeded), walked the same way (a Python loop over
chunks of 10,000 values):

* ours as the recorder does it: ``list.append`` per value, then
  ``Histogram.record_many`` on each chunk of 10,000;
* ``HdrHistogram(1, 2**32 - 1, 2).record_value`` per value: 2 significant
  digits, the same relative precision as ours (2**-7: 128 sub-buckets per
  power of two in both);
* the bare loop (``pass`` per value): the iteration both pay.

Accuracy: p50…p99.99 and max from ours and from hdrh against the exact
``numpy.percentile(..., method="inverted_cdf")`` (the value at rank
ceil(p·n), the definition both histograms use); the relative error must
stay within ours' bucket width, 2**-7 (0.78 %).
"""

from __future__ import annotations

import time

import numpy as np

from smtpbench.metrics import MAX_VALUE, PERCENTILES, SUB_BITS, Histogram

from .harness import Check, Options, Report, Table, median

NAME = "histogram"

VALUES = 1_000_000
BATCH = 10_000
SEED = 1


def _values(count: int) -> list[list[int]]:
    rng = np.random.default_rng(SEED)
    v = np.rint(rng.lognormal(mean=np.log(700), sigma=0.8, size=count)).astype(np.int64)
    v = np.clip(v, 1, MAX_VALUE)
    return [v[i:i + BATCH].tolist() for i in range(0, count, BATCH)]


def _ours(chunks: list[list[int]]) -> tuple[float, float, Histogram]:
    """Seconds in total, seconds of which in record_many, and the histogram."""
    h = Histogram()
    bulk = 0.0
    t0 = time.perf_counter()
    for chunk in chunks:
        pending: list[int] = []
        append = pending.append
        for v in chunk:
            append(v)
        t1 = time.perf_counter()
        h.record_many(pending)
        bulk += time.perf_counter() - t1
    return time.perf_counter() - t0, bulk, h


def _hdrh(chunks: list[list[int]]):
    from hdrh.histogram import HdrHistogram

    h = HdrHistogram(1, MAX_VALUE, 2)
    record = h.record_value
    t0 = time.perf_counter()
    for chunk in chunks:
        for v in chunk:
            record(v)
    return time.perf_counter() - t0, h


def _bare(chunks: list[list[int]]) -> float:
    t0 = time.perf_counter()
    for chunk in chunks:
        for _v in chunk:
            pass
    return time.perf_counter() - t0


def run(opts: Options) -> Report:
    try:
        import hdrh.histogram  # noqa: F401
    except ImportError:
        raise RuntimeError("the hdrhistogram package is not installed (pip install hdrhistogram)") from None
    count = VALUES // 10 if opts.quick else VALUES
    rounds = min(opts.rounds, 3) if opts.quick else opts.rounds
    chunks = _values(count)
    times: dict[str, list[float]] = {"ours": [], "ours_bulk": [], "hdrh": [], "bare": []}
    ours = theirs = None
    for r in range(rounds):
        # Alternate which goes first, so a busy moment does not always fall on the same one.
        for name in (("ours", "hdrh", "bare") if r % 2 == 0 else ("hdrh", "ours", "bare")):
            if name == "ours":
                total, bulk, ours = _ours(chunks)
                times["ours"].append(total)
                times["ours_bulk"].append(bulk)
            elif name == "hdrh":
                total, theirs = _hdrh(chunks)
                times["hdrh"].append(total)
            else:
                times["bare"].append(_bare(chunks))
        print(f"   round {r + 1}/{rounds}: ours {times['ours'][-1] / count * 1e9:.0f} ns/value, "
              f"hdrh {times['hdrh'][-1] / count * 1e9:.0f} ns/value", flush=True)
    ns = {k: median(v) / count * 1e9 for k, v in times.items()}
    speedup = median([h / o for h, o in zip(times["hdrh"], times["ours"])])
    cost_rows = [
        ["ours: list.append + record_many per 10,000", f"{ns['ours']:.0f}", f"{ns['ours'] - ns['bare']:.0f}"],
        ["  of which record_many (numpy bucketing)", f"{ns['ours_bulk']:.0f}", ""],
        ["hdrh: HdrHistogram.record_value", f"{ns['hdrh']:.0f}", f"{ns['hdrh'] - ns['bare']:.0f}"],
        ["bare loop (for v in chunk: pass)", f"{ns['bare']:.0f}", "0"],
    ]
    exact_all = np.concatenate([np.asarray(c, dtype=np.int64) for c in chunks])
    acc_rows, errors, data_acc = [], {"ours": [], "hdrh": []}, {}
    for p in (*PERCENTILES, 100.0):
        exact = int(np.percentile(exact_all, p, method="inverted_cdf"))
        mine = ours.percentile(p) if p < 100 else ours.max
        hdr = theirs.get_value_at_percentile(p) if p < 100 else theirs.get_max_value()
        e_ours, e_hdr = (mine - exact) / exact, (hdr - exact) / exact
        errors["ours"].append(abs(e_ours))
        errors["hdrh"].append(abs(e_hdr))
        label = "max" if p == 100 else f"p{p:g}"
        data_acc[label] = {"exact": exact, "ours": mine, "hdrh": hdr}
        acc_rows.append([label, f"{exact:,}", f"{mine:,}", f"{e_ours:+.3%}", f"{hdr:,}", f"{e_hdr:+.3%}"])
    bound = 2.0 ** -SUB_BITS
    checks = [
        Check("hdrh / ours, recording time per value", speedup, 1.0),
        Check("ours: worst percentile error vs numpy (%)", max(errors["ours"]) * 100, bound * 100, unit="%",
              higher_is_better=False),
    ]
    return Report(
        f"recording {count:,} latencies: our numpy-bucketed histogram vs hdrhistogram",
        tables=[
            Table(f"recording cost per value, median of {rounds} rounds (ns)",
                  ["way", "ns/value", "ns/value above the bare loop"], cost_rows),
            Table("percentile accuracy against numpy.percentile(method='inverted_cdf') (values in us)",
                  ["percentile", "exact", "ours", "ours error", "hdrh", "hdrh error"], acc_rows),
        ],
        checks=checks,
        notes=[f"hdrh / ours time per value: {speedup:.1f}x; ours' error bound is one bucket, "
               f"2**-{SUB_BITS} = {bound:.2%}"],
        data={"values": count, "batch": BATCH, "rounds": rounds, "ns_per_value": ns, "hdrh_over_ours": speedup,
              "accuracy": data_acc},
    )
