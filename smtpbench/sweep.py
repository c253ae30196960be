"""Sweeps: one scenario run at each value of one parameter, and where it stops keeping up.

The *sustainable throughput* is the highest step whose run was valid and met
every threshold (and, for open-loop rate sweeps, completed what was offered:
achieved within 5% of the offered rate). Steps beyond a failing one still
count: a noisy step should not hide a good one above it, and the report shows
every point.
"""

from __future__ import annotations

from .scenario import Scenario

ACHIEVED_TOLERANCE = 0.05


def step_summary(value, path: str, result: dict) -> dict:
    lat = result["latency"]["response"]
    t = result["totals"]
    offered = result["load"]["offered_rate"]
    keeps_up = True
    if offered:
        keeps_up = t["msgs_per_s"] >= offered * (1 - ACHIEVED_TOLERANCE)
    return {
        "value": value, "result": path, "verdict": result["verdict"],
        "offered_rate": offered, "msgs_per_s": t["msgs_per_s"], "ok": t["ok"], "failed": t["failed"],
        "error_rate": t["error_rate"], "p50": lat["p50"], "p99": lat["p99"], "p99.9": lat["p99.9"],
        "service_p99": result["latency"]["service"]["p99"],
        "keeps_up": keeps_up, "passed": result["verdict"] == "ok" and keeps_up,
    }


def summarise(scenario: Scenario, steps: list[tuple]) -> dict:
    """sweep.json: every step's headline figures and the sustainable point."""
    rows = [step_summary(v, p, r) for v, p, r in steps]
    passing = [r for r in rows if r["passed"]]
    sustainable = max(passing, key=lambda r: r["msgs_per_s"]) if passing else None
    return {"schema": "smtpbench.sweep/1", "name": scenario.name, "parameter": scenario.sweep.parameter,
            "thresholds": scenario.thresholds, "steps": rows, "sustainable": sustainable}
