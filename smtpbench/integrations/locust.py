"""Locust integration: ``SmtpUser`` and ``ScenarioShape`` for distributed runs, with the exact result beside Locust's stats.

This is a leaf module: nothing in smtpbench imports it, because importing
Locust monkey-patches the whole process for gevent. Use it from a locustfile
(``smtpbench/integrations/locustfile.py`` is a ready one)::

    locust -f smtpbench/integrations/locustfile.py --headless --scenario scenarios/quickstart.toml --host 127.0.0.1:2525

How a run goes (one master and P workers, or one ``--headless`` process):

* The master reads ``--scenario`` (Locust's ``init_command_line_parser``, so
  the option also travels to workers) and, at test start, sends each worker
  its *setup*: the resolved scenario itself (workers need no copy of the file),
  the target, the run id, a common start time, and its slice ``p`` of ``P``.
* Each user is one SMTP connection (:class:`~smtpbench.integrations.slot.Slot`)
  driving the same sans-IO client core as ``smtpbench run``. Closed loop:
  users = sessions. Open loop: each worker releases every P-th arrival of the
  scenario's one schedule (its share of the rate), and a free user takes it.
* Locust's statistics get one request event per message (``SMTP`` /
  ``transaction``; with ``--smtp-phases`` one per phase too), so its web UI,
  CSV and HTML reports work. The response time is smtpbench's: from the
  message's intended start (coordinated-omission free).
* The exact figures travel beside them: every report a worker sends carries
  the smtpbench histograms and counters recorded since its last report,
  numbered; the master adds them losslessly (see
  :mod:`~smtpbench.integrations.collect`) and at test stop, once every worker's
  final delta is in (or Locust has lost the worker: the result says so),
  writes the same ``result.json`` as ``smtpbench run`` (``kind = "locust"``)
  to ``--smtp-out`` (default ``results/<run-id>``).
* The verdict sets Locust's exit code: 0 ok, 1 a threshold failed, 3 invalid.

``ScenarioShape`` (in the ready locustfile) runs the scenario as written:
users = sessions (closed) or ``max_connections`` (open), stop after its
``duration``; ``-u``, ``-r`` and ``-t`` override those when given.
"""

from __future__ import annotations

import datetime
import logging
import os
import secrets
import signal
import sys
import time

import gevent
import greenlet
from gevent.event import Event
from locust import LoadTestShape, User, constant, events, task
from locust.rpc import Message
from locust.runners import HEARTBEAT_INTERVAL, HEARTBEAT_LIVENESS, STATE_MISSING, MasterRunner, WorkerRunner

from ..addresses import parse_address
from ..console import summary_text
from ..load.pacing import Profile
from ..load.plan import connections
from ..load.stopping import SIGNALS, STOP, exit_code, say
from ..quickexit import exit_now
from ..results import save
from ..scenario import Scenario, ScenarioError, load
from .cluster import STARTED_FD
from .collect import Collector
from .slot import Outcome, Slot
from .work import START_DELAY, Work, make_setup

logger = logging.getLogger("smtpbench.locust")

REQUEST_TYPE = "SMTP"
FINAL_WAIT = 30.0        # s beyond the drain time the master waits for workers' final deltas
SETUP_WAIT = 60.0        # s a user waits for its worker's setup
END_GRACE = 0.3          # s after the last intended arrival before the shape stops the test
QUIT_FLUSH = 0.1         # s for the workers' "quit" to leave this process before it exits
EXIT_CODES = {"ok": 0, "thresholds_failed": 1, "invalid": 3}

MSG_SETUP, MSG_STOP, MSG_FINAL, MSG_HELLO, MSG_IDLE = (
    "smtpbench_setup", "smtpbench_stop", "smtpbench_final", "smtpbench_hello", "smtpbench_idle")


class SmtpFailure(Exception):
    """A failed message or phase, as Locust's failure table shows it."""


class _Process:
    """This process's part: master, worker or local (both)."""

    def __init__(self) -> None:
        self.role: str | None = None
        self.environment = None
        self.scenario: Scenario | None = None
        self.cli_users: int | None = None
        self.cli_rate: float | None = None
        self.cli_run_time: float | None = None
        self.work: Work | None = None          # worker and local: the current run
        self.ready = Event()                   # set when the current run's setup is here
        self.collector: Collector | None = None   # master and local
        self.setup: dict | None = None         # master: the current run's setup (for late workers)
        self.end_wall: float | None = None
        self.idle: set[str] = set()            # workers done with their message limit
        self.run_ids: set[str] = set()
        self.master_cpu_warnings = 0
        self.stopped_by: tuple[str, float] | None = None   # (signal name, wall time) that ended the run early


