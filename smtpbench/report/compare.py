"""Comparing runs: headline metrics side by side, a verdict with its confidence interval, fairness warnings.

For each headline metric the whole-run figures are shown with their ratio (contender / baseline).
The verdict comes from the per-interval samples (1 s intervals after the warm-up: msgs/s, and
each interval's own response/service percentiles from its histogram): Welch's t-test on the
difference of means (see ``stats.py`` for why Welch and why no scipy).

Throughput and latencies are compared on a log scale: the test is on the difference of mean
logarithms, so its interval is one for the ratio of geometric means (shown as a % change). Speed
differences and machine noise are multiplicative (a busy neighbour costs a share, not a fixed
number of msgs/s), and on a log scale a baseline swinging between 1,500 and 6,000 msgs/s per
interval is still told apart from a contender steady at 90 msgs/s, which a linear-scale test with
five intervals cannot do. The error rate (often exactly 0) and any metric with a 0 among its samples
stay on the linear scale, in units of the baseline's mean. A difference is called
"faster"/"slower" (or "better"/"worse" for the error rate) only when its confidence interval
excludes zero *and* it is at least :data:`NEGLIGIBLE` of the baseline: intervals of one run
understate run-to-run noise, so a 1 % "significant" difference is not one a benchmark should claim.

The confidence is 99 %, not 95 %: six metrics are judged at once, and at 95 % each, two runs of the
same configuration would show a spurious verdict on some row about a quarter of the time; at 99 %
(Bonferroni for six, rounded) about one comparison in twenty does.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from ..results import planned_s
from . import data
from .stats import Difference, welch
from .tables import Table, describe_load, describe_message

NEGLIGIBLE = 0.02
CONFIDENCE = 0.99
#: Scenario keys that do not change what is measured (where to send, what to call it, what to pass).
IGNORED_KEYS = ("name", "description", "target.", "thresholds.", "sink.listen", "sink.stats_")
ENVIRONMENT_KEYS = ("cpu_count", "loop", "processes", "machine", "platform", "hostname", "python", "smtpbench",
                    "uvloop", "numpy")


@dataclass(frozen=True)
class Metric:
    """A headline metric: how to read it whole-run and per interval, and which direction is good."""

    key: str                  # data.interval_values key
    label: str
    unit: str                 # "msgs/s", "ms" or "%"
    higher_is_better: bool
    words: tuple[str, str] = ("faster", "slower")
    log: bool = True          # compare on a log scale (ratios); see the module docstring

    @property
    def scale(self) -> float:
        """From result units (msgs/s, fraction, µs) to display units (msgs/s, %, ms)."""
        return {"%": 100.0, "ms": 0.001}.get(self.unit, 1.0)

    def overall(self, result: dict) -> float | None:
        """The whole-run value (warm-up excluded) in display units; None when the run has none.

        A latency of a run that accepted no message (its histogram empty, its summary all zeros), and
        the throughput and error rate of a run that finished no message after its warm-up, are unknown,
        not 0 (a throughput of 0 is a run whose messages all failed).
        """
        totals = result["totals"]
        measured = totals.get("ok", 0) + totals.get("failed", 0)  # 0: every message in the warm-up, or none sent
        if self.key in ("msgs_per_s", "error_rate"):
            return totals[self.key] * self.scale if measured else None
        name, pct = self.key.split(".", 1)
        summary = result["latency"][name]
        return summary[pct] * self.scale if summary.get("count") else None

    def samples(self, result: dict):
        """Per-interval values in display units."""
        return data.interval_values(result, self.key) * self.scale

    @property
    def abs_unit(self) -> str:
        """The unit of a difference: ``pp`` (percentage points) for a rate in %."""
        return "pp" if self.unit == "%" else self.unit

    def fmt(self, value: float | None) -> str:
        if value is None:
            return "–"
        return {"msgs/s": f"{value:,.1f}", "ms": f"{value:,.3f}", "%": f"{value:.3f}%"}[self.unit]


METRICS = (
    Metric("msgs_per_s", "throughput", "msgs/s", True),
    Metric("response.p50", "response p50", "ms", False),
    Metric("response.p99", "response p99", "ms", False),
    Metric("response.p99.9", "response p99.9", "ms", False),
    Metric("service.p99", "service p99", "ms", False),
    Metric("error_rate", "error rate", "%", False, ("better", "worse"), log=False),
)


@dataclass
class Cell:
    """One contender's figures for one metric; ``log``: ``diff`` is of log values (a ratio)."""

    value: float | None
    ratio: float | None
    diff: Difference | None
    verdict: str
    log: bool = False

    def change(self) -> tuple[float, float, float] | None:
        """Relative change of the contender, with its confidence interval: -0.2 is 20 % lower."""
        if self.diff is None:
            return None
        if self.log:
            return tuple(math.expm1(v) for v in (self.diff.diff, self.diff.low, self.diff.high))
        rel = self.diff.relative()
        # Every headline metric is >= 0, so it can fall by 100 % at most: the normal approximation's
        # interval read "-100.0% [-163.1%, -36.9%]" for a contender whose every message failed.
        return None if rel is None else (rel[0], max(rel[1], -1.0), rel[2])


