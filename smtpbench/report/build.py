"""Writing report folders: ``index.html`` plus the PNG/SVG plots and data exports beside it.

These are the entry points the CLI calls. Only the functions here write files; the other
modules compute (``figures``, ``tables``, ``compare``) or format (``html``, ``exports``).
"""

from __future__ import annotations

import os

from ..results import folder_name, write_atomic
from . import compare as cmp
from . import exports, figures, html, plots, tables

REPORTS_DIR = "reports"


def read_runs(paths: list[str]) -> list[dict]:
    """Load result files or run folders; ValueError naming the path when one is missing, unreadable or
    not a result (:func:`~smtpbench.results.load_report_result`'s own errors name it already)."""
    from ..results import load_report_result

    out = []
    for path in paths:
        try:
            out.append(load_report_result(path))
        except FileNotFoundError:
            if os.path.isfile(os.path.join(path, "sweep.json")):
                raise ValueError(f"{path}: a sweep folder, not a run: give its steps' folders "
                                 f"({os.path.join(path, 'step01')}, …)") from None
            if os.path.isfile(os.path.join(path, "sink.log")):  # bench's folder, left before the result was saved
                raise ValueError(f"{path}: no result.json in this folder (bench's sink.log is: a run stopped "
                                 "before its result was written)") from None
            if os.path.isdir(path):
                raise ValueError(f"{path}: no result.json in this folder (not a run folder)") from None
            raise ValueError(f"{path}: no such result file or run folder") from None
        except OSError as e:
            raise ValueError(f"{path}: cannot read a result: {e.strerror or e}") from None
    return out


def read_each(paths: list[str]) -> tuple[list[dict], list[str]]:
    """Every result among ``paths`` that reads, and one line per path that does not (:func:`read_runs`'s).

    For ``smtpbench report results/*``: one stray folder (a run a second Ctrl-C left with its
    sink.log and no result) must not cost the report of every other run.
    """
    results, problems = [], []
    for path in paths:
        try:
            results += read_runs([path])
        except ValueError as e:
            problems.append(str(e))
    return results, problems


def report_dir(result: dict, base: str = REPORTS_DIR) -> str:
    """Where a run's report goes by default: ``reports/<run_id>``."""
    return os.path.join(base, folder_name(result["run_id"]))


def _write(folder: str, name: str, text: str) -> str:
    path = os.path.join(folder, name)
    write_atomic(path, text)
    return path


def build_report(result: dict, folder: str | None = None) -> str:
    """Write the report of one run into ``folder`` (default ``reports/<run_id>``); return the index.html path."""
    folder = folder or report_dir(result)
    os.makedirs(folder, exist_ok=True)
    figs = figures.figures(result)
    pngs = plots.save_all(figs, folder)
    files = exports.write_exports(result, figs, folder)
    files += [f"{name}.{ext}" for name in figs for ext in ("png", "svg")]
    page = html.run_page(result, tables.overview(result), tables.verdict_lines(result), tables.tables(result),
                         figs, pngs, files)
    return _write(folder, "index.html", page)


def comparison_dir(results: list[dict], base: str = REPORTS_DIR) -> str:
    """Default folder of a comparison: ``reports/compare-<baseline>-vs-<contender>[-and-N-more]``."""
    more = f"-and-{len(results) - 2}-more" if len(results) > 2 else ""
    # folder_name, as report_dir: a free-text run id ("../../x", Locust's --smtp-run-id) stays a name under base
    return os.path.join(base, f"compare-{folder_name(results[0]['run_id'])}-vs-{folder_name(results[1]['run_id'])}{more}")


def build_comparison(results: list[dict], folder: str | None = None,
                     comparison: cmp.Comparison | None = None) -> str:
    """Write the comparison of ``results[0]`` (baseline) with the others; return the index.html path."""
    folder = folder or comparison_dir(results)
    os.makedirs(folder, exist_ok=True)
    comparison = comparison or cmp.compare(results[0], results[1:])
    figs = figures.comparison_figures(results, comparison.labels)
    pngs = plots.save_all(figs, folder)
    files = [f"{name}.{ext}" for name in figs for ext in ("png", "svg")]
    _write(folder, "figures.json", exports.figures_json(figs))
    _write(folder, "comparison.json", cmp.to_json(comparison))
    files = ["comparison.json", "figures.json", *files]
    page = html.comparison_page(results, comparison.warnings, cmp.comparison_tables(results, comparison),
                                figs, pngs, files)
    return _write(folder, "index.html", page)
