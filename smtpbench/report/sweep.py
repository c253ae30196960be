"""The data of a sweep report, from ``sweep.json`` alone: the steps table and the plots against load.

Like ``figures`` and ``tables`` for one run, this computes and never draws or writes:
:func:`sweep_figures` returns the data behind each plot (what ``figures.json`` holds and tests
check), :func:`steps_table` and :func:`overview` the text of the page. Latencies are in ms,
rates in msgs/s; a step with nothing to show is ``None`` (a gap), never a made-up 0.
"""

from __future__ import annotations

from ..units import format_size, parse_size
from .figures import Figure, Series
from .tables import DASH, Table, limit_text, ms

LATENCIES = (("p50", "C0"), ("p99", "C1"), ("p99.9", "C3"))  # p99.9 dashed: with few messages it is the p99
STAR = "*"


def x_axis(summary: dict) -> tuple[list, str]:
    """Each step's position on the x axis, and the axis label.

    A rate sweep is drawn against the offered load; a size sweep against bytes; any other
    numeric parameter against its values; anything else as categories, in step order.
    """
    rows, param = summary["steps"], summary["parameter"]
    if param == "load.rate":
        return [r["offered_rate"] if r["offered_rate"] is not None else r["value"] for r in rows], "offered load (msgs/s)"
    if param == "message.size":
        return [parse_size(r["value"]) for r in rows], "message size (bytes)"
    values = [r["value"] for r in rows]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return values, param
    return [str(v) for v in values], param


def _ms(us) -> float | None:
    return None if not us else round(us / 1000.0, 3)


def _best(summary: dict) -> int | None:
    """Position in ``steps`` of the sustainable step, if any."""
    best = summary.get("sustainable")
    if not best:
        return None
    return next((i for i, r in enumerate(summary["steps"]) if r["index"] == best["index"]), None)


def _latency_limits(summary: dict) -> dict[str, float]:
    """``{"p99": ms}`` for each ``response.<pct>`` threshold among the plotted percentiles."""
    from ..units import parse_duration

    out = {}
    for key, limit in (summary.get("thresholds") or {}).items():
        metric, _, pct = key.partition(".")
        if metric == "response" and pct in dict(LATENCIES):
            out[pct] = parse_duration(limit) * 1000.0
    return out


def latency_figure(summary: dict) -> Figure:
    """Response p50, p99 and p99.9 of each step; latency limits dashed; the sustainable step starred."""
    x, label = x_axis(summary)
    rows = summary["steps"]
    series = {pct: Series(x, [_ms(r[pct]) for r in rows], color=color, dashed=pct == "p99.9")
              for pct, color in LATENCIES}
    colors = dict(LATENCIES)
    for pct, limit in _latency_limits(summary).items():
        series[f"{pct} limit"] = Series([x[0], x[-1]], [limit, limit], dashed=True, color=colors[pct],
                                        marker="_")
    best = _best(summary)
    if best is not None:
        series["sustainable"] = Series([x[best]], [_ms(rows[best]["p99"])], color="#1e7b34", marker=STAR)
    return Figure("sweep_latency", "Response time at each step (warm-up excluded)", label, "latency (ms)",
                  series, ylog=True,
                  note="response time counts from each message's intended start (coordinated-omission corrected)")


def throughput_figure(summary: dict) -> Figure:
    """Achieved msgs/s of each step against the offered rate (open loop); the sustainable step starred."""
    x, label = x_axis(summary)
    rows = summary["steps"]
    series = {"achieved": Series(x, [r["achieved_rate"] for r in rows], color="C0")}
    if any(r["offered_rate"] for r in rows):
        series["offered"] = Series(x, [r["offered_rate"] for r in rows], dashed=True, color="#777777")
    best = _best(summary)
    if best is not None:
        series["sustainable"] = Series([x[best]], [rows[best]["achieved_rate"]], color="#1e7b34", marker=STAR)
    note = ("achieved: OK completions per second while the schedule ran, after the warm-up (arrivals x OK share x "
            "(1 - growth of the median response time per second)); a step keeps up within "
            f"{summary.get('tolerance', 0.05):.0%} of its arrivals") if "offered" in series else \
        "closed loop: completed msgs/s of each step"
    return Figure("sweep_throughput", "Throughput at each step: achieved vs offered", label, "messages/s", series,
                  note=note)


