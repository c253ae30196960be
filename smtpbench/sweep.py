"""Sweeps: one scenario run at each value of one parameter, and where it stops keeping up.

A step *passes* when its run was valid, met every threshold and, in an open loop, kept up with
what it was offered: its achieved rate (OK completions per second while the schedule ran, after
the warm-up; see :func:`achieved`) within 5 % of the arrivals in the same seconds. That last
check is what finds the knee of a server that queues instead of failing: past its capacity the
backlog (and so the latency) grows for as long as the step lasts, so a short step can stay under
a latency threshold while the server completes only its capacity. ``totals.msgs_per_s`` is no
use for it: it spreads the measured messages over the time up to the *last* reply, so in an open
loop it reads low by latency/duration even when the server keeps up.

The *sustainable throughput* is the passing step with the highest offered rate (open loop; for a
``load.rate`` sweep the knee: the highest rate the server still kept up with inside the
thresholds), or the highest achieved msgs/s (closed loop, where nothing is offered: more
sessions than the server can serve add latency, not throughput). Steps beyond a failing one
still count: a noisy step should not hide a good one above it, and the report shows every point.

``sweep.json`` (schema ``smtpbench.sweep/1``), written in the sweep's folder beside ``stepNN/``:

* ``schema``, ``sweep_id``, ``name``, ``parameter`` (e.g. ``"load.rate"``), ``values``,
  ``model`` (``"open"`` or ``"closed"``), ``thresholds`` (the scenario's table), ``tolerance``
  (0.05), ``rule`` (the sentence above, for readers of the file);
* ``steps``: one object per value, in order:
  ``index`` (1-based), ``value``, ``run_id``, ``result`` (the step's result.json, relative to
  the sweep folder), ``verdict`` (the run's), ``offered_rate`` (msgs/s; ``None`` in a closed
  loop), ``window_s`` (seconds the rates below were measured over), ``arrived_rate``,
  ``completed_rate`` (OK replies counted per second), ``latency_growth`` (s of median response
  time per s; these three ``None`` in a closed loop), ``achieved_rate`` (open loop: see
  :func:`achieved`; closed loop: ``msgs_per_s``), ``msgs_per_s``, ``ok``, ``failed``,
  ``error_rate``, ``p50``, ``p99``, ``p99.9``, ``service_p99`` (response/service time in µs),
  ``thresholds`` (``[{metric, limit, shown, passed}]``), ``reasons`` (why the run is invalid,
  if it is), ``keeps_up``, ``passed``;
* ``sustainable``: the chosen step (a copy of its row) or ``None`` when no step passed;
  ``sustainable_rate``: its offered rate (open loop) or achieved msgs/s (closed loop), or ``None``.
"""

from __future__ import annotations

import json
import math
import os

from .scenario import Scenario

SCHEMA = "smtpbench.sweep/1"
FILE = "sweep.json"
ACHIEVED_TOLERANCE = 0.05
RULE = ("sustainable = the passing step with the highest offered rate (open loop) or the highest achieved "
        "msgs/s (closed loop); a step passes when its run is valid, meets every threshold and, in an open "
        f"loop, completes within {ACHIEVED_TOLERANCE:.0%} of what was offered while the schedule ran")


def whole_intervals(result: dict) -> tuple[int, int]:
    """Whole 1 s intervals ``[first, end)`` in which the schedule ran after the warm-up (open loop).

    The end is where the load ended (:func:`smtpbench.results.load_window`: the schedule's end, the
    last arrival of a run bounded by a message count, or when a signal stopped it; an interval it
    cuts is left out, being partial); for results without that, the duration, or the last interval
    that received arrivals.
    """
    from .results import load_window

    ts, load = result["timeseries"], result["load"]
    step = ts.get("interval_s", 1)
    first = math.ceil((load.get("warmup_s") or 0) / step - 1e-9)
    offered = [t for t, n in zip(ts["t"], ts.get("offered", [])) if n]
    last = max(offered) if offered else 0
    _, ended = load_window(result)
    end = math.floor(ended / step + 1e-9) if ended is not None else last
    if load.get("stages"):  # a staged schedule may end before the duration
        end = min(end, last + 1)
    return first, end


def _slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of ``(x, y)`` points (at least two distinct x)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0


