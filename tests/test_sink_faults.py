"""The sink's faults seen from outside, over loopback: each fault type fires at its configured
rate (a fixed seed, and a stated binomial tolerance) and the generator accounts for every one
where it happened (phase, code, kind); delays, tarpits and bandwidth caps show in the timings;
greylisting passes on retry; rate limits, the capacity model, recipient outcomes by local
part, and fault rules replaced live through ``PUT /faults``.

Timing assertions are one-sided where they can be (a delay makes a phase *at least* so long)
and generous on the other side: the machine is small and shared.
"""

from __future__ import annotations

import json
import math
import smtplib
import socketserver
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

from conftest import free_port
from load_helpers import assert_accounted, errors_by, run_load, run_with_sink, write_scenario
from smtp_helpers import Wire, wait_for

SEED = 7
#: Per-phase client timeouts: far above any fault's delay, far below the test's patience.
TIMEOUTS = """
[load.timeouts]
connect = "3s"
banner = "3s"
command = "3s"
data_init = "3s"
data_end = "3s"
"""


def scenario_text(sink: str = "", load: str = "", message: str = "") -> str:
    """One file for both halves: the sink's ``[sink]`` tables, the generator's ``[load]``."""
    return f"seed = {SEED}\n{sink}\n[load]\n{load}\n{TIMEOUTS}\n[message]\n{message}\n"


def scenario(tmp_path, sink: str = "", load: str = "", message: str = "") -> str:
    return write_scenario(tmp_path, scenario_text(sink, load, message))


def generate(start_sink, tmp_path, sink: str, *flags: str, load: str = "", message: str = "") -> tuple[dict, dict]:
    """The generator against a sink with these ``[sink]`` tables; (result, sink's final stats)."""
    return run_with_sink(start_sink, tmp_path, scenario_text(sink, load, message), *flags)


