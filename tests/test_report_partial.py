"""`report` and `compare` on what users really have in results/: a stray folder among good runs, a sweep
missing a step's result, and runs made in different ways (bench's embedded sink, run against a server,
Locust).

The runs are real and short, over loopback: one ``bench`` (its embedded sink), one ``run`` against a
sink subprocess, and one two-step ``bench`` sweep; made once for the module.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import launch_sink
from report_helpers import PageReader, smtpbench_run

from smtpbench.cli import main
from smtpbench.report import compare as cmp

SWEEP = """
[load]
model = "open"
rate = 50
duration = "1s"
warmup = "0s"

[sweep]
parameter = "load.rate"
values = [50, 100]
"""


def bench(tmp: Path, *args: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "smtpbench", "bench", *args, "--no-report"], cwd=tmp,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode in (0, 1, 3), f"bench failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """``results/``: ``bench`` (embedded sink), ``run`` (against a sink subprocess), ``sweep`` (two steps)."""
    tmp = tmp_path_factory.mktemp("partial")
    results = tmp / "results"
    bench(tmp, "--sessions", "2", "--duration", "2s", "--warmup", "0s", "--out", str(results / "bench"))
    sink = launch_sink(str(tmp / "sink-stats.jsonl"))
    try:
        smtpbench_run(results / "run", sink.address, "--sessions", "2", "--duration", "2s", "--warmup", "0s")
    finally:
        sink.stop()
    (tmp / "sweep.toml").write_text(SWEEP)
    bench(tmp, str(tmp / "sweep.toml"), "--out", str(results / "sweep"))
    return results


def result(folder: Path) -> dict:
    return json.loads((folder / "result.json").read_text())


def test_report_of_a_glob_reports_the_good_runs_and_names_the_bad_folder(runs, tmp_path, capsys):
    """`report results/*` with one folder a second Ctrl-C left (only bench's sink.log): it exited 2 and
    reported none of the runs."""
    results = tmp_path / "results"
    shutil.copytree(runs, results)
    (results / "stopped").mkdir()
    (results / "stopped" / "sink.log").write_text("sink: listening\n")
    out = tmp_path / "out"
    assert main(["report", *sorted(map(str, results.iterdir())), "--out", str(out)]) == 2
    printed = capsys.readouterr()
    for run in ("bench", "run"):
        index = out / result(results / run)["run_id"] / "index.html"
        assert index.is_file() and f"report: {index}" in printed.out
    assert (out / json.loads((results / "sweep" / "sweep.json").read_text())["sweep_id"] / "index.html").is_file()
    err = printed.err.strip()
    assert err.count("\n") == 0 and str(results / "stopped") in err and "no result.json" in err, err
    assert "sink.log" in err  # why: a bench that stopped before writing its result

    assert main(["report", str(results / "stopped"), "--out", str(tmp_path / "alone")]) == 2  # alone: as before
    assert capsys.readouterr().err.strip().count("\n") == 0 and not (tmp_path / "alone").exists()


def test_a_sweep_step_without_its_result_says_so_in_its_row(runs, tmp_path, capsys):
    """A step whose result.json is gone kept its row with no link and no word of why."""
    sweep = tmp_path / "sweep"
    shutil.copytree(runs / "sweep", sweep)
    os.remove(sweep / "step02" / "result.json")
    assert main(["report", str(sweep), "--out", str(tmp_path / "out")]) == 0
    page = PageReader((tmp_path / "out" / "index.html").read_text())
    steps = [row[0] for row in page.tables["table-steps"][1:]]
    assert steps[0] == "step 1" and "result.json missing" in steps[1] and steps[1].startswith("step 2"), steps
    assert [link for link in page.links if link.startswith("step")] == ["step01/index.html"]


def test_compare_warns_when_runs_were_made_differently(runs, tmp_path, capsys):
    """bench (embedded sink on the generator's machine) vs run (another server): no warning said so."""
    assert main(["compare", str(runs / "bench"), str(runs / "run"), "--out", str(tmp_path / "cmp")]) == 0
    warnings = [line for line in capsys.readouterr().out.splitlines() if "runs made differently" in line]
    assert len(warnings) == 1 and "embedded sink" in warnings[0] and "smtpbench run against" in warnings[0], warnings

    run = result(runs / "run")
    locust = copy.deepcopy(run)  # (a Locust run's result, as collect.py writes it: kind and its section)
    locust.update(kind="locust", locust={"workers": 2})
    warned = [w for w in cmp.compare(run, [locust]).warnings if "made differently" in w]
    assert len(warned) == 1 and "Locust" in warned[0] and "smtpbench run against" in warned[0], warned
    assert not [w for w in cmp.compare(run, [copy.deepcopy(run)]).warnings if "made differently" in w]
