"""Pass/fail thresholds from a scenario's ``[thresholds]`` table.

Keys name a metric of result.json; values are limits:

* ``"response.p99" = "50ms"``  — a latency percentile (response, service, send_lag,
  or ``phase.<name>`` e.g. ``"phase.end_of_data.p99"``) must be at most the limit;
* ``error_rate = 0.001``       — failed / (ok + failed) must be at most this;
* ``min_throughput = 500``     — measured msgs/s must be at least this.
"""

from __future__ import annotations

import math

from .protocol.client import PHASES
from .units import parse_duration

LATENCIES = ("response", "service", "send_lag")
PERCENTILE_KEYS = ("p50", "p90", "p99", "p99.9", "p99.99", "max", "mean")
HELP = ("threshold keys: '<response|service|send_lag|phase.NAME>.<p50|p90|p99|p99.9|p99.99|max|mean>' "
        "with a duration, 'error_rate' with a fraction, 'min_throughput' with msgs/s")


def split_metric(key: str) -> tuple[str, str]:
    """``"response.p99.9"`` -> ``("response", "p99.9")``; ValueError when not a latency threshold."""
    for pct in PERCENTILE_KEYS:
        if key.endswith("." + pct):
            metric = key[: -len(pct) - 1]
            if metric in LATENCIES:
                return metric, pct
            if metric.startswith("phase."):
                if metric[6:] not in PHASES:
                    raise ValueError(f"unknown phase '{metric[6:]}' in threshold '{key}'; phases: {', '.join(PHASES)}")
                return metric, pct
    raise ValueError(f"unknown threshold '{key}'; {HELP}")


def _number(value) -> bool:
    # TOML has inf and nan (and true is an int to Python): none of them is a limit.
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def check_key(key: str, value) -> None:
    """Raise ValueError when a threshold key or value is not understood."""
    if isinstance(value, dict):
        # [thresholds.response] p99 = "50ms" (or an unquoted response.p99) makes a table in TOML.
        inner = next(iter(value), "p99")
        raise ValueError(f"is a table; write each threshold as one quoted key, e.g. \"{key}.{inner}\" = \"50ms\"; {HELP}")
    if key == "error_rate":
        if not _number(value) or not 0 <= value <= 1:
            raise ValueError("error_rate must be a fraction between 0 and 1")
        return
    if key == "min_throughput":
        if not _number(value) or value < 0:
            raise ValueError("min_throughput must be a finite number of msgs/s, at least 0")
        return
    split_metric(key)
    parse_duration(value)


def evaluate(thresholds: dict, result: dict) -> list[dict]:
    """Each threshold with its observed value and whether it passed."""
    out = []
    totals = result["totals"]
    for key, limit in thresholds.items():
        if key == "error_rate":
            observed = totals["error_rate"]
            passed = observed <= limit
            shown = f"{observed:.4%}"
        elif key == "min_throughput":
            observed = totals["msgs_per_s"]
            passed = observed >= limit
            shown = f"{observed:,.1f} msgs/s"
        else:
            metric, pct = split_metric(key)
            lat = result["latency"]
            summary = lat["phases"].get(metric[6:], {}) if metric.startswith("phase.") else lat.get(metric, {})
            if not summary.get("count"):
                # Nothing measured is not "under the limit": e.g. phase.end_of_data when the
                # server offered CHUNKING (the data went as BDAT), or a run whose messages all failed.
                observed, passed, shown = None, False, "no samples"
            else:
                observed = summary[pct]
                passed = observed <= parse_duration(limit) * 1e6
                shown = f"{observed / 1000:.2f} ms"
        op = ">=" if key == "min_throughput" else "<="
        out.append({"metric": key, "op": op, "limit": limit, "observed": observed, "shown": shown,
                    "passed": bool(passed)})
    accepted = totals["ok"] + totals.get("warmup_ok", 0)
    tried = totals["failed"] + totals.get("warmup_failed", 0) > 0
    if accepted == 0 and (tried or totals.get("issued", 1) == 0):
        # Implicit: a run in which nothing got through is not a success, thresholds or not
        # (warm-up included: a warm-up as long as the run must not hide it); nor is one that sent
        # nothing at all (stopped by a signal before its start). (With recording off, a benchmark's
        # switch, nothing is counted but what was issued.)
        out.append({"metric": "messages_ok", "op": ">=", "limit": 1, "observed": 0,
                    "shown": "no message was accepted" if tried else "no message was sent", "passed": False,
                    "implicit": True})
    elif totals["ok"] + totals["failed"] == 0 and accepted:
        # Every message fell in the warm-up: the headline figures measure nothing.
        out.append({"metric": "messages_measured", "op": ">=", "limit": 1, "observed": 0,
                    "shown": "every message fell in the warm-up", "passed": False, "implicit": True})
    return out


def limit_text(metric: str, limit, op: str | None = None) -> str:
    """A threshold's limit with its comparison, in the unit its observed value is shown in:
    ``≤ 1%`` for ``error_rate = 0.01`` (shown bare, "0.01" beside an observed "7.2976%" read as
    0.01 %), ``≥ 500 msgs/s``, ``≤ 50ms``."""
    op = op or (">=" if metric == "min_throughput" else "<=")
    sign = {"<=": "≤", ">=": "≥"}.get(op, op)
    if metric == "error_rate" and isinstance(limit, (int, float)):
        return f"{sign} {limit * 100:g}%"
    if metric == "min_throughput" and isinstance(limit, (int, float)):
        return f"{sign} {limit:,g} msgs/s"
    return f"{sign} {limit}"
