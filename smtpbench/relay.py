"""Relay benchmarks: what the server under test accepted, joined with what reached the sink.

The generator knows, per message it saw accepted, its sequence number, when
it was sent and when the 250 came (wall clock, µs). The sink's relay log
knows, per stamped arrival, the sequence number and the arrival time. Joined
by sequence number they give, per message:

* delivery latency — arrival minus send: the whole trip through the server;
* queue time — arrival minus the 250: the time the server held the message;

and for the run: accepted vs delivered vs lost (never arrived by the end of
the drain) vs duplicated (arrived more than once), plus arrivals of messages
the client saw fail ("unexpected": e.g. a reply lost after the server queued).
Generator and sink on one machine share a clock; across machines, the
scenario's ``[relay] clock_offset_ms`` (sink minus generator) is applied and
the report says the clock was not shared.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from .metrics import Histogram

LOST_EXAMPLES = 20


def relay_section(accepted: list, arrivals: list, t0_wall_us: int, *, drain_s: float, drained: bool,
                  clock_offset_ms: float = 0.0, same_host: bool = True) -> dict:
    """The ``relay`` section of result.json (see the module docstring)."""
    offset = int(clock_offset_ms * 1000)
    acc = {seq: (sent, ok_at) for seq, sent, ok_at in accepted}
    counts = Counter(seq for seq, _, _ in arrivals)
    first: dict[int, int] = {}
    for seq, _, arrival in arrivals:
        a = arrival - offset
        if seq not in first or a < first[seq]:
            first[seq] = a
    delivered = [seq for seq in acc if seq in first]
    lost = sorted(seq for seq in acc if seq not in first)
    unexpected = sorted(seq for seq in first if seq not in acc)
    latency, queue = Histogram(), Histogram()
    if delivered:
        arr = np.array([(first[s], acc[s][0], acc[s][1]) for s in delivered], dtype=np.int64)
        latency.record_many(arr[:, 0] - arr[:, 1])
        # A server may hand the message on before the generator has read its 250 (the
        # generator's clock for "accepted" is when it processed the reply): count those
        # as 0 queued, and say how many there were.
        held = arr[:, 0] - arr[:, 2]
        early = int((held < 0).sum())
        queue.record_many(np.maximum(held, 0))
    else:
        early = 0
    series = _series(acc, first, t0_wall_us)
    duplicates = sum(n - 1 for n in counts.values() if n > 1)
    return {
        "accepted": len(acc), "delivered": len(delivered), "lost": len(lost), "duplicates": duplicates,
        "unexpected": len(unexpected), "arrivals": len(arrivals), "delivered_before_reply_read": early,
        "lost_examples": lost[:LOST_EXAMPLES], "duplicate_examples": sorted(s for s, n in counts.items() if n > 1)[:LOST_EXAMPLES],
        "delivery_latency": latency.summary(), "queue_time": queue.summary(),
        "histograms": {"delivery_latency": latency.to_dict(), "queue_time": queue.to_dict()},
        "timeseries": series,
        "drain_s": round(drain_s, 3), "drained": drained,
        "clock": {"same_host": same_host, "offset_ms": clock_offset_ms,
                  "note": "generator and sink share this machine's clock" if same_host else
                          "different machines: latencies depend on the given clock offset"},
        "passed": not lost and not duplicates,
    }


def _series(acc: dict, first: dict, t0: int) -> dict:
    """Per 1 s since the run's start: accepted, delivered, backlog (accepted so far − delivered so far)."""
    if not acc:
        return {"interval_s": 1, "t": [], "accepted": [], "delivered": [], "backlog": []}
    acc_t = np.array([(v[1] - t0) // 1_000_000 for v in acc.values()], dtype=np.int64)
    del_t = np.array([(a - t0) // 1_000_000 for s, a in first.items() if s in acc], dtype=np.int64)
    end = int(max(acc_t.max(), del_t.max() if del_t.size else 0)) + 1
    a = np.bincount(np.clip(acc_t, 0, None), minlength=end)[:end]
    d = np.bincount(np.clip(del_t, 0, None), minlength=end)[:end] if del_t.size else np.zeros(end, dtype=np.int64)
    backlog = np.cumsum(a) - np.cumsum(d)
    return {"interval_s": 1, "t": list(range(end)), "accepted": a.tolist(), "delivered": d.tolist(),
            "backlog": backlog.tolist()}
