"""The scenario library: every file in ``scenarios/`` validates, and ``smtpbench scenarios`` lists them all."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from smtpbench.scenario import build

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted((ROOT / "scenarios").glob("*.toml"))


def smtpbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "smtpbench", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_the_library_is_there():
    names = {f.stem for f in FILES}
    assert {"quickstart", "max-throughput", "latency-at-rate", "big-messages", "many-recipients",
            "capacity-sweep"} <= names


@pytest.mark.parametrize("path", FILES, ids=[f.stem for f in FILES])
def test_scenario_validates(path):
    proc = smtpbench("validate", str(path.relative_to(ROOT)))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{path.relative_to(ROOT)}: ok — ") and not proc.stderr


def test_scenarios_lists_every_file_with_its_description():
    proc = smtpbench("scenarios")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == len(FILES)
    for path, line in zip(FILES, lines):
        assert line.startswith(f"scenarios/{path.name}") and "INVALID" not in line, line
        assert len(line.split(maxsplit=1)) == 2, f"{path.name} has no description"


# -- broken scenario files: "names the file, key and allowed values, and exits 2 without a traceback" --

FAULT_DELAY = '[[sink.faults]]\non = "RCPT"\naction = "delay"\ndelay = '

#: (id, file content, the key the error names, words it must say). Content that is bytes is written as it is.
BAD_FILES = [
    # A file that is not UTF-8 is not TOML (TOML 1.0 §2): no UnicodeDecodeError.
    ("utf16-bom", b'\xff\xfename = "x"\n', None, "not valid TOML (not UTF-8"),
    ("latin1", 'name = "\u00e9"\n'.encode("latin-1"), None, "not valid TOML (not UTF-8"),
    # TOML has inf and nan; no amount, rate, limit or weight is either.
    ("duration-nan", "[load]\nduration = nan", "load.duration", "must be a finite number; expected a duration"),
    ("duration-inf", "[load]\nduration = inf", "load.duration", "must be a finite number; expected a duration"),
    ("warmup-nan", "[load]\nwarmup = nan", "load.warmup", "must be a finite number; expected a duration"),
    ("size-inf", "[message]\nsize = inf", "message.size", "must be a finite number; expected a size"),
    ("size-nan", "[message]\nsize = nan", "message.size", "must be a finite number; expected a size"),
    ("rate-inf", '[load]\nmodel = "open"\nrate = inf', "load.rate", "finite number"),
    ("stage-rate-inf", '[load]\nmodel = "open"\n[[load.stages]]\nduration = "1s"\nrate = inf',
     "load.stages.0.rate", "finite number"),
    ("p99-nan", '[thresholds]\n"response.p99" = nan', "thresholds", "must be a finite number; expected a duration"),
    ("min-throughput-nan", "[thresholds]\nmin_throughput = nan", "thresholds", "finite number of msgs/s"),
    ("min-throughput-inf", "[thresholds]\nmin_throughput = inf", "thresholds", "finite number of msgs/s"),
    ("messages-per-second-nan", "[sink.rate_limit]\nmessages_per_second = nan",
     "sink.rate_limit.messages_per_second", "finite number"),
    ("sweep-nan", '[sweep]\nparameter = "load.rate"\nvalues = [10, nan]', "sweep.values.1", "finite number"),
    # A weight that is not finite hung the run (the draw never lands).
    ("weight-nan", "[message]\nsize = { choices = [[100, nan], [200, 1]] }", "message.size.choices.0.1",
     "finite number"),
    ("weight-inf", "[message]\nsize = { choices = [[100, inf], [200, 1]] }", "message.size.choices.0.1",
     "finite number"),
    # A value of the wrong type is a mistake in the file, not an AttributeError.
    ("capture-int", "[sink]\ncapture = 1", "sink.capture", "expected 'none', 'maildir:DIR' or 'mbox:FILE'"),
    ("reply-int", "[sink.greylist]\nreply = 451", "sink.greylist.reply", "expected an SMTP reply in quotes"),
    # [thresholds.response] p99 = ... is a table in TOML, not the threshold "response.p99".
    ("threshold-table", '[thresholds.response]\np99 = "50ms"', "thresholds", '"response.p99" = "50ms"'),
    # The name makes the run id and the results/<run-id> folder: one short, safe, ASCII file name.
    ("name-non-ascii", 'name = "t\u00ebst"', "name", "1-64 ASCII letters, digits"),
    ("name-long", f'name = "{"x" * 300}"', "name", "1-64 ASCII letters, digits"),
    ("name-path", 'name = "../escaped"', "name", "1-64 ASCII letters, digits"),
    ("name-empty", 'name = ""', "name", "1-64 ASCII letters, digits"),
    # eml_dir is read when the generator starts (in each process): check it before any socket opens.
    ("eml-dir-missing", '[message]\neml_dir = "no/such/folder"', "message.eml_dir",
     "no such folder 'no/such/folder'; expected a folder of .eml files"),
    ("eml-dir-empty", '[message]\neml_dir = "tests"', "message.eml_dir",
     "no .eml files in 'tests'; expected a folder of .eml files"),
    # Delays drawn per use: a mean or median of 0 divided by zero in the sink, p99 < median was clamped.
    ("delay-exp-0", FAULT_DELAY + "{ exponential = { mean = 0 } }", "sink.faults.0.delay",
     "exponential needs exactly 'mean', more than 0"),
    ("delay-logn-0", FAULT_DELAY + '{ lognormal = { median = 0, p99 = "10ms" } }', "sink.faults.0.delay",
     "lognormal needs 0 < median <= p99"),
    ("delay-logn-order", FAULT_DELAY + '{ lognormal = { median = "20ms", p99 = "10ms" } }', "sink.faults.0.delay",
     "lognormal needs 0 < median <= p99"),
    ("delay-uniform-order", FAULT_DELAY + '{ uniform = ["2s", "1s"] }', "sink.faults.0.delay", "needs min <= max"),
    ("service-exp-0", "[sink.capacity]\nservice_time = { exponential = { mean = 0 } }", "sink.capacity.service_time",
     "exponential needs exactly 'mean', more than 0"),
    # A mistake inside a delay table is reported as that table's, not as "expected a duration".
    ("delay-extra", FAULT_DELAY + '{ exponential = { mean = "10ms", x = 1 } }', "sink.faults.0.delay",
     "exponential needs exactly 'mean'"),
    ("delay-one-bound", FAULT_DELAY + '{ uniform = ["1s"] }', "sink.faults.0.delay.uniform",
     "uniform = [min, max] takes two values, got 1"),
    ("delay-empty", FAULT_DELAY + "{}", "sink.faults.0.delay", "give exactly one of uniform = [min, max], lognormal"),
    ("delay-unknown", FAULT_DELAY + "{ normal = { mean = 1 } }", None,
     "unknown key 'sink.faults.0.delay.normal'; allowed here: uniform, lognormal, exponential"),
    ("service-unknown", "[sink.capacity]\nservice_time = { normal = 1 }", None,
     "unknown key 'sink.capacity.service_time.normal'; allowed here: uniform, lognormal, exponential"),
    # A string or number where true/false goes was read as a bool ("no" as false, 1 as true), silently.
    ("bool-string", '[sink]\ncheck_line_length = "yes"', "sink", "check_line_length must be true or false, not 'yes'"),
    ("bool-number", "[load]\npipelining = 0", "load", "pipelining must be true or false, not 0"),
    ("bool-stage", '[load]\nmodel = "open"\n[[load.stages]]\nduration = "1s"\nrate = 5\nramp = "yes"', "load.stages.0",
     "ramp must be true or false"),
    # An idle timeout of 0 closed every connection 50-100 ms after its last command: not "no timeout".
    ("idle-timeout-0", "[sink]\nidle_timeout = 0", "sink.idle_timeout", "greater than 0"),
    # Replies the sink sends: "" crashed it at use (only a fault rule's reply may be "", for none).
    ("greylist-reply-empty", '[sink.greylist]\nreply = ""', "sink.greylist.reply",
     "expected an SMTP reply such as '451 4.7.1 try again later', got '' (leave the key out for the default)"),
    ("rate-limit-reply-empty", '[sink.rate_limit]\nreply = ""', "sink.rate_limit.reply", "got '' (leave the key out"),
    ("connection-reply-empty", '[sink.rate_limit]\nconnection_reply = ""', "sink.rate_limit.connection_reply",
     "got '' (leave the key out"),
    ("reply-crlf", '[[sink.faults]]\non = "RCPT"\nreply = "451 a\\r\\n250 b"', "sink.faults.0.reply",
     "expected an SMTP reply such as"),
    # EHLO's argument and the sink's greeting name: a Domain or address literal (RFC 5321 §4.1.2), one token.
    ("helo-crlf", '[load]\nhelo = "a\\r\\nMAIL FROM:<x@y>"', "load.helo", "expected a domain such as 'mail.example'"),
    ("helo-empty", '[load]\nhelo = ""', "load.helo", "or an address literal such as '[127.0.0.1]'"),
    ("helo-space", '[load]\nhelo = "my client"', "load.helo", "no spaces"),
    ("helo-bad-literal", '[load]\nhelo = "[300.1.1.1]"', "load.helo", "expected a domain"),
    ("hostname-crlf", '[sink]\nhostname = "a b\\r\\nc"', "sink.hostname", "expected a domain"),
    ("hostname-empty", '[sink]\nhostname = ""', "sink.hostname", "expected a domain"),
    # A key of the other load model was ignored: a closed loop "at 5/s" ran at full speed.
    ("closed-rate", '[load]\nmodel = "closed"\nrate = 5', "load", "rate set the open loop's arrivals"),
    ("closed-stages", '[load]\nmodel = "closed"\n[[load.stages]]\nduration = "1s"\nrate = 5', "load",
     "stages set the open loop's arrivals"),
    ("rate-and-sessions", "[load]\nrate = 5\nsessions = 3", "load",
     'rate (open loop) and sessions (closed loop): say which with model = "open" or model = "closed"'),
    ("rate-and-stages", '[load]\nmodel = "open"\nrate = 5\n[[load.stages]]\nduration = "1s"\nrate = 5', "load",
     "give 'rate' or 'stages', not both"),
    ("open-think-time", '[load]\nrate = 5\nthink_time = "1s"', "load", "think_time is for the closed loop"),
    # 0 meant "run for ever" (and skipped the warm-up check).
    ("duration-0", "[load]\nduration = 0", "load", "duration = 0 means no time limit, which needs 'messages'"),
    ("stages-all-0", '[load]\n[[load.stages]]\nduration = "1s"\nrate = 0\n[[load.stages]]\nduration = "1s"\nrate = 0',
     "load", "at least one stage needs rate > 0"),
    # A sweep step's error reads as any other (no pydantic "Value error, " inside).
    ("sweep-value-error", '[sweep]\nparameter = "message.recipients"\nvalues = [2, 0]', "sweep.values",
     "sweep value 0 for message.recipients: recipients must be 1 to 100,000"),
    # true/false where a number goes: pydantic took sessions = true as 1 session.
    ("bool-as-number", "[load]\nsessions = true", "load", "sessions must be a number, not true"),
    ("bool-as-rate", '[[load.stages]]\nduration = "1s"\nrate = false', "load.stages.0", "rate must be a number"),
    ("bool-in-fault", '[[sink.faults]]\non = "MAIL"\nreply = "451 4.3.0 x"\nprobability = true', "sink.faults.0",
     "probability must be a number, not true"),
    ("bool-sweep-value", '[sweep]\nparameter = "load.sessions"\nvalues = [2, true]', "sweep.values.1",
     "valid number (got True)"),
    # A format spec is not an unknown placeholder.
    ("subject-format-spec", '[message]\nsubject = "{n:>5}"', "message.subject",
     "{n:>5}: no format specs or conversions; placeholders are {n}, {seq}, {process}"),
    # "SIZE 0" means no limit (RFC 1870 §4), and the sink refused every message.
    ("max-message-size-0", "[sink]\nmax_message_size = 0", "sink.max_message_size", "greater than or equal to 1"),
    # expire <= retry_after: no triple can ever pass.
    ("greylist-expire", '[sink.greylist]\nretry_after = "10s"\nexpire = "5s"', "sink.greylist",
     "expire (5 s) must be longer than retry_after (10 s)"),
    ("greylist-expire-equal", '[sink.greylist]\nretry_after = "5s"\nexpire = "5s"', "sink.greylist",
     "must be longer than retry_after"),
    # A key the action does not use was accepted and ignored.
    ("reply-with-delay", '[[sink.faults]]\non = "RCPT"\nreply = "451 x"\ndelay = "1s"', "sink.faults.0",
     "action 'reply' takes reply; delay would be ignored"),
    ("disconnect-with-reply", '[[sink.faults]]\non = "RCPT"\naction = "disconnect"\nreply = "451 x"', "sink.faults.0",
     "action 'disconnect' takes none of reply, delay and rate; reply would be ignored"),
    ("bandwidth-with-delay", '[[sink.faults]]\non = "connect"\naction = "bandwidth"\nrate = 100\ndelay = 1',
     "sink.faults.0", "action 'bandwidth' takes rate; delay would be ignored"),
    ("close-with-451", '[[sink.faults]]\non = "RCPT"\naction = "close"\nreply = "451 4.7.1 later"', "sink.faults.0",
     "action 'close' answers 421 (RFC 5321 §3.8): reply must be a 421 or left out"),
    # Addresses the sink, bench or run would refuse only when they bind or connect.
    ("listen-port", '[sink]\nlisten = "127.0.0.1:99999"', "sink.listen", "PORT 0-65535"),
    ("listen-garbage", '[sink]\nlisten = "nope"', "sink.listen",
     "expected HOST:PORT, [IPv6]:PORT or unix:/path with an IP address or localhost, got 'nope'"),
    ("stats-listen-garbage", '[sink]\nstats_listen = "garbage"', "sink.stats_listen",
     "expected a loopback HOST:PORT such as '127.0.0.1:8025'"),
    # The sink bound TCP 127.0.0.1:2525 for a unix: path; and the endpoint takes unauthenticated PUT /faults.
    ("stats-listen-unix", '[sink]\nstats_listen = "unix:/tmp/smtpbench-stats.sock"', "sink.stats_listen",
     "expected a loopback HOST:PORT"),
    ("stats-listen-public", '[sink]\nstats_listen = "0.0.0.0:8025"', "sink.stats_listen",
     "(TCP; the endpoint takes unauthenticated PUT /faults)"),
    ("relay-listen-garbage", '[relay]\nlisten = "garbage"', "relay.listen", "expected HOST:PORT, [IPv6]:PORT"),
    ("target-port-0", "[target]\nport = 0", "target.port", "greater than or equal to 1"),
]


@pytest.fixture(scope="module")
def validated(tmp_path_factory) -> dict[str, str]:
    """Every BAD_FILES file through one `smtpbench validate` (one start-up, not one per case):
    case id -> the stderr line naming its file."""
    folder = tmp_path_factory.mktemp("bad")
    paths = []
    for case, content, _, _ in BAD_FILES:
        path = folder / f"{case}.toml"
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
        paths.append(str(path))
    proc = smtpbench("validate", *paths)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert not proc.stdout, proc.stdout
    lines = proc.stderr.splitlines()
    return {case: next((line for line in lines if line.startswith(f"smtpbench: {p}: ")), "")
            for (case, *_), p in zip(BAD_FILES, paths)}


@pytest.mark.parametrize("case, content, key, words", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_broken_file_names_the_file_key_and_what_is_allowed(validated, case, content, key, words):
    line = validated[case]
    assert line, f"no error line for {case}"
    if key is not None:
        assert f"key '{key}'" in line, line
    assert words in line, line


def test_scenarios_lists_a_file_that_is_not_utf8_as_invalid_and_goes_on(tmp_path):
    (tmp_path / "a.toml").write_bytes('name = "\u00e9"\n'.encode("latin-1"))
    (tmp_path / "b.toml").write_text('name = "fine"\ndescription = "a good one"\n')
    proc = smtpbench("scenarios", "--dir", str(tmp_path))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    a, b = proc.stdout.splitlines()
    assert "a.toml" in a and "INVALID" in a and "not UTF-8" in a, a
    assert "b.toml" in b and b.endswith("a good one"), b


@pytest.mark.parametrize("listen, stats", [("127.0.0.1:0", "127.0.0.1:8025"), ("[::1]:25", "[::1]:9"),
                                           ("localhost:2525", "localhost:1"), ("unix:/tmp/s.sock", "127.0.0.1"),
                                           ("127.0.0.1", "localhost")])  # no port: 2525 (as before), 8025
def test_listen_addresses_that_bind(listen, stats):
    sc = build({"sink": {"listen": listen, "stats_listen": stats}, "relay": {"listen": listen}})
    assert (sc.sink.listen, sc.sink.stats_listen, sc.relay.listen) == (listen, stats, listen)


def test_duration_0_with_messages_is_no_time_limit():
    """A count-bounded run without a time limit, written in a file (TOML has no null)."""
    assert build({"load": {"duration": 0, "messages": 50}}).load.duration is None


@pytest.mark.parametrize("value", ["client.example", "localhost", "[127.0.0.1]", "[IPv6:::1]", "a-1.b2.example"])
def test_helo_and_hostname_take_domains_and_address_literals(value):
    sc = build({"load": {"helo": value}, "sink": {"hostname": value}})
    assert sc.load.helo == sc.sink.hostname == value


def test_rate_flag_must_be_finite():
    proc = smtpbench("run", "--rate", "inf", "--duration", "1s", "--target", "127.0.0.1:9")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "(with command-line flags): key 'load.rate'" in proc.stderr and "finite number" in proc.stderr, proc.stderr


def test_rate_or_stages_without_a_model_is_an_open_loop(tmp_path):
    path = tmp_path / "open.toml"
    path.write_text("[load]\nrate = 5\n")
    proc = smtpbench("validate", str(path))
    assert proc.returncode == 0 and "(open loop)" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.parametrize("flags, says", [
    (["--rate", "50", "--sessions", "5"], "--rate (an open loop at R msgs/s) and --sessions"),
    (["--arrival", "poisson"], "--arrival is for the open loop"),
    (["--max-connections", "3"], "--max-connections is for the open loop"),
    (["--sessions", "3", "--max-connections", "3"], "--max-connections is for the open loop"),
])
def test_load_flags_that_would_be_ignored_are_errors(flags, says):
    # A closed-loop scenario (the defaults); nothing may run: 127.0.0.1:9 answers nobody.
    proc = smtpbench("run", "--target", "127.0.0.1:9", "--messages", "1", *flags)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert says in proc.stderr, proc.stderr


def test_rate_flag_turns_a_closed_scenario_open_and_sessions_flag_an_open_one_closed(tmp_path):
    from smtpbench.cli import _scenario_with_flags
    from smtpbench.cliargs import build_parser

    closed, opened = tmp_path / "closed.toml", tmp_path / "open.toml"
    closed.write_text('[load]\nsessions = 2\nthink_time = "1s"\n')
    opened.write_text('[load]\n[[load.stages]]\nduration = "1s"\nrate = 5\n')
    load = _scenario_with_flags(build_parser().parse_args(["run", "-s", str(closed), "--rate", "50"]))[0].load
    assert (load.model, load.rate, load.think_time) == ("open", 50, 0)
    load = _scenario_with_flags(build_parser().parse_args(["run", "-s", str(opened), "--rate", "50"]))[0].load
    assert (load.model, load.rate, load.stages) == ("open", 50, [])
    load = _scenario_with_flags(build_parser().parse_args(["run", "-s", str(opened), "--sessions", "3"]))[0].load
    assert (load.model, load.sessions, load.rate, load.stages) == ("closed", 3, None, [])