P = _Process()


# -- options ----------------------------------------------------------------------


@events.init_command_line_parser.add_listener
def _options(parser) -> None:
    parser.add_argument("--scenario", default="", env_var="SMTPBENCH_SCENARIO",
                        help="smtpbench scenario file (TOML, or a resolved scenario.json); the master sends it to workers")
    parser.add_argument("--smtp-out", default="", env_var="SMTPBENCH_OUT",
                        help="folder for the smtpbench result.json the master writes (default results/<run-id>)")
    parser.add_argument("--smtp-run-id", default="", env_var="SMTPBENCH_RUN_ID",
                        help="smtpbench run id (default <scenario name>-<date>-<time>-<random>)")
    parser.add_argument("--smtp-phases", action="store_true", default=False,
                        help="also one Locust request per SMTP phase (connect, banner, ehlo, mail, rcpt, data, ...)")


@events.init.add_listener
def _init(environment, **_kw) -> None:
    runner = environment.runner
    if runner is None:
        return
    P.environment = environment
    opts = environment.parsed_options
    if isinstance(runner, WorkerRunner):
        P.role = "worker"
        runner.register_message(MSG_SETUP, _on_setup)
        runner.register_message(MSG_STOP, _on_stop_request, concurrent=True)
        # Added after the runner's own listener, so it runs before it (quitting fires in reverse): a
        # worker quitting mid-run (its Ctrl-C or SIGTERM) sends its final delta before Locust's "quit",
        # after which the master reads nothing more from it.
        environment.events.quitting.add_listener(_worker_quitting)
        return
    P.role = "master" if isinstance(runner, MasterRunner) else "local"
    try:
        P.scenario = load(getattr(opts, "scenario", "") or None)
        _target(environment)   # a bad --host fails now, not at test start
    except ScenarioError as e:
        logger.error("smtpbench: %s", e)
        sys.exit(2)
    # What the user gave (before Locust fills in its headless defaults): ScenarioShape yields to them.
    P.cli_users = getattr(opts, "num_users", None)
    P.cli_rate = getattr(opts, "spawn_rate", None)
    P.cli_run_time = getattr(opts, "run_time", None) or None
    if P.role == "master":
        runner.register_message(MSG_FINAL, _on_final)
        runner.register_message(MSG_HELLO, _on_hello)
        runner.register_message(MSG_IDLE, _on_idle)
    if getattr(opts, "headless", False) and environment.shape_class is not None:
        _take_signals(runner)


def _take_signals(runner) -> None:
    """SIGINT, SIGTERM and SIGHUP end a headless shape run as Ctrl-C does: the users stop, the workers send
    their final deltas, the result is written (with ``interrupted``, as ``smtpbench run`` writes it).

    Locust sets its SIGTERM handler only once a headless shape test is over, so without this a
    SIGTERM (``timeout``, systemd, ``kill``) or a hang-up killed the process mid-run with no result.
    The stop is a KeyboardInterrupt thrown into the main greenlet (here, where Locust waits for the
    shape), never into a user's greenlet in the middle of a message, which would go uncounted.

    As with ``smtpbench run`` (:class:`~smtpbench.load.stopping.Stop` decides), a second signal leaves at
    once, without a result: the first waits for the users' drain and every worker's final report, and
    a second was ignored, leaving only SIGKILL (and workers nobody told to quit). Before the run, or
    once its result is saved, there is nothing to keep: a signal leaves at once. Either way the
    connected workers are told to quit first.
    """
    main = greenlet.getcurrent()
    hub = gevent.get_hub()

    def stop() -> None:
        shape = runner.shape_greenlet
        if shape is not None and not shape.dead:
            P.stopped_by = (STOP.name, time.time())
            hub.loop.run_callback(main.throw, KeyboardInterrupt)
        # Otherwise the load is over and its result on the way (the drain, the workers' final reports):
        # this signal changes nothing, a second leaves at once (as in smtpbench run's drain).

    def on_signal(signum: int) -> None:
        if P.collector is not None:
            STOP.request(signum)
            return
        if not P.run_ids:
            say(f"\nsmtpbench: {signal.Signals(signum).name} before the test started: stopped, no result\n")
        _quit_workers(runner)
        exit_now(128 + signum)

    # Under `smtpbench locust` the first signal comes from it, which has said so already.
    STOP.quiet = STARTED_FD in os.environ
    STOP.listen(stop, lambda: _abandon(runner))
    for signum in SIGNALS:
        gevent.signal_handler(signum, on_signal, signum)