@dataclass
class Row:
    """One headline metric: the baseline's whole-run value and a cell per contender."""
    metric: Metric
    baseline: float | None
    cells: list[Cell]


@dataclass
class Comparison:
    """Everything a comparison shows: labels (baseline first), rows per metric, warnings."""

    labels: list[str]
    run_ids: list[str]
    rows: list[Row]
    warnings: list[str] = field(default_factory=list)


def decide(metric: Metric, cell: Cell) -> str:
    """faster/slower (better/worse), 'no significant difference', or 'not enough data'."""
    diff = cell.diff
    if diff is None:
        return "not enough data"
    if not diff.significant:
        return "no significant difference"
    change = cell.change()
    if change is not None and abs(change[0]) < NEGLIGIBLE:
        return "no significant difference"
    improved = (diff.diff > 0) == metric.higher_is_better
    return metric.words[0] if improved else metric.words[1]


def judge(metric: Metric, baseline: dict, contender: dict) -> Cell:
    """The contender's cell: whole-run value and ratio, Welch on per-interval samples, verdict."""
    a, b = metric.samples(baseline), metric.samples(contender)
    log = metric.log and a.size > 0 and b.size > 0 and bool((a > 0).all() and (b > 0).all())
    diff = welch(np.log(a), np.log(b), CONFIDENCE) if log else welch(a, b, CONFIDENCE)
    base, value = metric.overall(baseline), metric.overall(contender)
    cell = Cell(value, value / base if base and value is not None else None, diff, "", log)
    cell.verdict = decide(metric, cell)
    return cell


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: value}


#: Scenario keys a load model leaves unused (README: one file can serve both models).
UNUSED_BY = {"open": ("load.sessions", "load.think_time", "load.pipeline_messages"),
             "closed": ("load.rate", "load.arrival", "load.stages", "load.max_connections")}


def scenario_differences(a: dict, b: dict) -> dict[str, tuple]:
    """``{dotted key: (baseline value, contender value)}`` for scenario keys that change the measurement
    (a key both runs' load model leaves unused changes nothing: two open loops' ``sessions``)."""
    fa, fb = _flatten(a.get("scenario", {})), _flatten(b.get("scenario", {}))
    model = a["load"].get("model")
    unused = UNUSED_BY.get(model, ()) if model == b["load"].get("model") else ()
    return {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb))
            if fa.get(k) != fb.get(k) and not k.startswith(IGNORED_KEYS) and not k.startswith(unused)}


def _changes(diffs: dict[str, tuple]) -> str:
    return "; ".join(f"{k} {a!r} → {b!r}" for k, (a, b) in diffs.items())


def origin(result: dict) -> tuple[str, str]:
    """How a run was made, from its result.json: ``(kind, words)``; two runs of different kinds measured
    different set-ups, not only different servers.

    ``locust``: Locust's driver (``kind`` "locust", a ``locust`` section); ``relay``: ``bench --relay``
    (a ``relay`` section); ``embedded``: ``bench`` against its own sink, on the generator's machine and
    CPUs (a ``sink`` section); ``external``: ``run`` (or ``bench --target``) against another server.
    """
    target = result.get("target") or "?"
    if result.get("kind") == "locust" or "locust" in result:
        return "locust", f"a Locust run (smtpbench locust, against {target})"
    if "relay" in result:
        return "relay", f"a relay benchmark (bench --relay through {target})"
    if "sink" in result:
        return "embedded", f"smtpbench bench against its embedded sink ({target}, on the generator's machine)"
    return "external", f"smtpbench {result.get('kind') or 'run'} against {target}"


#: Why runs made in two different ways do not compare like for like.
ORIGIN_WHY = {"locust": "Locust's driver sends and paces messages its own way, not as smtpbench run does",
              "embedded": "bench's embedded sink is another server, sharing the generator's machine and CPUs"}


def _origins(baseline: dict, contender: dict, label: str) -> list[str]:
    (kb, wb), (kc, wc) = origin(baseline), origin(contender)
    if kb == kc:
        return []
    why = next((ORIGIN_WHY[k] for k in ORIGIN_WHY if k in (kb, kc)), "they measure different set-ups")
    return [f"{label}: runs made differently: baseline is {wb}, {label} is {wc} ({why})"]


