"""Bad input on the command line, through the real command: exit 2 with one line that names what was
wrong and what is allowed, never a traceback, and a finished run's results never lost to a late error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import free_port

ROOT = str(Path(__file__).resolve().parents[1])


def smtpbench(cwd, *args: str, timeout: float = 60.0) -> subprocess.CompletedProcess:
    """``python -m smtpbench ARGS`` in ``cwd`` (so default output folders land there)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-m", "smtpbench", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def assert_usage_error(done: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, no traceback, one line on stderr holding every one of ``words``; return that line."""
    assert done.returncode == 2, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


# -- sink flags --------------------------------------------------------------------------------


def test_auth_user_without_a_password_is_refused(tmp_path):
    """It used to be dropped, and with --auth-required and no users left any credentials passed."""
    done = smtpbench(tmp_path, "sink", "--listen", f"127.0.0.1:{free_port()}", "--auth-required",
                     "--auth-user", "bob", timeout=30)
    assert_usage_error(done, "--auth-user needs USER:PASSWORD", "'bob'")


def test_hiding_an_extension_the_sink_does_not_know_is_refused(tmp_path):
    """A misspelt --hide (CHUNKNG) was dropped: the sink started and kept offering CHUNKING."""
    done = smtpbench(tmp_path, "sink", "--listen", f"127.0.0.1:{free_port()}", "--hide", "chunkng", timeout=10)
    assert_usage_error(done, "key 'sink.advertise' (--hide)", "'CHUNKNG'", "PIPELINING, SIZE")


# -- bench flags -------------------------------------------------------------------------------


def test_relay_flags_without_relay_are_refused(tmp_path):
    """--relay-listen and --drain only mean something in relay mode; they were silently ignored."""
    done = smtpbench(tmp_path, "bench", "--drain", "1s", "--sessions", "1", "--messages", "2", "--no-report")
    assert_usage_error(done, "--drain needs --relay")
    done = smtpbench(tmp_path, "bench", "--relay-listen", f"127.0.0.1:{free_port()}", "--drain", "1s",
                     "--sessions", "1", "--messages", "2", "--no-report")
    assert_usage_error(done, "--relay-listen and --drain need --relay")
    assert not (tmp_path / "results").exists()  # nothing ran


# -- report and compare ------------------------------------------------------------------------


def test_json_that_is_not_a_result_is_refused_by_name(tmp_path):
    """A JSON list, and an object with the schema but none of a result's tables, crashed the
    report half-way (AttributeError, KeyError 'run_id' or 'timeseries')."""
    from report_helpers import synthetic_result, write_result

    good = str(write_result(tmp_path / "good", synthetic_result([100] * 5)))
    (tmp_path / "list.json").write_text("[]")
    (tmp_path / "schema.json").write_text('{"schema": "smtpbench.result/1"}')
    (tmp_path / "broken.json").write_text('{"schema": ')
    for command in (["report"], ["compare", good]):
        line = assert_usage_error(smtpbench(tmp_path, *command, "list.json"), "list.json", "not a smtpbench result",
                                  "expected an object")
        assert line.startswith(f"smtpbench {command[0]}: ")
        assert_usage_error(smtpbench(tmp_path, *command, "schema.json"), "schema.json", "missing",
                           "run_id", "timeseries")
        assert_usage_error(smtpbench(tmp_path, *command, "broken.json"), "broken.json", "not valid JSON")
    assert not (tmp_path / "reports").exists()


# -- output folders ----------------------------------------------------------------------------


def test_an_unusable_out_folder_is_refused_before_the_run(start_sink, tmp_path):
    """A file, a path through a file, a folder that cannot be made: found by save() after the load,
    these cost the run's results (FileExistsError, NotADirectoryError, FileNotFoundError)."""
    sink = start_sink()
    (tmp_path / "afile").write_text("precious")
    for out, why in (("afile", "a file of that name is there"), ("afile/sub", "a part of the path is a file"),
                     ("/proc/nope", "No such file or directory")):
        done = smtpbench(tmp_path, "run", "--target", sink.address, "--sessions", "1", "--messages", "2", "--out", out)
        assert_usage_error(done, "--out", repr(out), why, "expected a folder")
    done = smtpbench(tmp_path, "bench", "--sessions", "1", "--messages", "2", "--out", "afile", "--no-report")
    assert_usage_error(done, "--out", "'afile'", "a file of that name is there")
    assert (tmp_path / "afile").read_text() == "precious"
    assert sink.stop()["messages"] == 0  # refused before any load


