"""Sweeps: the knee of a server with a known capacity, the sustainable-throughput rule, the sweep report.

The server is Postfix's ``smtp-sink -m 10 -w 1``. In this version ``-m 10`` caps the sessions it
serves at once: an 11th connection completes its TCP handshake but gets no banner until a session
ends (it waits in the listen queue). ``-w 1`` holds the reply to DATA for 1 s: exactly, for a lone
session; sessions whose DATA arrive at different times share the coarse Postfix event timers and
wait anywhere from about 0.25 to 1.75 s. Saturated, every session sends its next DATA as soon as the
last was answered and they all move in step, one message a second each: the capacity is 10 msgs/s.

The open-loop sweep offers 8…13 msgs/s for 4 s a step (1 s warm-up) with ``max_connections = 20``
(so the generator is never the cap) and ``response.p99 <= 2.5s``. Past the knee the backlog grows
by (rate - 10) messages a second, 0.1-0.3 s of latency a second: a 4 s step at 11 or 12 msgs/s
can stay under the latency limit, and only the keep-up check (achieved within 5 % of offered)
tells it from a step the server kept up with.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port, require_command
from load_helpers import PostfixSink
from report_helpers import PageReader, inspect_page, synthetic_result, write_result

from smtpbench import sweep
from smtpbench.report import exports
from smtpbench.report import sweep as sweep_data
from smtpbench.report.tables import ms
from smtpbench.scenario import Scenario

ROOT = Path(__file__).resolve().parents[1]
CAPACITY = 10.0          # msgs/s: 10 sessions (-m 10) x one DATA reply a second (-w 1)
TOLERANCE = 0.20         # the "within 20%"
VALUES = [8, 9, 10, 11, 13]

SCENARIO = f"""
name = "knee"
description = "open-loop rate sweep against smtp-sink -m 10 -w 1"
seed = 7

[load]
model = "open"
rate = 8
arrival = "constant"
max_connections = 20
messages_per_connection = 0
duration = "4s"
warmup = "1s"
drain = "15s"

[message]
size = "1KiB"

[sweep]
parameter = "load.rate"
values = {VALUES}