def achieved(result: dict) -> dict:
    """How much of the offered load a run completed, per second (see the module docstring).

    Open loop, over the whole intervals of :func:`whole_intervals`: ``arrived_rate`` (arrivals/s, the
    realised schedule), ``completed_rate`` (OK replies/s counted by the interval they ended in),
    ``latency_growth`` (slope of the per-interval median response time, s per s) and
    ``achieved_rate`` = arrivals/s x OK share x (1 - growth). A server completing C msgs/s while
    offered R > C makes each message wait (R - C)/R s longer than those that ended a second
    before it, so the growth measures its completion rate without counting whole messages per
    interval (a server answering in batches, like Postfix's smtp-sink with ``-w``, leaves 0 in
    one interval and twice as many in the next). With fewer than two intervals holding replies,
    ``achieved_rate`` is the counted rate; with no whole interval at all, the headline msgs/s.
    Closed loop: the headline msgs/s; nothing is offered.
    """
    totals = result["totals"]
    out = {"offered_rate": result["load"]["offered_rate"], "arrived_rate": None, "completed_rate": None,
           "latency_growth": None, "achieved_rate": totals["msgs_per_s"],
           "window_s": totals.get("measured_seconds", 0.0)}
    if result["load"]["model"] != "open":
        out["offered_rate"] = None
        return out
    ts = result["timeseries"]
    step = ts.get("interval_s", 1)
    first, end = whole_intervals(result)
    if end <= first:
        return out
    window = range(first, end)
    ok = dict(zip(ts["t"], ts["ok"]))
    failed = dict(zip(ts["t"], ts.get("failed", [])))
    arrivals = dict(zip(ts["t"], ts.get("offered", [])))
    p50 = dict(zip(ts["t"], ts["response"]["p50"]))
    seconds = len(window) * step
    done = sum(ok.get(k, 0) for k in window)
    bad = sum(failed.get(k, 0) for k in window)
    arrived = sum(arrivals.get(k, 0) for k in window) / seconds or (out["offered_rate"] or 0.0)
    points = [((k + 0.5) * step, p50[k] / 1e6) for k in window if ok.get(k) and p50.get(k) is not None]
    rate = done / seconds
    growth = None
    if len(points) >= 2:
        growth = _slope(points)
        share = done / (done + bad) if done + bad else 0.0
        rate = max(0.0, arrived * share * (1.0 - growth))
    out.update(arrived_rate=round(arrived, 3), completed_rate=round(done / seconds, 3),
               latency_growth=None if growth is None else round(growth, 4), achieved_rate=round(rate, 3),
               window_s=seconds)
    return out


def step_summary(value, path: str, result: dict, index: int = 0) -> dict:
    """One row of ``sweep.json`` for the step run ``result`` (saved at ``path``)."""
    lat = result["latency"]["response"]
    t = result["totals"]
    rates = achieved(result)
    keeps_up = True
    if rates["offered_rate"]:
        reference = rates["arrived_rate"] or rates["offered_rate"]  # realised arrivals: Poisson counts vary
        keeps_up = rates["achieved_rate"] >= reference * (1 - ACHIEVED_TOLERANCE)
    ths = [{"metric": th["metric"], "limit": th["limit"], "shown": th.get("shown", th["observed"]),
            "passed": th["passed"]} for th in result.get("thresholds", [])]
    return {
        "index": index, "value": value, "run_id": result.get("run_id"), "result": path,
        "verdict": result["verdict"], **rates,
        "msgs_per_s": t["msgs_per_s"], "ok": t["ok"], "failed": t["failed"], "error_rate": t["error_rate"],
        "p50": lat["p50"], "p99": lat["p99"], "p99.9": lat["p99.9"],
        "service_p99": result["latency"]["service"]["p99"], "thresholds": ths,
        "reasons": list(result.get("health", {}).get("reasons", [])),
        "keeps_up": keeps_up, "interrupted": result.get("interrupted"),
        # A step a signal cut short (load.stopping) measured a fragment of its load: it cannot pass.
        "passed": result["verdict"] == "ok" and keeps_up and not result.get("interrupted"),
    }


def sustainable(rows: list[dict]) -> dict | None:
    """The sustainable step (see the module docstring), or None when no step passed."""
    passing = [r for r in rows if r["passed"]]
    if not passing:
        return None
    return max(passing, key=lambda r: (r["offered_rate"] or 0.0, r["achieved_rate"], r["index"]))


def summarise(scenario: Scenario, steps: list[tuple], root: str | None = None, sweep_id: str | None = None) -> dict:
    """sweep.json: every step's headline figures and the sustainable point.

    ``steps`` holds ``(value, result_path, result)`` per step; paths are stored relative to ``root``.
    """
    rows = []
    for i, (value, path, result) in enumerate(steps):
        rel = os.path.relpath(path, root) if root else path
        rows.append(step_summary(value, rel, result, i + 1))
    best = sustainable(rows)
    rate = None
    if best is not None:
        rate = best["offered_rate"] if best["offered_rate"] else best["achieved_rate"]
    models = {r["load"]["model"] for _, _, r in steps}
    return {"schema": SCHEMA, "sweep_id": sweep_id or (os.path.basename(os.path.normpath(root)) if root else None),
            "name": scenario.name, "parameter": scenario.sweep.parameter, "values": list(scenario.sweep.values),
            "model": models.pop() if len(models) == 1 else scenario.load.model,
            "thresholds": scenario.thresholds, "tolerance": ACHIEVED_TOLERANCE, "rule": RULE,
            "steps": rows, "sustainable": dict(best) if best else None, "sustainable_rate": rate}


