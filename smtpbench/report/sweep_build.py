"""Writing a sweep's report folder: ``index.html``, its plots and data, and every step's own report.

    reports/<sweep-id>/index.html            the sweep page (steps table, plots against load)
                      /sweep.json            the summary it was built from
                      /figures.json          the data behind its plots
                      /sweep_*.png|svg
                      /stepNN/index.html     each step's run report (linked from the table)
"""

from __future__ import annotations

import json
import os

from ..results import folder_name
from . import exports, plots
from . import sweep as data
from .build import REPORTS_DIR, _write, build_report
from .sweep_html import sweep_page


def sweep_report_dir(summary: dict, base: str = REPORTS_DIR) -> str:
    """Where a sweep's report goes by default: ``reports/<sweep-id>``."""
    return os.path.join(base, folder_name(summary.get("sweep_id") or "sweep"))


def _step_report(job: tuple[str, str]) -> str:
    """Build one step's report (in a worker process): "" when built, else why not, for its row."""
    from ..results import load_report_result

    path, out = job
    try:
        result = load_report_result(path)
    except FileNotFoundError:  # deleted, or the step never wrote one
        return "result.json missing"
    except (OSError, ValueError):
        return "result.json unreadable"
    build_report(result, out)
    return ""


def _step_reports(summary: dict, folder: str, out: str) -> tuple[list[str], list[str]]:
    """Build each step's report in ``out/stepNN``, several at once: each one's link and why it has none
    (both "" when it has one).

    Drawing is CPU-bound and the steps are independent: one process per CPU (fresh ``spawn``
    interpreters, so nothing of the run that came before is inherited) makes a long sweep's
    reports take a fraction of the time.
    """
    from ..sweep import step_path

    names = [f"step{row['index']:02d}" for row in summary["steps"]]
    jobs = [(step_path(folder, row), os.path.join(out, name)) for row, name in zip(summary["steps"], names)]
    workers = min(len(jobs) // 2, os.cpu_count() or 1)  # two reports at least to pay for a worker's start-up
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            missing = list(pool.map(_step_report, jobs))
    else:
        missing = [_step_report(job) for job in jobs]
    return [f"{name}/index.html" if not why else "" for name, why in zip(names, missing)], missing


def _first_result(summary: dict, folder: str) -> dict | None:
    """The first readable step result (for the header: scenario hash, target, command)."""
    from ..results import load_result
    from ..sweep import step_path

    for row in summary["steps"]:
        try:
            return load_result(step_path(folder, row))
        except (OSError, ValueError):
            continue
    return None


def build_sweep_report(summary: dict, folder: str, out: str | None = None) -> str:
    """Write the report of the sweep read from ``folder`` (default ``reports/<sweep-id>``); return index.html's path."""
    out = out or sweep_report_dir(summary)
    os.makedirs(out, exist_ok=True)
    links, missing = _step_reports(summary, folder, out)
    figs = data.sweep_figures(summary)
    pngs = plots.save_all(figs, out)
    _write(out, "figures.json", exports.figures_json(figs))
    _write(out, "sweep.json", json.dumps(summary, indent=1))
    steps = data.steps_table(summary, missing)
    steps.links = links
    files = ["sweep.json", "figures.json"] + [f"{name}.{ext}" for name in figs for ext in ("png", "svg")]
    page = sweep_page(summary, data.overview(summary, _first_result(summary, folder)), data.headline(summary), steps,
                      figs, pngs, files)
    return _write(out, "index.html", page)
