"""Files written beside a report for other tools: ``.hgrm`` distributions, CSV time series, figure data.

``.hgrm`` is HdrHistogram's percentile-distribution text (what ``HistogramLogAnalyzer`` and the
online HdrHistogram plotter read): columns ``Value Percentile TotalCount 1/(1-Percentile)``, values
in milliseconds, five percentile levels per halving of the distance to 100 %, then a footer with
mean, standard deviation, max and count. Our buckets keep HDR's layout, so the figures match.
"""

from __future__ import annotations

import csv
import io
import json
import math

import numpy as np

from ..metrics import EXACT, MAX_BITS, SUB_BITS, Histogram
from . import data


def hgrm(h: Histogram, unit_ratio: float = 1000.0) -> str:
    """The percentile distribution of ``h`` (µs) as ``.hgrm`` text, values divided by ``unit_ratio`` (ms)."""
    out = io.StringIO()
    out.write(f"{'Value':>12} {'Percentile':>14} {'TotalCount':>10} {'1/(1-Percentile)':>14}\n\n")
    s = data.spectrum(h)
    for p, value, count in zip(s["percentile"], s["value"], s["count"]):
        row = f"{value / unit_ratio:12.3f} {p:2.12f} {int(count):10d}"
        out.write(row + (f" {1.0 / (1.0 - p):14.2f}\n" if p < 1.0 else "\n"))
    values, counts = h.values_and_counts()
    mean = h.sum / h.total if h.total else 0.0
    std = math.sqrt(float(np.sum(counts * (values - mean) ** 2)) / h.total) if h.total else 0.0
    out.write(f"#[Mean    = {mean / unit_ratio:12.3f}, StdDeviation   = {std / unit_ratio:12.3f}]\n")
    out.write(f"#[Max     = {h.max / unit_ratio:12.3f}, Total count    = {h.total:12d}]\n")
    # HDR's layout words: power-of-two buckets above the exact range, and sub-buckets in each.
    out.write(f"#[Buckets = {MAX_BITS - SUB_BITS:12d}, SubBuckets     = {EXACT:12d}]\n")
    return out.getvalue()


def parse_hgrm(text: str) -> list[tuple[float, float, int]]:
    """``(value, percentile, total_count)`` rows of ``.hgrm`` text (for tests and round trips)."""
    rows = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#") and parts[0] != "Value":
            rows.append((float(parts[0]), float(parts[1]), int(parts[2])))
    return rows


TIMESERIES_COLUMNS = ("t", "offered", "sent", "ok", "failed", "rcpt_failed", "bytes", "errors_4xx", "errors_5xx",
                      "errors_other", "in_flight", "connections", "cpu", "loop_lag_us")


def timeseries_csv(result: dict) -> str:
    """One row per 1 s interval: counts, gauges and response/service percentiles (µs)."""
    ts = result["timeseries"]
    lat_cols = [(name, p) for name in ("response", "service") for p in ts.get(name, {})]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    cols = [c for c in TIMESERIES_COLUMNS if c in ts]
    writer.writerow(cols + [f"{name}_{p}_us" for name, p in lat_cols])
    for i in range(len(ts["t"])):
        writer.writerow([ts[c][i] for c in cols] + [ts[name][p][i] for name, p in lat_cols])
    return out.getvalue()


def figures_json(figs: dict) -> str:
    """The data behind every plot (``figures.Figure.to_dict``), as JSON."""
    return json.dumps({name: fig.to_dict() for name, fig in figs.items()}, indent=1)


def write_exports(result: dict, figs: dict, folder: str) -> list[str]:
    """Write ``response.hgrm``, ``service.hgrm``, ``timeseries.csv`` and ``figures.json``; return the file names."""
    files = {f"{name}.hgrm": hgrm(data.histogram(result, name)) for name in ("response", "service")}
    files["timeseries.csv"] = timeseries_csv(result)
    files["figures.json"] = figures_json(figs)
    for name, text in files.items():
        with open(f"{folder}/{name}", "w", encoding="utf-8", newline="") as f:
            f.write(text)
    return list(files)
