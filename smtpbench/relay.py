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


import numpy as np

from .metrics import Histogram

LOST_EXAMPLES = 20


def relay_section(accepted, arrivals, t0_wall_us: int, *, drain_s: float, drained: bool,
                  clock_offset_ms: float = 0.0, same_host: bool = True) -> dict:
    """The ``relay`` section of result.json (see the module docstring).

    ``accepted``: (seq, sent_us, accepted_us) rows, ``arrivals``: (seq, sent_us, arrival_us) rows
    (arrays or sequences of triples). Joined in numpy by sequence number: a run of millions of
    messages costs arrays of 24 octets a row, not a dict entry and a tuple each.
    """
    offset = int(clock_offset_ms * 1000)
    acc = _rows(accepted)
    arr = _rows(arrivals)
    # One row per accepted sequence number (its last, should one repeat), in order of seq.
    acc = acc[np.argsort(acc[:, 0], kind="stable")]
    if len(acc):
        acc = acc[np.r_[acc[1:, 0] != acc[:-1, 0], True]]
    seqs, inverse, counts = np.unique(arr[:, 0], return_inverse=True, return_counts=True)
    first = np.full(len(seqs), np.iinfo(np.int64).max, dtype=np.int64)  # each seq's first arrival
    np.minimum.at(first, inverse, arr[:, 2] - offset)
    where = np.searchsorted(seqs, acc[:, 0])
    found = where < len(seqs)
    found[found] = seqs[where[found]] == acc[found, 0]
    arrived = first[where[found]]
    lost = acc[~found, 0]
    unexpected = int(np.count_nonzero(~np.isin(seqs, acc[:, 0])))
    latency, queue = Histogram(), Histogram()
    early = 0
    if arrived.size:
        latency.record_many(arrived - acc[found, 1])
        # A server may hand the message on before the generator has read its 250 (the
        # generator's clock for "accepted" is when it processed the reply): count those
        # as 0 queued, and say how many there were.
        held = arrived - acc[found, 2]
        early = int((held < 0).sum())
        queue.record_many(np.maximum(held, 0))
    series = _series(acc[:, 2], arrived, t0_wall_us)
    repeated = counts > 1
    duplicates = int((counts[repeated] - 1).sum())
    return {
        "accepted": len(acc), "delivered": int(arrived.size), "lost": len(lost), "duplicates": duplicates,
        "unexpected": unexpected, "arrivals": len(arr), "delivered_before_reply_read": early,
        "lost_examples": lost[:LOST_EXAMPLES].tolist(), "duplicate_examples": seqs[repeated][:LOST_EXAMPLES].tolist(),
        "delivery_latency": latency.summary(), "queue_time": queue.summary(),
        "histograms": {"delivery_latency": latency.to_dict(), "queue_time": queue.to_dict()},
        "timeseries": series,
        "drain_s": round(drain_s, 3), "drained": drained,
        "clock": {"same_host": same_host, "offset_ms": clock_offset_ms,
                  "note": "generator and sink share this machine's clock" if same_host else
                          "different machines: latencies depend on the given clock offset"},
        "passed": not len(lost) and not duplicates,
    }


def _rows(triples) -> np.ndarray:
    return np.asarray(triples, dtype=np.int64).reshape(-1, 3)


def _series(accepted_at: np.ndarray, delivered_at: np.ndarray, t0: int) -> dict:
    """Per 1 s since the run's start: accepted, delivered, backlog (accepted so far − delivered so far);
    from the accepted messages' 250 times and the delivered ones' first arrivals (µs, wall clock)."""
    if not accepted_at.size:
        return {"interval_s": 1, "t": [], "accepted": [], "delivered": [], "backlog": []}
    acc_t = (accepted_at - t0) // 1_000_000
    del_t = (delivered_at - t0) // 1_000_000
    end = int(max(acc_t.max(), del_t.max() if del_t.size else 0)) + 1
    a = np.bincount(np.clip(acc_t, 0, None), minlength=end)[:end]
    d = np.bincount(np.clip(del_t, 0, None), minlength=end)[:end] if del_t.size else np.zeros(end, dtype=np.int64)
    backlog = np.cumsum(a) - np.cumsum(d)
    return {"interval_s": 1, "t": list(range(end)), "accepted": a.tolist(), "delivered": d.tolist(),
            "backlog": backlog.tolist()}
