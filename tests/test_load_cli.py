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


@pytest.mark.parametrize("text, key", [
    ("[load]\nsesions = 5\n", "load.sesions"),
    ("[load]\nduration = \"fast\"\n", "load.duration"),
    ("[load.timeouts]\ncomand = \"1s\"\n", "load.timeouts.comand"),
    ("[load]\ndrain = -1\n", "load.drain"),
    ("[thresholds]\n\"response.p42\" = \"1ms\"\n", "response.p42"),
    ("[thresholds]\nerror_rate = 2\n", "error_rate"),
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
