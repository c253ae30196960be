"""The generator against other servers over loopback: aiosmtpd and Postfix's smtp-sink.

What they received equals what the generator counted as OK; smtp-sink's soft rejects
(``-r``) show up as failures with the right phase and 4xx code; its DATA delay (``-w``)
shows up in the DATA phase and in the response time.

smtp-sink counts with ``-c``: a ``sess=N quit=N mesg=N`` line each time "." is received
or a session ends, so the last ``mesg=`` after it stops is the number of messages it took.
"""

from __future__ import annotations

import pytest

from conftest import free_port, require_command
from load_helpers import AiosmtpdSink, PostfixSink, assert_accounted, assert_exit, errors_by, run_load


@pytest.fixture
def postfix_sink():
    """Factory: ``postfix_sink(*flags)`` starts smtp-sink on a free port; stopped at the end."""
    program = require_command("smtp-sink")
    started: list[PostfixSink] = []

    def start(*flags: str) -> PostfixSink:
        sink = PostfixSink(program, free_port(), *flags)
        started.append(sink)
        sink.wait_ready()
        return sink

    yield start
    for sink in started:
        sink.stop()


def run_ok(tmp_path, target: str, *args: str):
    run = run_load(tmp_path / "out", "--target", target, *args)
    assert "Traceback" not in run.stderr, run
    assert run.result is not None, run
    assert_accounted(run.result)
    return run


@pytest.mark.parametrize("args", [(), ("--no-pipelining",), ("--messages-per-connection", "1"),
                                  ("--pipeline-messages",)],
                         ids=["pipelined", "no-pipelining", "connection-per-message", "chained"])
def test_smtp_sink_counts_equal(postfix_sink, tmp_path, args):
    sink = postfix_sink()
    run = run_ok(tmp_path, sink.address, "--sessions", "5", "--messages", "300", *args)
    assert_exit(run, 0)
    received = sink.stop()
    totals = run.result["totals"]
    assert totals["ok"] == 300 and totals["failed"] == 0
    assert received == totals["ok"], sink.output[-300:]


def test_aiosmtpd_counts_equal(tmp_path):
    with AiosmtpdSink(free_port()) as server:
        run = run_ok(tmp_path, server.address, "--sessions", "3", "--messages", "100")
    assert_exit(run, 0)
    totals = run.result["totals"]
    assert totals["ok"] == 100 and totals["failed"] == 0
    assert server.messages == totals["ok"]


def test_aiosmtpd_open_loop_counts_equal(tmp_path):
    with AiosmtpdSink(free_port()) as server:
        run = run_ok(tmp_path, server.address, "--rate", "50", "--duration", "2s")
    assert_exit(run, 0)
    totals = run.result["totals"]
    assert totals["ok"] == totals["issued"] == 100
    assert server.messages == totals["ok"]


@pytest.mark.parametrize("command, phase", [("RCPT", "rcpt"), ("MAIL", "mail"), (".", "end_of_data")])
def test_smtp_sink_soft_rejects(postfix_sink, tmp_path, command, phase):
    """``-r CMD``: every CMD gets "450 4.3.0 Error: command failed" (and PIPELINING is not offered)."""
    sink = postfix_sink("-r", command)
    run = run_ok(tmp_path, sink.address, "--sessions", "3", "--messages", "60")
    assert_exit(run, 1)  # the run is valid, but nothing was accepted: that fails it
    received = sink.stop()
    totals = run.result["totals"]
    assert totals["ok"] == 0
    assert totals["failed"] == totals["issued"] == 60
    assert errors_by(run.result) == {(phase, 450, "reply"): 60}
    assert run.result["errors"][0]["example"].startswith("4.3.0")
    assert totals["error_rate"] == 1.0
    assert sum(run.result["timeseries"]["errors_4xx"]) == 60
    if phase == "end_of_data":
        assert received == 60  # smtp-sink counts the "." it refused; nothing the generator called OK
    # Refused messages stay out of the success latency.
    assert run.result["latency"]["response"]["count"] == 0


def test_smtp_sink_soft_reject_rcpt_with_thresholds(postfix_sink, tmp_path):
    scenario = tmp_path / "s.toml"
    scenario.write_text('[thresholds]\nerror_rate = 0.5\n')
    sink = postfix_sink("-r", "RCPT")
    run = run_ok(tmp_path, sink.address, "--scenario", str(scenario), "--sessions", "2", "--messages", "20")
    assert_exit(run, 1)
    assert run.result["thresholds"][0] == {"metric": "error_rate", "op": "<=", "limit": 0.5, "observed": 1.0,
                                           "shown": "100.0000%", "passed": False}
    assert run.result["thresholds"][1]["metric"] == "messages_ok"  # implicit: nothing was accepted


@pytest.mark.parametrize("pipelining", [False, True], ids=["no-pipelining", "pipelined"])
def test_smtp_sink_data_delay(postfix_sink, tmp_path, pipelining):
    """``-w 1``: smtp-sink waits 1 s before answering DATA. Every message's response time
    carries that second, and so does the DATA phase; the end-of-data reply does not.

    Pipelined, MAIL, RCPT and DATA go out together and smtp-sink answers them together
    (it replies once its input dries up), so the second lands on the first reply of the
    batch: what the wire shows. The phases of the batch add up to it."""
    sink = postfix_sink("-w", "1")
    run = run_ok(tmp_path, sink.address, "--sessions", "3", "--messages", "6",
                 *(() if pipelining else ("--no-pipelining",)))
    assert_exit(run, 0)
    assert sink.stop() == 6
    result = run.result
    assert result["totals"]["ok"] == 6
    phases = result["latency"]["phases"]
    for name in ("mail", "rcpt", "data", "end_of_data"):
        assert phases[name]["count"] == 6, name
    if pipelining:
        batch = [phases[name] for name in ("mail", "rcpt", "data")]
        assert max(p["min"] for p in batch) >= 0.9e6
        assert sum(p["max"] for p in batch) <= 3 * 3e6
    else:
        assert 0.9e6 <= phases["data"]["min"] and phases["data"]["max"] <= 3e6
        assert phases["mail"]["p50"] < 0.5e6 and phases["rcpt"]["p50"] < 0.5e6
    assert phases["end_of_data"]["p50"] < 0.5e6
    response = result["latency"]["response"]
    assert 0.9e6 <= response["min"] and response["p50"] <= 3e6
    assert result["latency"]["service"]["min"] >= 0.9e6