def _abandon(runner) -> None:
    """Leaving at once: no result (a final report arriving meanwhile wrote one), and the workers quit."""
    P.collector = None
    _quit_workers(runner)


def _quit_workers(runner) -> None:
    """Master, leaving at once: tell the workers to quit (their users stop), as Locust's own quit does."""
    if isinstance(runner, MasterRunner):
        for node in list(runner.clients.values()):
            runner.server.send_to_client(Message("quit", None, node.id))
        gevent.sleep(QUIT_FLUSH)


def _new_run_id(name: str) -> str:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return f"{name}-{stamp}-{secrets.token_hex(2)}"


def _target(environment) -> str:
    host = (environment.host or "").strip()
    for prefix in ("smtp://", "lmtp://"):
        host = host.removeprefix(prefix)
    host = host.rstrip("/")
    if not host:
        t = P.scenario.target
        host = f"[{t.host}]:{t.port}" if ":" in t.host else f"{t.host}:{t.port}"
    try:
        return str(parse_address(host))
    except ValueError as e:
        raise ScenarioError(f"--host {environment.host!r}: {e}") from None


# -- test start ---------------------------------------------------------------------


@events.test_start.add_listener
def _test_start(environment, **_kw) -> None:
    if P.role == "worker":
        if P.work is None or P.work.finished:
            # Joined after the start: ask the master (it tells this worker to sit this run out).
            P.ready.clear()
            environment.runner.send_message(MSG_HELLO, None)
        return
    if P.role not in ("master", "local"):
        return
    runner = environment.runner
    opts = environment.parsed_options
    scenario = P.scenario
    run_id = getattr(opts, "smtp_run_id", "") or _new_run_id(scenario.name)
    if run_id in P.run_ids:   # another run of the same master (web UI): keep results apart
        run_id = f"{run_id}-{len(P.run_ids) + 1}"
    P.run_ids.add(run_id)
    target = _target(environment)
    t0_wall = time.time() + START_DELAY
    duration = P.cli_run_time or scenario.load.duration
    if scenario.load.stages:  # the run ends when its stages do, if before the duration (as natively)
        length = Profile(scenario.load.rate, scenario.load.stages).length
        duration = min(duration, length) if duration else length
    P.end_wall = t0_wall + duration if duration else None
    P.idle = set()
    phases = bool(getattr(opts, "smtp_phases", False))
    if P.role == "master":
        nodes = runner.clients.ready + runner.clients.running + runner.clients.spawning
        ids = sorted((n.id for n in nodes), key=runner.get_worker_index)
    else:
        ids = [runner.client_id]
    slices = {cid: i for i, cid in enumerate(ids)}
    command = "locust " + " ".join(sys.argv[1:])
    recorded = scenario
    if P.cli_run_time:
        # -t replaced the scenario's duration: the result (load.duration_s, its scenario, the report) says
        # so, as after `smtpbench locust --duration`. Not validated: a warm-up as long is the user's to see.
        recorded = scenario.model_copy(update={"load": scenario.load.model_copy(
            update={"duration": float(P.cli_run_time)})})
    P.collector = Collector(recorded, run_id, target, t0_wall, command, slices)
    _say_started()
    P.setup = make_setup(scenario, run_id, target, t0_wall, duration, 0, len(ids), phases)
    logger.info("smtpbench run %s: %s loop against %s, %d worker(s)", run_id, scenario.load.model, target, len(ids))
    for cid, i in slices.items():
        setup = {**P.setup, "slice": i}
        if P.role == "master":
            runner.send_message(MSG_SETUP, setup, client_id=cid)
        else:
            _begin_work(setup, environment)


def _say_started() -> None:
    """Tell ``smtpbench locust`` the test has started (its signals come here from now on; see cluster.py)."""
    fd = os.environ.pop(STARTED_FD, "")
    if fd:
        try:
            os.write(int(fd), b"1")
            os.close(int(fd))
        except (OSError, ValueError):   # not ours after all (a variable left over in the environment)
            pass