def fairness_warnings(baseline: dict, contender: dict, label: str) -> list[str]:
    """Why comparing ``contender`` with ``baseline`` may be unfair (empty when like for like)."""
    out = []
    if contender.get("run_id") == baseline.get("run_id"):  # the same folder twice: "no difference" proves nothing
        out.append(f"{label} is the baseline's own run ({baseline.get('run_id')}): it is compared with itself")
    out += _origins(baseline, contender, label)
    diffs = scenario_differences(baseline, contender)
    groups = {"message": "messages differ (msgs/s and per-message latency are not like for like; see MB/s)",
              "load": "load settings differ", "sink": "sink settings differ"}
    for prefix, what in groups.items():
        part = {k: v for k, v in diffs.items() if k.startswith(prefix + ".")}
        if part:
            out.append(f"{label}: {what}: {_changes(part)}")
    rest = {k: v for k, v in diffs.items() if k.split(".")[0] not in groups}
    if rest:
        out.append(f"{label}: scenario differs: {_changes(rest)}")
    if not diffs and baseline.get("scenario_hash") != contender.get("scenario_hash"):
        out.append(f"{label}: scenario hash differs ({baseline.get('scenario_hash')} vs {contender.get('scenario_hash')})")
    lb, lc = baseline["load"], contender["load"]
    if lb["model"] != lc["model"]:
        out.append(f"{label}: load models differ ({describe_load(baseline)} vs {describe_load(contender)}): a closed "
                   "loop slows down with the server, an open loop does not")
    eb, ec = baseline.get("environment", {}), contender.get("environment", {})
    env = {k: (eb.get(k), ec.get(k)) for k in ENVIRONMENT_KEYS if eb.get(k) != ec.get(k)}
    if env:
        out.append(f"{label}: environment differs: {_changes(env)}")
    for who, r in (("baseline", baseline), (label, contender)):
        if r.get("verdict") == "invalid":
            out.append(f"{who} is an INVALID run: " + "; ".join(r["health"].get("reasons", [])))
        t = r["totals"]
        warm = (t.get("warmup_ok") or 0) + (t.get("warmup_failed") or 0)
        if not t.get("ok") and not t.get("failed") and warm:
            # (not "accepted no message (0 failed) ... measures failures": it may have accepted them all)
            out.append(f"{who} measured no message: all {warm:,} fell in its warm-up "
                       f"({r['load'].get('warmup_s') or 0:g} s), so it has no figures to compare")
        elif not t.get("ok"):
            out.append(f"{who} accepted no message ({t.get('failed', 0):,} failed): it has no latency to compare, "
                       "and its throughput of 0 measures failures, not the server's speed")
        stopped = r.get("interrupted")
        if isinstance(stopped, dict):
            planned = planned_s(r)
            out.append(f"{who} was stopped by {stopped.get('signal', 'a signal')} at {stopped.get('at_s', 0):.1f} s"
                       f"{f' of {planned:g} s' if planned else ''}: its figures cover that part of its load only")
    return out


def _labels(results: list[dict]) -> list[str]:
    return ["baseline"] + [f"contender {i}" if len(results) > 2 else "contender" for i in range(1, len(results))]


def compare(baseline: dict, contenders: list[dict]) -> Comparison:
    """Compare each contender with the baseline on every headline metric."""
    results = [baseline, *contenders]
    labels = _labels(results)
    rows = [Row(metric, metric.overall(baseline), [judge(metric, baseline, c) for c in contenders])
            for metric in METRICS]
    warnings = [w for c, label in zip(contenders, labels[1:]) for w in fairness_warnings(baseline, c, label)]
    for r, label in zip(results, labels):
        n = int(data.measured(r).sum())
        if n < 3:
            warnings.append(f"{label} has {n} measured 1 s interval(s): too few for a confident verdict "
                            "(run longer, or shorten the warm-up)")
    return Comparison(labels, [r["run_id"] for r in results], rows, list(dict.fromkeys(warnings)))


def fmt_ratio(ratio: float | None) -> str:
    """``0.450×``: contender / baseline, whole-run figures."""
    return "–" if ratio is None else f"{ratio:.3f}×"


def fmt_ci(cell: Cell, unit: str = "") -> str:
    """``-12.3% [-15.0%, -9.6%]``: the change and its interval; when the baseline is 0, the difference
    itself in ``unit`` (``+40.95 [+26.59, +55.32] pp``: percentage points, not a 40.95 % change)."""
    diff = cell.diff
    if diff is None:
        return "–"
    change = cell.change()
    if change is None:
        return f"{diff.diff:+.4g} [{diff.low:+.4g}, {diff.high:+.4g}]" + (f" {unit}" if unit else "")
    return f"{change[0]:+.1%} [{change[1]:+.1%}, {change[2]:+.1%}]"


def runs_rows(results: list[dict], labels: list[str]) -> list[list[str]]:
    """label, run id, load, messages, verdict — one row per run (shown above the comparison)."""
    return [[label, r["run_id"], describe_load(r), describe_message(r), r["verdict"]] for label, r in zip(labels, results)]