[thresholds]
"response.p99" = "2.5s"
error_rate = 0.0
"""


def smtpbench(*args: str, cwd: Path, timeout: float = 180.0) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "smtpbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def report_path(stdout: str, cwd: Path) -> Path:
    """The sweep report the command printed (``  report: PATH``, relative to its working folder)."""
    found = re.findall(r"^\s*report: (\S+)$", stdout, re.M)
    assert found, stdout
    return cwd / found[-1]


def near_capacity_valid(summary: dict) -> bool:
    """Whether any step within 20 % of the capacity was a valid run (one the generator kept up with)."""
    return any(r["verdict"] != "invalid" for r in summary["steps"]
               if abs(r["value"] - CAPACITY) <= TOLERANCE * CAPACITY)


@pytest.fixture(scope="module")
def knee(tmp_path_factory):
    """One sweep against smtp-sink via ``smtpbench run --scenario F --target ADDR``: its summary,
    folder, the report it wrote at the end, and the messages smtp-sink counted.

    A step the generator itself marks invalid (on a busy machine: arrivals picked up late) says
    nothing about the server; when every step near the capacity was, the sweep is run once more.
    """
    program = require_command("smtp-sink")
    for attempt in (1, 2):
        tmp = tmp_path_factory.mktemp("knee")
        scenario = tmp / "knee.toml"
        scenario.write_text(SCENARIO)
        sink = PostfixSink(program, free_port(), "-m", "10", "-w", "1")
        try:
            sink.wait_ready()
            started = time.monotonic()
            proc = smtpbench("run", "--scenario", str(scenario), "--target", sink.address,
                             "--out", str(tmp / "sweep"), cwd=tmp)
            wall = time.monotonic() - started
        finally:
            received = sink.stop()
        assert proc.returncode in (0, 1, 3), f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        assert "Traceback" not in proc.stderr, proc.stderr
        summary, folder = sweep.load_sweep(str(tmp / "sweep"))
        print(f"\nknee sweep, attempt {attempt}: {wall:.1f} s; " + "; ".join(
            f"{r['value']}/s: achieved {r['achieved_rate']:.2f} growth {r['latency_growth']} p99 {ms(r['p99'])} ms "
            f"{r['verdict']}{' keeps up' if r['keeps_up'] else ''}" for r in summary["steps"])
            + f"; sustainable {summary['sustainable_rate']}")
        if near_capacity_valid(summary):
            break
    page = report_path(proc.stdout, tmp)
    return {"summary": summary, "folder": Path(folder), "page": page, "stdout": proc.stdout, "received": received}


# -- the knee ------------------------------------------------------------------------------------


def test_smtp_sink_capacity_model():
    """What the known capacity rests on: ``-m 10`` greets 10 sessions and leaves the 11th waiting;
    ``-w 1`` answers DATA 1 s after a session that sends as soon as it is answered."""
    program = require_command("smtp-sink")
    sink = PostfixSink(program, free_port(), "-m", "10", "-w", "1")
    socks = []
    try:
        sink.wait_ready()
        for _ in range(11):
            socks.append(socket.create_connection(("127.0.0.1", sink.port), timeout=5))
        greeted = []
        for s in socks:
            s.settimeout(0.8)
            try:
                greeted.append(s.recv(512).startswith(b"220"))
            except socket.timeout:
                greeted.append(False)
        assert greeted == [True] * 10 + [False]

        s = socks[0]
        s.settimeout(5)

        def ask(line: bytes) -> tuple[float, bytes]:
            t = time.monotonic()
            s.sendall(line)
            reply = s.recv(512)
            return time.monotonic() - t, reply

        assert ask(b"HELO test\r\n")[1].startswith(b"250")
        for _ in range(3):
            assert ask(b"MAIL FROM:<a@example.test>\r\n")[1].startswith(b"250")
            assert ask(b"RCPT TO:<b@example.test>\r\n")[1].startswith(b"250")
            took, reply = ask(b"DATA\r\n")
            assert reply.startswith(b"354") and 0.8 <= took <= 1.6, (took, reply)
            took, reply = ask(b"Subject: x\r\n\r\nx\r\n.\r\n")
            assert reply.startswith(b"250") and took < 0.5
        socks[0].close()
        socks[-1].settimeout(3)  # a session ended: the waiting connection is served
        assert socks[-1].recv(512).startswith(b"220")
    finally:
        for s in socks:
            s.close()
        sink.stop()


def test_sweep_finds_the_knee(knee):
    """The sustainable rate (the highest offered rate that passed and kept up) is within 20 % of 10."""
    summary = knee["summary"]
    rows = {r["value"]: r for r in summary["steps"]}
    assert list(rows) == VALUES
    assert summary["sustainable"] is not None, knee["stdout"][-2000:]
    rate = summary["sustainable_rate"]
    near = [r for r in summary["steps"] if abs(r["value"] - CAPACITY) <= TOLERANCE * CAPACITY]
    assert abs(rate - CAPACITY) <= TOLERANCE * CAPACITY, (
        f"sustainable {rate} msgs/s, capacity {CAPACITY}; steps near it: "
        + "; ".join(f"{r['value']}: {r['verdict']} {r['reasons']} keeps_up={r['keeps_up']}" for r in near))
    # Well below the capacity every step keeps up; well above none does, and what they achieve is
    # the capacity: the server's rate, measured, not the offered one.
    for value in (8,):
        assert rows[value]["keeps_up"], rows[value]
        assert abs(rows[value]["achieved_rate"] - value) <= 0.05 * value
    for value in (13,):
        assert not rows[value]["keeps_up"] and not rows[value]["passed"], rows[value]
        assert abs(rows[value]["achieved_rate"] - CAPACITY) <= TOLERANCE * CAPACITY, rows[value]
        assert rows[value]["latency_growth"] > 0.1
    assert rate == summary["sustainable"]["offered_rate"]
    assert summary["sustainable"]["passed"] and summary["sustainable"]["verdict"] == "ok"
    assert not any(r["passed"] and r["offered_rate"] > rate for r in summary["steps"])
    assert "sustainable: load.rate = " in knee["stdout"]


def test_sweep_json(knee):
    """sweep.json as the module docstring documents it; every step's result beside it, all counted."""
    summary, folder = knee["summary"], knee["folder"]
    assert summary["schema"] == sweep.SCHEMA and summary["parameter"] == "load.rate"
    assert summary["values"] == VALUES and summary["model"] == "open"
    assert summary["thresholds"] == {"response.p99": "2.5s", "error_rate": 0.0}
    assert summary["sweep_id"].startswith("knee-sweep-") and summary["rule"] == sweep.RULE
    keys = {"index", "value", "run_id", "result", "verdict", "offered_rate", "arrived_rate", "completed_rate",
            "latency_growth", "achieved_rate", "window_s", "msgs_per_s", "ok", "failed", "error_rate", "p50",
            "p99", "p99.9", "service_p99", "thresholds", "reasons", "keeps_up", "interrupted", "passed"}
    ok = 0
    for i, row in enumerate(summary["steps"], 1):
        assert set(row) == keys
        assert row["index"] == i and row["result"] == f"step{i:02d}/result.json"
        result = json.loads((folder / row["result"]).read_text())
        assert row["run_id"] == result["run_id"] == f"{summary['sweep_id']}-step{i:02d}"
        assert row["offered_rate"] == result["load"]["offered_rate"] == row["value"]
        assert row["p99"] == result["latency"]["response"]["p99"] and row["ok"] == result["totals"]["ok"]
        assert row["window_s"] == 3  # whole seconds 1..3 of a 4 s schedule after its 1 s warm-up
        assert row["passed"] == (row["verdict"] == "ok" and row["keeps_up"])
        ok += result["totals"]["ok"] + result["totals"]["warmup_ok"]
        assert result["totals"]["failed"] + result["totals"]["warmup_failed"] == 0, result["errors"]
    assert knee["received"] == ok  # smtp-sink counted every message the generator saw accepted


