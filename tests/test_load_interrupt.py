"""Stopping a run early (smtpbench.load.stopping): Ctrl-C or SIGTERM ends the load, drains what is
in flight, writes the result of what ran and exits 128 + the signal; a second signal leaves at once.

Each test runs the real command in its own session (as a terminal's foreground job is) and sends
the signal as a terminal does: to the whole process group (Ctrl-C) or to the command alone (kill).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from load_helpers import assert_accounted, write_scenario

#: s: a run far longer than the test waits: the signal, not the duration, ends it.
LONG = "60s"


def _interrupted(args: list[str], cwd: Path, after: list[float], sig: int = signal.SIGINT, group: bool = True,
                 timeout: float = 60.0) -> tuple[subprocess.CompletedProcess, float, list[str]]:
    """Run ``smtpbench ARGS``; send ``sig`` ``after`` s (then again, for each further delay).
    Returns the finished process, how long it took to exit after the last signal, and the
    processes of its session still there after it (workers, an embedded sink: none expected)."""
    proc = subprocess.Popen([sys.executable, "-m", "smtpbench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=True)
    try:
        for delay in after:
            time.sleep(delay)
            os.killpg(proc.pid, sig) if group else proc.send_signal(sig)
        sent = time.monotonic()
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    took = time.monotonic() - sent
    assert "Traceback" not in err, err[-3000:]
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err), took, _session_left(proc.pid)


def _session_left(pid: int) -> list[str]:
    """Processes still in the command's session (its workers, its embedded sink)."""
    deadline = time.monotonic() + 5
    while True:
        left = subprocess.run(["pgrep", "-s", str(pid)], capture_output=True, text=True).stdout.split()
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


def _result(folder: Path) -> dict:
    result = json.loads((folder / "result.json").read_text())
    assert_accounted(result)
    return result


def test_ctrl_c_stops_the_load_and_keeps_the_result(sink, tmp_path):
    out = tmp_path / "out"
    proc, took, left = _interrupted(["run", "--target", sink.address, "--sessions", "4", "--duration", LONG,
                                     "--out", str(out)], tmp_path, [2.5])
    assert proc.returncode == 130, proc.stderr
    assert took < 10, took                       # the drain, not the 60 s duration
    result = _result(out)
    stopped = result["interrupted"]
    assert stopped["signal"] == "SIGINT" and 0.5 < stopped["at_s"] < 5, stopped
    t = result["totals"]
    assert t["ok"] > 0 and t["failed"] == 0, t   # what was in flight was drained, not cut
    assert t["load_end_us"] >= t["interrupted_us"]
    assert abs(t["load_end_us"] - t["interrupted_us"]) < 100_000, t   # the rates are taken over what ran
    assert sink.stop()["messages"] == t["ok"]
    assert "interrupted: SIGINT stopped the load" in proc.stdout
    assert left == []
    from smtpbench.report import tables  # the report says so too, beside the verdict

    assert any(line.startswith("interrupted: SIGINT stopped the load at") for line in tables.verdict_lines(result))


def test_ctrl_c_reaches_the_workers_through_their_parent(sink, tmp_path):
    """Ctrl-C goes to every process of the group; the workers leave it to the parent, which tells
    them: both processes' measurements are in the result (a worker that took it died with them)."""
    out = tmp_path / "out"
    proc, _, left = _interrupted(["run", "--target", sink.address, "--sessions", "4", "--duration", LONG,
                                  "--processes", "2", "--out", str(out)], tmp_path, [4.0])
    assert proc.returncode == 130, proc.stderr
    result = _result(out)
    assert "interrupted" in result
    assert len(result["health"]["cpu_by_process"]) == 2
    assert result["totals"]["failed"] == 0 and result["totals"]["ok"] > 0
    assert sink.stop()["messages"] == result["totals"]["ok"]
    assert left == []