def save(summary: dict, root: str) -> str:
    """Write ``root/sweep.json``; return its path."""
    from .results import save as write

    return write(summary, root, FILE)


def is_sweep(path: str) -> bool:
    """Whether ``path`` is a sweep folder (holding sweep.json) or a sweep.json file."""
    return os.path.isfile(os.path.join(path, FILE)) if os.path.isdir(path) else os.path.basename(path) == FILE


def load_sweep(path: str) -> tuple[dict, str]:
    """Read a sweep folder (or its sweep.json): ``(summary, folder)``; ValueError when it is not one."""
    folder = path if os.path.isdir(path) else os.path.dirname(path) or "."
    file = os.path.join(folder, FILE)
    try:
        with open(file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: no {FILE} here") from None
    except (OSError, ValueError) as e:
        raise ValueError(f"{file}: cannot read a sweep: {e}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ValueError(f"{file}: not a smtpbench sweep (schema {data.get('schema') if isinstance(data, dict) else None!r}, "
                         f"expected {SCHEMA!r})")
    missing = _malformed(data)
    if missing:
        raise ValueError(f"{file}: not a complete smtpbench sweep: missing or malformed {', '.join(missing)}")
    data.setdefault("sweep_id", os.path.basename(os.path.abspath(folder)))
    return data, folder


#: What a sweep report indexes directly in each step row and in ``sustainable``.
STEP_KEYS = ("index", "value", "result", "verdict", "offered_rate", "achieved_rate", "keeps_up", "error_rate",
             "p50", "p99", "p99.9")
SUSTAINABLE_KEYS = ("index", "value", "offered_rate", "achieved_rate")
_NUM, _OPT = (int, float), (int, float, type(None))
#: The types of the figures the report formats (a string or a null among them was a TypeError half-way
#: through the sweep's report); keys marked optional may be left out.
STEP_TYPES = {"index": int, "verdict": str, "offered_rate": _OPT, "achieved_rate": _NUM, "error_rate": _NUM,
              "p50": _OPT, "p99": _OPT, "p99.9": _OPT}
STEP_OPTIONAL = {"latency_growth": _OPT, "thresholds": (list, type(None)), "reasons": (list, type(None))}


def _malformed(data: dict) -> list[str]:
    """Keys of a sweep.json edited by hand that a report would trip over (a traceback, not one line)."""
    bad = [k for k in ("name", "parameter") if not isinstance(data.get(k), str)]
    if "sweep_id" in data and not isinstance(data["sweep_id"], str):
        bad.append("sweep_id")
    for key, kind in (("tolerance", _NUM), ("rule", str), ("values", list), ("thresholds", dict)):
        if key in data and not isinstance(data[key], kind):
            bad.append(key)
    bad += [f"thresholds.{k}" for k, v in (data.get("thresholds") if isinstance(data.get("thresholds"), dict) else {}).items()
            if k.startswith("response.") and not _duration_ok(v)]  # the latency plot draws these limits
    steps = data.get("steps")
    if not isinstance(steps, list) or not steps or not all(isinstance(r, dict) and all(k in r for k in STEP_KEYS)
                                                           for r in steps):
        bad.append("steps")
    else:
        bad += [f"steps.{i}" for i, r in enumerate(steps) if not _step_ok(r)]
    best = data.get("sustainable")
    if best is not None and not (isinstance(best, dict) and all(k in best for k in SUSTAINABLE_KEYS)
                                 and isinstance(best["index"], int) and isinstance(best["offered_rate"], _OPT)
                                 and isinstance(best["achieved_rate"], _NUM)):
        bad.append("sustainable")
    return bad


def _step_ok(row: dict) -> bool:
    """A step row's figures are of the types :data:`STEP_TYPES` and :data:`STEP_OPTIONAL` say."""
    if not all(isinstance(row[k], kind) for k, kind in STEP_TYPES.items()):
        return False
    if not all(isinstance(row.get(k), kind) for k, kind in STEP_OPTIONAL.items()):
        return False
    ths = row.get("thresholds") or []
    return (all(isinstance(t, dict) and all(k in t for k in ("metric", "limit", "shown", "passed")) for t in ths)
            and all(isinstance(r, str) for r in row.get("reasons") or []))


def _duration_ok(value) -> bool:
    from .units import parse_duration

    try:
        parse_duration(value)
    except (ValueError, TypeError):
        return False
    return True


def step_path(folder: str, row: dict) -> str:
    """Where a step's result.json is: relative to the sweep folder (or as written by older files)."""
    path = row["result"]
    inside = os.path.join(folder, path)
    return inside if not os.path.isabs(path) and os.path.exists(inside) else path