# -- the sustainable-throughput rule, on made-up steps ---------------------------------------------


def fake_run(rate: float | None, p50_s: list[float], ok: list[int], *, warmup: float = 1.0,
             failed: list[int] | None = None, verdict: str = "ok") -> dict:
    """Just what :mod:`smtpbench.sweep` reads of a result: a 1 s time series from t = 0."""
    n = len(ok)
    return {
        "run_id": "fake", "verdict": verdict, "thresholds": [], "health": {"reasons": []},
        "load": {"model": "open" if rate else "closed", "offered_rate": rate, "warmup_s": warmup,
                 "duration_s": float(n), "stages": []},
        "totals": {"msgs_per_s": sum(ok) / n, "measured_seconds": float(n), "ok": sum(ok),
                   "failed": sum(failed or []), "error_rate": 0.0},
        "timeseries": {"interval_s": 1, "t": list(range(n)), "ok": ok, "failed": failed or [0] * n,
                       "offered": [rate or 0] * n, "response": {"p50": [int(p * 1e6) for p in p50_s]}},
        "latency": {"response": {"p50": 1, "p99": 2, "p99.9": 3}, "service": {"p99": 1}},
    }


def test_achieved_rate_from_the_latency_trend():
    # Kept up: flat latency, whatever the completions per interval (a server answering in 1 s
    # batches may leave an interval empty and double the next).
    flat = sweep.achieved(fake_run(10, [0.6] * 6, [10, 10, 0, 20, 10, 10]))
    assert flat["latency_growth"] == 0 and flat["achieved_rate"] == 10 and flat["window_s"] == 5
    # Overloaded at 12/s by a 10/s server: each message waits 1/6 s longer than one a second before.
    over = sweep.step_summary(12, "x", fake_run(12, [1 + k / 6 for k in range(6)], [10] * 6))
    assert over["achieved_rate"] == pytest.approx(10, abs=0.01) and not over["keeps_up"] and not over["passed"]
    # Fast failures are not throughput: a quarter refused leaves 75 % achieved.
    half = sweep.achieved(fake_run(8, [0.01] * 5, [6] * 5, failed=[2] * 5))
    assert half["achieved_rate"] == 6
    # One interval holding replies: the counted rate; none whole: the headline figure.
    assert sweep.achieved(fake_run(4, [0.5, 0.5], [4, 4]))["achieved_rate"] == 4
    assert sweep.achieved(fake_run(4, [0.5], [4], warmup=1.0))["latency_growth"] is None
    # Closed loop: nothing offered, the headline msgs/s.
    closed = sweep.step_summary(10, "x", fake_run(None, [0.1] * 4, [50] * 4))
    assert closed["offered_rate"] is None and closed["achieved_rate"] == 50 and closed["keeps_up"]