def test_sigterm_on_a_staged_open_loop_offers_what_ran(sink, tmp_path):
    """SIGTERM (kill) to the command alone: exit 143; the offered rate is that of the stages that
    ran (100/s), not the mean of stages never reached (the 1,000/s one would make it ~900)."""
    scenario = write_scenario(tmp_path, '[load]\nmodel = "open"\n'
                                        '[[load.stages]]\nduration = "20s"\nrate = 100\n'
                                        '[[load.stages]]\nduration = "200s"\nrate = 1000\n')
    out = tmp_path / "out"
    proc, _, _ = _interrupted(["run", "--scenario", scenario, "--target", sink.address, "--out", str(out)],
                              tmp_path, [2.5], sig=signal.SIGTERM, group=False)
    assert proc.returncode == 143, proc.stderr
    result = _result(out)
    assert result["interrupted"]["signal"] == "SIGTERM"
    assert result["load"]["offered_rate"] == 100.0
    assert 90 <= result["health"]["achieved_rate"] <= 110, result["health"]
    assert result["verdict"] == "ok", result["health"]


def test_bench_keeps_its_sink_through_ctrl_c(tmp_path):
    """The embedded sink is not in the terminal's foreground group: it outlives the drain, counts
    every message the client saw accepted, and the cross-check holds."""
    out = tmp_path / "out"
    proc, _, left = _interrupted(["bench", "--sessions", "4", "--duration", LONG, "--out", str(out),
                                  "--no-report"], tmp_path, [3.0])
    assert proc.returncode == 130, proc.stderr
    result = _result(out)
    assert "interrupted" in result
    check = result["crosscheck"]
    assert check["passed"] and check["client_ok"] > 0, check
    assert left == []


