"""``smtpbench locust``: one Locust master and N workers on this machine, as subprocesses, for one run.

What a user would otherwise type in N+1 terminals: the master headless with
``--expect-workers N`` on a free loopback port, and N ``--worker`` processes
connecting to it, all with the ready locustfile. The scenario (with the
command-line overrides applied) is written to the run folder as
``scenario.json`` and given to the master, which sends it on to the workers.
The master's output is the user's; each worker's goes to
``<run folder>/locust-worker-<i>.log``.

Signals, as with ``smtpbench run --processes``: the Locust processes run in a
session of their own, so a terminal's Ctrl-C or hang-up (and ``kill`` of this
process alone) reaches this process only, which passes the first SIGINT,
SIGTERM or SIGHUP on to the master; the master stops the run and its workers
and writes the result. A second signal stops them all at once, without one.

This module starts processes only: it never imports Locust (which would
monkey-patch this process).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ..load.stopping import STOP, install, release
from ..scenario import Scenario

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CONNECT_WAIT = 60        # s the master waits for its workers (--expect-workers-max-wait)
WORKER_EXIT_WAIT = 15.0  # s the workers get to quit after the master has
STARTUP_SLACK = 120.0    # s on top of the run's own length before the master is given up on


def _free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def commands(scenario_path: str, target: str, workers: int, folder: str, run_id: str, phases: bool,
             extra: list[str], port: int) -> tuple[list[str], list[list[str]]]:
    """The master's and the workers' command lines (``workers`` = 0: one ``--headless`` process)."""
    base = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE)]
    master = [*base, "--headless", "--scenario", scenario_path, "--host", target, "--smtp-out", folder,
              "--smtp-run-id", run_id]
    if phases:
        master.append("--smtp-phases")
    if workers == 0:
        return [*master, *extra], []
    master += ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port", str(port),
               "--expect-workers", str(workers), "--expect-workers-max-wait", str(CONNECT_WAIT), *extra]
    worker = [*base, "--worker", "--master-host", "127.0.0.1", "--master-port", str(port)]
    return master, [worker] * workers


def launch(scenario: Scenario, target: str, workers: int, folder: str, run_id: str, phases: bool = False,
           extra: list[str] | None = None) -> int:
    """Run the scenario on a local Locust master and ``workers`` workers; the master's exit code."""
    os.makedirs(folder, exist_ok=True)
    scenario_path = os.path.join(folder, "scenario.json")
    with open(scenario_path, "w", encoding="utf-8") as f:
        f.write(scenario.model_dump_json(indent=1))
    master_cmd, worker_cmds = commands(scenario_path, target, workers, folder, run_id, phases, extra or [],
                                       _free_port())
    length = (scenario.load.duration or 0) + scenario.load.drain
    limit = None if not scenario.load.duration else length + STARTUP_SLACK
    procs: list[subprocess.Popen] = []
    logs = []

    def kill_all() -> None:
        for p in procs:
            if p.poll() is None:
                p.kill()

    # Before the first Popen: a signal from then on is passed on (or, the second, stops them all).
    # Killed alone before this, the Locust processes lived on as orphans and ran the whole load.
    install()
    forget = STOP.listen(lambda: procs and procs[0].poll() is None and procs[0].send_signal(STOP.signum), kill_all)
    try:
        master = subprocess.Popen(master_cmd, stdin=subprocess.DEVNULL, start_new_session=True)
        procs.append(master)
        if STOP.signum:   # it came while the master was being started
            master.send_signal(STOP.signum)
        for i, cmd in enumerate(worker_cmds):
            log = open(os.path.join(folder, f"locust-worker-{i}.log"), "wb")
            logs.append(log)
            procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        try:
            return master.wait(limit)
        except subprocess.TimeoutExpired:
            print(f"smtpbench locust: the master did not finish within {limit:.0f} s; stopping it", file=sys.stderr)
            master.send_signal(signal.SIGTERM)
            return master.wait(30)
    finally:
        forget()
        release()
        for p in procs[1:]:
            try:
                p.wait(WORKER_EXIT_WAIT)
            except subprocess.TimeoutExpired:
                p.terminate()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