def row(index: int, offered: float | None, achieved: float, passed: bool) -> dict:
    return {"index": index, "offered_rate": offered, "achieved_rate": achieved, "passed": passed}


def test_sustainable_is_the_highest_passing_offered_rate():
    rows = [row(1, 100, 100, True), row(2, 200, 199, True), row(3, 300, 240, False), row(4, 400, 395, True),
            row(5, 500, 260, False)]
    assert sweep.sustainable(rows)["index"] == 4  # a failing step below does not hide a good one above
    rows = [row(1, 100, 101, True), row(2, 200, 199, False)]
    assert sweep.sustainable(rows)["index"] == 1
    assert sweep.sustainable([row(1, 100, 90, False)]) is None
    # Closed loop (a sessions sweep): the passing step with the highest throughput.
    rows = [row(1, None, 500, True), row(2, None, 900, True), row(3, None, 880, True), row(4, None, 950, False)]
    assert sweep.sustainable(rows)["index"] == 2


# -- the sweep report ------------------------------------------------------------------------------


def test_a_flat_latency_trend_is_not_shown_as_minus_zero():
    """A step whose latency trend was -0.0002 s/s read "yes (latency -0.000 s/s)" (a real sweep's step 1)."""
    assert sweep_data._keeps_up({"offered_rate": 200, "keeps_up": True, "latency_growth": -0.0002}) == \
        "yes (latency +0.000 s/s)"
    assert sweep_data._keeps_up({"offered_rate": 200, "keeps_up": False, "latency_growth": 0.25}) == \
        "NO (latency +0.250 s/s)"


def test_sweep_report_tables_and_links(knee):
    summary, page_path = knee["summary"], knee["page"]
    assert page_path == knee["folder"].parent / "reports" / summary["sweep_id"] / "index.html"
    out = page_path.parent
    text = page_path.read_text(encoding="utf-8")
    page = PageReader(text)
    rows = page.tables["table-steps"]
    assert rows[0][:4] == ["step", "load.rate", "offered (msgs/s)", "achieved (msgs/s)"]
    assert len(rows) == 1 + len(VALUES)
    for r, cells in zip(summary["steps"], rows[1:]):
        assert cells[:4] == [f"step {r['index']}", str(r["value"]), f"{r['offered_rate']:,.1f}",
                             f"{r['achieved_rate']:,.1f}"]
        assert cells[4:7] == [ms(r["p50"]), ms(r["p99"]), ms(r["p99.9"])]
        assert cells[7] == f"{r['error_rate']:.3%}" and cells[8].startswith(r["verdict"])
        assert cells[9].startswith("yes" if r["keeps_up"] else "NO")
        assert (cells[10] == "pass") if all(t["passed"] for t in r["thresholds"]) else cells[10].startswith("FAIL")
        assert cells[11] == ("yes" if r["passed"] else "no")
    best = summary["sustainable"]
    assert re.search(rf'<tr class="pass best"><td><a href="step{best["index"]:02d}/index.html">', text)
    overview = page.rows("overview")
    assert overview["result"][0] == sweep_data.headline(summary)
    assert f"{best['offered_rate']:,.1f} msgs/s offered" in overview["result"][0]
    assert overview["parameter"][0] == "load.rate = " + ", ".join(str(v) for v in VALUES)
    assert "SUSTAINABLE: LOAD.RATE" in page.text

    step_links = [link for link in page.links if link.startswith("step")]
    assert step_links == [f"step{i:02d}/index.html" for i in range(1, len(VALUES) + 1)]
    for r, link in zip(summary["steps"], step_links):
        step_page = PageReader((out / link).read_text(encoding="utf-8"))
        assert r["run_id"] in step_page.rows("overview")["run"][0]
        assert len(step_page.images) == 8  # the step's own full report
    # Self-contained: no scripts or remote resources; images inline; every link is on disk.
    assert not {"script", "link", "iframe", "object"} & page.tags
    assert not re.search(r"(src|href)=\"(https?:)?//", text)
    for src in page.images:
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for link in page.links:
        assert link.startswith("#") or (out / link).is_file(), link
    assert json.loads((out / "sweep.json").read_text()) == summary


