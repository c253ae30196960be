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
Before the test starts (the master tells this process through a pipe,
:data:`STARTED_FD`) there is nothing to keep: a signal then stops them all at
once, as :class:`StoppedBeforeStart` (passed on, it met a master still
importing Locust, which printed a traceback, and workers never told to quit,
which were waited for 15 s each).

This module starts processes only: it never imports Locust (which would
monkey-patch this process).
"""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
from pathlib import Path

from ..load.stopping import SIGNALS, STOP, install, release
from ..scenario import Scenario

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CONNECT_WAIT = 60        # s the master waits for its workers (--expect-workers-max-wait)
WORKER_EXIT_WAIT = 15.0  # s the workers get to quit after the master has
STARTUP_SLACK = 120.0    # s on top of the run's own length before the master is given up on
#: Environment variable naming the master's end of a pipe it writes one byte to at test start.
STARTED_FD = "SMTPBENCH_STARTED_FD"
POLL = 0.1               # s between looks at the master while it starts


class StoppedBeforeStart(Exception):
    """A signal came before the test started: every process was stopped, and there is no result."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
    early: list[int] = []   # the signal that came before the test started

    def kill_all() -> None:
        for p in procs:
            if p.poll() is None:
                p.kill()

    def before_start(signum: int, _frame) -> None:
        early.append(signum)
        kill_all()

    # Before the first Popen: a signal from then on stops them (killed alone before this, the Locust
    # processes lived on as orphans and ran the whole load).
    for sig in SIGNALS:
        signal.signal(sig, before_start)
    started_r, started_w = os.pipe()
    forget = None
    try:
        master = subprocess.Popen(master_cmd, stdin=subprocess.DEVNULL, start_new_session=True,
                                  env={**os.environ, STARTED_FD: str(started_w)}, pass_fds=(started_w,))
        procs.append(master)
        os.close(started_w)
        started_w = -1
        for i, cmd in enumerate(worker_cmds):
            if early:
                break
            log = open(os.path.join(folder, f"locust-worker-{i}.log"), "wb")
            logs.append(log)
            procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True))
        while not early and master.poll() is None and not select.select([started_r], [], [], POLL)[0]:
            pass
        # The test has started (or the master has ended): the first signal goes to the master, which stops
        # the run and writes its result; a second stops them all at once.
        install()
        if early:
            kill_all()   # (one may have been started after the signal)
            raise StoppedBeforeStart(early[0])
        forget = STOP.listen(lambda: master.poll() is None and master.send_signal(STOP.signum), kill_all)
        try:
            return master.wait(limit)
        except subprocess.TimeoutExpired:
            print(f"smtpbench locust: the master did not finish within {limit:.0f} s; stopping it", file=sys.stderr)
            master.send_signal(signal.SIGTERM)
            return master.wait(30)
    finally:
        if forget is not None:
            forget()
        release()
        for fd in (started_r, started_w):
            if fd >= 0:
                os.close(fd)
        for p in procs[1:]:
            try:
                p.wait(0 if early else WORKER_EXIT_WAIT)
            except subprocess.TimeoutExpired:
                p.terminate()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for log in logs:
            log.close()