def test_a_second_ctrl_c_leaves_at_once_and_leaves_nothing_running(tmp_path):
    """The sink holds every message 5 s before its 250, so the first Ctrl-C's drain has them in flight;
    the second one, during it, leaves at once."""
    out = tmp_path / "out"
    scenario = write_scenario(tmp_path, '[load]\ndrain = "20s"\n'
                                        '[[sink.faults]]\non = "end-of-data"\naction = "delay"\ndelay = "5s"\n')
    proc = subprocess.Popen([sys.executable, "-m", "smtpbench", "bench", scenario, "--sessions", "4", "--duration",
                             LONG, "--processes", "2", "--out", str(out), "--no-report"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, start_new_session=True)
    try:
        time.sleep(5.0)
        os.killpg(proc.pid, signal.SIGINT)
        time.sleep(0.5)  # (the same signal within load.stopping.SAME_STOP would be the same stop)
        os.killpg(proc.pid, signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130
    assert time.monotonic() - sent < 5
    assert "leaving without a result" in err and "Traceback" not in err, err[-3000:]
    assert not (out / "result.json").exists()
    assert _session_left(proc.pid) == []   # the workers and the embedded sink (its own group) too


def test_a_second_ctrl_c_leaves_no_empty_run_folder(start_sink, tmp_path):
    """The run folder is made before the load; left empty, `smtpbench report results/*` refused it and
    reported none of the other runs. The sink holds each message 3 s, so the second signal finds the
    first one's drain under way."""
    scenario = write_scenario(tmp_path, '[[sink.faults]]\non = "end-of-data"\naction = "delay"\ndelay = "3s"\n')
    sink = start_sink("--scenario", scenario)
    proc, took, left = _interrupted(["run", "--scenario", scenario, "--target", sink.address, "--sessions", "2",
                                     "--duration", LONG], tmp_path, after=[2.0, 0.5])
    assert proc.returncode == 130 and "leaving without a result" in proc.stderr, proc.stderr
    assert not (tmp_path / "results").exists() or list((tmp_path / "results").iterdir()) == []


def test_ctrl_c_while_workers_start(sink, tmp_path):
    """Stopped before the workers are up: they stop at their start (a result with what little ran,
    no hang); stopped twice then, the command leaves with nothing left running."""
    args = ["run", "--target", sink.address, "--sessions", "4", "--duration", LONG, "--processes", "2"]
    proc, took, left = _interrupted([*args, "--out", str(tmp_path / "once")], tmp_path, [1.0])
    assert proc.returncode == 130 and took < 20, proc.stderr
    result = _result(tmp_path / "once")
    assert "interrupted" in result and left == []
    if result["totals"]["issued"] == 0:  # stopped before its start: it measured nothing, and is no success
        assert result["verdict"] == "thresholds_failed" and result["load"]["offered_rate"] is None
    proc, took, left = _interrupted([*args, "--out", str(tmp_path / "twice")], tmp_path, [1.0, 0.5])
    assert proc.returncode == 130 and took < 10, proc.stderr
    assert left == []


def test_timeout_keeps_the_result_of_a_multi_process_run(sink, tmp_path):
    """`timeout` signals the command and then its whole process group, back to back: the workers
    leave SIGTERM to their parent too, and the parent takes the two as one stop (the second read as
    "again", and the result was lost; a worker that took it died with its measurements)."""
    out = tmp_path / "out"
    proc = subprocess.run(["timeout", "--preserve-status", "4", sys.executable, "-m", "smtpbench", "run", "--target",
                           sink.address, "--sessions", "4", "--duration", LONG, "--processes", "2", "--out", str(out)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr and "interrupted again" not in proc.stderr, proc.stderr
    result = _result(out)
    assert result["interrupted"]["signal"] == "SIGTERM" and result["totals"]["ok"] > 0
    assert len(result["health"]["cpu_by_process"]) == 2


def test_a_hang_up_stops_the_load_and_keeps_the_result(tmp_path):
    """The terminal closing (SIGHUP to its foreground group): as Ctrl-C; the embedded sink (its own
    group) was left running when bench died of it."""
    out = tmp_path / "out"
    proc, _, left = _interrupted(["bench", "--sessions", "2", "--duration", LONG, "--processes", "2", "--out",
                                  str(out), "--no-report"], tmp_path, [5.0], sig=signal.SIGHUP)
    assert proc.returncode == 129, proc.stderr
    result = _result(out)
    assert result["interrupted"]["signal"] == "SIGHUP" and result["crosscheck"]["passed"]
    assert left == []


def test_a_second_signal_while_the_result_is_written_leaves_no_tmp(tmp_path, monkeypatch):
    """The result is written to result.json.tmp, then renamed (results.save). A second signal in the
    middle of the write leaves at once (os._exit: nothing unwinds), and the half-written .tmp stayed
    beside the results. The signal handler, called here as the signal would call it, removes it."""
    from smtpbench import results
    from smtpbench.load import stopping

    class Left(Exception):
        pass

    def exit_now(code):
        codes.append(code)
        raise Left  # (the real one ends the process: nothing after it runs)

    codes: list[int] = []
    stop = stopping.Stop()
    monkeypatch.setattr(stopping, "STOP", stop)
    monkeypatch.setattr(stopping, "exit_now", exit_now)
    stop.request(signal.SIGINT)  # the first: the load ended, its result is being saved

    def half_written(result: dict) -> str:
        tmp = tmp_path / "result.json.tmp"
        with open(tmp, "a") as f:
            f.write('{"run_id": "half')
        assert tmp.exists()
        stop.request(signal.SIGTERM)  # the second, during the write
        return "{}"

    monkeypatch.setattr(results, "_lines", half_written)
    with pytest.raises(Left):
        results.save({"run_id": "x"}, str(tmp_path))
    assert codes == [128 + signal.SIGTERM]
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_write_that_fails_leaves_no_tmp(tmp_path):
    """A result or report write that fails half-way (here a string that cannot be encoded; a full
    disk or a Ctrl-C while the report is written alike) left its .tmp beside the results."""
    from smtpbench.results import write_atomic

    path = tmp_path / "index.html"
    with pytest.raises(UnicodeEncodeError):
        write_atomic(str(path), "x" * 100_000 + "\ud800")
    assert list(tmp_path.iterdir()) == []
    write_atomic(str(path), "ok")
    assert [p.name for p in tmp_path.iterdir()] == ["index.html"] and path.read_text() == "ok"
