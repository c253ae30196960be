"""Locust runs that end badly: a worker killed outright, Ctrl-C while Locust starts, Ctrl-C twice.

Each is what a user meets and had to wait out (or kill): the master waited 30 s and more for the
final report of a worker it knew was gone; a Ctrl-C in `smtpbench locust`'s first seconds printed
Locust's traceback and hung 30 s on workers nobody told to quit; a second Ctrl-C was ignored while the
first drained. Every Locust process is a subprocess (importing Locust patches the process it is in).
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from conftest import free_port
from locust_helpers import HOST, master_cmd, processes_with, start_sink, worker_cmd


def _wait_for(what: str, check, timeout: float = 60.0, poll: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(poll)


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.communicate()


def test_a_killed_worker_is_given_up_on_once_locust_marks_it_missing(tmp_path):
    """SIGKILL of one of two workers mid-run: the master wrote its result only after the drain time + 30 s
    (waiting for a final report from a worker Locust had marked missing). It now stops waiting for it
    then: the run ends on time, INVALID, and says the worker was lost."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('[load]\nmodel = "open"\nrate = 100\nmax_connections = 4\nduration = "5s"\ndrain = "1s"\n')
    sink = start_sink(tmp_path)
    port = str(free_port(HOST))
    out = tmp_path / "run"
    master = subprocess.Popen(master_cmd(port, 2, scenario, sink.address, out), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    workers = [subprocess.Popen(worker_cmd(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
               for _ in range(2)]
    try:
        _wait_for("100 messages at the sink", lambda: sink.stats().get("messages", 0) >= 100)
        workers[1].kill()
        killed = time.monotonic()
        stdout, stderr = master.communicate(timeout=90)
        took = time.monotonic() - killed
    finally:
        _stop([master, *workers, sink.proc])
    assert master.returncode == 3, stderr[-3000:]
    # The run had ~4 s left; Locust marks a worker missing after ~4 s without a heartbeat.
    assert took < 15, f"the master took {took:.1f} s after the kill\n{stderr[-3000:]}"
    result = json.loads((out / "result.json").read_text())
    lost = [w for w in result["health"]["workers"] if w["lost"]]
    assert len(lost) == 1 and "missing" in lost[0]["lost"], result["health"]["workers"]
    reasons = result["health"]["reasons"]
    assert [r for r in reasons if "lost (Locust marked it missing" in r and "no final report" in r], reasons
    assert result["verdict"] == "invalid"
    assert "lost (Locust marked it missing" in stdout


def test_ctrl_c_while_smtpbench_locust_starts(tmp_path):
    """Ctrl-C while the master still imports Locust: Python's KeyboardInterrupt traceback, and 30 s (15 per
    worker) before the command ended, its workers never told. Now: one line, exit 130, at once."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('[load]\nsessions = 2\nduration = "20s"\n')
    out = tmp_path / "run"
    for delay in (0.1, 1.0):   # importing Locust; then (on this machine) waiting for the workers
        proc = subprocess.Popen([sys.executable, "-m", "smtpbench", "locust", str(scenario), "--workers", "2",
                                 "--target", f"{HOST}:9", "--out", str(out), "--no-report"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        try:
            _wait_for("the Locust master", lambda: processes_with(f"--smtp-out\0{out}\0"))
            time.sleep(delay)
            proc.send_signal(signal.SIGINT)
            sent = time.monotonic()
            stdout, stderr = proc.communicate(timeout=60)
            took = time.monotonic() - sent
        finally:
            _stop([proc])
        assert proc.returncode == 130, stderr[-3000:]
        assert "Traceback" not in stderr + stdout, stderr[-3000:]
        assert took < 5, f"{took:.1f} s after Ctrl-C"
        if not (out / "result.json").exists():   # (a slow start: the test had not started by then)
            assert "smtpbench locust: SIGINT before the test started: stopped, no result" in stderr, stderr[-3000:]
        assert not processes_with(str(out)), "a Locust process outlived smtpbench locust"


def test_a_second_ctrl_c_leaves_a_master_at_once(tmp_path):
    """A manual master's first Ctrl-C drains the messages in flight (20 s here); a second one was ignored.
    Now it leaves at once without a result, as `smtpbench run` does, and its worker is told to quit."""
    scenario = tmp_path / "scenario.toml"
    scenario.write_text('[[sink.faults]]\non = "end-of-data"\naction = "delay"\ndelay = "20s"\n'
                        '[load]\nsessions = 2\nduration = "30s"\ndrain = "30s"\n')
    sink = start_sink(tmp_path, scenario)
    port = str(free_port(HOST))
    out = tmp_path / "run"
    log = tmp_path / "master.log"
    with open(log, "w") as f:
        master = subprocess.Popen(master_cmd(port, 1, scenario, sink.address, out), stdout=subprocess.DEVNULL,
                                  stderr=f, text=True, cwd=tmp_path)
    worker = subprocess.Popen(worker_cmd(port), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp_path)
    try:
        _wait_for("the run's start", lambda: "smtpbench run " in log.read_text())
        _wait_for("two messages in flight", lambda: sink.stats().get("connections_current", 0) >= 2, poll=0.2)
        time.sleep(1.5)
        master.send_signal(signal.SIGINT)
        time.sleep(1.0)
        master.send_signal(signal.SIGINT)
        sent = time.monotonic()
        master.wait(30)
        took = time.monotonic() - sent
        worker.wait(15)
    finally:
        _stop([master, worker, sink.proc])
    stderr = log.read_text()
    assert master.returncode == 130, stderr[-3000:]
    assert took < 5, f"{took:.1f} s after the second Ctrl-C\n{stderr[-3000:]}"
    assert "interrupted again: leaving without a result" in stderr, stderr[-3000:]
    assert not out.exists() or not list(out.iterdir()), list(out.iterdir())