def test_sweep_report_plot_data(knee):
    """The data behind the plots: latency and throughput against the offered load, the knee starred."""
    summary, out = knee["summary"], knee["page"].parent
    figs = sweep_data.sweep_figures(summary)
    assert list(figs) == ["sweep_throughput", "sweep_latency"]
    assert json.loads((out / "figures.json").read_text()) == json.loads(exports.figures_json(figs))
    assert PageReader(knee["page"].read_text()).figures == ["plot-sweep_throughput", "plot-sweep_latency"]
    for name in figs:
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / f"{name}.svg").read_bytes()[:2000]
    steps, best = summary["steps"], summary["sustainable"]
    thr = figs["sweep_throughput"]
    assert thr.xlabel == "offered load (msgs/s)"
    assert thr.series["offered"].x == thr.series["offered"].y == VALUES
    assert thr.series["achieved"].y == [r["achieved_rate"] for r in steps]
    assert (thr.series["sustainable"].x, thr.series["sustainable"].y) == ([best["offered_rate"]], [best["achieved_rate"]])
    lat = figs["sweep_latency"]
    for pct in ("p50", "p99", "p99.9"):
        assert lat.series[pct].x == VALUES
        assert lat.series[pct].y == [r[pct] / 1000 for r in steps]
    assert lat.series["p99 limit"].y == [2500.0, 2500.0]
    assert lat.series["sustainable"].x == [best["offered_rate"]]


def test_sweep_report_in_headless_chromium(knee):
    chromium = require_command("chromium")
    seen = inspect_page(chromium, knee["page"])
    assert seen["title"].startswith("smtpbench · sweep knee")
    assert len(seen["images"]) == 2
    for img in seen["images"]:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    assert seen["errors"] == []
    assert seen["requests"] and all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]