def binomial_ok(k: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    """``k`` successes in ``n`` trials is within ``sigmas`` standard deviations of Binomial(n, p)."""
    return abs(k - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# -- each fault at its rate, accounted for exactly ---------------------------------------

P = 0.2
N = 1000
CHAINED = 'bdat = "never"\npipeline_messages = true'

RATE_CASES = [
    # rule (without on/probability), stage, extra [load] keys, the generator's (phase, code, kinds)
    pytest.param('reply = "451 4.3.0 Try again later"', "MAIL", "", ("mail", 451, {"reply"}), id="MAIL-reply-451"),
    pytest.param('reply = "550 5.1.1 No such user"', "RCPT", "", ("rcpt", 550, {"reply"}), id="RCPT-reply-550"),
    pytest.param('reply = "452 4.3.1 Out of memory"', "DATA", 'bdat = "never"', ("data", 452, {"reply"}),
                 id="DATA-reply-452"),
    pytest.param('reply = "554 5.7.1 Rejected"', "end-of-data", 'bdat = "never"', ("end_of_data", 554, {"reply"}),
                 id="end-of-data-after-DATA-554"),
    pytest.param('reply = "554 5.7.1 Rejected"', "end-of-data", "", ("bdat", 554, {"reply"}),
                 id="end-of-data-after-BDAT-554"),
    pytest.param('reply = "452 4.3.1 Out of memory"', "BDAT", "", ("bdat", 452, {"reply"}), id="BDAT-reply-452"),
    pytest.param('action = "delay"\ndelay = "2ms"\nreply = "451 4.7.1 Slow down"', "RCPT", "",
                 ("rcpt", 451, {"reply"}), id="RCPT-delay-then-451"),
    pytest.param('action = "tarpit"\nrate = "20KiB"\nreply = "450 4.2.1 Mailbox busy"', "MAIL", "",
                 ("mail", 450, {"reply"}), id="MAIL-tarpit-450"),
    pytest.param('action = "close"', "RCPT", "", ("rcpt", 421, {"reply"}), id="RCPT-close-421"),
    pytest.param('action = "disconnect"', "MAIL", "", ("mail", 0, {"reset", "closed"}), id="MAIL-disconnect"),
    pytest.param('reply = "554 5.7.1 No service for you"', "banner", "", ("banner", 554, {"reply"}),
                 id="banner-554"),
    pytest.param('action = "close"', "connect", "", ("banner", 421, {"reply"}), id="connect-close-421"),
    # The same with each session's next message sent behind the data of the last (RFC 2920 §3.1).
    pytest.param('reply = "451 4.3.0 Try again later"', "MAIL", CHAINED, ("mail", 451, {"reply"}),
                 id="chained-MAIL-reply-451"),
    pytest.param('reply = "554 5.7.1 Rejected"', "end-of-data", CHAINED, ("end_of_data", 554, {"reply"}),
                 id="chained-end-of-data-554"),
    pytest.param('action = "close"', "RCPT", CHAINED, ("rcpt", 421, {"reply"}), id="chained-RCPT-close-421"),
]


@pytest.mark.parametrize("rule, stage, load, expected", RATE_CASES)
def test_fault_rate_and_exact_accounting(start_sink, tmp_path, rule, stage, load, expected):
    """Probability 0.2 over ~1000 trials (seeded): the sink's count is within ±4 sigma of the
    binomial mean, and the generator's errors for that phase and code equal it exactly."""
    sink = f'[[sink.faults]]\non = "{stage}"\nprobability = {P}\n{rule}\n'
    result, final = generate(start_sink, tmp_path, sink, "--messages", str(N),
                             load=f"sessions = 4\nmessages_per_connection = 5\n{load}")
    injected = final["faults_injected"]
    # Trials: one per message for command and end-of-data stages, one per connection at connect.
    trials = final["connections_total"] if stage in ("connect", "banner") else N
    assert trials >= N // 5
    assert binomial_ok(injected, trials, P), (injected, trials)
    phase, code, kinds = expected
    errors = errors_by(result)
    assert {k for k in errors} <= {(phase, code, kind) for kind in kinds}, errors
    assert sum(errors.values()) == injected
    totals = result["totals"]
    assert totals["issued"] == N
    assert totals["failed"] == injected and totals["ok"] == N - injected
    assert final["messages"] == totals["ok"]  # nothing the client saw accepted went missing


@pytest.mark.parametrize("rule, first, chained", [
    ('action = "close"', {("end_of_data", 421, "reply")}, {("mail", 0, "closed")}),
    ('action = "disconnect"', {("end_of_data", 0, "reset"), ("end_of_data", 0, "closed")},
     {("mail", 0, "reset"), ("mail", 0, "closed")}),
], ids=["close-421", "disconnect"])
def test_a_session_ended_at_the_dot_fails_the_chained_message_at_its_own_mail(start_sink, tmp_path, rule, first,
                                                                           chained):
    """With messages chained (RFC 2920 §3.1), the session ends at the first message's end of data:
    that message fails there; the one already sent behind it fails at ``mail``, the reply it was
    waiting for, and not with the other's 421 (it got none). Every message is still accounted."""
    sink = f'[[sink.faults]]\non = "end-of-data"\nprobability = {P}\n{rule}\n'
    result, final = generate(start_sink, tmp_path, sink, "--messages", "400",
                             load=f"sessions = 4\nmessages_per_connection = 5\n{CHAINED}")
    errors = errors_by(result)
    at_dot = sum(n for key, n in errors.items() if key in first)
    behind = sum(n for key, n in errors.items() if key in chained)
    assert at_dot + behind == sum(errors.values()), errors
    assert at_dot == final["faults_injected"] >= 20
    # A chained message is behind every dot but a connection's last (messages_per_connection).
    assert 0.5 * at_dot <= behind <= at_dot, errors
    totals = result["totals"]
    assert totals["issued"] == 400 and totals["failed"] == at_dot + behind
    assert final["messages"] == totals["ok"] == 400 - totals["failed"]


@pytest.mark.parametrize("mpc", [1, 3, 0], ids=["new-connection-each", "every-third", "kept"])
def test_think_time_holds_on_a_new_connection_too(start_sink, tmp_path, mpc):
    """Closed loop with think time: the next message waits it whether it goes on the same
    connection or a new one (it went at once on a new one, with a response time of minus the
    think time). No response time is negative."""
    result, _ = generate(start_sink, tmp_path, "", "--duration", "1.5s",
                         load=f'sessions = 2\nthink_time = "100ms"\nmessages_per_connection = {mpc}')
    assert result["totals"]["ok"] <= 2 * (1.5 / 0.1 + 2), result["totals"]
    assert result["latency"]["response"]["min"] >= 0
    assert result["histograms"]["response"].get("underflow", 0) == 0
    assert result["histograms"]["send_lag"].get("underflow", 0) == 0


def test_the_reconnect_pause_is_not_response_time(start_sink, tmp_path):
    """A session closed at MAIL (421) goes on after the 50 ms reconnect pause, the generator's own
    choice: the next message is intended after it, so neither its response time nor its send lag
    carries the pause (with one message in five after one, their p90 did)."""
    sink = f'[[sink.faults]]\non = "MAIL"\nprobability = 0.2\naction = "close"\n'
    result, final = generate(start_sink, tmp_path, sink, "--duration", "2s", load="sessions = 2")
    assert final["faults_injected"] >= 10
    latency = result["latency"]
    assert latency["send_lag"]["p90"] < 25_000, latency["send_lag"]
    assert latency["response"]["p90"] < 25_000, latency["response"]


def test_the_warmup_stays_out_of_phases_and_refusals(start_sink, tmp_path):
    """The first ten messages (all in a 1 s warm-up) get a 300 ms MAIL reply and their recipient
    refused: the headline keeps them out everywhere, per-phase figures and refused recipients
    included (phases.mail.max was 300 ms and totals.rcpt_failed 10)."""
    sink = ('[[sink.faults]]\non = "MAIL"\naction = "delay"\ndelay = "300ms"\nmatch = "^sender[0-9]@"\n'
            '[[sink.faults]]\non = "RCPT"\nreply = "550 5.1.1 no such user"\nmatch = "^rcpt[0-9]@"\n')
    result, final = generate(start_sink, tmp_path, sink, "--duration", "2.5s", "--warmup", "1s",
                             load="sessions = 4")
    totals = result["totals"]
    assert final["faults_injected"] == 20, final
    assert totals["warmup_failed"] == totals["warmup_rcpt_failed"] == 10, totals
    assert totals["failed"] == totals["rcpt_failed"] == 0, totals
    assert result["latency"]["phases"]["mail"]["max"] < 300_000, result["latency"]["phases"]["mail"]
    # The warm-up's thousands are out (a few messages straddle its end).
    assert result["latency"]["phases"]["mail"]["count"] <= totals["ok"] + 10


def test_a_run_that_ends_inside_its_warmup_keeps_no_phase_figures(start_sink, tmp_path):
    """Every message in the warm-up (20 messages, a 10 s warm-up): per-phase figures hold none of
    them either (the warm-up's end never came to drop them)."""
    result, _ = generate(start_sink, tmp_path, "", "--messages", "20", "--warmup", "10s", load="sessions = 1")
    assert result["totals"]["warmup_ok"] == 20 and result["totals"]["ok"] == 0
    assert all(p["count"] == 0 for p in result["latency"]["phases"].values()), result["latency"]["phases"]


def test_refused_bdat_chunk_is_data_not_commands(start_sink, tmp_path):
    """A fault reply to BDAT: the chunk is still read and discarded (RFC 3030 §2), so a "QUIT"
    inside it is not a command; the reply follows the chunk, and the transaction is over (the
    next chunk in the pipeline gets 503)."""
    server = start_sink("--scenario", scenario(tmp_path, '[[sink.faults]]\non = "BDAT"\nreply = "452 4.3.1 No room"\n'))
    body = b"Subject: smuggled\r\n\r\nQUIT\r\nRSET\r\n"
    with Wire((server.host, server.port)) as w:
        assert w.code() == 220 and w.command(b"EHLO smuggler.test") == 250
        w.send(b"MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.net>\r\nBDAT %d\r\n%sBDAT 4 LAST\r\nabcd"
               % (len(body), body))
        assert [w.code() for _ in range(4)] == [250, 250, 452, 503]
        assert w.command(b"NOOP") == 250  # still open: the "QUIT" was data
    final = server.stop()
    assert final["messages"] == 0 and "221" not in final["replies"]


# -- delays, tarpits, bandwidth --------------------------------------------------------

@pytest.mark.parametrize("delay, low, high", [
    ('"40ms"', 0.040, 0.040),
    ('{ uniform = ["20ms", "60ms"] }', 0.020, 0.060),
], ids=["fixed", "uniform"])
def test_delay_shows_in_that_phase(start_sink, tmp_path, delay, low, high):
    """A delayed RCPT reply: the rcpt phase takes at least the delay; the other phases do not."""
    sink = f'[[sink.faults]]\non = "RCPT"\naction = "delay"\ndelay = {delay}\n'
    result, final = generate(start_sink, tmp_path, sink, "--messages", "120", load="sessions = 6\npipelining = false")
    assert result["totals"]["ok"] == 120 and final["faults_injected"] == 120
    phases = result["latency"]["phases"]
    rcpt = phases["rcpt"]
    assert rcpt["count"] == 120
    assert rcpt["min"] >= low * 1e6 - 2500          # never early (but timers count from the loop's cached time)
    assert rcpt["p50"] <= high * 1e6 + 100_000      # and not much later than asked, most of the time
    if low != high:  # spread over the range, not stuck at one end
        assert rcpt["p90"] - rcpt["p50"] >= (high - low) * 1e6 * 0.1
    assert phases["mail"]["p50"] < low * 1e6


def test_tarpit_reply_takes_its_length_over_the_rate(start_sink, tmp_path):
    """A tarpitted EHLO reply trickles at ``rate`` octets/s: it takes len/rate, for a raw client
    and in the generator's ehlo phase."""
    rate = 1000
    path = scenario(tmp_path, f'[[sink.faults]]\non = "EHLO"\naction = "tarpit"\nrate = {rate}\n',
                    "sessions = 2\nmessages_per_connection = 1")
    server = start_sink("--scenario", path)
    with Wire((server.host, server.port)) as w:
        assert w.code() == 220
        started = time.monotonic()
        w.send(b"EHLO tarpit.test\r\n")
        code, lines = w.reply()
        took = time.monotonic() - started
        assert code == 250 and w.command(b"NOOP") == 250  # the session goes on normally
    length = sum(len(line) + 2 for line in lines)
    assert length / rate - 0.002 <= took <= length / rate + 1.0, (length, took)
    run = run_load(tmp_path / "out", "--scenario", path, "--target", server.address, "--messages", "4")
    final = server.stop()
    assert run.result["totals"]["ok"] == 4, run
    assert final["faults_injected"] == 5
    ehlo = run.result["latency"]["phases"]["ehlo"]
    assert ehlo["count"] == 4 and ehlo["min"] >= (length / rate - 0.002) * 1e6


def test_bandwidth_cap_bounds_big_message_throughput(start_sink, tmp_path):
    """A connection read at 1 MiB/s: 2 MiB of 256 KiB messages over one session take about 2 s,
    so the generator's throughput is at most the cap (plus one read of slack)."""
    rate = 1024 * 1024
    sink = '[[sink.faults]]\non = "connect"\naction = "bandwidth"\nrate = "1MiB"\n'
    result, final = generate(start_sink, tmp_path, sink, "--messages", "8", load="sessions = 1",
                             message='size = "256KiB"')
    totals = result["totals"]
    # One connection for the generator (and the fixture's probe, which also met the rule).
    assert totals["ok"] == 8 and final["faults_injected"] == final["connections_total"]
    achieved = totals["bytes"] / totals["measured_seconds"]
    assert totals["bytes"] >= 8 * 250 * 1024
    assert 0.4 * rate <= achieved <= 1.15 * rate, achieved


# -- greylisting ---------------------------------------------------------------------------

GREYLIST = '[sink.greylist]\nretry_after = "0.2s"\n'


def test_greylisting_passes_on_retry_in_the_generator(start_sink, tmp_path):
    """Every first try is deferred (451 at RCPT); with retries the second try passes: all OK,
    one deferral and one retry per message, each one a greylist hit at the sink."""
    result, final = generate(start_sink, tmp_path, GREYLIST, "--messages", "30",
                             load='sessions = 10\nretries = 2\nretry_schedule = ["0.3s"]')
    totals = result["totals"]
    assert totals["ok"] == 30 and totals["failed"] == 0
    assert errors_by(result) == {("rcpt", 451, "deferred"): 30}
    assert totals["retries"] == 30 == final["faults_injected"]
    assert final["messages"] == 30


def test_greylisting_with_smtplib(start_sink, tmp_path):
    server = start_sink("--scenario", scenario(tmp_path, GREYLIST))
    with smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.ehlo()
        for attempt in range(2):  # the first try, and one again too soon
            assert client.mail("a@example.org")[0] == 250
            code, text = client.rcpt("b@example.net")
            assert code == 451 and b"Greylisted" in text, attempt
            client.rset()
        time.sleep(0.25)
        assert client.mail("a@example.org")[0] == 250
        assert client.rcpt("b@example.net")[0] == 250
        assert client.data(b"Subject: grey\r\n\r\npassed\r\n")[0] == 250
        # Another triple starts its own wait.
        client.rset()
        client.mail("a@example.org")
        assert client.rcpt("c@example.net")[0] == 451
    final = server.stop()
    assert final["faults_injected"] == 3 and final["messages"] == 1


# -- rate limits ---------------------------------------------------------------------------

def test_message_rate_limit(start_sink, tmp_path):
    """Offered 150 msgs/s against a 50 msgs/s limit (token bucket, 1 s burst): about 50/s pass,
    the rest get 451 at MAIL, and the generator counts exactly the refusals the sink made."""
    limit = 50
    sink = f"[sink.rate_limit]\nmessages_per_second = {limit}\n"
    # Without pipelining a refused MAIL is not followed by RCPT and BDAT (and their 503s, which
    # would count towards the sink's error limit: 20 refusals in a row on a connection end it).
    result, final = generate(start_sink, tmp_path, sink, "--rate", "150", "--duration", "2s",
                             load="max_connections = 4\npipelining = false")
    totals = result["totals"]
    seconds = totals["duration_us"] / 1e6
    assert 0.8 * limit * 2 <= totals["ok"] <= limit * (seconds + 1) + 5, (totals, seconds)
    assert errors_by(result) == {("mail", 451, "reply"): final["faults_injected"]}
    assert totals["failed"] == final["faults_injected"] >= 100
    assert final["messages"] == totals["ok"]


def test_connections_per_client_limit(start_sink, tmp_path):
    """connections_per_client = 2: two connections from one address are served, the third gets
    421 and is closed; when one of the two goes, a new one is served again."""
    server = start_sink("--scenario", scenario(tmp_path, "[sink.rate_limit]\nconnections_per_client = 2\n"))
    address = (server.host, server.port)

    def served() -> Wire | None:
        w = Wire(address)
        if w.code() == 220:
            return w
        w.close()
        return None

    # Retried: the fixture's probe connection may not have been seen closing yet.
    first = wait_for(served, timeout=5)
    second = wait_for(served, timeout=5)
    assert first and second
    with Wire(address) as third:
        code, lines = third.reply()
        assert code == 421 and b"Too many connections" in lines[0]
        third.expect_close()
    assert first.command(b"QUIT") == 221
    first.close()
    fourth = wait_for(served, timeout=5)  # the slot frees when the sink sees the close
    assert fourth and fourth.command(b"NOOP") == 250
    fourth.close()
    second.close()
    assert server.stop()["faults_injected"] >= 1


# -- recipient outcomes ----------------------------------------------------------------------

def test_recipient_outcomes_by_local_part(sink):
    with smtplib.SMTP(sink.host, sink.port, timeout=10) as client:
        refused = client.sendmail("a@example.org", ["ok@example.net", "tempfail+x@example.net",
                                                    "Reject+y@example.net"], b"Subject: mix\r\n\r\nbody\r\n")
        assert {rcpt: code for rcpt, (code, _) in refused.items()} == {
            "tempfail+x@example.net": 451, "Reject+y@example.net": 550}
        client.mail("a@example.org")
        with pytest.raises(smtplib.SMTPServerDisconnected):
            client.rcpt("disconnect+z@example.net")
    final = sink.stop()
    assert final["faults_injected"] == 3
    assert (final["messages"], final["recipients"]) == (1, 1)


def test_recipient_outcomes_accounted_by_the_generator(start_sink, tmp_path):
    result, final = generate(start_sink, tmp_path, "", "--messages", "40", load="sessions = 4",
                             message='recipient = "tempfail+{n}@example.net"')
    assert result["totals"]["ok"] == 0
    assert errors_by(result) == {("rcpt", 451, "reply"): 40} and final["faults_injected"] == 40


# -- live changes ------------------------------------------------------------------------------

def put_faults(stats_port: int, rules: list[dict]) -> list[dict]:
    request = urllib.request.Request(f"http://127.0.0.1:{stats_port}/faults", data=json.dumps(rules).encode(),
                                     method="PUT", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        assert response.status == 200
        return json.loads(response.read())


def get_stats(stats_port: int) -> dict:
    """The sink's /stats, or {} while its HTTP listener is not up yet (start_sink waits for the
    SMTP port only, so a poll right after it may find the stats port still closed)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stats_port}/stats", timeout=5) as response:
            return json.loads(response.read())
    except urllib.error.URLError as e:
        if isinstance(e, urllib.error.HTTPError):
            raise
        return {}


def test_put_faults_changes_behaviour_mid_run(start_sink, tmp_path):
    """An open-loop run at 100/s for 3 s; once 50 messages are in, every RCPT is refused (550);
    once 50 refusals are in, the rules are cleared. The generator sees OK, then 550s, then OK."""
    stats_port = free_port()
    path = scenario(tmp_path, load="rate = 100")
    server = start_sink("--scenario", path, "--stats-listen", f"127.0.0.1:{stats_port}")
    gen = subprocess.Popen([sys.executable, "-m", "smtpbench", "run", "--scenario", path, "--target", server.address,
                            "--rate", "100", "--duration", "3s", "--out", str(tmp_path / "out")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert wait_for(lambda: get_stats(stats_port).get("messages", 0) >= 50, timeout=15)
        reject = [{"on": "RCPT", "reply": "550 5.7.1 Changed my mind"}]
        assert put_faults(stats_port, reject)[0]["reply"] == reject[0]["reply"]
        assert wait_for(lambda: get_stats(stats_port).get("faults_injected", 0) >= 50, timeout=10)
        assert put_faults(stats_port, []) == []
        out, err = gen.communicate(timeout=30)
    finally:
        if gen.poll() is None:
            gen.kill()
            gen.communicate()
    assert "Traceback" not in err, err
    final = server.stop()
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert_accounted(result)
    injected = final["faults_injected"]
    assert errors_by(result) == {("rcpt", 550, "reply"): injected} and injected >= 50
    (errors,) = result["errors"]
    assert errors["first_s"] >= 0.4  # nothing refused before the change (50 messages at 100/s)
    series = result["timeseries"]
    last = max(i for i, n in enumerate(series["sent"]) if n)
    assert series["failed"][last] == 0 and series["ok"][last] > 0  # and nothing after it was undone
    assert final["messages"] == result["totals"]["ok"] >= 100


def test_put_faults_rejects_bad_rules(start_sink, tmp_path):
    stats_port = free_port()
    start_sink("--stats-listen", f"127.0.0.1:{stats_port}")
    assert wait_for(lambda: get_stats(stats_port), timeout=10), "the stats listener never came up"
    with pytest.raises(urllib.error.HTTPError) as caught:
        put_faults(stats_port, [{"on": "RCPT", "action": "reply"}])  # a reply rule without a reply
    assert caught.value.code == 400


def put_faults_raw(stats_port: int, body: bytes) -> tuple[int, str, str]:
    """PUT ``body`` as it is to /faults: (status, content type, text), errors included."""
    request = urllib.request.Request(f"http://127.0.0.1:{stats_port}/faults", data=body, method="PUT",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def rcpt_code(host: str, port: int, rcpt: str) -> int:
    """The sink's reply to RCPT TO:<rcpt> on a fresh connection."""
    with smtplib.SMTP(host, port, timeout=10) as client:
        client.ehlo()
        assert client.mail("a@example.org")[0] == 250
        return client.rcpt(rcpt)[0]


BLOCK = {"on": "RCPT", "match": "^blocked@", "reply": "550 5.7.1 Blocked here"}
#: (body, what its one-line 400 says after "PUT /faults: ")
BAD_FAULT_BODIES = [
    ([{**BLOCK, "bogus": 1}],
     "unknown key 'faults.0.bogus'; allowed here: on, action, probability, match, reply, delay, rate"),
    ([BLOCK, {"on": "RCPT", "reply": "650 6.0.0 out of range"}],
     "key 'faults.1.reply': expected an SMTP reply such as '451 4.7.1 try again later', got '650 6.0.0 out of range'"),
    ([{**BLOCK, "on": "SEND"}], "key 'faults.0.on': Input should be 'connect', 'banner', 'EHLO'"),
    ([{**BLOCK, "probability": 2}], "key 'faults.0.probability': Input should be less than or equal to 1 (got 2)"),
    ([{"on": "RCPT", "action": "reply"}], "key 'faults.0': action 'reply' needs reply"),
    ([{"on": "RCPT", "action": "delay", "delay": {"exponential": {"mean": 0}}}],
     "key 'faults.0.delay': exponential needs exactly 'mean', more than 0"),
    (BLOCK, "key 'faults': Input should be a valid array"),
    (b'[{"on": "RCPT",', "not valid JSON: "),
    (b"", "the body is empty; expected a JSON list of rules ([] clears them)"),  # it used to clear them
]


@pytest.mark.parametrize("workers", ["1", "2"])
def test_put_faults_bad_body_gets_one_line_and_changes_nothing(start_sink, workers):
    """A bad PUT /faults gets 400 and one line in the scenario errors' words (the key path, what is
    wrong, what is allowed); the rules in force stay, the sink goes on serving; a good PUT still
    answers 200 with the rules as the sink now holds them."""
    stats_port = free_port()
    server = start_sink("--stats-listen", f"127.0.0.1:{stats_port}", "--workers", workers)
    assert wait_for(lambda: get_stats(stats_port), timeout=10), "the stats listener never came up"
    status, ctype, text = put_faults_raw(stats_port, json.dumps([BLOCK]).encode())
    assert (status, ctype) == (200, "application/json")
    assert json.loads(text) == [{"on": "RCPT", "action": "reply", "probability": 1.0, "match": "^blocked@",
                                 "reply": "550 5.7.1 Blocked here", "delay": 0.0, "rate": 0}]
    # With workers the parent forwards the rules to each; every fresh connection must see them.
    assert wait_for(lambda: all(rcpt_code(server.host, server.port, "blocked@example.net") == 550
                                for _ in range(6)), timeout=10)
    for body, says in BAD_FAULT_BODIES:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        status, ctype, text = put_faults_raw(stats_port, raw)
        assert (status, ctype) == (400, "text/plain"), (raw, status, text)
        assert text.endswith("\n") and text.count("\n") == 1, (raw, text)
        assert text.startswith("PUT /faults: " + says), (raw, text)
        assert "pydantic" not in text and "validation error" not in text, (raw, text)
    # Nothing changed: the rule still fires on every connection, others still pass.
    for _ in range(6):
        assert rcpt_code(server.host, server.port, "blocked@example.net") == 550
        assert rcpt_code(server.host, server.port, "fine@example.net") == 250
    # And so does the HTTP endpoint (workers report their counters every 250 ms).
    assert wait_for(lambda: get_stats(stats_port)["connections_total"] >= 12, timeout=10)
    final = server.stop()
    assert server.proc.returncode == 0, server.output
    assert final["faults_injected"] >= 12 and final["replies"]["550"] == final["faults_injected"]


# -- the capacity model ------------------------------------------------------------------------

def test_capacity_model_throughput(start_sink, tmp_path):
    """4 workers x 20 ms per message serve 200 msgs/s; a closed loop of 32 sessions (many more
    than the concurrency, so the queue never empties, even when a busy machine delays a reply)
    gets that within 10% every second, and by Little's law each message waits about
    sessions / capacity."""
    concurrency, service, sessions = 4, 0.020, 32
    capacity = concurrency / service
    sink = f'[sink.capacity]\nservice_time = "{service * 1000:g}ms"\nconcurrency = {concurrency}\n'
    result, final = generate(start_sink, tmp_path, sink, "--duration", "3s", load=f"sessions = {sessions}")
    totals = result["totals"]
    assert totals["failed"] == 0
    # Completions per second in the whole seconds after the first (the queue is full by then).
    series = result["timeseries"]
    steady = [ok for t, ok in zip(series["t"], series["ok"]) if 1 <= t < 3]
    assert len(steady) == 2
    for per_second in steady:
        assert abs(per_second - capacity) <= 0.10 * capacity, (steady, capacity)
    eod = result["latency"]["phases"]["bdat"]
    assert eod["p50"] >= 0.8 * sessions / capacity * 1e6
    assert final["messages"] == totals["ok"]


# -- a peer that answers too much ------------------------------------------------------------

class _Chatty(socketserver.StreamRequestHandler):
    """Answers every message twice ("250 ok" and one more 250, in one write)."""

    def handle(self) -> None:
        w = self.wfile
        w.write(b"220 chatty.test\r\n")
        while line := self.rfile.readline():
            verb = line[:4].upper()
            if verb == b"EHLO":
                w.write(b"250-chatty.test\r\n250 SIZE 1000000\r\n")
            elif verb == b"DATA":
                w.write(b"354 go ahead\r\n")
                while self.rfile.readline() not in (b".\r\n", b""):
                    pass
                w.write(b"250 ok\r\n250 and once more\r\n")
            elif verb == b"QUIT":
                w.write(b"221 bye\r\n")
                return
            else:
                w.write(b"250 ok\r\n")


@pytest.mark.parametrize("model", [("--sessions", "2"), ("--rate", "100")], ids=["closed", "open"])
def test_generator_survives_a_reply_too_many(tmp_path, model):
    """The extra reply arrives in the same read as the one that ends the message: the message is
    OK, the extra reply is an error of its own, and the slot goes on with a new connection (it
    used to start the next message on the ended session and die with an exception)."""
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    with socketserver.ThreadingTCPServer(("127.0.0.1", free_port()), _Chatty) as server:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            run = run_load(tmp_path / "out", "--target", f"127.0.0.1:{server.server_address[1]}",
                           "--messages", "20", *model)
        finally:
            server.shutdown()
    assert "Traceback" not in run.stderr, run
    assert_accounted(run.result)
    assert run.result["totals"]["ok"] == 20
    assert errors_by(run.result) == {("unsolicited", 250, "reply"): 20}


def test_policy_asks_for_what_it_needs_and_follows_live_rules():
    """What a connection must do at accept time and which commands reach the hooks follow the
    rules, live ones too; without greylisting one set of hooks serves every connection."""
    from smtpbench.faultspec import Fault, Greylist
    from smtpbench.scenario import Sink
    from smtpbench.sink.server import SinkServer

    server = SinkServer(Sink())
    policy = server.policy
    stages = policy.command_stages
    assert stages == {"RCPT"} and not policy.on_accept and not policy.needs_client
    assert server.fault_hooks("192.0.2.1") is server.fault_hooks("192.0.2.2")
    server.set_faults([Fault(on="MAIL", reply="451 4.3.0 later"), Fault(on="connect", action="disconnect")])
    assert policy.command_stages is stages and stages == {"RCPT", "MAIL", "connect"}
    assert policy.on_accept and policy.needs_client and not policy.counts_clients
    grey = SinkServer(Sink(greylist=Greylist(enabled=True)))
    assert grey.policy.needs_client and grey.fault_hooks("192.0.2.1").client == "192.0.2.1"