def _begin_work(setup: dict, environment) -> None:
    if P.work is not None and not P.work.finished:
        P.work.finish()   # a run that never stopped: its figures are dropped with it
    if setup.get("late"):
        P.work = None
        logger.warning("smtpbench: this worker joined run %s after it started; it sends nothing until the next run",
                       setup["run_id"])
    else:
        try:
            P.work = Work(setup)
        except Exception as e:   # e.g. the scenario's eml_dir is missing on this machine
            P.work = None
            logger.error("smtpbench: cannot take part in run %s: %s", setup["run_id"], e)
            final = {"run_id": setup["run_id"], "seq": 0, "final": True, "error": str(e) or type(e).__name__}
            if P.role == "worker":
                environment.runner.send_message(MSG_FINAL, final)
            elif P.collector is not None:
                P.collector.add(environment.runner.client_id, final)
        else:
            P.work.worker_index = getattr(environment.runner, "worker_index", None)
            P.work.start()
            if P.work.limit != float("inf"):
                gevent.spawn(_watch_done, P.work, environment)
    P.ready.set()


def _on_setup(environment, msg, **_kw) -> None:
    _begin_work(msg.data, environment)


def _on_hello(environment, msg, **_kw) -> None:
    """Master: a worker started without a setup (it joined late)."""
    if P.setup is not None and P.collector is not None and msg.node_id not in P.collector.slices:
        environment.runner.send_message(MSG_SETUP, {**P.setup, "late": True}, client_id=msg.node_id)


def _watch_done(work: Work, environment) -> None:
    """Tell the master when this process has sent its whole message limit (so the shape can stop early)."""
    while not work.finished:
        gevent.sleep(0.25)
        if work.done:
            if P.role == "worker":
                environment.runner.send_message(MSG_IDLE, {"run_id": work.run_id})
            else:
                P.idle.add(environment.runner.client_id)
            return


def _on_idle(environment, msg, **_kw) -> None:
    if P.collector is not None and msg.data.get("run_id") == P.collector.run_id:
        P.idle.add(msg.node_id)


# -- during the run ------------------------------------------------------------------


@events.report_to_master.add_listener
def _report(client_id, data, **_kw) -> None:
    """Worker: the smtpbench delta rides along with Locust's own statistics report."""
    work = P.work
    if work is None or work.finished:
        return
    work.locust_cpu_max = max(work.locust_cpu_max, float(P.environment.runner.current_cpu_usage or 0))
    data["smtpbench"] = work.take_delta()


@events.worker_report.add_listener
def _worker_report(client_id, data, **_kw) -> None:
    part = data.get("smtpbench")
    if part is not None and P.collector is not None:
        P.collector.add(client_id, part)


@events.cpu_warning.add_listener
def _cpu_warning(environment, cpu_usage, **_kw) -> None:
    if P.work is not None:
        P.work.cpu_warnings += 1
        P.work.locust_cpu_max = max(P.work.locust_cpu_max, float(cpu_usage))
    if P.role == "master":
        P.master_cpu_warnings += 1


# -- the end ---------------------------------------------------------------------------


def _on_stop_request(environment, msg, **_kw) -> None:
    """Worker: the master is ending the run; stop the users (in-flight messages finish) and send the final delta."""
    work = P.work
    if work is not None and not work.finished and msg.data.get("run_id") == work.run_id:
        environment.runner.stop()


@events.test_stop.add_listener
def _test_stop(environment, **_kw) -> None:
    work = P.work
    if P.role in ("worker", "local") and work is not None and not work.finished:
        part = work.finish()
        if P.role == "worker":
            environment.runner.send_message(MSG_FINAL, part)
        elif P.collector is not None:
            P.collector.add(environment.runner.client_id, part)
    if P.role == "local":
        _write_result(environment)
    elif P.role == "master" and P.collector is not None:
        collector = P.collector
        environment.runner.send_message(MSG_STOP, {"run_id": collector.run_id})
        deadline = time.monotonic() + P.scenario.load.drain + FINAL_WAIT
        while _awaited(environment.runner, collector) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        _write_result(environment)