def comparison_tables(results: list[dict], comparison: Comparison) -> dict[str, Table]:
    """The runs compared, and one table per contender of metric, values, ratio, CI and verdict."""
    out = {"runs": Table("Runs", ["", "run", "load", "messages", "verdict"], runs_rows(results, comparison.labels),
                         classes=["fail" if r["verdict"] != "ok" else "" for r in results], align="lllll")}
    for i, label in enumerate(comparison.labels[1:]):
        rows, classes = [], []
        for row in comparison.rows:
            cell = row.cells[i]
            d = cell.diff
            p = "–" if d is None else ("< 0.001" if d.p < 0.001 else f"{d.p:.3f}")
            n = "–" if d is None else f"{d.n_a} / {d.n_b}"
            rows.append([f"{row.metric.label} ({row.metric.unit})", row.metric.fmt(row.baseline),
                         row.metric.fmt(cell.value), fmt_ratio(cell.ratio), fmt_ci(cell, row.metric.abs_unit), p, n, cell.verdict])
            classes.append({"faster": "pass", "better": "pass", "slower": "fail", "worse": "fail"}.get(cell.verdict, ""))
        key = "comparison" if len(comparison.labels) == 2 else f"comparison-{i + 1}"
        out[key] = Table(f"{label.capitalize()} vs baseline", ["metric", "baseline", label, "ratio",
                                                                f"difference [{CONFIDENCE:.0%} CI]", "p", "intervals",
                                                                "verdict"],
                         rows, classes=classes, align="lrrrrrrl",
                         note=f"ratio: whole-run figures, {label} / baseline. Difference: change of the per-1 "
                              "s-interval geometric mean (arithmetic for the error rate), warm-up and partial "
                              f"intervals left out, with the {CONFIDENCE:.0%} confidence interval of Welch's t-test "
                              f"on log values. Differences under {NEGLIGIBLE:.0%} count as none; intervals of one run "
                              "understate run-to-run noise, so repeat runs before trusting a small difference.")
    return out


def summary_text(results: list[dict], comparison: Comparison, path: str | None = None) -> str:
    """The one-screen text summary `smtpbench compare` prints."""
    lines = [f"{label:<12} {row[1]}  ({row[2]}; {row[3]}; verdict {row[4]})"
             for label, row in zip(comparison.labels, runs_rows(results, comparison.labels))]
    for i, label in enumerate(comparison.labels[1:]):
        lines += ["", f"  {label} vs baseline      {'baseline':>11} {label:>12} {'ratio':>8}   "
                      f"{f'difference [{CONFIDENCE:.0%} CI]':<32} verdict"]
        for row in comparison.rows:
            cell = row.cells[i]
            name = f"{row.metric.label} ({row.metric.unit})"
            lines.append(f"  {name:<24} {row.metric.fmt(row.baseline):>11} {row.metric.fmt(cell.value):>12} "
                         f"{fmt_ratio(cell.ratio):>8}   {fmt_ci(cell, row.metric.abs_unit):<32} {cell.verdict}")
    if comparison.warnings:
        lines.append("")
        lines += [f"  WARNING: {w}" for w in comparison.warnings]
    lines.append(f"\n  ratio: the whole-run figures. difference and verdict: Welch's t-test on the per-1 s "
                 f"intervals' values (log scale but for the error rate), {CONFIDENCE:.0%} confidence; differences "
                 f"under {NEGLIGIBLE:.0%} count as none.\n  The two can disagree, most for tail percentiles: one slow "
                 "interval sets a whole run's p99.9, while the typical interval may be faster.")
    if path:
        lines.append(f"  report: {path}")
    return "\n".join(lines)


def to_json(comparison: Comparison) -> str:
    """The comparison as JSON (beside the HTML, for scripts)."""
    rows = []
    for row in comparison.rows:
        cells = []
        for label, cell in zip(comparison.labels[1:], row.cells):
            d = cell.diff
            cells.append({"label": label, "value": cell.value, "ratio": cell.ratio, "verdict": cell.verdict,
                          "scale": "log" if cell.log else "linear", "change": cell.change(),
                          "difference": None if d is None else {
                              "mean_baseline": d.mean_a, "mean_contender": d.mean_b, "diff": d.diff, "low": d.low,
                              "high": d.high, "confidence": d.confidence, "t": d.t if abs(d.t) != float("inf") else None,
                              "df": d.df, "p": d.p, "n_baseline": d.n_a, "n_contender": d.n_b}})
        rows.append({"metric": row.metric.key, "label": row.metric.label, "unit": row.metric.unit,
                     "baseline": row.baseline, "contenders": cells})
    return json.dumps({"labels": comparison.labels, "run_ids": comparison.run_ids, "metrics": rows,
                       "warnings": comparison.warnings}, indent=1)
