"""Reports built from result files alone: one HTML page per run, and comparisons of runs.

The modules are split by what they hold, and only ``plots`` imports matplotlib (lazily, Agg):

* ``data``    — reading a result: histograms, measured intervals, percentile spectra, log bins;
* ``figures`` — the named data behind every plot (what tests check, and ``figures.json``);
* ``tables``  — the rows of every table, as text;
* ``plots``   — matplotlib rendering of ``figures`` to PNG and SVG;
* ``exports`` — ``.hgrm`` percentile distributions and CSV time series;
* ``html``    — the self-contained page (no external CSS, JS, fonts or images);
* ``stats``   — Welch's t-test and its confidence interval, without scipy;
* ``compare`` — headline metrics of several runs, verdicts, fairness warnings, text summary;
* ``build``   — writes a report or comparison folder (the entry points the CLI calls);
* ``sweep``, ``sweep_html``, ``sweep_build`` — the same three roles for a sweep's report (steps table,
  plots against offered load, the sustainable point, links to each step's own report).

Importing this package is cheap: heavy modules load when a report is written.
"""

from __future__ import annotations


def write_report(result_path: str, out_dir: str | None = None) -> str:
    """Build the report of the result file (or run folder) ``result_path``; return its index.html path."""
    from .build import build_report, read_runs

    return build_report(read_runs([result_path])[0], out_dir)


def write_sweep_report(sweep_path: str, out_dir: str | None = None) -> str:
    """Build the report of the sweep folder (or sweep.json) ``sweep_path``; return its index.html path."""
    from ..sweep import load_sweep
    from .sweep_build import build_sweep_report

    summary, folder = load_sweep(sweep_path)
    return build_sweep_report(summary, folder, out_dir)
