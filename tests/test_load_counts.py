"""The generator against ``smtpbench sink`` over loopback: every message the generator counts
as OK is one the sink received (closed and open loop, with and without pipelining, DATA and
BDAT, a connection per message, two processes), the open loop offers what it was asked to,
and result.json holds what a user reads with jq."""

from __future__ import annotations

import json
import subprocess

import pytest

from conftest import require_command

from load_helpers import assert_accounted, assert_exit, run_load, write_scenario

PHASES = ("connect", "banner", "ehlo", "mail", "rcpt", "data", "end_of_data", "quit")
PERCENTILES = ("p50", "p90", "p99", "p99.9", "max")


def run_against_sink(start_sink, tmp_path, *args: str, sink_args: tuple[str, ...] = ()):
    """Run the generator against a fresh sink; return (result, the sink's final counters)."""
    sink = start_sink(*sink_args)
    run = run_load(tmp_path / "out", "--target", sink.address, *args)
    final = sink.stop()
    assert "Traceback" not in run.stderr, run
    assert_exit(run, 0)
    assert_accounted(run.result)
    # The generator watched itself: its loop-lag probes ran, and each process's CPU share is one
    # thread's (a tiny run's read 169 % when CPU counted from before t0 was taken over the time after).
    assert run.result["latency"]["loop_lag"]["count"] >= 1, run.result["latency"]["loop_lag"]
    assert all(0 < share <= 1.05 for share in run.result["health"]["cpu_by_process"]), run.result["health"]
    return run.result, final


@pytest.mark.parametrize("args, sink_args", [
    ((), ()),
    (("--no-pipelining",), ()),
    ((), ("--hide", "CHUNKING")),                              # DATA instead of BDAT
    (("--no-pipelining",), ("--hide", "PIPELINING", "--hide", "CHUNKING")),
    (("--messages-per-connection", "1"), ()),
    (("--processes", "2"), ()),
    (("--recipients", "3", "--size", "10KiB"), ()),
    (("--pipeline-messages",), ("--hide", "CHUNKING")),
    (("--pipeline-messages", "--recipients", "3", "--processes", "2"), ("--hide", "CHUNKING")),
], ids=["pipelined", "no-pipelining", "data", "not-offered", "connection-per-message", "two-processes",
        "three-rcpts-10k", "chained", "chained-three-rcpts-two-processes"])
def test_closed_loop_ok_equals_received(start_sink, tmp_path, args, sink_args):
    result, final = run_against_sink(start_sink, tmp_path, "--sessions", "5", "--messages", "300", *args,
                                     sink_args=sink_args)
    totals = result["totals"]
    assert totals["issued"] == 300
    assert totals["ok"] == 300 and totals["failed"] == 0
    assert final["messages"] == totals["ok"]
    assert final["recipients"] == totals["ok"] * (3 if "--recipients" in args else 1)
    assert final["bytes"] == totals["bytes"]
    assert final["protocol_errors"] == 0
    # The generator's own CPU for the run: some, and no more than its processes' time (each may
    # start up to the common start's 0.3 s before t0, mostly asleep).
    processes = 2 if "--processes" in args else 1
    assert 0 < totals["cpu_us"] <= (totals["duration_us"] + 500_000) * processes, totals
    probe = 1  # start_sink's readiness check connects once
    if "--messages-per-connection" in args:
        assert final["connections_total"] == 300 + probe
    else:
        assert final["connections_total"] == 5 + probe  # one per session, whatever the processes


def test_fewer_sessions_than_processes(start_sink, tmp_path):
    """One session asked of two processes: the run uses one (a process without a session held
    half of --messages and the run never ended)."""
    result, final = run_against_sink(start_sink, tmp_path, "--sessions", "1", "--messages", "10",
                                     "--processes", "2")
    assert result["totals"]["issued"] == result["totals"]["ok"] == final["messages"] == 10
    assert result["environment"]["processes"] == 1


def test_chained_messages_respect_messages_per_connection(start_sink, tmp_path):
    """With pipeline_messages a session still closes its connection after N messages: 300 in
    sessions of 7 need ceil(300 / 7) connections at least, and no message is lost between them."""
    result, final = run_against_sink(start_sink, tmp_path, "--sessions", "5", "--messages", "300",
                                     "--messages-per-connection", "7", "--pipeline-messages",
                                     sink_args=("--hide", "CHUNKING"))
    assert result["totals"]["ok"] == final["messages"] == 300
    assert final["protocol_errors"] == 0
    assert 43 + 1 <= final["connections_total"] <= 43 + 5 + 1  # one partly used per session at most
    # Every message but the first of each connection went out behind the one before.
    assert 300 - 48 <= result["totals"]["chained"] <= 300 - 43
    phases = result["latency"]["phases"]
    assert phases["mail"]["count"] == phases["end_of_data"]["count"] == 300


