"""The generator against failing peers over loopback: a stall under open-loop load, a refused
port, a reset mid-DATA, garbage replies, a silent server and 421s. Each failure is
accounted for (phase, kind, failed count), the run ends on time and the generator
never crashes."""

from __future__ import annotations

import socket

import pytest

from conftest import free_port, require_command
from load_helpers import (PostfixSink, ScriptedServer, assert_accounted, assert_exit, count_at_least, errors_by,
                          failing_scenario, run_load, run_with_sink, write_scenario)

DURATION = 2.0
DRAIN = 1.0
#: Interpreter start-up, the common start delay, writing the result: generous for a noisy 2-core box.
SLACK = 6.0
#: Messages still waiting for a connection when a run ends: queued (open loop), or waiting for one
#: being opened or greeted (labelled with the reply it awaited).
NOT_SENT = {(phase, 0, "not_sent") for phase in ("queue", "connect", "banner", "ehlo")}

FAILING = failing_scenario("failing-peer", DRAIN) + "[thresholds]\nerror_rate = 0.01\n"


def run_failing(tmp_path, target: str, *extra: str):
    scenario = write_scenario(tmp_path, FAILING)
    run = run_load(tmp_path / "out", "--scenario", scenario, "--target", target,
                   "--duration", f"{DURATION:g}s", *extra)
    assert "Traceback" not in run.stderr, run
    assert run.wall <= DURATION + DRAIN + SLACK, run
    assert run.result is not None, run
    assert_exit(run, 1)  # the error-rate threshold fails; the run itself is valid
    assert_accounted(run.result)
    return run


def test_refused_port(tmp_path):
    run = run_failing(tmp_path, f"127.0.0.1:{free_port()}", "--sessions", "2")
    totals = run.result["totals"]
    assert totals["ok"] == 0
    errors = errors_by(run.result)
    assert set(errors) == {("connect", 0, "refused")}
    # The slots keep trying (with a short back-off) for the whole duration.
    assert errors["connect", 0, "refused"] == totals["failed"] >= 4


def test_refused_port_open_loop(tmp_path):
    run = run_failing(tmp_path, f"127.0.0.1:{free_port()}", "--rate", "20")
    totals = run.result["totals"]
    assert totals["ok"] == 0 and totals["failed"] == totals["issued"] >= 20
    assert set(errors_by(run.result)) <= {("connect", 0, "refused")} | NOT_SENT
    assert errors_by(run.result).get(("connect", 0, "refused"), 0) > 0


@pytest.mark.parametrize("model", [("--sessions", "2"), ("--rate", "50")], ids=["closed", "open"])
@pytest.mark.parametrize("mode, phase, kinds", [
    ("reset", "end_of_data", {"reset", "closed"}),   # RST after the 354, with the message on its way
    ("garbage", "ehlo", {"protocol"}),               # banner fine, then lines that are not SMTP replies
])
def test_broken_server(tmp_path, model, mode, phase, kinds):
    with ScriptedServer(free_port(), mode) as server:
        run = run_failing(tmp_path, server.address, *model)
    totals = run.result["totals"]
    assert totals["ok"] == 0
    errors = errors_by(run.result)
    at_fault = {key: n for key, n in errors.items() if key[0] == phase and key not in NOT_SENT}
    assert at_fault and {kind for _, _, kind in at_fault} <= kinds, errors
    assert set(errors) - set(at_fault) <= NOT_SENT, errors
    counted = sum(at_fault.values()) + sum(errors.get(k, 0) for k in NOT_SENT)
    if model[0] == "--sessions":
        assert counted == totals["failed"]
    else:  # open loop: a connection may also fail with no message left waiting for it (an error only)
        assert counted >= totals["failed"]
    # The failure ends the session, not the slot: new connections keep coming for the whole run,
    # after a 50 ms pause each in a closed loop (2 sessions, 2 s: about 80, not thousands).
    assert sum(at_fault.values()) >= 10
    assert server.connections >= 10
    if model[0] == "--sessions":
        assert server.connections <= 2 * DURATION / 0.05 + 10, server.connections


def test_silent_server_times_out(tmp_path):
    with ScriptedServer(free_port(), "silent") as server:
        run = run_failing(tmp_path, server.address, "--sessions", "2")
    errors = errors_by(run.result)
    assert set(errors) == {("banner", 0, "timeout")}, errors
    # 0.5 s banner timeout over a 2 s run: a couple per slot (not one, then silence).
    assert run.result["totals"]["failed"] == errors["banner", 0, "timeout"] >= 4
    assert server.connections >= 4


