"""The result file (``result.json``): a versioned record of one run, from which every report is built.

Schema ``smtpbench.result/1`` (all latencies in integer microseconds):

* ``run_id``, ``name``, ``kind`` (run | bench | locust), ``command``, ``started_at``, ``target``
* ``scenario`` (resolved, every default filled) and ``scenario_hash``
* ``environment``: versions, CPU count, event loop, processes, hostname, platform
* ``load``: model, sessions/rate, processes, duration, warm-up, offered rate
* ``totals``: issued, ok, failed, rcpt_failed, warmup_ok, warmup_failed, warmup_rcpt_failed, bytes,
  measured_seconds, msgs_per_s, mb_per_s, error_rate (warm-up excluded from all but the warmup_* keys;
  bytes and mb_per_s: accepted messages' octets as sent, dot-stuffed with DATA, as the sink counts them);
  chained: messages sent behind the previous one's data (``pipeline_messages``);
  load_end_us: when the load stopped offering messages (before ``duration`` when the message
  count or the stages ran out, or when a signal stopped it; the drain follows), what rates are
  taken over; interrupted_us (only when SIGINT or SIGTERM stopped the load early): when;
  cpu_us (``smtpbench run``): the generator's CPU time from the start of the load to the end of the drain, its processes
  summed (no interpreter start, imports or result file: ``cpu_us / issued`` is its cost per message);
  cpu_wall_us: the wall time it was counted over (summed likewise)
* ``latency``: ``response``, ``service``, ``send_lag``, ``sched_lag``, ``loop_lag`` and
  ``phases.<phase>`` each a summary ``{count, min, mean, p50, p90, p99, p99.9, p99.99, max}``
* ``histograms``: the same as sparse HDR-style buckets (``[[index, count], …]``, layout in
  ``histograms.layout``), so percentiles can be recomputed and runs merged losslessly
* ``timeseries``: one entry per 1 s interval: ``t`` and counts (offered, sent, ok, failed,
  rcpt_failed, errors by class), response/service percentiles, in-flight, connections,
  generator CPU and loop lag
* ``intervals``: per-interval response and service histograms (sparse)
* ``errors``: ``[{phase, code, kind, count, first_s, last_s, example}]``; ``phase`` is the reply the
  message waited for, ``kind`` one of reply (``code`` is the server's), refused, connect_error, tls,
  reset, closed, timeout, protocol (a line that is not an SMTP reply), unfinished (in flight when the
  drain ended), not_sent (waiting for a connection when the run ended)
* ``health``: ``valid``, ``reasons``, CPU per process, offered vs achieved rate; Locust runs add
  ``workers`` (per worker process: messages, CPU, Locust's CPU warnings, ``lost``: why the master
  stopped waiting for its reports, or null) and ``warnings``
* ``locust`` (Locust runs only): worker count, master host, reports merged
* ``thresholds``: ``[{metric, limit, observed, passed}]`` (``observed`` null: the metric had no samples,
  which fails); ``verdict``: ok | thresholds_failed | invalid
* ``interrupted`` (only when SIGINT or SIGTERM stopped the load before its end): ``{signal, at_s}``;
  the figures cover what ran, the command exits 128 + the signal's number

Read with jq, e.g. ``jq '.totals.msgs_per_s, .latency.response.p99' result.json``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import re
import socket
import sys
from statistics import median

from . import __version__
from .load.pacing import Profile
from .metrics import NBUCKETS, SUB_BITS, Histogram
from .protocol.client import PHASES
from .scenario import Scenario
from .thresholds import evaluate

SCHEMA = "smtpbench.result/1"
#: The keys every report reads, and their JSON types (:func:`load_result` checks them).
REQUIRED = {"run_id": str, "load": dict, "totals": dict, "latency": dict, "histograms": dict,
            "timeseries": dict, "health": dict, "verdict": str}

_NUM = (int, float)
_OPT_NUM = (int, float, type(None))
#: Inside those, what reports index directly (:func:`load_report_result` checks these too): a result edited by
#: hand, or cut down, fails with one line naming the key instead of a traceback half-way through a report.
NESTED = {
    "load": {"model": str, "warmup_s": _OPT_NUM, "duration_s": _OPT_NUM, "processes": int, "rate": _OPT_NUM,
             "messages": _OPT_NUM},
    "totals": {"ok": int, "failed": int, "msgs_per_s": _NUM, "mb_per_s": _NUM, "error_rate": _NUM,
               "measured_seconds": _NUM, "load_end_us": _OPT_NUM, "warmup_failed": (int, type(None))},
    "latency": {"response": dict, "service": dict, "phases": dict},
    "histograms": {"phases": dict},
    "timeseries": {"interval_s": _OPT_NUM, "t": list, "offered": list, "sent": list, "ok": list, "failed": list, "errors_4xx": list,
                   "errors_5xx": list, "errors_other": list, "in_flight": list, "connections": list, "cpu": list,
                   "loop_lag_us": list, "response": dict, "service": dict},
    "health": {"valid": bool, "reasons": list},
}
#: The :data:`NESTED` keys a result may leave out (written before they existed; readers fall back):
#: every other one must be there, even where its value may be null (a missing ``load.warmup_s``
#: passed as a null and crashed the report with a KeyError).
MAY_BE_ABSENT = {("totals", "load_end_us"), ("totals", "warmup_failed"), ("timeseries", "interval_s")}
#: The per-interval percentiles of ``timeseries.response`` / ``service`` the report's plots and
#: comparisons draw.
SERIES_PERCENTILES = {"response": ("p50", "p90", "p99", "p99.9", "max"), "service": ("p99",)}
#: What a run id may keep in the name of its default report folder (see :func:`folder_name`).
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Keys of each entry of these lists.
ENTRIES = {"errors": ("phase", "code", "kind", "count", "first_s", "last_s"),
           "thresholds": ("metric", "limit", "observed", "passed"), "intervals": ("t", "response", "service")}

#: Generator health limits: beyond these the generator, not the server, limited the run.
CPU_SATURATED = 0.95        # share of one core, median over measured intervals
LOOP_LAG_P99_US = 10_000    # event-loop oversleep
SCHED_LAG_P99_US = 10_000   # open loop: arrivals picked up late by the generator itself


def environment(processes: int, loop: str) -> dict:
    def version(mod: str) -> str | None:
        try:
            from importlib.metadata import version as v

            return v(mod)
        except Exception:
            return None

    return {
        "smtpbench": __version__, "python": sys.version.split()[0], "platform": platform.platform(),
        "machine": platform.machine(), "hostname": socket.gethostname(),
        "cpu_count": os.cpu_count(), "loop": loop, "processes": processes,
        "uvloop": version("uvloop"), "numpy": version("numpy"),
    }


def build_result(scenario: Scenario, merged: dict, *, run_id: str, kind: str, command: str,
                 target: str, started_at: float, processes: int, loop: str) -> dict:
    """Turn merged measurements into the result document (see the module docstring)."""
    load = scenario.load
    totals = dict(merged["totals"])
    hist: dict[str, Histogram] = merged["hist"]
    warmup_us = int(load.warmup * 1e6)
    ok, failed = totals.get("ok", 0), totals.get("failed", 0)
    last_end = totals.get("last_end", 0)
    # The completions of the measured messages span the window (first to last end, one
    # inter-arrival added back); "from the warm-up's end" would read low by one latency
    # when the server is slow (a 1 s server in a 4 s open-loop step: 0.75 of the rate).
    first_end = totals.get("first_end") or warmup_us
    if ok >= 2 and last_end > first_end:
        measured_s = (last_end - first_end) / 1e6 * ok / (ok - 1)
    else:
        measured_s = max((last_end - warmup_us) / 1e6, 1e-6) if ok else 0.0
    totals.update(
        ok=ok, failed=failed, issued=totals.get("issued", 0), rcpt_failed=totals.get("rcpt_failed", 0),
        warmup_ok=totals.get("warmup_ok", 0), warmup_failed=totals.get("warmup_failed", 0),
        warmup_rcpt_failed=totals.get("warmup_rcpt_failed", 0),
        bytes=totals.get("bytes", 0), measured_seconds=round(measured_s, 3),
        retries=totals.get("retries", 0), chained=totals.get("chained", 0), tls_full=totals.get("tls_full", 0), tls_resumed=totals.get("tls_resumed", 0),
        msgs_per_s=round(ok / measured_s, 2) if measured_s else 0.0,
        mb_per_s=round(totals.get("bytes", 0) / 1e6 / measured_s, 3) if measured_s else 0.0,
        error_rate=round(failed / (ok + failed), 6) if ok + failed else 0.0,
    )
    totals.pop("first_end", None)
    intervals = merged["interval_data"]
    series = _timeseries(intervals)
    # Stages: their mean, over the part that ran when the run was stopped early (load.stopping).
    ran = totals["interrupted_us"] / 1e6 if "interrupted_us" in totals else load.duration
    offered_rate = (round(Profile(load.rate, load.stages, load.duration).mean_rate(ran), 2)
                    if load.model == "open" else None)
    result = {
        "schema": SCHEMA,
        "run_id": run_id, "name": scenario.name, "kind": kind, "command": command,
        "started_at": _dt.datetime.fromtimestamp(started_at, _dt.timezone.utc).isoformat(timespec="seconds"),
        "target": target,
        "scenario": scenario.model_dump(mode="json"), "scenario_hash": scenario.digest(),
        "environment": environment(processes, loop),
        "load": {"model": load.model, "sessions": load.sessions if load.model == "closed" else None,
                 "rate": load.rate, "arrival": load.arrival, "stages": [s.model_dump() for s in load.stages],
                 "processes": processes, "duration_s": load.duration, "warmup_s": load.warmup,
                 "messages": load.messages, "pipelining": load.pipelining,
                 "messages_per_connection": load.messages_per_connection, "offered_rate": offered_rate},
        "totals": totals,
        "latency": {name: h.summary() for name, h in hist.items()}
        | {"phases": {name: h.summary() for name, h in sorted(merged["phase_hist"].items(), key=_phase_order)}},
        "histograms": {"layout": {"sub_bucket_bits": SUB_BITS, "buckets": NBUCKETS, "unit": "us"}}
        | {name: h.to_dict() for name, h in hist.items()}
        | {"phases": {name: h.to_dict() for name, h in merged["phase_hist"].items()}},
        "timeseries": series,
        "intervals": [{"t": t, "response": d["response"].to_dict(), "service": d["service"].to_dict()}
                      for t, d in sorted(intervals.items())],
        "errors": sorted(
            ({"phase": p, "code": c, "kind": k, "count": n, "first_s": round(first / 1e6, 3),
              "last_s": round(last / 1e6, 3), "example": text}
             for (p, c, k), (n, first, last, text) in merged["errors"].items()),
            key=lambda e: -e["count"]),
    }
    if scenario.relay.enabled and kind == "bench":
        result["_relay_accepted"] = merged["relay_accepted"]  # an array: bench --relay joins and removes it
    result["health"] = _health(result, merged, series)
    result["thresholds"] = evaluate(scenario.thresholds, result)
    result["verdict"] = verdict(result)
    return result


def _phase_order(item: tuple) -> int:
    """Phases in the order a session goes through them (connect, banner, ehlo, … quit)."""
    return PHASES.index(item[0]) if item[0] in PHASES else len(PHASES)


def verdict(result: dict) -> str:
    if "relay" in result and not result["relay"]["passed"]:
        # Messages the server accepted were lost or duplicated: a finding about the server
        # that stands whatever the generator's health.
        return "delivery_failed"
    if not result["health"]["valid"]:
        return "invalid"
    if any(not t["passed"] for t in result["thresholds"]):
        return "thresholds_failed"
    return "ok"


def _timeseries(intervals: dict) -> dict:
    keys = sorted(intervals)
    ts: dict = {"interval_s": 1, "t": keys}
    for name in ("offered", "sent", "ok", "failed", "rcpt_failed", "bytes"):
        ts[name] = [intervals[k]["counts"].get(name, 0) for k in keys]
    for cls in ("4xx", "5xx"):
        ts[f"errors_{cls}"] = [intervals[k]["errors"].get(cls, 0) for k in keys]
    ts["errors_other"] = [sum(v for c, v in intervals[k]["errors"].items() if c not in ("4xx", "5xx")) for k in keys]
    for lat in ("response", "service"):
        sums = [intervals[k][lat].summary() for k in keys]
        ts[lat] = {p: [s[p] for s in sums] for p in ("p50", "p90", "p99", "p99.9", "max")}
    for g in ("in_flight", "connections", "cpu", "loop_lag_us"):
        ts[g] = [intervals[k]["gauges"].get(g, 0) for k in keys]
    return ts


def planned_s(result: dict) -> float | None:
    """Seconds the load was meant to last: its duration, or its stages' length when shorter
    (None: bounded by a message count only)."""
    load = result["load"]
    planned = load.get("duration_s") or None
    stages = load.get("stages") or []
    if stages:
        length = sum(st["duration"] for st in stages)
        planned = min(planned, length) if planned else length
    return planned


def load_window(result: dict) -> tuple[float, float | None]:
    """Seconds from t0: the warm-up's end, and the end of the load (no new message after it;
    the drain follows). The load ends before ``duration`` when the message count or the stages
    run out; results written before ``totals.load_end_us`` existed fall back to ``duration``."""
    end_us = result["totals"].get("load_end_us")  # (0: stopped by a signal before the start)
    return result["load"]["warmup_s"] or 0, end_us / 1e6 if end_us is not None else result["load"]["duration_s"]


def _cpu_share(proc: dict, start: float, end: float | None) -> float:
    """A process's CPU share: the median over the whole intervals of the load after the warm-up;
    a run too short for one, its CPU over the time it was counted."""
    inside = [share for t, share in proc["cpu"] if t >= start and (end is None or t + 1 <= end)]
    if inside:
        return median(inside)
    totals = proc["totals"]  # (cpu_us counts from before t0: over duration_us a tiny run read 169 %)
    return totals.get("cpu_us", 0) / totals["cpu_wall_us"] if totals.get("cpu_wall_us") else 0.0


def _health(result: dict, merged: dict, series: dict) -> dict:
    reasons = []
    warm, load_end = load_window(result)
    cpu_by_proc = []
    for i, proc in enumerate(merged.get("processes", [])):
        share = _cpu_share(proc, warm, load_end)
        cpu_by_proc.append(round(share, 3))
        if share >= CPU_SATURATED:
            reasons.append(f"generator process {i} used {share:.0%} of a CPU core: the generator, not the "
                           f"server, may be the bottleneck (add --processes or lower the load)")
    lat = result["latency"]
    if lat["loop_lag"]["p99"] > LOOP_LAG_P99_US:
        reasons.append(f"generator event-loop lag p99 {lat['loop_lag']['p99'] / 1000:.1f} ms "
                       f"(limit {LOOP_LAG_P99_US / 1000:.0f} ms): timings are not trustworthy")
    offered = result["load"]["offered_rate"]
    achieved = None
    if result["load"]["model"] == "open":
        # With few arrivals p99 is the maximum: one late wake-up would condemn a short run.
        pct = "p99" if lat["sched_lag"]["count"] >= 1000 else "p90"
        if lat["sched_lag"][pct] > SCHED_LAG_P99_US:
            reasons.append(f"generator fell behind its schedule: pick-up lag {pct} "
                           f"{lat['sched_lag'][pct] / 1000:.1f} ms (limit {SCHED_LAG_P99_US / 1000:.0f} ms)")
        if load_end:
            achieved = round(result["totals"]["issued"] / load_end, 2)
    # Messages begun per second over the whole 1 s intervals of the load after the warm-up (the
    # run's first and last partial ones, and those of the drain, would dilute it).
    step = series["interval_s"]
    sent = [n for t, n in zip(series["t"], series["sent"]) if t >= warm and (not load_end or t + step <= load_end)]
    return {"valid": not reasons, "reasons": reasons, "cpu_by_process": cpu_by_proc,
            "offered_rate": offered, "achieved_rate": achieved,
            "send_rate": round(sum(sent) / len(sent) / step, 2) if sent else 0.0}


def prepare_folder(folder: str) -> None:
    """Create ``folder`` (and its parents) and check that a file can be written in it; OSError if not.

    Called before a run: a bad ``--out`` found by :func:`save` after the load would lose the run.
    """
    os.makedirs(folder, exist_ok=True)
    probe = os.path.join(folder, f".smtpbench-probe-{os.getpid()}")
    with open(probe, "w", encoding="utf-8"):
        pass
    os.unlink(probe)


def folder_error(folder: str, e: OSError) -> str:
    """Why ``folder`` cannot hold output, in words (the errno names alone puzzle: "File exists")."""
    if isinstance(e, FileExistsError) or (isinstance(e, NotADirectoryError) and os.path.isfile(folder)):
        why = "a file of that name is there"
    elif isinstance(e, NotADirectoryError):
        why = "a part of the path is a file, not a folder"
    else:
        why = e.strerror or str(e)
    return f"cannot write to folder {folder!r}: {why}; expected a folder that can be created or written to"


def save(result: dict, folder: str, name: str = "result.json") -> str:
    """Write ``folder/name`` (atomically: a reader never sees half a file); return its path.
    A second stop signal meanwhile leaves without it, and without its ``.tmp`` (load.stopping)."""
    from .load.stopping import STOP

    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with STOP.scratch(path + ".tmp"):
        write_atomic(path, _lines(result))
    return path


def write_atomic(path: str, text: str) -> None:
    """Write ``path`` through ``path.tmp`` renamed into place: a reader never sees half a file. A
    write that fails (a full disk, a Ctrl-C) removes the ``.tmp`` instead of leaving it beside
    the results."""
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _lines(result: dict) -> str:
    """The result as JSON, one line per top-level key and per entry of a top-level table.

    ``json.dump(indent=...)`` runs Python's own encoder, one call per value; without an indent
    the C encoder does the work. A result holds a histogram per phase and per second (an 8 s
    open-loop run at 13,700/s: 0.5 MB indented), and indented it took 65 ms against 7 ms
    (measured), a cost at the end of every run that grows with its length. Lines per entry keep
    the file readable in an editor and easy to diff; ``jq .`` pretty-prints it whole.
    """
    dumps = json.dumps
    rows = []
    for key, value in result.items():
        if isinstance(value, dict) and value:
            inner = ",\n".join(f"  {dumps(k)}: {dumps(v)}" for k, v in value.items())
            rows.append(f" {dumps(key)}: {{\n{inner}\n }}")
        else:
            rows.append(f" {dumps(key)}: {dumps(value)}")
    return "{\n" + ",\n".join(rows) + "\n}\n"


def load_result(path: str) -> dict:
    """Read a result file (or a run folder holding one); ValueError when it is not one."""
    if os.path.isdir(path):
        path = os.path.join(path, "result.json")
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError: neither names the file
            raise ValueError(f"{path}: not a smtpbench result (not valid JSON: {e})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a smtpbench result (a JSON {type(data).__name__}, expected an object)")
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not a smtpbench result (schema {data.get('schema')!r}, expected {SCHEMA!r})")
    # Reports index these directly: a file cut down by hand would fail half-way through one.
    missing = [key for key in REQUIRED if not isinstance(data.get(key), REQUIRED[key])]
    if missing:
        raise ValueError(f"{path}: not a complete smtpbench result: missing or malformed {', '.join(missing)}")
    return data


def folder_name(run_id: str) -> str:
    """``run_id`` as the name of a folder under ``reports/``: ids smtpbench makes (the scenario's
    name, a time stamp, a suffix) unchanged; any other text (Locust's ``--smtp-run-id``, an edited
    file) with every run of other characters a "-", so a path ("../../x") stays a name."""
    return _UNSAFE.sub("-", run_id).strip(".-") or "run"


def load_report_result(path: str) -> dict:
    """:func:`load_result`, and check what a report reads inside the tables too (:data:`NESTED`)."""
    data = load_result(path)
    missing = _malformed(data)
    if missing:
        if os.path.isdir(path):
            path = os.path.join(path, "result.json")
        raise ValueError(f"{path}: not a complete smtpbench result: missing or malformed {', '.join(missing)}")
    return data


def _malformed(data: dict) -> list[str]:
    """Dotted names of the :data:`NESTED` and :data:`ENTRIES` keys that are missing or of the wrong type,
    and of time series not as long as ``timeseries.t``."""
    bad = [f"{top}.{key}" for top, keys in NESTED.items() for key, kind in keys.items()
            if not isinstance(data[top].get(key), kind) or (key not in data[top] and (top, key) not in MAY_BE_ABSENT)]
    stopped = data.get("interrupted")  # (see load.stopping)
    if stopped is not None and not (isinstance(stopped, dict) and isinstance(stopped.get("at_s"), _NUM)
                                    and isinstance(stopped.get("signal"), str)):
        bad.append("interrupted")
    for top, keys in ENTRIES.items():
        entries = data.get(top, [])
        if not isinstance(entries, list) or not all(isinstance(e, dict) and all(k in e for k in keys) for e in entries):
            bad.append(top)
    if bad:
        return bad
    ts = data["timeseries"]
    n = len(ts["t"])
    series = {k: v for k, v in ts.items() if isinstance(v, list)}
    series |= {f"{name}.{p}": v for name in ("response", "service") for p, v in ts[name].items()}
    series |= {f"{name}.{p}": None for name, pcts in SERIES_PERCENTILES.items() for p in pcts if p not in ts[name]}
    # Counts are never null (an idle interval counts 0); a percentile may be, for want of samples.
    bad = [f"timeseries.{k}" for k, v in series.items()
           if not isinstance(v, list) or len(v) != n
           or not all(isinstance(x, _NUM) or (x is None and "." in k) for x in v)]
    if "interval_s" in ts and not (isinstance(ts["interval_s"], _NUM) and ts["interval_s"] > 0):
        bad.append("timeseries.interval_s")
    for name in ("response", "service"):
        summary = data["latency"][name]
        if summary.get("count") and not all(isinstance(summary.get(p), _NUM) for p in ("p50", "p99", "p99.9", "max")):
            bad.append(f"latency.{name}")
    # Every figure the tables format: a string or a null among them was a TypeError half-way through a report.
    summaries = {k: v for k, v in data["latency"].items() if k != "phases"}
    summaries |= {f"phases.{k}": v for k, v in data["latency"]["phases"].items()}
    bad += [f"latency.{k}" for k, v in summaries.items()
            if not isinstance(v, dict) or not all(isinstance(x, _NUM) for x in v.values())]
    bad += [f"totals.{k}" for k, v in data["totals"].items()
            if not isinstance(v, _NUM) and not (v is None and (k in ("load_end_us", "warmup_failed")))]
    cpu = data["health"].get("cpu_by_process", [])
    if not isinstance(cpu, list) or not all(isinstance(x, _NUM) for x in cpu):
        bad.append("health.cpu_by_process")
    stages = data["load"].get("stages") or []
    if not isinstance(stages, list) or not all(isinstance(st, dict) and isinstance(st.get("rate"), _NUM)
                                               and isinstance(st.get("duration"), _NUM) for st in stages):
        bad.append("load.stages")
    hists = data["histograms"]
    named = {k: v for k, v in hists.items() if k not in ("layout", "phases")}
    named |= {f"phases.{k}": v for k, v in hists["phases"].items()}
    bad += [f"histograms.{k}" for k, v in named.items() if not _histogram_ok(v)]
    bad += [f"intervals.{i}" for i, iv in enumerate(data.get("intervals", []))
            if not (_histogram_ok(iv["response"]) and _histogram_ok(iv["service"]))]
    bad += [f"errors.{i}" for i, e in enumerate(data.get("errors", []))
            if not all(isinstance(e[k], _NUM) for k in ("count", "first_s", "last_s"))]
    bad += [k for k in ("scenario", "environment") if k in data and not isinstance(data[k], dict)]
    if isinstance(data.get("scenario"), dict) and not isinstance(data["scenario"].get("message", {}), dict):
        bad.append("scenario.message")
    relay = data.get("relay")
    if isinstance(relay, dict) and "timeseries" in relay:  # a relay run's plot and backlog row read these
        rts = relay["timeseries"]
        columns = [rts.get(k) for k in ("t", "accepted", "delivered", "backlog")] if isinstance(rts, dict) else [None]
        if not all(isinstance(c, list) and len(c) == len(columns[0]) and all(isinstance(x, _NUM) for x in c)
                   for c in columns) or not isinstance(rts.get("interval_s", 1), _NUM) or rts.get("interval_s", 1) <= 0:
            bad.append("relay.timeseries")
    if isinstance(relay, dict):  # its latency summaries are shown in ms
        bad += [f"relay.{k}" for k in ("delivery_latency", "queue_time") if k in relay
                and not (isinstance(relay[k], dict) and all(isinstance(x, _NUM) for x in relay[k].values()))]
    return bad


def _histogram_ok(h) -> bool:
    """A histogram as :meth:`Histogram.to_dict` writes it: integer tallies, ``[bucket, count]`` pairs."""
    return (isinstance(h, dict) and all(isinstance(h.get(k), int) for k in ("total", "sum", "min", "max"))
            and isinstance(h.get("buckets"), list)
            and all(isinstance(b, list) and len(b) == 2 and isinstance(b[0], int) and isinstance(b[1], int)
                    and 0 <= b[0] < NBUCKETS for b in h["buckets"]))