def _awaited(runner, collector: Collector) -> bool:
    """Master: whether a worker's final report may still come. One Locust lost (killed, crashed, its machine
    gone: no heartbeat for a few seconds, or it left without that report) never sends it; waiting for
    it held the result back for the drain time + FINAL_WAIT, and the result did not say why it lacked."""
    for cid in collector.awaited():
        node = runner.clients.get(cid)
        if node is None:   # it sent "quit" (after its final report, had there been one) or Locust dropped it
            collector.lose(cid, "it left the master without its final report")
        elif node.state == STATE_MISSING:
            collector.lose(cid, f"Locust marked it missing: no heartbeat for about "
                                f"{(HEARTBEAT_LIVENESS + 1) * HEARTBEAT_INTERVAL} s")
    return bool(collector.awaited())


def _worker_quitting(environment, **_kw) -> None:
    work = P.work
    if work is not None and not work.finished:
        environment.runner.stop()   # its users stop; test_stop sends the final delta


def _on_final(environment, msg, **_kw) -> None:
    if P.collector is not None:
        P.collector.add(msg.node_id, msg.data)


@events.quitting.add_listener
def _quitting(environment, **_kw) -> None:
    if P.collector is not None:   # stopped without a test_stop (or it could not finish): write what arrived
        _write_result(environment)


def _write_result(environment) -> None:
    collector, P.collector = P.collector, None
    P.setup = P.end_wall = None
    if collector is None:
        return
    interrupted = None
    if P.stopped_by is not None:
        name, at = P.stopped_by
        interrupted = {"signal": name, "at_s": round(max(0.0, at - collector.started_at), 3)}
    result = collector.result(interrupted=interrupted)
    if P.master_cpu_warnings:
        result["health"]["warnings"].append(f"the Locust master reported CPU usage above 90% "
                                            f"{P.master_cpu_warnings} time(s)")
    folder = getattr(environment.parsed_options, "smtp_out", "") or os.path.join("results", collector.run_id)
    path = save(result, folder)
    sys.stdout.write("\n" + summary_text(result, path) + "\n")
    for warning in result["health"]["warnings"]:
        sys.stdout.write(f"  warning: {warning}\n")
    sys.stdout.flush()
    environment.process_exit_code = exit_code(result, EXIT_CODES[result["verdict"]])   # 130, 143, 129 when stopped


# -- the user and the shape --------------------------------------------------------------


class SmtpUser(User):
    """One SMTP connection sending the scenario's messages (see the module docstring)."""

    wait_time = constant(0)   # pacing is the scenario's: think time (closed loop) or the schedule (open loop)

    def on_start(self) -> None:
        P.ready.wait(SETUP_WAIT)
        self.slot: Slot | None = None

    def _slot(self) -> Slot | None:
        work = P.work
        if work is None or work.finished:
            return None
        if self.slot is None or self.slot.work is not work:
            self.slot = Slot(work, self._phase if work.phases else None)
        return self.slot

    @task
    def transaction(self) -> None:
        slot = self._slot()
        if slot is None:
            gevent.sleep(0.2)
            return
        outcome = slot.step()
        if outcome is not None:
            self._fire("transaction", outcome.response_us, outcome.size, _failure(outcome))

    def on_stop(self) -> None:
        slot = getattr(self, "slot", None)
        if slot is not None:
            slot.close()

    def _phase(self, phase: str, us: int, code: int) -> None:
        self._fire(phase, us, 0, SmtpFailure(f"{phase}: {code}") if code >= 400 else None)

    def _fire(self, name: str, us: int, size: int, exception: Exception | None) -> None:
        self.environment.events.request.fire(request_type=REQUEST_TYPE, name=name, response_time=us / 1000.0,
                                             response_length=size, exception=exception, context={})


def _failure(outcome: Outcome) -> Exception | None:
    if outcome.ok:
        return None
    what = f"{outcome.code}" if outcome.code else outcome.kind
    return SmtpFailure(f"{outcome.phase}: {what} {outcome.text[:80]}".rstrip())


class ScenarioShape(LoadTestShape):
    """Run the scenario as written: its users and duration, unless ``-u``/``-r``/``-t`` say otherwise."""

    use_common_options = True

    def tick(self):
        scenario = P.scenario
        if scenario is None:
            return None
        users = P.cli_users or connections(scenario)
        rate = P.cli_rate or users
        if P.collector is not None:
            if P.end_wall is not None and time.time() >= P.end_wall + END_GRACE:
                return None
            if P.idle >= set(P.collector.slices):
                return None
        return users, rate