def test_report_and_compare_refuse_an_unusable_out_folder(tmp_path):
    from report_helpers import synthetic_result, write_result

    run = str(write_result(tmp_path / "run", synthetic_result([100] * 5)))
    (tmp_path / "afile").write_text("precious")
    assert_usage_error(smtpbench(tmp_path, "report", run, "--out", "afile"), "--out", "'afile'", "a file")
    assert_usage_error(smtpbench(tmp_path, "compare", run, run, "--out", "afile/x"), "--out", "'afile/x'",
                       "a part of the path is a file")
    assert (tmp_path / "afile").read_text() == "precious"


def test_stats_listen_takes_a_loopback_tcp_address(tmp_path):
    """A bad port was a ValueError traceback; unix:/path bound HTTP on 127.0.0.1:2525 instead; a
    public address would have served the unauthenticated PUT /faults to the network."""
    listen = f"127.0.0.1:{free_port()}"
    loopback = "expected a loopback HOST:PORT such as '127.0.0.1:8025', '[::1]:8025' or 'localhost:8025'"
    for stats, why in (("127.0.0.1:99999", "bad port"), (f"unix:{tmp_path}/stats.sock", loopback),
                       ("0.0.0.0:8025", loopback), ("example.com:8025", loopback)):
        done = smtpbench(tmp_path, "sink", "--listen", listen, "--stats-listen", stats, timeout=30)
        assert_usage_error(done, "key 'sink.stats_listen' (--stats-listen):", why)
        assert "listening" not in done.stdout


def test_sink_start_failures_name_the_flag_that_failed(tmp_path):
    """Every start-up failure used to read "cannot listen on <the SMTP address>", often after
    "listening on …": each now names its own key and flag, and nothing claims to listen."""
    import socket

    (tmp_path / "afile").write_text("precious")
    (tmp_path / "adir").mkdir()
    (tmp_path / "bad.pem").write_text("not a certificate\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        cases = [
            (["--stats-listen", taken], ["key 'sink.stats_listen' (--stats-listen): cannot listen on " + taken]),
            (["--stats-file", "/nonexistent/dir/f.jsonl"],
             ["key 'sink.stats_file' (--stats-file)", "'/nonexistent/dir/f.jsonl'", "No such file"]),
            (["--advertise", "STARTTLS", "--tls-cert", "/nonexistent.pem"],
             ["key 'sink.tls_cert' (--tls-cert): no such file '/nonexistent.pem'"]),
            (["--implicit-tls", "--tls-cert", "bad.pem"],
             ["key 'sink.tls_cert' (--tls-cert): cannot load 'bad.pem'", "PEM lib", "expected a PEM certificate"]),
            (["--capture", "maildir:afile"], ["key 'sink.capture' (--capture)", "'maildir:afile'", "Not a directory"]),
            (["--capture", "mbox:adir"], ["key 'sink.capture' (--capture)", "'mbox:adir'", "Is a directory"]),
        ]
        for args, words in cases:
            done = smtpbench(tmp_path, "sink", "--listen", f"127.0.0.1:{free_port()}", *args, timeout=30)
            assert_usage_error(done, "smtpbench sink: ", *words)
            assert "listening" not in done.stdout and "stats endpoint" not in done.stdout, (args, done.stdout)
        # With workers the parent checks capture and TLS itself, and stops its workers when the endpoint fails.
        for args, words in (cases[0], cases[4]):
            done = smtpbench(tmp_path, "sink", "--workers", "2", "--listen", f"127.0.0.1:{free_port()}", *args,
                             timeout=30)
            assert_usage_error(done, "smtpbench sink: ", *words)
            assert "listening" not in done.stdout, (args, done.stdout)
        done = smtpbench(tmp_path, "sink", "--listen", taken, timeout=30)
        assert_usage_error(done, f"key 'sink.listen' (--listen): cannot listen on {taken}", "in use")
    assert (tmp_path / "afile").read_text() == "precious"