def test_report_command_rebuilds_a_sweep(tmp_path):
    """``smtpbench report SWEEP_DIR``: from the files alone, the sweep page and a report per step, in
    ``reports/<sweep-id>`` by default."""
    scenario = Scenario.model_validate({"name": "made-up", "load": {"model": "open", "rate": 50},
                                                   "sweep": {"parameter": "load.rate", "values": [50, 100]},
                                                   "thresholds": {"response.p99": "20ms"}})
    root = tmp_path / "results" / "made-up-sweep"
    steps = []
    for i, (rate, latency) in enumerate(((50, 2.0), (100, 40.0)), 1):
        result = synthetic_result([rate] * 4, latency, open_rate=rate, warmup=1.0, run_id=f"made-up-step{i:02d}",
                                  thresholds={"response.p99": "20ms"})
        write_result(root / f"step{i:02d}", result)
        steps.append((rate, str(root / f"step{i:02d}" / "result.json"), result))
    sweep.save(sweep.summarise(scenario, steps, str(root), "made-up-sweep"), str(root))

    proc = smtpbench("report", str(root), cwd=tmp_path, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "reports" / "made-up-sweep"
    assert proc.stdout.strip() == f"report: {Path('reports') / 'made-up-sweep' / 'index.html'}"
    page = PageReader((out / "index.html").read_text())
    assert [row[11] for row in page.tables["table-steps"][1:]] == ["yes", "no"]
    assert page.rows("overview")["result"][0].startswith("sustainable: load.rate = 50, 50.0 msgs/s offered")
    assert [link for link in page.links if link.startswith("step")] == ["step01/index.html", "step02/index.html"]
    assert (out / "step01" / "index.html").is_file() and (out / "step02" / "index.html").is_file()


def test_report_command_takes_sweeps_and_runs_together(tmp_path):
    """A sweep.json path and a run folder in one call, with --out: each in its own folder under it."""
    scenario = Scenario.model_validate({"name": "one", "load": {"model": "open", "rate": 20},
                                        "sweep": {"parameter": "load.rate", "values": [20]}})
    root = tmp_path / "one-sweep"
    result = synthetic_result([20] * 3, 1.0, open_rate=20, warmup=1.0, run_id="one-step01")
    write_result(root / "step01", result)
    sweep.save(sweep.summarise(scenario, [(20, str(root / "step01" / "result.json"), result)], str(root),
                               "one-sweep"), str(root))
    run = write_result(tmp_path / "run", synthetic_result([5] * 2, run_id="lone-run"))

    proc = smtpbench("report", str(root / "sweep.json"), str(run), "--out", "out", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [f"report: {Path('out') / 'one-sweep' / 'index.html'}",
                                        f"report: {Path('out') / 'lone-run' / 'index.html'}"]
    assert (tmp_path / "out" / "one-sweep" / "step01" / "index.html").is_file()
    proc = smtpbench("report", str(tmp_path / "nothing-here"), cwd=tmp_path)
    assert proc.returncode == 2 and "no such result file or run folder" in proc.stderr


@pytest.mark.parametrize("edit, named", [(lambda s: s.pop("steps"), "steps"),
                                         (lambda s: s["steps"][0].pop("offered_rate"), "steps"),
                                         (lambda s: s.update(sustainable={"index": 1}), "sustainable"),
                                         (lambda s: s.update(sweep_id=["x"]), "sweep_id"),
                                         # A figure of the wrong type (found by setting each one of a real
                                         # sweep.json to "x", null, -1, [] and {}): a TypeError traceback.
                                         (lambda s: s["steps"][0].update(p99="x"), "steps.0"),
                                         (lambda s: s["steps"][0].update(error_rate=None), "steps.0"),
                                         (lambda s: s["steps"][0].update(verdict=None), "steps.0"),
                                         (lambda s: s["steps"][0].update(thresholds="x"), "steps.0"),
                                         (lambda s: s.update(steps=[]), "steps"),
                                         (lambda s: s.update(tolerance="5%"), "tolerance"),
                                         (lambda s: s.update(thresholds={"response.p99": "soon"}),
                                          "thresholds.response.p99"),
                                         (lambda s: s["sustainable"].update(achieved_rate=None), "sustainable")])
def test_a_hand_edited_sweep_is_one_line_and_exit_2(tmp_path, capsys, edit, named):
    """A sweep.json without its steps, or a sustainable entry cut down, gave a KeyError traceback (exit 1)."""
    from smtpbench.cli import main

    row = {"index": 1, "value": 100, "result": "step01/result.json", "verdict": "ok", "offered_rate": 100.0,
           "achieved_rate": 100.0, "keeps_up": True, "p50": 1000, "p99": 2000, "p99.9": 3000, "error_rate": 0.0}
    summary = {"schema": sweep.SCHEMA, "name": "s", "parameter": "load.rate", "values": [100], "model": "open",
               "steps": [row], "sustainable": dict(row)}
    edit(summary)
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text(json.dumps(summary))
    assert main(["report", str(tmp_path / "sweep"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "not a complete smtpbench sweep" in err and named in err, err


def test_a_step_a_signal_cut_short_does_not_pass():
    """A step stopped by Ctrl-C measured a fragment of its load: it was chosen as the sustainable point
    (its 0.6 s "kept up" with itself). Its rates are taken up to where it stopped."""
    from report_helpers import synthetic_result

    whole = synthetic_result([100, 100, 100, 100], 1.0, open_rate=100)
    whole["totals"]["load_end_us"] = 4_000_000
    assert sweep.step_summary(100, "step01/result.json", whole, 1)["passed"]
    cut = json.loads(json.dumps(whole))
    cut["totals"].update(load_end_us=2_500_000, interrupted_us=2_500_000)
    cut["interrupted"] = {"signal": "SIGINT", "at_s": 2.5}
    row = sweep.step_summary(100, "step01/result.json", cut, 1)
    assert not row["passed"] and row["interrupted"]["signal"] == "SIGINT"
    assert row["window_s"] == 2  # the whole intervals before it stopped, not the planned four
    assert sweep.sustainable([row]) is None
