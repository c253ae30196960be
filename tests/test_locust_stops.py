"""Locust runs that end badly: a worker killed outright.

What a user met and had to wait out: the master waited 30 s and more for the final report of a
worker it knew was gone. Every Locust process is a subprocess (importing Locust patches the process
it is in).
"""

from __future__ import annotations

import json
import subprocess
import time

from conftest import free_port
from locust_helpers import HOST, master_cmd, start_sink, worker_cmd


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
