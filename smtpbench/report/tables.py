"""The rows of every table of a run report, as text (``html.py`` lays them out; tests read them).

Latencies are shown in ms with three decimals (µs resolution) so columns line up and sort by eye;
a missing figure is an en dash, never a made-up zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..results import planned_s
from ..thresholds import limit_text
from ..units import format_size
from . import data

PERCENTILES = ("p50", "p90", "p99", "p99.9", "p99.99", "max")
DASH = "–"


@dataclass
class Table:
    """A titled table: ``columns`` and ``rows`` of strings, and an optional note under it."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""
    classes: list[str] = field(default_factory=list)  # per row: "", "fail" or "pass" (for colouring)
    align: str = ""  # per column "l" or "r"; default: label column left, figures right
    links: list[str] = field(default_factory=list)  # per row: where its first cell links to ("" for none)


def ms(us) -> str:
    """Microseconds as milliseconds with µs resolution: ``1663`` -> ``1.663``."""
    return DASH if us is None else f"{us / 1000:,.3f}"


def rate(value, unit: str = "msgs/s") -> str:
    """``1,234.5 msgs/s``, or a dash when unknown."""
    return DASH if value is None else f"{value:,.1f} {unit}"


def sessions(n) -> str:
    """``1 session``, ``4 sessions``."""
    return f"{n} session{'' if n == 1 else 's'}"


def describe_load(result: dict) -> str:
    """One line: the load model and its parameters."""
    load = result["load"]
    if load["model"] == "closed":
        text = f"closed loop, {sessions(load['sessions'])}"
    else:
        text = f"open loop, {load['rate']:g} msgs/s {load['arrival']} arrivals" if load.get("rate") else "open loop"
        if load.get("stages"):
            text += ", stages " + " → ".join(f"{s['rate']:g}/s for {s['duration']:g}s" + (" (ramp)" if s.get("ramp") else "")
                                             for s in load["stages"])
    mpc = load.get("messages_per_connection")
    text += f", {mpc} msgs/connection" if mpc else ", connections kept open"
    text += ", pipelining" if load.get("pipelining") else ", no pipelining"
    text += f", {load['processes']} process{'es' if load['processes'] != 1 else ''}"
    planned = planned_s(result)  # stages shorter than the duration end the load: "20 s" read for 8 s of stages
    if planned:
        text += f", {planned:g} s"
    if load.get("messages"):
        text += f", at most {load['messages']:,} messages"
    if load.get("warmup_s"):
        text += f" ({load['warmup_s']:g} s warm-up)"
    return text


def describe_message(result: dict) -> str:
    """One line: message size and recipients as the scenario gives them."""
    msg = result.get("scenario", {}).get("message", {})

    def form(value, size: bool) -> str:
        if isinstance(value, dict):
            kind, spec = next(((k, v) for k, v in value.items() if v is not None), ("?", None))
            return f"{kind} {spec}"
        return format_size(value) if size and isinstance(value, (int, float)) else str(value)

    if not msg:
        return DASH
    return f"{form(msg.get('size'), True)} messages, {form(msg.get('recipients'), False)} recipient(s), body {msg.get('body', '?')}"


def overview(result: dict) -> list[tuple[str, str]]:
    """The header's label/value pairs: what ran, where, how, on what."""
    env = result.get("environment", {})
    versions = ", ".join(f"{k} {env[k]}" for k in ("smtpbench", "python", "uvloop", "numpy") if env.get(k))
    return [
        ("run", f"{result['run_id']} ({result.get('kind', 'run')}, started {result.get('started_at', '?')})"),
        ("target", str(result.get("target", DASH))),
        ("scenario", f"{result['name']}  ·  hash {result.get('scenario_hash', DASH)}"),
        ("command", result.get("command", DASH)),
        ("load", describe_load(result)),
        ("messages", describe_message(result)),
        ("versions", versions or DASH),
        ("environment", f"{env.get('cpu_count', '?')} CPUs, {env.get('loop', '?')} loop, {env.get('processes', '?')} "
                        f"generator process(es), {env.get('machine', '?')}, {env.get('platform', '?')}, "
                        f"host {env.get('hostname', '?')}"),
    ]


def verdict_lines(result: dict) -> list[str]:
    """Why the verdict is what it is: invalidity reasons and failed thresholds, and whether a signal
    stopped the run early (empty when ok and not stopped)."""
    lines = list(result["health"].get("reasons", []))
    for th in result.get("thresholds", []):
        if not th["passed"]:
            lines.append(f"threshold {th['metric']} {limit_text(th['metric'], th['limit'], th.get('op'))} failed: "
                         f"observed {th.get('shown', th['observed'])}")
    relay = result.get("relay")
    if isinstance(relay, dict) and relay.get("passed") is False:
        lines.append(f"delivery check failed: {relay.get('lost', '?')} lost, {relay.get('duplicates', '?')} duplicated "
                     f"of {relay.get('accepted', '?')} accepted")
    stopped = result.get("interrupted")
    if isinstance(stopped, dict):  # (see load.stopping)
        planned = planned_s(result)
        lines.append(f"interrupted: {stopped.get('signal', 'a signal')} stopped the load at {stopped.get('at_s', 0):.1f} s"
                     f"{f' of {planned:g} s' if planned else ''}; the figures cover what ran")
    return lines  # a failed sink cross-check is among the health reasons already