def test_bench_sink_that_cannot_start_exits_2_with_its_reason(tmp_path):
    """A RuntimeError traceback ("the embedded sink did not start; see …/sink.log") before: bad
    addresses are refused up front naming the flag, and a sink that still fails gives its reason."""
    import socket

    (tmp_path / "afile").write_text("precious")
    (tmp_path / "capture.toml").write_text('[sink]\ncapture = "maildir:afile"\n')
    load = ["--sessions", "1", "--messages", "2", "--no-report", "--out", "out"]
    nobody = f"127.0.0.1:{free_port()}"
    relay = ["--relay", "--drain", "1s", "--target", nobody]
    assert_usage_error(smtpbench(tmp_path, "bench", "--listen", "127.0.0.1:99999", *load), "--listen: bad port")
    assert_usage_error(smtpbench(tmp_path, "bench", "--listen", "garbage", *load),
                       "--listen: expected HOST:PORT, [IPv6]:PORT or unix:/path with an IP address or localhost, "
                       "got 'garbage'")
    assert_usage_error(smtpbench(tmp_path, "bench", *relay, "--relay-listen", "127.0.0.1:99999", *load),
                       "key 'relay.listen' (--relay-listen): bad port")
    assert_usage_error(smtpbench(tmp_path, "bench", *relay, "--relay-listen", "garbage", *load),
                       "key 'relay.listen' (--relay-listen): expected HOST:PORT")
    line = assert_usage_error(smtpbench(tmp_path, "bench", "capture.toml", *load),
                              "the embedded sink did not start: key 'sink.capture':", "'maildir:afile'", "sink.log")
    assert "--capture" not in line, line  # a flag of the sink's own, not bench's
    assert "Traceback" not in (tmp_path / "out" / "sink.log").read_text(), line
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        assert_usage_error(smtpbench(tmp_path, "bench", "--listen", taken, *load),
                           f"the embedded sink (--listen {taken}) did not start", "in use")
        assert_usage_error(smtpbench(tmp_path, "bench", *relay, "--relay-listen", taken, *load),
                           f"the embedded sink (--relay-listen {taken}) did not start", "in use")
    assert (tmp_path / "afile").read_text() == "precious"


def test_a_negative_duration_or_size_is_named_as_such(tmp_path):
    """argparse took "-1s" for a flag ("expected one argument"); it is a value, and a negative one."""
    target = f"127.0.0.1:{free_port()}"
    for flag, value, key in (("--duration", "-1s", "load.duration"), ("-d", "-500ms", "load.duration"),
                             ("--warmup", "-2s", "load.warmup"), ("--size", "-1KiB", "message.size")):
        done = smtpbench(tmp_path, "run", "--target", target, flag, value, "--out", "out")
        assert_usage_error(done, f"key '{key}' (--{key.rpartition('.')[2]}): must not be negative", f"got '{value}'")
    assert not (tmp_path / "out").exists()


def test_validate_checks_the_address_keys(tmp_path):
    """validate passed addresses that sink and bench then refused (or, for stats_listen, misused)."""
    for table, text, words in (("sink", 'listen = "127.0.0.1:99999"', ["key 'sink.listen'", "bad port"]),
                               ("relay", 'listen = "127.0.0.1:70000"', ["key 'relay.listen'", "bad port"]),
                               ("sink", 'stats_listen = "unix:/tmp/s.sock"', ["key 'sink.stats_listen'", "unix"]),
                               ("sink", 'stats_listen = "0.0.0.0:8025"', ["key 'sink.stats_listen'", "loopback"]),
                               ("sink", 'listen = "unix:/tmp/s.sock"\nworkers = 2', ["key 'sink.workers'", "unix"])):
        (tmp_path / "bad.toml").write_text(f"[{table}]\n{text}\n")
        assert_usage_error(smtpbench(tmp_path, "validate", "bad.toml"), "bad.toml: ", *words)


def test_a_target_on_port_0_is_refused(tmp_path):
    """As [target] port: no server listens on port 0 (the run went ahead, every connect refused)."""
    done = smtpbench(tmp_path, "run", "--target", "127.0.0.1:0", "--messages", "3", "--out", "out")
    assert_usage_error(done, "--target: port 0 is no server's")
    assert not (tmp_path / "out").exists()


# -- generator processes ------------------------------------------------------------------------


