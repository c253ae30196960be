"""The relay join (smtpbench.relay.relay_section) in numpy, against the plain-Python join it
replaced, on random runs with lost, duplicated, unexpected and early deliveries and a clock
offset; and what it costs for a long run (arrays of 24 octets a row, not a tuple and a dict entry)."""

from __future__ import annotations

import tracemalloc
from collections import Counter

import numpy as np
import pytest

from smtpbench.metrics import Histogram
from smtpbench.relay import relay_section

T0 = 1_795_000_000_000_000


def _reference(accepted, arrivals, t0, offset_ms):
    """The join as it was written before (dicts and tuples), for the figures relay_section gives."""
    offset = int(offset_ms * 1000)
    acc = {seq: (sent, ok_at) for seq, sent, ok_at in accepted}
    counts = Counter(seq for seq, _, _ in arrivals)
    first: dict[int, int] = {}
    for seq, _, arrival in arrivals:
        a = arrival - offset
        if seq not in first or a < first[seq]:
            first[seq] = a
    delivered = [seq for seq in acc if seq in first]
    latency, queue = Histogram(), Histogram()
    latency.record_many(np.array([first[s] - acc[s][0] for s in delivered], dtype=np.int64))
    held = [first[s] - acc[s][1] for s in delivered]
    early = sum(h < 0 for h in held)
    queue.record_many(np.array([max(h, 0) for h in held], dtype=np.int64))
    acc_t = [(ok_at - t0) // 1_000_000 for _, ok_at in acc.values()]
    del_t = [(first[s] - t0) // 1_000_000 for s in delivered]
    return {"accepted": len(acc), "delivered": len(delivered), "lost": sum(s not in first for s in acc),
            "duplicates": sum(n - 1 for n in counts.values() if n > 1), "unexpected": sum(s not in acc for s in first),
            "arrivals": len(arrivals), "delivered_before_reply_read": early,
            "lost_examples": sorted(s for s in acc if s not in first)[:20],
            "duplicate_examples": sorted(s for s, n in counts.items() if n > 1)[:20],
            "delivery_latency": latency.summary(), "queue_time": queue.summary(),
            "accepted_series": np.bincount(np.clip(acc_t, 0, None)).tolist() if acc_t else [],
            "delivered_total": len(del_t)}


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("offset_ms", [0.0, 3.5])
def test_the_numpy_join_gives_what_the_dict_join_gave(seed, offset_ms):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 3000))
    seqs = rng.permutation(10 * n + 1)[:n]
    sent = T0 + rng.integers(0, 20_000_000, n)
    ok_at = sent + rng.integers(100, 50_000, n)
    accepted = list(zip(seqs.tolist(), sent.tolist(), ok_at.tolist()))
    arrivals = []
    for seq, s, ok in accepted:
        draw = rng.random()
        if draw < 0.1:
            continue                                          # lost
        copies = 2 if draw > 0.95 else 1                      # duplicated
        for _ in range(copies):
            # Some arrive before the generator read the 250 (early), most after.
            arrivals.append((seq, s, ok + int(rng.integers(-2_000, 400_000)) + int(offset_ms * 1000)))
    arrivals += [(10 * n + 5 + k, T0, T0 + 1_000) for k in range(int(rng.integers(0, 4)))]  # unexpected
    rng.shuffle(arrivals)
    got = relay_section(np.array(accepted, dtype=np.int64).reshape(-1, 3), arrivals, T0, drain_s=1.0,
                        drained=True, clock_offset_ms=offset_ms)
    want = _reference(accepted, arrivals, T0, offset_ms)
    for key in ("accepted", "delivered", "lost", "duplicates", "unexpected", "arrivals",
                "delivered_before_reply_read", "lost_examples", "duplicate_examples", "delivery_latency",
                "queue_time"):
        assert got[key] == want[key], key
    assert got["timeseries"]["accepted"] == want["accepted_series"]
    assert sum(got["timeseries"]["delivered"]) == want["delivered_total"]
    assert got["passed"] == (want["lost"] == 0 and want["duplicates"] == 0)


def test_a_long_run_joins_in_arrays():
    """A million accepted and delivered messages: the join allocates about 120 MB (rows of 24 octets
    and numpy's temporaries). Measured with the dict-and-tuple join: the two lists of tuples alone took
    321 MB, the join 335 MB more and 12 s under tracemalloc (0.3 s now)."""
    n = 1_000_000
    seqs = np.arange(n, dtype=np.int64)
    accepted = np.stack([seqs, T0 + seqs * 10, T0 + seqs * 10 + 500], axis=1)
    arrivals = np.stack([seqs, T0 + seqs * 10, T0 + seqs * 10 + 2_000], axis=1)
    tracemalloc.start()
    try:
        section = relay_section(accepted, arrivals, T0, drain_s=1.0, drained=True)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (section["accepted"], section["delivered"], section["lost"]) == (n, n, 0)
    assert section["queue_time"]["p50"] == pytest.approx(1_500, rel=0.01)
    assert peak < 150 * 2**20, peak
