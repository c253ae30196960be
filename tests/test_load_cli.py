"""``smtpbench run`` exit codes: thresholds that fail exit 1; a bad scenario exits 2 with one
line naming the file and the key, before any socket opens."""

from __future__ import annotations

import pytest

from conftest import free_port
from load_helpers import assert_exit, run_load, write_scenario


@pytest.mark.parametrize("threshold, code", [
    ('"response.p99" = "1us"', 1),            # nothing answers in a microsecond
    ('"phase.end_of_data.max" = "1us"', 1),
    ('"response.p99" = "60s"', 0),
    ("min_throughput = 1", 0),
    ("min_throughput = 1e9", 1),
])
def test_thresholds_decide_the_exit_code(start_sink, tmp_path, threshold, code):
    scenario = write_scenario(tmp_path, f"[thresholds]\n{threshold}\n")
    sink = start_sink("--hide", "CHUNKING")
    run = run_load(tmp_path / "out", "--scenario", scenario, "--target", sink.address,
                   "--sessions", "2", "--messages", "20")
    assert sink.stop()["messages"] == 20
    assert_exit(run, code)
    [checked] = run.result["thresholds"]
    assert checked["passed"] is (code == 0)
    assert run.result["verdict"] in (("ok",) if code == 0 else ("thresholds_failed", "invalid"))
    assert ("FAIL" in run.stdout) is (code == 1)


def test_a_phase_that_never_happened_fails_its_threshold(start_sink, tmp_path):
    """The default sink offers CHUNKING, so the data goes as BDAT: end_of_data has no samples,
    which is not "under the limit"."""
    scenario = write_scenario(tmp_path, '[thresholds]\n"phase.end_of_data.p99" = "60s"\n"phase.bdat.p99" = "60s"\n')
    sink = start_sink()
    run = run_load(tmp_path / "out", "--scenario", scenario, "--target", sink.address,
                   "--sessions", "2", "--messages", "20")
    assert sink.stop()["messages"] == 20
    assert_exit(run, 1)
    by_metric = {th["metric"]: th for th in run.result["thresholds"]}
    assert by_metric["phase.end_of_data.p99"]["passed"] is False
    assert by_metric["phase.end_of_data.p99"]["observed"] is None
    assert by_metric["phase.bdat.p99"]["passed"] is True
    assert "no samples [FAIL]" in run.stdout


def test_a_refused_run_fails_even_inside_its_warmup(tmp_path):
    """Every message of the run falls in the warm-up and is refused: still 'no message was
    accepted', exit 1, not an empty OK."""
    port = free_port()
    run = run_load(tmp_path / "out", "--target", f"127.0.0.1:{port}", "--sessions", "2",
                   "--duration", "1s", "--warmup", "0.9s", timeout=30)
    assert_exit(run, 1)  # (3 when a busy machine made the generator lag: not OK either)
    t = run.result["totals"]
    assert t["ok"] + t["warmup_ok"] == 0 and t["warmup_failed"] > 0, t
    assert {th["metric"] for th in run.result["thresholds"] if not th["passed"]} == {"messages_ok"}


def test_a_run_all_in_its_warmup_is_not_ok(start_sink, tmp_path):
    """Ten messages, all sent inside a 5 s warm-up: the headline figures measure nothing."""
    sink = start_sink()
    run = run_load(tmp_path / "out", "--target", sink.address, "--sessions", "2", "--messages", "10",
                   "--warmup", "5s", "--duration", "10s")
    assert sink.stop()["messages"] == 10
    assert_exit(run, 1)
    assert run.result["totals"]["warmup_ok"] == 10
    assert [th["metric"] for th in run.result["thresholds"] if not th["passed"]] == ["messages_measured"]
    assert "every message fell in the warm-up" in run.stdout