def test_generator_processes_that_do_not_start_in_time_are_named_not_a_traceback(tmp_path):
    """`run --processes 120` on two CPUs: the spawned interpreters were not ready within 60 s and the
    command ended in a RuntimeError traceback (exit 1). The wait is made short here."""
    code = ("import sys; import smtpbench.load.procs as procs; procs.READY_TIMEOUT = 0.001; "
            "from smtpbench.cli import main; sys.exit(main(sys.argv[1:]))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code, "run", "--target", f"127.0.0.1:{free_port()}", "--sessions",
                           "2", "--processes", "2", "--duration", "1s", "--out", str(tmp_path / "run")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert_usage_error(done, "did not start within", "'load.processes'", "--processes", "'auto'")


def test_an_open_loop_takes_no_more_processes_than_its_connection_cap(start_sink, tmp_path):
    """Each generator process holds at least one connection: three processes under max_connections = 2
    opened three. Like sessions in a closed loop, the cap now bounds the processes."""
    sink = start_sink()
    done = smtpbench(tmp_path, "run", "--target", sink.address, "--rate", "20", "--max-connections", "2",
                     "--processes", "3", "--duration", "1s", "--out", str(tmp_path / "run"), timeout=120)
    assert done.returncode in (0, 3), done.stdout + done.stderr   # (3: a busy machine's generator health)
    result = json.loads((tmp_path / "run" / "result.json").read_text())
    assert result["environment"]["processes"] == 2
    assert max(result["timeseries"]["connections"]) <= 2, result["timeseries"]["connections"]


def test_a_rate_beyond_a_million_per_second_is_refused(tmp_path):
    """rate = 1e300 passed validation; run then took arrivals due at t0 forever (3.5 GB, and Ctrl-C
    did not stop it): the schedule's times are whole microseconds."""
    for text in ("[load]\nrate = 1e300\n", "[[load.stages]]\nduration = \"5s\"\nrate = 2e6\n"):
        path = tmp_path / "fast.toml"
        path.write_text(text)
        assert_usage_error(smtpbench(tmp_path, "validate", str(path)), "fast.toml", "load.", "rate", "1000000")
    assert_usage_error(smtpbench(tmp_path, "run", "--rate", "1e12", "--duration", "1s"), "--rate", "1000000")


def test_recipients_beyond_the_cap_are_refused(tmp_path):
    """recipients = 10**8 passed validation; run then built the addresses, memory growing 150 MB/s."""
    for value in ("100000000", "{ uniform = [1, 200000] }", "{ choices = [[1, 9], [500000, 1]] }",
                  "{ lognormal = { median = 5, p99 = 1000000 } }"):
        path = tmp_path / "many.toml"
        path.write_text(f"[message]\nrecipients = {value}\n")
        assert_usage_error(smtpbench(tmp_path, "validate", str(path)), "many.toml", "message.recipients", "100,000")
    assert_usage_error(smtpbench(tmp_path, "run", "--recipients", "100001", "--messages", "1"), "--recipients",
                       "100,000")
    path.write_text("[message]\nrecipients = 100000\n")
    assert smtpbench(tmp_path, "validate", str(path)).returncode == 0


def test_processes_beyond_the_cap_are_refused(tmp_path):
    """--workers 999 would have started 999 sink processes (~50 MB each) on this 2-core machine."""
    assert_usage_error(smtpbench(tmp_path, "sink", "--workers", "999"), "--workers", "256")
    assert_usage_error(smtpbench(tmp_path, "run", "--processes", "300", "--messages", "1"), "--processes", "256")
    path = tmp_path / "many.toml"
    path.write_text("[sink]\nworkers = 257\n")
    assert_usage_error(smtpbench(tmp_path, "validate", str(path)), "many.toml", "sink.workers", "256")


def test_more_sessions_than_messages_end_with_the_messages(start_sink, tmp_path):
    """The closed loop went on counting through every session it did not open: 10**9 sessions for
    --messages 5 kept the command busy for minutes after the five were sent."""
    sink = start_sink()
    done = smtpbench(tmp_path, "run", "--target", sink.address, "--sessions", str(10**9), "--messages", "5",
                     "--out", str(tmp_path / "run"), timeout=60)
    assert done.returncode in (0, 3), done.stdout + done.stderr
    assert json.loads((tmp_path / "run" / "result.json").read_text())["totals"]["ok"] == 5