def throughput(result: dict) -> Table:
    """Offered and achieved rates, completed msgs/s and MB/s, OK/failed, warm-up, measured window."""
    t, h = result["totals"], result["health"]
    model = result["load"]["model"]
    # Every rate here is after the warm-up (result.json's health rates include it: a ramp's differ).
    offered = rate(data.offered_rate(result)) if model == "open" else f"{DASH} (closed loop: {sessions(result['load']['sessions'])})"
    rows = [["offered rate", offered]]
    if model == "open":
        released = data.measured_rate(result, "offered")
        rows.append(["arrivals released", rate(h.get("achieved_rate") if released is None else released)])
    rows += [
        ["sent", rate(data.measured_rate(result, "sent"))],
        # msgs_per_s counts accepted messages only: "completed" beside "sent" read as if the failed ones
        # (40 % of a faults run) had never finished.
        ["accepted (OK)", f"{rate(t['msgs_per_s'])}  ·  {t['mb_per_s']:,.3f} MB/s"],
        ["OK / failed", f"{t['ok']:,} / {t['failed']:,}  (error rate {t['error_rate']:.3%})"],
        ["recipients refused", f"{t.get('rcpt_failed', 0):,}"],
        ["warm-up (not counted above)", f"{t.get('warmup_ok', 0):,} OK / {t.get('warmup_failed') or 0:,} failed"],
        ["measured", f"{t['measured_seconds']:,.3f} s  ·  {t.get('bytes', 0) / 1e6:,.2f} MB"],
    ]
    return Table("Throughput", ["", "value"], rows,
                 note="every rate after the warm-up. offered (open loop): the schedule's mean rate until the load "
                      "ended; arrivals released: messages the schedule released per second, a message waiting for a "
                      "connection counted when it arrived, and sent: messages begun per second, each the mean of the "
                      "measured 1 s intervals; accepted: messages the server took (250), failed ones left out, over "
                      "the measured window")


def latency(result: dict) -> Table:
    """Response, service and send-lag percentiles side by side (ms)."""
    lat = result["latency"]
    names = [n for n in ("response", "service", "send_lag") if n in lat]
    # An empty histogram's summary holds zeros: a run with no accepted message has no latency, not 0 ms.
    rows = [[p] + [ms(lat[n].get(p)) if lat[n].get("count") else DASH for n in names]
            for p in ("min", "mean", *PERCENTILES)]
    rows.append(["count"] + [f"{lat[n].get('count', 0):,}" for n in names])
    heads = {"response": "response (corrected)", "service": "service (uncorrected)", "send_lag": "send lag"}
    return Table("Latency (ms), warm-up excluded", ["percentile"] + [heads[n] for n in names], rows,
                 note="response: from the intended start (coordinated-omission corrected); service: from the actual "
                      "send; send lag: actual − intended start")


def phases(result: dict) -> Table:
    """Count and percentiles per SMTP phase (ms)."""
    rows = [[name, f"{s.get('count', 0):,}"] + [ms(s.get(p)) if s.get("count") else DASH for p in ("mean", *PERCENTILES)]
            for name, s in result["latency"]["phases"].items()]
    # With no row the pipelining note alone said nothing of why the table was empty (an all-refused run).
    note = ("phases answered in one pipelined batch (RFC 2920) are timed together and show 0 on their own" if rows else
            "no SMTP phase was timed after the warm-up: no reply came then (see the verdict and the Errors table)")
    return Table("Latency per phase (ms)", ["phase", "count", "mean", *PERCENTILES], rows, note=note)


def errors(result: dict) -> Table:
    """Failures by phase, reply code and kind, with first/last seen (s since start) and an example."""
    rows = [[e["phase"], str(e["code"] or DASH), e["kind"], f"{e['count']:,}", f"{e['first_s']:.3f}",
             f"{e['last_s']:.3f}", e.get("example", "")] for e in result.get("errors", [])]
    t = result["totals"]
    note = "" if rows else "no failed transactions"
    if rows and t.get("warmup_failed"):
        # result.json counts errors over the whole run: without this, the counts here add up to more
        # than the headline "failed" (warm-up excluded) and nothing says why.
        note = (f"counted over the whole run, warm-up included: {t['warmup_failed']:,} of the "
                f"{t['warmup_failed'] + t['failed']:,} failures came in the warm-up (the Throughput table's "
                f"failed, {t['failed']:,}, leaves them out)")
    events = sum(e["count"] for e in result.get("errors", [])) - t["failed"] - (t.get("warmup_failed") or 0)
    if rows and events > 0:
        # Entries that are no message's failure: a recipient refused while the message went to the
        # others, a connect refused while no message waited for it, a 421 or garbage in answer to
        # the RSET after a failed message (see load.plan.failed_at).
        note += (("; " if note else "") + f"{events:,} of the counts are events that failed no message (a "
                 "recipient refused while the message went on, a refused reconnect, a reply to the RSET after "
                 "a failed message), so the counts add up to more than the failures")
    return Table("Errors by phase and reply code", ["phase", "code", "kind", "count", "first seen (s)",
                                                    "last seen (s)", "example"], rows, note=note, align="lllrrrl")