def test_a_reply_that_never_ends_times_out(tmp_path):
    """The per-phase timeout bounds the wait for the whole reply (RFC 5321 §4.5.3.2), not the
    silence between its octets: a server dribbling an endless reply times out after 0.5 s, it
    does not hold the message until the run's drain ends."""
    with ScriptedServer(free_port(), "dribble") as server:
        run = run_failing(tmp_path, server.address, "--sessions", "2")
    errors = errors_by(run.result)
    assert ("mail", 0, "timeout") in errors, errors
    # 0.5 s per try over a 2 s run: several per session (not one held to the end).
    assert errors["mail", 0, "timeout"] >= 4, errors


@pytest.mark.parametrize("mode, outcome", [
    ("silent", ("banner", 0, "not_sent")),           # connected, waiting for a banner that never comes
    ("hang", ("end_of_data", 0, "unfinished")),      # the message sent, its 250 never comes
])
def test_unanswered_messages_end_with_the_drain(tmp_path, mode, outcome):
    """With the RFC 5321 timeouts (minutes), the run still ends at duration + drain: what is
    still waiting then is counted, not waited for."""
    scenario = write_scenario(tmp_path, f'[load]\ndrain = "{DRAIN:g}s"\n')
    with ScriptedServer(free_port(), mode) as server:
        run = run_load(tmp_path / "out", "--scenario", scenario, "--target", server.address,
                       "--sessions", "3", "--duration", f"{DURATION:g}s")
    assert "Traceback" not in run.stderr, run
    assert run.wall <= DURATION + DRAIN + SLACK, run
    assert_exit(run, 1)  # the run is valid, but no message was accepted: that fails it
    assert [t["metric"] for t in run.result["thresholds"] if not t["passed"]] == ["messages_ok"]
    assert_accounted(run.result)
    assert errors_by(run.result) == {outcome: 3}
    assert run.result["totals"]["failed"] == 3 and run.result["totals"]["ok"] == 0


def test_connects_a_server_never_accepts_are_counted_at_the_end(tmp_path):
    """A listening socket that never accepts (a hung server: its backlog full, further SYNs
    dropped): the slots' connects hang for the connect timeout (minutes). At the drain's end
    each message is counted, the ones whose connect never completed as ``connect/not_sent``."""
    scenario = write_scenario(tmp_path, f'[load]\ndrain = "{DRAIN:g}s"\n')
    port = free_port()
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", port))
        hung.listen(1)
        run = run_load(tmp_path / "out", "--scenario", scenario, "--target", f"127.0.0.1:{port}",
                       "--sessions", "12", "--duration", f"{DURATION:g}s")
    assert "Traceback" not in run.stderr, run
    assert run.wall <= DURATION + DRAIN + SLACK, run
    assert_accounted(run.result)
    errors = errors_by(run.result)
    assert set(errors) <= {("connect", 0, "not_sent"), ("banner", 0, "not_sent")}, errors
    assert errors.get(("connect", 0, "not_sent"), 0) >= 6, errors   # the backlog holds one or two
    assert run.result["totals"]["failed"] == run.result["totals"]["issued"] == 12


def test_421_mid_session_reconnects(tmp_path):
    """smtp-sink -Q RCPT: 421 and disconnect at RCPT. Each message fails at rcpt with 421; the
    generator does not try to go on over the closed session, it reconnects."""
    program = require_command("smtp-sink")
    sink = PostfixSink(program, free_port(), "-Q", "RCPT")
    try:
        run = run_failing(tmp_path, sink.address, "--sessions", "2")
    finally:
        sink.stop()
    errors = errors_by(run.result)
    refused = errors.pop(("rcpt", 421, "reply"))
    assert refused >= 10
    # Reconnecting as fast as it can, the generator may find smtp-sink slow to answer now and
    # then (0.5 s timeouts here): counted as such, and rare.
    assert all(kind == "timeout" for _, _, kind in errors), errors
    assert refused + sum(errors.values()) == run.result["totals"]["failed"]
    assert sum(errors.values()) <= 0.1 * refused


