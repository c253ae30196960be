"""The data behind every plot, by name: what a report draws, what ``figures.json`` holds, what tests check.

A :class:`Figure` is plain data (labels, series of x/y lists, axis scales, a shaded span);
``plots.py`` turns it into matplotlib drawings. Latencies are in milliseconds, rates in msgs/s
per 1 s interval, and an interval with nothing to show is ``None`` (a gap, never a fake 0 ms).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from ..results import load_window
from . import data

LATENCY_PCTS = ("p50", "p90", "p99", "p99.9", "max")
TIME = "time since start (s)"


@dataclass
class Series:
    """One line, bar set or step outline: ``x`` and ``y`` (for ``stairs``, x holds the n+1 bin edges)."""

    x: list
    y: list
    dashed: bool = False
    secondary: bool = False  # drawn against the right-hand axis
    color: str | None = None
    marker: str | None = None  # a matplotlib marker for every point (lines: default "." up to 30 points)


@dataclass
class Figure:
    """A plot as data; ``kind`` is line, bars (grouped, x = categories), stacked (bars) or stairs."""

    name: str
    title: str
    xlabel: str
    ylabel: str
    series: dict[str, Series]
    kind: str = "line"
    xlog: bool = False
    ylog: bool = False
    shade: tuple[float, float] | None = None  # e.g. the warm-up, labelled ``shade_label``
    shade_label: str = ""
    y2label: str = ""
    xticks: dict[float, str] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["xticks"] = [[k, v] for k, v in self.xticks.items()]
        return out


def _list(values) -> list:
    """JSON-friendly list: numpy scalars to Python numbers, NaN to None."""
    out = []
    for v in np.asarray(values, dtype=float).tolist():
        out.append(None if v != v else (int(v) if float(v).is_integer() else round(v, 6)))
    return out


def _ms(values_us, present=None) -> list:
    ms = np.asarray(values_us, dtype=float) / 1000.0
    if present is not None:
        ms = np.where(np.asarray(present, dtype=bool), ms, np.nan)
    return _list(ms)


def _times(result: dict) -> list:
    """Interval midpoints in seconds since the start: a rate over [t, t+1) is drawn at t + 0.5."""
    ts = result["timeseries"]
    step = ts.get("interval_s", 1)
    return _list(np.asarray(ts["t"], dtype=float) + step / 2)


def _warmup(result: dict) -> tuple[float, float] | None:
    warm = result["load"].get("warmup_s") or 0
    return (0.0, float(warm)) if warm > 0 else None


def spectrum_ticks(max_x: float) -> dict[float, str]:
    """Tick positions on a 1/(1-p) axis labelled as percentiles: 2 -> '50%', 100 -> '99%'…"""
    ticks, x = {}, 1.0
    for label in ("", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"):
        if x > max(max_x, 1.0) * 1.0001:
            break
        if label:
            ticks[x] = label
        x *= 10
    ticks.setdefault(2.0, "50%")
    return dict(sorted(ticks.items()))


def spectrum_series(result: dict, name: str, **style) -> Series:
    """Latency (ms) against 1/(1-p) for a histogram, ending with the maximum at x = count.

    The p = 1 row has no finite x; left out, the line stopped at the last finite level (at most
    99.96 % of 2,406 messages) and the slowest messages never showed: 192 ms drawn, 295 ms in the
    table. The last message is the 1/count-th from the top, so the maximum is drawn at x = count.
    """
    h = data.histogram(result, name)
    s = data.spectrum(h)
    keep = s["percentile"] < 1.0
    x = list(1.0 / (1.0 - s["percentile"][keep]))
    y = list(s["value"][keep])
    if h.total and (not y or h.max > y[-1]):
        if x and x[-1] >= h.total:  # a level landed on x = count already: the maximum is its value
            x.pop()
            y.pop()
        x.append(float(h.total))
        y.append(h.max)
    return Series(_list(x), _ms(y), **style)


def throughput(result: dict) -> Figure:
    """Offered (open loop), sent, OK and failed messages per second, per interval."""
    ts = result["timeseries"]
    step = ts.get("interval_s", 1)
    t = _times(result)
    # Fixed colours: by position, a closed loop (no "offered") drew its failures in green, an open loop in red.
    colors = {"offered": "C7", "sent": "C0", "ok": "C2", "failed": "C3"}
    series = {key: Series(t, _list(np.asarray(ts[key], dtype=float) / step), color=colors[key], dashed=key == "offered")
              for key in colors}
    if result["load"]["model"] == "closed":
        series.pop("offered")  # a closed loop offers no rate: each session sends when the last reply came
    return Figure("throughput", "Throughput over time", TIME, "messages/s", series,
                  shade=_warmup(result), shade_label="warm-up", note=_partial_note(result))


def _partial_note(result: dict) -> str:
    """Names the interval the load ended inside: its count over a full second reads as a low rate.

    A run of 500 messages that took 0.07 s drew one point at 500 msgs/s while the table said 8,171.
    """
    _, end = load_window(result)
    step = result["timeseries"].get("interval_s", 1)
    if not end:
        return ""
    start = (end // step) * step
    ran = end - start
    if ran < 5e-4 or start not in result["timeseries"]["t"]:
        return ""
    return (f"the load ended {ran:.3f} s into the interval from {start:g} s: that interval's messages/s are its "
            f"counts over a whole {step:g} s and read low (the Throughput table's rates are over the load's own time)")


def latency_over_time(result: dict) -> Figure:
    """Response p50…max and service p99 per interval (ms, log scale), the warm-up shaded."""
    ts = result["timeseries"]
    present = np.asarray(ts["ok"]) > 0
    t = _times(result)
    series = {f"response {p}": Series(t, _ms(ts["response"][p], present)) for p in LATENCY_PCTS}
    series["service p99"] = Series(t, _ms(ts["service"]["p99"], present), dashed=True)
    return Figure("latency_over_time", "Latency percentiles per interval", TIME, "latency (ms)",
                  series, ylog=True, shade=_warmup(result), shade_label="warm-up")


def spectrum_figure(result: dict) -> Figure:
    """Response (corrected) and service (uncorrected) latency against 1/(1-p), log-log."""
    series = {"response (corrected)": spectrum_series(result, "response"),
              "service (uncorrected)": spectrum_series(result, "service", dashed=True)}
    top = max((max(s.x) for s in series.values() if s.x), default=1.0)
    return Figure("spectrum", "Latency by percentile (warm-up excluded)", "percentile", "latency (ms)", series,
                  xlog=True, ylog=True, xticks=spectrum_ticks(top),
                  note="response time counts from each message's intended start (coordinated-omission "
                       "corrected); service time from the actual send; each line ends at its maximum")


def phases(result: dict) -> Figure:
    """p50 and p99 per SMTP phase (bars); phases never timed on their own are named in the note."""
    rows = [(name, s) for name, s in result["latency"]["phases"].items() if s.get("count") and s.get("p99")]
    cats = [name for name, _ in rows]
    series = {p: Series(cats, _ms([s[p] for _, s in rows])) for p in ("p50", "p99")}
    timed = {name for name, _ in rows}
    untimed = [name for name, s in result["latency"]["phases"].items() if s.get("count") and name not in timed]
    note = f"not timed on their own (pipelined or no reply awaited): {', '.join(untimed)}" if untimed else ""
    return Figure("phases", "Latency per SMTP phase", "phase", "latency (ms)", series, kind="bars", ylog=True,
                  note=note)


def histogram_figure(result: dict) -> Figure:
    """Response and service latency counts on log bins (10 per decade)."""
    series = {}
    for name, dashed, color in (("response", False, "C0"), ("service", True, "C1")):
        edges, counts = data.log_bins(data.histogram(result, name))
        series[name] = Series(_list(edges / 1000.0), _list(counts), dashed=dashed, color=color)
    return Figure("histogram", "Latency distribution (log bins, warm-up excluded)", "latency (ms)", "messages",
                  series, kind="stairs", xlog=True)


def errors_over_time(result: dict) -> Figure:
    """Failed transactions per interval, stacked by reply class (4xx, 5xx, other)."""
    ts = result["timeseries"]
    t = _times(result)
    colors = {"4xx": "#e6a817", "5xx": "#c0392b", "other": "#7f8c8d"}
    series = {cls: Series(t, _list(ts[f"errors_{cls}"]), color=colors[cls]) for cls in ("4xx", "5xx", "other")}
    return Figure("errors", "Failed transactions per interval, by reply class", TIME,
                  "failures", series, kind="stacked", shade=_warmup(result), shade_label="warm-up",
                  note="other: timeouts, resets and unparseable replies")


def concurrency(result: dict) -> Figure:
    """Messages in flight and open connections per interval (the maximum seen)."""
    ts = result["timeseries"]
    t = _times(result)
    series = {"messages in flight": Series(t, _list(ts["in_flight"])), "connections": Series(t, _list(ts["connections"]))}
    return Figure("concurrency", "In-flight messages and open connections", TIME, "count",
                  series, shade=_warmup(result), shade_label="warm-up")


def health(result: dict) -> Figure:
    """Generator CPU (% of a core; with several processes, the busiest one's) and event-loop lag (ms, right
    axis) per interval."""
    ts = result["timeseries"]
    t = _times(result)
    procs = result["load"].get("processes") or 1
    # Processes' CPU merges as the worst of them (recorder.merge_exports), not their sum.
    cpu = "generator CPU (% of a core)" if procs == 1 else f"CPU of the busiest of {procs} processes (% of a core)"
    # Two colours: in one, the two lines (each against its own axis) were told apart by the dashes alone.
    series = {cpu: Series(t, _list(np.asarray(ts["cpu"], dtype=float) * 100), color="C0"),
              "event-loop lag, max (ms)": Series(t, _ms(ts["loop_lag_us"]), secondary=True, dashed=True, color="C3")}
    return Figure("health", "Generator health", TIME, "CPU (%)", series,
                  y2label="loop lag (ms)", shade=_warmup(result), shade_label="warm-up")


def relay(result: dict) -> Figure | None:
    """Relay runs: messages accepted and delivered per second, and the backlog (right axis); None otherwise."""
    ts = result["relay"].get("timeseries") if isinstance(result.get("relay"), dict) else None
    if not isinstance(ts, dict) or not ts.get("t"):
        return None
    step = ts.get("interval_s", 1)
    t = _list(np.asarray(ts["t"], dtype=float) + step / 2)
    series = {"accepted (by the server under test)": Series(t, _list(np.asarray(ts["accepted"], dtype=float) / step)),
              "delivered (at the sink)": Series(t, _list(np.asarray(ts["delivered"], dtype=float) / step)),
              "backlog (accepted, not yet delivered)": Series(t, _list(ts["backlog"]), secondary=True, dashed=True,
                                                              color="C3")}
    return Figure("relay", "Relay: accepted and delivered per second, backlog", TIME, "messages/s", series,
                  y2label="backlog (messages)", shade=_warmup(result), shade_label="warm-up")


BUILDERS = (throughput, latency_over_time, spectrum_figure, phases, histogram_figure, errors_over_time,
            concurrency, health)


def figures(result: dict) -> dict[str, Figure]:
    """Every plot of a run report, by name, in page order (``relay`` when the result has one)."""
    out = {}
    for build in (*BUILDERS, relay):
        fig = build(result)
        if fig is not None:
            out[fig.name] = fig
    return out


def _comparison_warmup(results: list[dict], labels: list[str]) -> tuple[tuple[float, float] | None, str]:
    """The warm-up span to shade on overlaid time series (the longest), labelled per run when they differ.

    Without it a run's warm-up seconds sat unmarked beside the other run's measured ones.
    """
    warm = [float(r["load"].get("warmup_s") or 0) for r in results]
    if not max(warm) > 0:
        return None, ""
    if len(set(warm)) == 1:
        return (0.0, warm[0]), "warm-up"
    return (0.0, max(warm)), "warm-up:\n" + "\n".join(f"{label} {w:g} s" for label, w in zip(labels, warm))


def comparison_figures(results: list[dict], labels: list[str]) -> dict[str, Figure]:
    """Overlays of several runs (baseline first): percentile spectra, throughput and p99 over time."""
    spectra, rates, p99s = {}, {}, {}
    for i, (result, label) in enumerate(zip(results, labels)):
        color = f"C{i % 10}"
        # A run with no latency draws no line: its legend entry, alone, read as a line hidden by another.
        none = " (no message accepted)" if not result["totals"].get("ok") else ""
        spectra[f"{label} response{none}"] = spectrum_series(result, "response", color=color)
        spectra[f"{label} service{none}"] = spectrum_series(result, "service", color=color, dashed=True)
        ts = result["timeseries"]
        t = _times(result)
        rates[label] = Series(t, _list(np.asarray(ts["ok"], dtype=float) / ts.get("interval_s", 1)), color=color)
        p99s[label + none] = Series(t, _ms(ts["response"]["p99"], np.asarray(ts["ok"]) > 0), color=color)
    top = max((max(s.x) for s in spectra.values() if s.x), default=1.0)
    shade, shade_label = _comparison_warmup(results, labels)
    figs = [
        Figure("spectrum", "Latency by percentile: response (solid) and service (dashed), warm-up excluded",
               "percentile", "latency (ms)", spectra, xlog=True, ylog=True, xticks=spectrum_ticks(top)),
        Figure("throughput", "Completed messages per second", TIME, "messages/s (OK)", rates,
               shade=shade, shade_label=shade_label),
        Figure("latency_p99", "Response p99 per interval", TIME, "latency (ms)", p99s, ylog=True,
               shade=shade, shade_label=shade_label),
    ]
    return {f.name: f for f in figs}