def thresholds(result: dict) -> Table:
    """Each threshold with its limit, the observed value and pass/FAIL."""
    ths = result.get("thresholds", [])
    rows = [[th["metric"], limit_text(th["metric"], th["limit"], th.get("op")), str(th.get("shown", th["observed"])),
             "pass" if th["passed"] else "FAIL"]
            for th in ths]
    return Table("Thresholds", ["metric", "limit", "observed", "result"], rows, align="lrrl",
                 note="" if rows else "the scenario sets no thresholds",
                 classes=["pass" if th["passed"] else "fail" for th in ths])


def health(result: dict) -> Table:
    """Generator health: validity, CPU per process, loop/schedule/send lag, invalidity reasons."""
    h, lat = result["health"], result["latency"]
    cpu = ", ".join(f"#{i}: {c:.0%}" for i, c in enumerate(h.get("cpu_by_process", []))) or DASH
    rows = [["valid", "yes" if h["valid"] else "NO"],
            ["CPU per process (median share of a core)", cpu]]
    for key, label in (("loop_lag", "event-loop lag"), ("sched_lag", "schedule pick-up lag (open loop)"),
                       ("send_lag", "send lag")):
        s = lat.get(key) or {}
        if s.get("count"):
            rows.append([label, f"p50 {ms(s['p50'])} ms  ·  p99 {ms(s['p99'])} ms  ·  max {ms(s['max'])} ms"])
    rows += [[f"reason {i + 1}", r] for i, r in enumerate(h.get("reasons", []))]
    return Table("Generator health", ["", "value"], rows, classes=["" if h["valid"] else "fail"] + [""] * (len(rows) - 1))


def _value(v) -> str:
    if isinstance(v, bool) or v is None:
        return str(v)
    if isinstance(v, (int, float)):
        return f"{v:,}"
    if isinstance(v, dict) and "p50" in v:  # a latency summary (µs)
        return "  ·  ".join(f"{p} {ms(v[p])} ms" for p in ("p50", "p99", "max") if p in v)
    if isinstance(v, dict):
        return ", ".join(f"{k}: {_value(x)}" for k, x in v.items())
    return str(v)


def _counters(title: str, values: dict, note: str = "") -> Table:
    rows = [[str(k), _value(v)] for k, v in values.items()]
    return Table(title, ["counter", "value"], rows, note=note, align="lr")


def _sink_shown(sink: dict) -> dict:
    """The sink's final counters as shown: its clock as a UTC time, its elapsed time in seconds
    (as raw numbers they read 1,795,926,934.405 and 2.538)."""
    import datetime

    shown = dict(sink)
    if isinstance(shown.get("time"), (int, float)):
        shown["time"] = datetime.datetime.fromtimestamp(shown["time"], datetime.timezone.utc).strftime(
            "%Y-%m-%d %H:%M:%S UTC")
    if isinstance(shown.get("elapsed"), (int, float)):
        shown["elapsed"] = f"{shown['elapsed']:,.3f} s"
    return shown


def _relay_shown(relay: dict) -> dict:
    """The relay section as shown: its histograms (raw buckets, thousands of characters in a long run)
    and per-second series left to the plot, the backlog summed up in one row."""
    shown = {k: v for k, v in relay.items() if k not in ("histograms", "timeseries")}
    backlog = (relay.get("timeseries") or {}).get("backlog") or []
    if backlog:
        shown["backlog"] = f"max {max(backlog):,} · at the end of the series {backlog[-1]:,}"
    return shown


def tables(result: dict) -> dict[str, Table]:
    """Every table of a run report by name, in page order; ``sink``, ``crosscheck``, ``relay`` when the result has them."""
    out = {"throughput": throughput(result), "latency": latency(result), "phases": phases(result),
           "errors": errors(result), "thresholds": thresholds(result), "health": health(result)}
    if isinstance(result.get("sink"), dict):
        out["sink"] = _counters("Sink counters", _sink_shown(result["sink"]))
    if isinstance(result.get("crosscheck"), dict):
        cross = result["crosscheck"]
        out["crosscheck"] = _counters("Cross-check: client vs sink", cross,
                                      note="every message the client saw accepted must be counted by the sink")
        out["crosscheck"].classes = ["fail" if cross.get("passed") is False else ""] * len(cross)
    if isinstance(result.get("relay"), dict):
        out["relay"] = _counters("Relay: accepted vs delivered", _relay_shown(result["relay"]),
                                 note="messages the server under test accepted, as counted at the final destination; "
                                      "delivery latency: arrival − send, queue time: arrival − the 250 "
                                      "(the Relay plot: accepted and delivered per second, and the backlog)")
    return out
