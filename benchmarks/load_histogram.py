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

And what the generator's :class:`~smtpbench.load.recorder.Recorder` costs per
message, in process (steadier than the end-to-end recording on/off ratio
of ``load.generator`` on a shared machine): the calls one pipelined
message makes (``started``, four ``phase`` replies, ``ok``) plus a
``flush`` every 10,000 messages (one tick at 10,000 msgs/s), against the
same calls on an object whose methods do nothing.
"""

from __future__ import annotations

import time

import numpy as np

from smtpbench.load.recorder import Recorder
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


class _NullRecorder:
    """The hot-path methods, doing nothing: the cost of the calls themselves."""

    def started(self, at: int) -> None:
        pass

    def phase(self, name: str, us: int) -> None:
        pass

    def ok(self, intended: int, start: int, end: int, size: int) -> None:
        pass

    def flush(self) -> None:
        pass


def _per_message(rec, messages: int) -> float:
    """Seconds for ``messages`` messages' worth of recorder calls, as a pipelined message makes them."""
    t0 = time.perf_counter()
    at = 0
    for i in range(messages):
        at += 70
        rec.started(at)
        rec.phase("mail", 310)
        rec.phase("rcpt", 4)
        rec.phase("data", 3)
        rec.phase("end_of_data", 380)
        rec.ok(at, at, at + 697, 1060)
        if i % BATCH == BATCH - 1:
            rec.flush()
    rec.flush()
    return time.perf_counter() - t0


def run(opts: Options) -> Report:
    try:
        import hdrh.histogram  # noqa: F401
    except ImportError:
        raise RuntimeError("the hdrhistogram package is not installed (pip install hdrhistogram)") from None
    count = VALUES // 10 if opts.quick else VALUES
    rounds = min(opts.rounds, 3) if opts.quick else opts.rounds
    chunks = _values(count)
    messages = count // 5
    times: dict[str, list[float]] = {"ours": [], "ours_bulk": [], "hdrh": [], "bare": [], "recorder": [],
                                     "null_recorder": []}
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
        times["recorder"].append(_per_message(Recorder(), messages))
        times["null_recorder"].append(_per_message(_NullRecorder(), messages))
        print(f"   round {r + 1}/{rounds}: ours {times['ours'][-1] / count * 1e9:.0f} ns/value, "
              f"hdrh {times['hdrh'][-1] / count * 1e9:.0f} ns/value", flush=True)
    ns = {k: median(v) / count * 1e9 for k, v in times.items() if "recorder" not in k}
    rec_us = {k: median(v) / messages * 1e6 for k, v in times.items() if "recorder" in k}
    rec_net = median([(a - b) / messages * 1e6 for a, b in zip(times["recorder"], times["null_recorder"])])
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
            Table(f"the generator's Recorder per message ({messages:,} messages: started, 4 phases, ok; "
                  f"flush per {BATCH:,}), median of {rounds} rounds (us)",
                  ["calls on", "us/message"],
                  [["Recorder", f"{rec_us['recorder']:.2f}"], ["no-op methods", f"{rec_us['null_recorder']:.2f}"],
                   ["recording itself (Recorder - no-op, per-round median)", f"{rec_net:.2f}"]]),
        ],
        checks=checks,
        notes=[f"hdrh / ours time per value: {speedup:.1f}x; ours' error bound is one bucket, "
               f"2**-{SUB_BITS} = {bound:.2%}"],
        data={"values": count, "batch": BATCH, "rounds": rounds, "ns_per_value": ns, "hdrh_over_ours": speedup,
              "accuracy": data_acc, "recorder_us_per_message": {**rec_us, "net": rec_net}},
    )