def test_slow_greeting_open_loop_opens_only_the_connections_it_needs(tmp_path):
    """A 0.5 s banner at 10 msgs/s: about five connections cover the load. Arrivals waiting
    while a connection is still being greeted wait for it rather than each opening another."""
    with ScriptedServer(free_port(), greet_after=0.5) as server:
        run = run_load(tmp_path / "out", "--target", server.address, "--rate", "10", "--duration", "2s")
    assert_exit(run, 0)
    assert run.result["totals"]["ok"] == 20
    assert server.connections <= 8
    assert run.result["latency"]["phases"]["banner"]["min"] >= 0.4e6
    assert run.result["latency"]["response"]["max"] >= 0.4e6  # the first arrivals waited for it


def test_stall_shows_in_response_time_not_service_time(tmp_path):
    """Open loop at 200/s for 4 s, at most 10 connections; the server holds every reply for 1 s
    from 1.5 s on. The arrivals intended during the stall wait for a connection: their response
    time (from the intended start) carries the wait, their service time (from the send) does not."""
    rate, duration, stall = 200, 4.0, 1.0
    with ScriptedServer(free_port(), "stall", stall_after=1.5, stall_for=stall) as server:
        run = run_load(tmp_path / "out", "--target", server.address, "--rate", str(rate),
                       "--duration", f"{duration:g}s", "--max-connections", "10")
    assert_exit(run, 0)
    result = run.result
    totals = result["totals"]
    assert totals["failed"] == 0 and totals["ok"] == totals["issued"] == rate * duration
    response, service = result["latency"]["response"], result["latency"]["service"]
    # The stall is in the response time ...
    assert response["max"] >= 0.85e6
    assert response["p99"] >= 0.7e6
    # ... of many messages: about every arrival intended during the stall (~200) waited,
    # and an arrival at the start of it waited ~1 s.
    waited = count_at_least(result["histograms"]["response"], 200_000)
    assert waited >= 100
    # Service time saw it only for the few messages on the wire when it began (<= 10 connections).
    served_slowly = count_at_least(result["histograms"]["service"], 200_000)
    assert served_slowly <= 30
    assert service["p50"] < 100_000
    assert response["max"] > 5 * service["p50"]
    assert service["p90"] < response["p90"]
    # The send lag (intended -> actual send) holds the wait: response = send lag + service.
    assert result["latency"]["send_lag"]["max"] >= 0.5e6


@pytest.mark.parametrize("hide", [(), ("--hide", "CHUNKING")], ids=["bdat", "data"])
def test_every_recipient_refused_counts_each_recipient(start_sink, tmp_path, hide):
    """Three recipients, all refused: each message fails at RCPT (one error entry each) and
    totals.rcpt_failed counts the three refusals of each (it counted none)."""
    scenario = '[[sink.faults]]\non = "RCPT"\naction = "reply"\nreply = "550 5.1.1 No such user"\n'
    result, final = run_with_sink(start_sink, tmp_path, scenario, "--sessions", "2", "--messages", "20",
                                  "--recipients", "3", sink_args=hide)
    t = result["totals"]
    assert (t["ok"], t["failed"], t["rcpt_failed"]) == (0, 20, 60), t
    assert errors_by(result) == {("rcpt", 550, "reply"): 20}
    assert final["messages"] == 0


@pytest.mark.parametrize("action, flags, rset_event", [
    ("close", (), ("rset", 421, "reply")),              # 421 to the RSET, then the server closes
    ("close", ("--no-pipelining",), ("rset", 421, "reply")),
    ("disconnect", (), None),                           # dropped without a word at the RSET
])
def test_a_message_behind_a_dying_rset_fails_at_its_own_mail(start_sink, tmp_path, action, flags, rset_event):
    """Every RCPT refused, every RSET (sent after each failed message, RFC 5321 §4.1.1.5) ends the
    session: the message queued behind the RSET fails at mail, its own first reply, as closed;
    the RSET's 421 is counted as an event, not as that message's reply (it was labelled rset)."""
    scenario = ('[[sink.faults]]\non = "RCPT"\naction = "reply"\nreply = "550 5.1.1 No such user"\n'
                f'[[sink.faults]]\non = "RSET"\naction = "{action}"\n')
    result, _ = run_with_sink(start_sink, tmp_path, scenario, "--sessions", "1", "--messages", "12", *flags)
    t = result["totals"]
    assert (t["ok"], t["failed"]) == (0, 12), t
    expected = {("rcpt", 550, "reply"): 6, ("mail", 0, "closed"): 6}
    if rset_event:
        expected[rset_event] = 6
    assert errors_by(result) == expected
