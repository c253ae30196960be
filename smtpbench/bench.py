"""``smtpbench bench``: the built-in sink and the load generator together on loopback, cross-checked.

The sink runs in its own processes (as ``smtpbench sink`` would), started from
the scenario's ``[sink]`` table on a free loopback port, so the generator and
the sink never share an event loop or a GIL. After the load, the sink is
stopped gracefully and its final counters are compared with what the client
saw accepted: every message that got a 250 must have been counted by the
sink. A difference is reported and makes the run invalid (exit 3).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import signal
import subprocess
import sys
import time

from .addresses import Address, parse_address
from .scenario import Scenario, ScenarioError

READY_TIMEOUT = 60.0


class SinkStartError(ScenarioError):
    """The embedded sink did not start (a port in use, a capture folder that is a file, …): a
    configuration error, exit 2, whose message carries the sink's own reason from its log."""


def _reason(log_path: str) -> str:
    """The sink's one-line error from its log (its last line for anything else, a traceback's say)."""
    try:
        with open(log_path, encoding="utf-8", errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
    except OSError:
        return "no log"
    said = [line for line in lines if line.startswith(("smtpbench sink: ", "smtpbench: "))]
    if said:
        # The sink names its own flags (--capture, --tls-cert, …), which bench does not take: the
        # scenario key it also names is what a bench user can change.
        return re.sub(r" \(--[a-z-]+\)", "", said[-1].split(": ", 1)[1])
    return lines[-1] if lines else "it exited without a word"


class EmbeddedSink:
    """A ``smtpbench sink`` subprocess driven by a resolved scenario."""

    def __init__(self, scenario: Scenario, folder: str, listen: str = "127.0.0.1:0", flag: str | None = None):
        os.makedirs(folder, exist_ok=True)
        self.scenario_path = os.path.join(folder, "scenario.json")
        with open(self.scenario_path, "w", encoding="utf-8") as f:
            f.write(scenario.model_dump_json(indent=1))
        self.stats_path = os.path.join(folder, "sink-stats.jsonl")
        self.log_path = os.path.join(folder, "sink.log")
        if os.path.exists(self.stats_path):
            os.unlink(self.stats_path)
        self.listen = listen
        self.flag = flag  # the user's flag (or key) that chose ``listen``, for errors
        self.proc: subprocess.Popen | None = None
        self.address: Address | None = None

    def start(self) -> Address:
        cmd = [sys.executable, "-m", "smtpbench", "sink", "--scenario", self.scenario_path,
               "--listen", self.listen, "--stats-file", self.stats_path]
        self._log = open(self.log_path, "w", encoding="utf-8")
        # Its own process group: Ctrl-C, sent to the terminal's foreground group, stops the load
        # (see load.stopping), and the sink must outlive the drain to count what it accepted;
        # stop() ends it. Should this process leave at once (a second Ctrl-C), atexit does.
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self._log, text=True, process_group=0)
        atexit.register(self._kill)
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                break
            self._log.write(line)
            if "listening on" in line:
                where = line.split("listening on", 1)[1].split()[0].rstrip(",")
                self.address = parse_address(where)
                return self.address
        self.stop()
        chosen = f" ({self.flag} {self.listen})" if self.flag else ""
        raise SinkStartError(f"the embedded sink{chosen} did not start: {_reason(self.log_path)} "
                             f"(log: {self.log_path})")

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its group: the sink's worker processes too

    def stop(self) -> dict:
        """Stop gracefully (SIGTERM) and return the sink's final counters."""
        if self.proc is None:
            return {}
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            rest, _ = self.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self._kill()
            rest, _ = self.proc.communicate()
        atexit.unregister(self._kill)  # (only now: leaving at once meanwhile must not leave it running)
        self._log.write(rest or "")
        self._log.close()
        self.proc = None
        return self.final()

    def final(self) -> dict:
        try:
            with open(self.stats_path, encoding="utf-8") as f:
                lines = [line for line in f if line.strip()]
        except FileNotFoundError:
            return {}
        return json.loads(lines[-1]) if lines else {}


def crosscheck(result: dict, sink: dict) -> dict:
    """Compare what the client saw accepted with what the sink counted (nothing may be lost)."""
    t = result["totals"]
    client_ok = t["ok"] + t.get("warmup_ok", 0)
    sink_messages = sink.get("messages", 0)
    check = {"client_ok": client_ok, "sink_messages": sink_messages,
             "difference": sink_messages - client_ok, "passed": sink_messages == client_ok}
    result["sink"] = sink
    result["crosscheck"] = check
    if not check["passed"]:
        if sink_messages < client_ok:
            reason = (f"{client_ok - sink_messages} message(s) the client saw accepted were not counted "
                      f"by the sink ({client_ok} accepted, {sink_messages} counted)")
        else:
            reason = (f"the sink counted {sink_messages - client_ok} message(s) more than the client saw "
                      f"accepted (replies lost or timed out after the sink accepted)")
        result["health"]["valid"] = False
        result["health"]["reasons"].append(reason)
        from .results import verdict

        result["verdict"] = verdict(result)
    return check


def wait_for_delivery(sink: EmbeddedSink, run_id: str, accepted: int, drain: float, poll: float = 0.5) -> tuple[float, bool]:
    """Relay mode: wait until the sink saw ``accepted`` stamped messages of this run, or ``drain`` s.

    Returns (seconds waited, drained). The sink's stats file is rewritten every second.
    """
    started = time.monotonic()
    while True:
        seen = sink.final().get("relay_runs", {}).get(run_id, 0)
        waited = time.monotonic() - started
        if seen >= accepted:
            return waited, True
        if waited >= drain:
            return waited, False
        time.sleep(poll)


def relay_run(scenario: Scenario, folder: str, run_id: str, target: Address, listen: str | None, execute) -> dict:
    """``bench --relay``: load against the server under test, the sink as its final destination.

    ``execute(scenario, target)`` runs the load and returns the result (with the
    generator's record of accepted messages in ``result["_relay_accepted"]``).
    """
    from .relay import relay_section
    from .sink.relay import read_relay_log

    os.makedirs(folder, exist_ok=True)
    log = os.path.abspath(os.path.join(folder, "relay.log"))
    sink_scenario = scenario.model_copy(update={"sink": scenario.sink.model_copy(update={"relay_log": log})})
    sink = EmbeddedSink(sink_scenario, folder, listen or scenario.relay.listen,
                        "--relay-listen" if listen else "[relay] listen")
    sink.start()
    try:
        result = execute(scenario, target)
        accepted = result.pop("_relay_accepted")
        waited, drained = wait_for_delivery(sink, run_id, len(accepted), scenario.relay.drain)
    finally:
        final = sink.stop()
    arrivals = read_relay_log(log, run_id)
    t0 = result["totals"].get("t0_wall_us", 0)
    section = relay_section(accepted, arrivals, t0, drain_s=waited, drained=drained,
                            clock_offset_ms=scenario.relay.clock_offset_ms,
                            same_host=scenario.relay.clock_offset_ms == 0)
    result["sink"] = final
    result["relay"] = section
    from .results import verdict

    result["verdict"] = verdict(result)
    return result