def test_open_loop_offers_rate_times_duration(start_sink, tmp_path):
    rate, duration = 300, 3
    result, final = run_against_sink(start_sink, tmp_path, "--rate", str(rate), "--duration", f"{duration}s")
    totals = result["totals"]
    assert abs(totals["issued"] - rate * duration) <= 0.01 * rate * duration
    assert totals["failed"] == 0
    assert totals["ok"] == totals["issued"] == final["messages"]
    assert sum(result["timeseries"]["offered"]) == totals["issued"]
    # The load's window is the schedule's, not up to its last arrival (at 2.997 s: the last whole
    # interval was left out of every rate, and 900 arrivals over 2.997 s read 300.3/s released).
    assert totals["load_end_us"] == duration * 1_000_000
    assert result["health"]["achieved_rate"] == pytest.approx(totals["issued"] / duration)
    # Messages begun per second over the run's whole seconds (not diluted by the drain's).
    assert result["health"]["send_rate"] == pytest.approx(rate, rel=0.05)
    # Achieved throughput over the measured span, with room for a noisy machine.
    assert totals["msgs_per_s"] == pytest.approx(rate, rel=0.1)


@pytest.mark.parametrize("args", [("--messages", "600", "--duration", "10s"), ("--messages", "600")],
                         ids=["messages-before-duration", "messages-only"])
def test_open_loop_that_ends_on_its_message_count_reports_its_own_rate(start_sink, tmp_path, args):
    """400/s for 600 messages ends at 1.5 s: the arrivals released and the sent rate are taken
    over the load (they read 60 and 300, over the 10 s duration and with the cut-short second)."""
    result, _ = run_against_sink(start_sink, tmp_path, "--rate", "400", *args)
    assert result["totals"]["issued"] == 600
    assert result["totals"]["load_end_us"] == pytest.approx(1_500_000, abs=100_000)
    assert result["health"]["achieved_rate"] == pytest.approx(400, rel=0.03)
    assert result["health"]["send_rate"] == pytest.approx(400, rel=0.05)


def test_staged_open_loop_reports_its_mean_rate(start_sink, tmp_path):
    """1 s at 100/s, then a 2 s ramp to 300/s: 500 arrivals in 3 s of a 20 s default duration.
    Offered and released are 166.7/s (they read 100 and 25)."""
    scenario = write_scenario(tmp_path, '[load]\nmodel = "open"\n'
                              '[[load.stages]]\nduration = "1s"\nrate = 100\n'
                              '[[load.stages]]\nduration = "2s"\nrate = 300\nramp = true\n')
    result, _ = run_against_sink(start_sink, tmp_path, "--scenario", scenario)
    assert result["totals"]["issued"] == pytest.approx(500, abs=2)
    assert result["load"]["offered_rate"] == pytest.approx(500 / 3, rel=0.01)
    assert result["health"]["achieved_rate"] == pytest.approx(500 / 3, rel=0.03)


def test_two_processes_report_the_runs_duration_not_their_sum(start_sink, tmp_path):
    """duration_us is the run's, from the common start until the last process is done: the
    processes run side by side, so their durations do not add up (they were summed)."""
    result, _ = run_against_sink(start_sink, tmp_path, "--rate", "200", "--duration", "2s", "--processes", "2")
    totals = result["totals"]
    assert totals["issued"] == pytest.approx(400, abs=4)
    # Summed, two processes of 2 s each would say at least 4 s; the drain may add a little.
    assert 1_900_000 <= totals["duration_us"] < 3_800_000, totals


def test_open_loop_first_arrival_finds_a_warm_connection(start_sink, tmp_path):
    """Open loop opens connections before t0 (runner.PREOPEN). An arrival that waited for its own
    connection would have a send lag of at least its connect, banner and EHLO; one opened ahead
    leaves it at most what was left of them at t0."""
    result, final = run_against_sink(start_sink, tmp_path, "--rate", "20", "--messages", "1")
    assert result["totals"]["ok"] == 1 == final["messages"]
    phases = result["latency"]["phases"]
    setup = sum(phases[p]["max"] for p in ("connect", "banner", "ehlo"))
    # A loop running late wakes the arrival late too (CI on a busy machine: loop lag p99 23.9 ms, send
    # lag 918 µs against a setup of 818): what the loop's own lag explains is not a wait for a connection.
    lag = result["latency"]["loop_lag"]["max"]
    assert result["latency"]["send_lag"]["max"] < setup + lag, (result["latency"]["send_lag"], setup, lag)