def sweep_figures(summary: dict) -> dict[str, Figure]:
    """Every plot of a sweep report, by name, in page order."""
    figs = [throughput_figure(summary), latency_figure(summary)]
    return {f.name: f for f in figs}


def _num(v, digits: int = 1) -> str:
    return DASH if v is None else f"{v:,.{digits}f}"


def _keeps_up(row: dict) -> str:
    if not row["offered_rate"]:
        return DASH
    growth = row.get("latency_growth")
    # (round(...) or 0.0: a flat trend of -0.0002 s/s read "latency -0.000 s/s")
    trend = f" (latency {round(growth, 3) or 0.0:+.3f} s/s)" if growth is not None else ""
    return ("yes" if row["keeps_up"] else "NO") + trend


def _verdict(row: dict) -> str:
    reasons = row.get("reasons") or []
    return row["verdict"] + (f" ({'; '.join(reasons)})" if reasons else "")


def _thresholds(row: dict) -> str:
    ths = row.get("thresholds") or []
    if not ths:
        return DASH
    failed = [f"{t['metric']} {t['shown']} (limit {limit_text(t['metric'], t['limit'], t.get('op'))})"
              for t in ths if not t["passed"]]
    return "pass" if not failed else "FAIL: " + "; ".join(failed)


def steps_table(summary: dict, missing: list[str] | None = None) -> Table:
    """One row per step: value, offered and achieved rates, latency, errors, verdicts.

    ``missing[i]``, when not "", says why step i has no report of its own ("result.json missing"): its
    figures still come from sweep.json, but the row must not look like a step whose link was forgotten.
    """
    best = _best(summary)
    rows, classes = [], []
    for i, r in enumerate(summary["steps"]):
        why = missing[i] if missing else ""
        value = format_size(parse_size(r["value"])) if summary["parameter"] == "message.size" else str(r["value"])
        name = f"step {r['index']}" + (f" ({why}: no report)" if why else "")
        rows.append([name, value, _num(r["offered_rate"]), _num(r["achieved_rate"]),
                     ms(r["p50"]), ms(r["p99"]), ms(r["p99.9"]), f"{r['error_rate']:.3%}",
                     _verdict(r), _keeps_up(r), _thresholds(r), "yes" if r["passed"] else "no"])
        classes.append(("pass" if r["passed"] else "fail") + (" best" if i == best else ""))
    note = ("achieved: OK completions per second while the schedule ran, after the warm-up; keeps up: achieved "
            f"within {summary.get('tolerance', 0.05):.0%} of the arrivals. ")
    note += summary.get("rule", "")
    return Table("Steps", ["step", summary["parameter"], "offered (msgs/s)", "achieved (msgs/s)", "p50 (ms)",
                           "p99 (ms)", "p99.9 (ms)", "error rate", "verdict", "keeps up", "thresholds", "passed"],
                 rows, note=note, classes=classes, align="llrrrrrrllll")


def headline(summary: dict) -> str:
    """One line: the sustainable point, or that no step passed."""
    best = summary.get("sustainable")
    if not best:
        return "no step met the thresholds"
    if best["offered_rate"]:
        return (f"sustainable: {summary['parameter']} = {best['value']}, {best['offered_rate']:,.1f} msgs/s offered, "
                f"{best['achieved_rate']:,.1f} msgs/s achieved (step {best['index']})")
    return f"sustainable: {summary['parameter']} = {best['value']}, {best['achieved_rate']:,.1f} msgs/s (step {best['index']})"


def overview(summary: dict, first: dict | None = None) -> list[tuple[str, str]]:
    """The header's label/value pairs; ``first`` is the first step's result, when readable."""
    ths = ", ".join(f"{k} {limit_text(k, v)}" for k, v in (summary.get("thresholds") or {}).items()) or "none"
    pairs = [("sweep", str(summary.get("sweep_id") or DASH)),
             ("scenario", summary["name"] + (f"  ·  hash {first['scenario_hash']}" if first else "")),
             ("parameter", f"{summary['parameter']} = " + ", ".join(str(v) for v in summary.get("values", []))),
             ("load model", f"{summary.get('model', DASH)} loop"),
             ("thresholds", ths)]
    if first:
        pairs += [("target", str(first.get("target", DASH))), ("command", first.get("command", DASH))]
    pairs.append(("result", headline(summary)))
    return pairs