@pytest.mark.parametrize("text, key", [
    ("[load]\nsesions = 5\n", "load.sesions"),
    ("[load]\nduration = \"fast\"\n", "load.duration"),
    ("[load.timeouts]\ncomand = \"1s\"\n", "load.timeouts.comand"),
    ("[load]\ndrain = -1\n", "load.drain"),
    ("[load.timeouts]\nbanner = 0\n", "load.timeouts.banner"),   # every session would time out at once
    ("[thresholds]\n\"response.p42\" = \"1ms\"\n", "response.p42"),
    ("[thresholds]\nerror_rate = 2\n", "error_rate"),
    ("[thresholds]\n\"phase.nosuch.p99\" = \"50ms\"\n", "phase.nosuch.p99"),
    ("[load]\nduration = \"3s\"\nwarmup = \"3s\"\n", "load"),   # nothing left to measure
    ("[load]\nmodel = \"open\"\n", "load"),            # open loop without a rate
    ("[message]\nsize = \"big\"\n", "message.size"),
    ("[load]\npipeline_messages = true\npipelining = false\n", "pipeline_messages"),
    ("[load]\npipeline_messages = true\nmodel = \"open\"\nrate = 10\n", "pipeline_messages"),
    ("[load]\npipeline_messages = true\nretries = 2\n", "pipeline_messages"),
])
def test_bad_scenario_exits_2_with_one_line(tmp_path, text, key):
    scenario = write_scenario(tmp_path, text, name="bad.toml")
    port = free_port()
    run = run_load(tmp_path / "out", "--scenario", scenario, "--target", f"127.0.0.1:{port}", timeout=30)
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert scenario in lines[0] and key in lines[0], lines[0]
    assert run.result is None  # nothing ran


def test_bad_flag_value_exits_2(tmp_path):
    run = run_load(tmp_path / "out", "--target", "127.0.0.1:1", "--duration", "soon", timeout=30)
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "duration" in run.stderr


def test_not_a_file_exits_2(tmp_path):
    missing = str(tmp_path / "nope.toml")
    run = run_load(tmp_path / "out", "--scenario", missing, "--target", "127.0.0.1:1", timeout=30)
    assert run.returncode == 2, run
    assert run.stderr.strip().count("\n") == 0 and missing in run.stderr


def test_a_closed_stdout_costs_no_traceback_and_keeps_the_exit_code(start_sink, tmp_path):
    """`smtpbench run … | head`: the reader is gone before the summary (here before anything is
    written, and unbuffered, so every print meets the closed pipe). The run still writes its
    result, ends with its verdict's code and prints no traceback."""
    import os
    import subprocess
    import sys

    sink = start_sink()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "smtpbench", "run", "--target", sink.address, "--sessions", "2",
                             "--messages", "20", "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path, env=env)
    proc.stdout.close()
    _, err = proc.communicate(timeout=60)
    assert sink.stop()["messages"] == 20
    assert b"Traceback" not in err and b"BrokenPipe" not in err, err
    assert proc.returncode in (0, 3), err  # 3: the machine was too busy (see assert_exit)
    assert (tmp_path / "out" / "result.json").exists()


def test_a_misspelt_flag_shows_the_commands_usage(tmp_path):
    run = run_load(tmp_path / "out", "--target", "127.0.0.1:1", "--sesions", "5", timeout=30)
    assert run.returncode == 2, run
    assert "Traceback" not in run.stderr
    assert run.stderr.startswith("usage: smtpbench run ") and "--sessions N" in run.stderr, run.stderr
    assert run.stderr.strip().endswith("smtpbench run: error: unrecognized arguments: --sesions 5"), run.stderr


def test_lmtp_flag_speaks_lmtp_to_an_lmtp_sink(start_sink, tmp_path):
    """`run --lmtp` greets with LHLO (RFC 2033 §4.1); without it an LMTP server refuses EHLO and HELO."""
    sink = start_sink("--lmtp")
    run = run_load(tmp_path / "lmtp", "--target", sink.address, "--lmtp", "--sessions", "2", "--messages", "20",
                   "--recipients", "2")
    plain = run_load(tmp_path / "smtp", "--target", sink.address, "--sessions", "1", "--messages", "2")
    assert sink.stop()["messages"] == 20
    assert_exit(run, 0)
    assert run.result["totals"]["ok"] == 20 and run.result["scenario"]["target"]["lmtp"] is True
    assert plain.returncode == 1 and plain.result["totals"]["ok"] == 0


def test_pipeline_messages_says_when_it_chained_nothing(start_sink, tmp_path):
    """Against a server offering CHUNKING, BDAT LAST carries each transaction and nothing is
    chained: the summary says so instead of leaving a user to compare figures."""
    sink = start_sink()
    run = run_load(tmp_path / "out", "--target", sink.address, "--sessions", "2", "--messages", "20",
                   "--pipeline-messages")
    assert sink.stop()["messages"] == 20
    assert_exit(run, 0)
    assert run.result["totals"]["chained"] == 0
    assert "note: pipeline_messages chained nothing" in run.stdout