def test_open_loop_two_processes_share_the_schedule(start_sink, tmp_path):
    result, final = run_against_sink(start_sink, tmp_path, "--rate", "200", "--duration", "2s",
                                     "--processes", "2", "--arrival", "poisson")
    totals = result["totals"]
    assert totals["ok"] == totals["issued"] == final["messages"]
    # Poisson arrivals: 400 expected; a 4-sigma band (sqrt(400) = 20).
    assert 320 <= totals["issued"] <= 480


def check_summary(name: str, summary: dict) -> None:
    assert summary["count"] > 0, name
    values = [summary[p] for p in PERCENTILES]
    assert all(isinstance(v, int) and v >= 0 for v in values), (name, summary)
    assert values == sorted(values), (name, summary)
    assert summary["min"] <= summary["p50"], (name, summary)


def test_result_file_has_what_users_read(start_sink, tmp_path):
    result, final = run_against_sink(start_sink, tmp_path, "--sessions", "3", "--messages", "60",
                                     "--no-pipelining", "--messages-per-connection", "10",
                                     sink_args=("--hide", "CHUNKING"))
    totals = result["totals"]
    assert totals["ok"] == 60 == final["messages"] and totals["failed"] == 0
    assert totals["msgs_per_s"] > 0
    latency = result["latency"]
    check_summary("response", latency["response"])
    check_summary("service", latency["service"])
    assert latency["response"]["count"] == 60
    for phase in PHASES:
        check_summary(phase, latency["phases"][phase])
    # One MAIL, RCPT, DATA and end-of-data reply per message; a banner, EHLO and QUIT per connection
    # (at most 10 messages each; a session's last connection may carry fewer).
    for phase in ("mail", "rcpt", "data", "end_of_data"):
        assert latency["phases"][phase]["count"] == 60, phase
    connections = latency["phases"]["connect"]["count"]
    assert 6 <= connections <= 6 + 3
    for phase in ("banner", "ehlo", "quit"):
        assert latency["phases"][phase]["count"] == connections, phase
    # A transaction takes at least as long as its end-of-data reply.
    assert latency["service"]["max"] >= latency["phases"]["end_of_data"]["min"]
    assert result["health"]["valid"] in (True, False) and isinstance(result["health"]["reasons"], list)
    assert result["verdict"] in ("ok", "invalid")


def test_result_file_with_jq(start_sink, tmp_path):
    jq = require_command("jq")
    result, _ = run_against_sink(start_sink, tmp_path, "--sessions", "2", "--messages", "20",
                                 sink_args=("--hide", "CHUNKING"))
    path = tmp_path / "out" / "result.json"
    query = ("[.totals.ok, .totals.failed, .totals.msgs_per_s, .latency.response.p50, .latency.response.p90,"
             " .latency.response.p99, .latency.response[\"p99.9\"], .latency.response.max,"
             " .latency.phases.end_of_data.p99, .latency.phases.connect.max]")
    out = subprocess.run([jq, "-c", query, str(path)], capture_output=True, text=True, check=True).stdout
    values = json.loads(out)
    assert values[:2] == [20, 0]
    assert all(isinstance(v, (int, float)) and v > 0 for v in [values[2], *values[3:]]), values
    assert values[3] <= values[4] <= values[5] <= values[6] <= values[7]
    assert values[8] == result["latency"]["phases"]["end_of_data"]["p99"]


def test_connections_still_busy_at_the_end_say_quit(start_sink, tmp_path):
    """Open loop against a server that takes 0.3 s per message: at the end of the schedule
    messages are still in flight; when each is done its connection is sent QUIT (RFC 5321
    §4.1.1.10) and waited for, not cut, so every connection the run opened ends with a timed QUIT."""
    path = write_scenario(tmp_path, '[[sink.faults]]\non = "end-of-data"\naction = "delay"\ndelay = "300ms"\n')
    sink = start_sink("--scenario", path)
    run = run_load(tmp_path / "out", "--target", sink.address, "--rate", "40", "--duration", "1s")
    final = sink.stop()
    assert_exit(run, 0)
    totals = run.result["totals"]
    assert totals["ok"] == totals["issued"] == final["messages"] == 40
    probe = 1  # start_sink's readiness check connects once
    opened = final["connections_total"] - probe
    assert opened >= 10  # 0.3 s each at 40/s: about 12 busy at a time
    assert run.result["latency"]["phases"]["quit"]["count"] == opened
