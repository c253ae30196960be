"""Text shown to people: the live progress line and the end-of-run summary (rich, when on a terminal)."""

from __future__ import annotations

import sys

from .thresholds import limit_text
from .units import format_us

PCTS = ("p50", "p90", "p99", "p99.9", "max")


def summary_text(result: dict, path: str | None = None) -> str:
    """A plain-text summary of a result (what `run` and `bench` print)."""
    t = result["totals"]
    lat = result["latency"]
    lines = [
        f"{result['name']} ({result['load']['model']} loop) against {result['target']}: verdict {result['verdict'].upper()}",
        f"  messages  ok {t['ok']:,}  failed {t['failed']:,}  (warm-up ok {t['warmup_ok']:,})"
        f"  rcpt refused {t['rcpt_failed']:,}  error rate {t['error_rate']:.3%}",
        f"  throughput  {t['msgs_per_s']:,.1f} msgs/s  {t['mb_per_s']:,.2f} MB/s over {t['measured_seconds']:.1f} s",
        "",
        f"  {'latency':<14}" + "".join(f"{p:>10}" for p in PCTS),
    ]
    rows = [("response", lat["response"]), ("service", lat["service"]), ("send lag", lat["send_lag"])]
    rows += [(f"  {name}", s) for name, s in lat["phases"].items()]
    for label, s in rows:
        if s.get("count"):
            lines.append(f"  {label:<14}" + "".join(f"{format_us(s[p]):>10}" for p in PCTS))
    if result["errors"]:
        lines.append("")
        lines.append("  errors (phase, code, kind: count)")
        for e in result["errors"][:10]:
            lines.append(f"    {e['phase']:<12} {e['code'] or '-':>4} {e['kind']:<12} {e['count']:>8,}  {e['example'][:60]}")
    for th in result["thresholds"]:
        mark = "pass" if th["passed"] else "FAIL"
        lines.append(f"  threshold {th['metric']} {limit_text(th['metric'], th['limit'], th.get('op'))}: "
                     f"observed {th['shown']} [{mark}]")
    for reason in result["health"]["reasons"]:
        lines.append(f"  INVALID: {reason}")
    if result.get("interrupted"):
        from .results import planned_s

        i, planned = result["interrupted"], planned_s(result)
        of = f" of {planned:g} s" if planned else ""
        lines.append(f"  interrupted: {i['signal']} stopped the load at {i['at_s']:.1f} s{of}; the figures "
                     f"cover what ran (messages in flight were drained)")
    if result.get("scenario", {}).get("load", {}).get("pipeline_messages") and t["ok"] and not t.get("chained"):
        lines.append("  note: pipeline_messages chained nothing: the server offered CHUNKING (BDAT LAST already "
                     "sends a whole transaction at once; [load] bdat = \"never\" to chain DATA) or LMTP")
    if path:
        lines.append(f"  result: {path}")
    return "\n".join(lines)


def relay_text(relay: dict) -> str:
    """The relay section of a bench summary: accepted vs delivered, and how long delivery took."""
    lat, q = relay["delivery_latency"], relay["queue_time"]
    state = "ok" if relay["passed"] else "FAILED"
    lines = [
        f"  relay: accepted {relay['accepted']:,}  delivered {relay['delivered']:,}  lost {relay['lost']:,}"
        f"  duplicated {relay['duplicates']:,}  unexpected {relay['unexpected']:,}  [{state}]",
        f"    drained in {relay['drain_s']:.1f}s" + ("" if relay["drained"] else " (NOT drained: drain period ended)"),
    ]
    for label, s in (("delivery", lat), ("queued", q)):
        if s.get("count"):
            lines.append(f"    {label:<10}" + "".join(f"{format_us(s[p]):>10}" for p in PCTS))
    if relay["lost_examples"]:
        lines.append(f"    lost seq (first {len(relay['lost_examples'])}): {relay['lost_examples']}")
    return "\n".join(lines)


class Progress:
    """A live progress bar on a terminal (elapsed, sent, OK, failed, rate, p99); silent when piped."""

    def __init__(self, total_seconds: float | None, stream=sys.stderr):
        self.enabled = stream.isatty()
        self._last: dict | None = None
        if not self.enabled:
            return
        from rich.console import Console
        from rich.progress import BarColumn, Progress as Bar, TextColumn, TimeElapsedColumn

        self._bar = Bar(TextColumn("[bold]run"), BarColumn(), TimeElapsedColumn(), TextColumn("{task.fields[status]}"),
                        console=Console(file=stream), transient=False)
        self._task = self._bar.add_task("run", total=total_seconds, status="starting")
        self._bar.start()

    def update(self, p: dict) -> None:
        if not self.enabled:
            return
        rate = ""
        if self._last and p["elapsed"] > self._last["elapsed"]:
            rate = f"{(p['ok'] - self._last['ok']) / (p['elapsed'] - self._last['elapsed']):,.0f} msgs/s"
        self._last = p
        status = (f"sent {p['issued']:,}  ok {p['ok']:,}  failed {p['failed']:,}  {rate}  "
                  f"p99 {format_us(p['p99'])}")
        self._bar.update(self._task, completed=max(p["elapsed"], 0.0), status=status)

    def close(self) -> None:
        if self.enabled:
            self._bar.stop()
