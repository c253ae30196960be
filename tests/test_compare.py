"""`smtpbench compare`: real runs against a fast and a slow sink are told apart, with the faster one named;
verdicts, confidence intervals and fairness warnings on synthetic runs with known differences.
"""

from __future__ import annotations

import copy
import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import require_command
from report_helpers import PageReader, inspect_page, smtpbench_run, synthetic_result, write_result

from smtpbench.cli import main
from smtpbench.report import compare as cmp
from smtpbench.report.build import build_comparison
from smtpbench.report.stats import t_cdf, t_quantile, welch

SLOW_SINK = """
[[sink.faults]]       # every MAIL is answered 20 ms late: a server with a known extra cost per message
on = "MAIL"
action = "delay"
delay = "20ms"
"""


def verdicts(comparison: cmp.Comparison, contender: int = 0) -> dict[str, str]:
    return {row.metric.key: row.cells[contender].verdict for row in comparison.rows}


def test_compare_names_the_faster_of_two_real_servers(start_sink, tmp_path, capsys):
    """The same scenario against a plain sink and one that delays MAIL by 20 ms (2 sessions, 5 s each).

    The slow server caps 2 sessions at < 100 msgs/s, the plain one does thousands: a contrast that
    survives a noisy 2-core machine, where per-interval throughput of the fast run swings by ±30 %.
    """
    scenario = tmp_path / "slow.toml"
    scenario.write_text(SLOW_SINK)
    fast_sink, slow_sink = start_sink(), start_sink("--scenario", str(scenario))
    args = ("--sessions", "2", "--duration", "5s")
    with ThreadPoolExecutor(2) as pool:  # side by side: the contrast is far larger than what they cost each other
        runs = [pool.submit(smtpbench_run, tmp_path / name, sink.address, *args)
                for name, sink in (("fast", fast_sink), ("slow", slow_sink))]
        fast, slow = (run.result() for run in runs)
    assert slow["latency"]["response"]["p50"] >= 20_000  # the delay is there

    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "fast"), str(tmp_path / "slow"), "--out", str(out)]) == 0
    summary = capsys.readouterr().out
    assert f"report: {out / 'index.html'}" in summary
    lines = {line.split("(")[0].strip(): line for line in summary.splitlines() if "(" in line}
    assert lines["throughput"].rstrip().endswith("slower"), summary
    assert lines["response p50"].rstrip().endswith("slower"), summary
    # Same scenario, same machine: nothing unfair to warn about (a busy machine may still mark a run invalid).
    assert [w for w in summary.splitlines() if "WARNING" in w and "INVALID run" not in w] == []

    saved = json.loads((out / "comparison.json").read_text())
    by_metric = {m["metric"]: m for m in saved["metrics"]}
    throughput = by_metric["msgs_per_s"]["contenders"][0]
    assert throughput["verdict"] == "slower" and throughput["ratio"] < 0.5
    d = throughput["difference"]
    assert d["low"] <= d["diff"] <= d["high"] < 0 and d["n_baseline"] >= 4 and d["n_contender"] >= 4

    page = PageReader((out / "index.html").read_text())
    assert {"table-runs", "table-comparison"} <= set(page.tables)
    assert sorted(page.figures) == ["plot-latency_p99", "plot-spectrum", "plot-throughput"]
    assert page.rows("table-comparison")["throughput (msgs/s)"][-1] == "slower"

    reverse = cmp.compare(slow, [fast])  # the other way round, the fast server is the faster one
    assert verdicts(reverse)["msgs_per_s"] == "faster" and verdicts(reverse)["response.p50"] == "faster"


@pytest.fixture(scope="module")
def pair() -> tuple[dict, dict]:
    """Baseline ~1000 msgs/s at 1 ms; contender ~500 msgs/s at 3 ms (6 s each, jittered rates)."""
    base = synthetic_result([1000, 980, 1010, 1020, 990, 1000], 1.0, seed=1, run_id="base")
    slow = synthetic_result([500, 490, 510, 505, 495, 500], 3.0, seed=2, run_id="slow")
    return base, slow


def test_known_differences_get_the_right_verdicts(pair):
    base, slow = pair
    comparison = cmp.compare(base, [slow])
    v = verdicts(comparison)
    assert v == {"msgs_per_s": "slower", "response.p50": "slower", "response.p99": "slower",
                 "response.p99.9": "slower", "service.p99": "slower", "error_rate": "no significant difference"}
    row = comparison.rows[0]
    assert row.cells[0].ratio == pytest.approx(slow["totals"]["msgs_per_s"] / base["totals"]["msgs_per_s"])
    change, low, high = row.cells[0].change()  # geometric means: half the rate is a change of -50 %
    assert change == pytest.approx(-0.5, abs=0.01) and low < change < high < 0 and row.cells[0].log
    assert verdicts(cmp.compare(slow, [base]))["msgs_per_s"] == "faster"
    assert comparison.warnings == []


def test_like_runs_rarely_get_a_verdict():
    """Calibration: 20 pairs of runs drawn from one distribution. Each metric is tested at 99 % so that,
    over the six, a spurious faster/slower appears in about 5 % of like-for-like comparisons."""
    flagged = []
    for i in range(20):
        a = synthetic_result([100] * 4, 1.0, seed=100 + 2 * i, run_id="a")
        b = synthetic_result([100] * 4, 1.0, seed=101 + 2 * i, run_id="b")
        v = verdicts(cmp.compare(a, [b]))
        flagged += [(i, k, x) for k, x in v.items() if x != "no significant difference"]
    assert len({i for i, _, _ in flagged}) <= 2, flagged
    same = synthetic_result([100, 110, 90, 105], 1.0, seed=7, run_id="same")
    assert set(verdicts(cmp.compare(same, [same])).values()) == {"no significant difference"}


def test_a_negligible_difference_is_not_claimed():
    a = synthetic_result([1000] * 5, 1.0, seed=5, run_id="a")
    b = synthetic_result([1010] * 5, 1.0, seed=5, run_id="b")  # exactly 1 % more, zero variance: "significant"
    cell = cmp.compare(a, [b]).rows[0].cells[0]
    assert cell.diff.significant and cell.change()[0] == pytest.approx(0.01)
    assert verdicts(cmp.compare(a, [b]))["msgs_per_s"] == "no significant difference"


def test_error_rate_is_better_or_worse():
    clean = synthetic_result([200] * 5, 1.0, run_id="clean")
    failures = {k: [("rcpt", 451, "reply")] * (8 + k % 3) for k in range(5)}
    failing = synthetic_result([200] * 5, 1.0, failures=failures, run_id="failing")
    assert verdicts(cmp.compare(clean, [failing]))["error_rate"] == "worse"
    assert verdicts(cmp.compare(failing, [clean]))["error_rate"] == "better"


def test_too_few_intervals_say_so():
    a, b = synthetic_result([100], 1.0, run_id="a"), synthetic_result([100, 100], 1.0, run_id="b")
    comparison = cmp.compare(a, [b])
    assert verdicts(comparison)["msgs_per_s"] == "not enough data"
    assert any("baseline has 1 measured 1 s interval" in w for w in comparison.warnings)


def test_unfair_comparisons_are_flagged(pair):
    base, _ = pair
    other = copy.deepcopy(base)
    other["run_id"] = "other"
    other["environment"].update(cpu_count=64, loop="asyncio")
    other["load"]["model"] = "open"
    other["load"]["rate"] = 500.0
    other["scenario"]["message"]["size"] = 204800
    other["scenario"]["load"]["sessions"] = 20
    other["scenario"]["name"] = "renamed"  # not a difference that matters
    other["verdict"] = "invalid"
    other["health"]["reasons"] = ["generator process 0 used 99% of a CPU core"]
    warnings = "\n".join(cmp.fairness_warnings(base, other, "contender"))
    assert "messages differ" in warnings and "message.size 1024 → 204800" in warnings
    assert "load settings differ: load.sessions 10 → 20" in warnings
    assert "load models differ" in warnings
    assert "environment differs: cpu_count 2 → 64; loop 'uvloop' → 'asyncio'" in warnings.replace(
        f"cpu_count {base['environment']['cpu_count']!r}", "cpu_count 2")
    assert "contender is an INVALID run: generator process 0 used 99% of a CPU core" in warnings
    assert "name" not in warnings
    like = copy.deepcopy(base)
    like["run_id"] = "base-again"  # another run of the same scenario on the same machine
    assert cmp.fairness_warnings(base, like, "contender") == []


def test_welch_and_student_t_against_known_values():
    # Student's t quantiles from any printed table.
    for df, q, t in ((1, 0.975, 12.706), (2, 0.975, 4.303), (10, 0.975, 2.228), (30, 0.995, 2.750),
                     (1000, 0.975, 1.962)):
        assert t_quantile(q, df) == pytest.approx(t, abs=1e-3)
        assert t_cdf(t, df) == pytest.approx(q, abs=1e-4)
    d = welch([10, 11, 12, 10.5, 11.5], [13, 14, 12.5, 13.5])
    assert d.diff == pytest.approx(2.25) and d.df == pytest.approx(6.9808, abs=1e-3)
    assert d.t == pytest.approx(4.7001, abs=1e-3) and d.p == pytest.approx(0.00222, abs=2e-5)
    assert (d.low, d.high) == (pytest.approx(1.1174, abs=1e-3), pytest.approx(3.3826, abs=1e-3))
    assert welch([1.0], [2.0, 3.0]) is None


def test_welch_matches_scipy_when_present():
    scipy_stats = pytest.importorskip("scipy.stats")
    for df in (1, 1.7, 3.2, 12, 250):
        for q in (0.6, 0.9, 0.975, 0.999):
            assert t_quantile(q, df) == pytest.approx(scipy_stats.t.ppf(q, df), rel=1e-6)
    a, b = [3.1, 2.9, 3.4, 3.0, 2.8, 3.3], [3.6, 3.9, 3.5, 4.1]
    ours, theirs = welch(a, b), scipy_stats.ttest_ind(b, a, equal_var=False)
    assert ours.t == pytest.approx(theirs.statistic) and ours.p == pytest.approx(theirs.pvalue, abs=1e-8)
    ci = theirs.confidence_interval(0.95)
    assert (ours.low, ours.high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_comparison_page_in_headless_chromium(pair, tmp_path):
    chromium = require_command("chromium")
    base, slow = pair
    path = build_comparison([base, slow, synthetic_result([1000] * 6, 1.0, seed=9, run_id="third")],
                            str(tmp_path / "cmp"))
    page = PageReader(open(path, encoding="utf-8").read())
    assert {"table-runs", "table-comparison-1", "table-comparison-2"} <= set(page.tables)
    seen = inspect_page(chromium, tmp_path / "cmp" / "index.html")
    assert len(seen["images"]) == 3 and all(img["width"] > 0 and img["complete"] for img in seen["images"])
    assert seen["errors"] == []
    assert all(url.startswith(("file:", "data:")) for url in seen["requests"])


def test_compare_cli(pair, tmp_path, capsys):
    base, slow = pair
    a, b = write_result(tmp_path / "a", base), write_result(tmp_path / "b", slow)
    assert main(["compare", str(a), str(b), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "contender vs baseline" in out and "slower" in out and (tmp_path / "out" / "index.html").is_file()
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2
    assert "no such result file or run folder" in capsys.readouterr().err


def test_a_run_that_accepted_nothing_has_no_latency_and_is_flagged():
    """Every message refused: its latency is unknown, not 0 ms at a 0.000× ratio, and a warning says so."""
    good = synthetic_result([100] * 4, 1.0, run_id="good")
    dead = synthetic_result([0] * 4, 1.0, run_id="dead", failures={k: [("connect", 0, "refused")] * 5 for k in range(4)})
    comparison = cmp.compare(good, [dead])
    for row in comparison.rows:
        if row.metric.unit == "ms":
            assert row.cells[0].value is None and row.cells[0].ratio is None, row.metric.key
            assert row.cells[0].verdict == "not enough data"
    text = cmp.summary_text([good, dead], comparison)
    assert not [line for line in text.splitlines() if "(ms)" in line and ("0.000" in line or "0.000×" in line)]
    assert any("contender accepted no message (20 failed)" in w for w in comparison.warnings)
    # Throughput against a noisy baseline, on the linear scale (zeros): it falls by 100 % at most.
    noisy = synthetic_result([100, 400, 50, 300], 1.0, run_id="noisy")
    change = cmp.compare(noisy, [dead]).rows[0].cells[0].change()
    assert change[0] == pytest.approx(-1.0) and change[1] == -1.0, change  # it read -327 %
    from smtpbench.report import figures  # its lines are absent from the plots, and their legends say why

    figs = figures.comparison_figures([good, dead], comparison.labels)
    assert "contender response (no message accepted)" in figs["spectrum"].series
    assert "contender (no message accepted)" in figs["latency_p99"].series and "baseline" in figs["latency_p99"].series
    reverse = cmp.compare(dead, [good])
    assert reverse.rows[1].baseline is None and reverse.rows[1].cells[0].ratio is None
    assert any("baseline accepted no message" in w for w in reverse.warnings)


def test_a_run_all_in_its_warm_up_is_not_said_to_have_failed():
    """200 messages accepted, all in the warm-up: the warning read "accepted no message (0 failed) ...
    its throughput of 0 measures failures"."""
    good = synthetic_result([100] * 4, 1.0, run_id="good")
    warm = synthetic_result([100, 100, 0], 1.0, warmup=2, run_id="warm")
    assert (warm["totals"]["ok"], warm["totals"]["failed"], warm["totals"]["warmup_ok"]) == (0, 0, 200)
    warnings = cmp.compare(good, [warm]).warnings
    assert "contender measured no message: all 200 fell in its warm-up (2 s), so it has no figures to compare" in warnings
    assert not [w for w in warnings if "accepted no message" in w], warnings
    throughput = cmp.compare(good, [warm]).rows[0]  # nothing measured: unknown, not 0.0 msgs/s at 0.000×
    assert throughput.metric.key == "msgs_per_s" and throughput.cells[0].value is None
    assert throughput.cells[0].ratio is None


def test_a_run_compared_with_itself_says_so(pair, tmp_path, capsys):
    """The same folder given twice read "no significant difference" on every row, with no warning."""
    run = write_result(tmp_path / "run", pair[0])
    assert main(["compare", str(run), str(run), "--out", str(tmp_path / "out")]) == 0
    assert f"WARNING: contender is the baseline's own run ({pair[0]['run_id']})" in capsys.readouterr().out


def test_a_difference_from_a_zero_baseline_names_its_unit():
    """From a 0 % error rate the difference is in percentage points; '+40.95' alone read as a 41 % change."""
    clean = synthetic_result([200] * 5, 1.0, run_id="clean")
    failing = synthetic_result([200] * 5, 1.0, failures={k: [("rcpt", 451, "reply")] * 50 for k in range(5)},
                               run_id="failing")
    row = cmp.compare(clean, [failing]).rows[-1]
    assert row.metric.key == "error_rate" and row.cells[0].change() is None
    assert cmp.fmt_ci(row.cells[0], row.metric.abs_unit).endswith("] pp")
    assert "] pp" in cmp.summary_text([clean, failing], cmp.compare(clean, [failing]))


def test_overlaid_time_series_mark_the_warm_up():
    """The comparison's time series showed a run's warm-up seconds unmarked."""
    from smtpbench.report import figures

    a = synthetic_result([100] * 4, 1.0, run_id="a")
    b = synthetic_result([100] * 4, 1.0, run_id="b", warmup=1.5)
    figs = figures.comparison_figures([a, b], ["baseline", "contender"])
    for name in ("throughput", "latency_p99"):
        assert figs[name].shade == (0.0, 1.5)
        assert figs[name].shade_label == "warm-up:\nbaseline 0 s\ncontender 1.5 s"
    assert figures.comparison_figures([a, a], ["baseline", "contender"])["throughput"].shade is None


def test_compare_on_a_sweep_folder_points_at_its_steps(pair, tmp_path, capsys):
    """'no such result file or run folder' for a folder that is there (a sweep's) puzzled."""
    base, _ = pair
    (tmp_path / "sweep").mkdir()
    (tmp_path / "sweep" / "sweep.json").write_text("{}")
    good = write_result(tmp_path / "run", base)
    assert main(["compare", str(tmp_path / "sweep"), str(good), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "a sweep folder, not a run" in err and "step01" in err


def test_load_warnings_name_settings_and_skip_keys_the_model_leaves_unused():
    """'offered load differs: load.warmup 0.0 → 1.5' named a warm-up an offered load; two open loops
    were told their (unused) sessions differ."""
    a = synthetic_result([100] * 3, 1.0, open_rate=100, run_id="a")
    b = synthetic_result([100] * 3, 1.0, open_rate=100, run_id="b", warmup=1, load__sessions=40)
    warnings = "\n".join(cmp.fairness_warnings(a, b, "contender"))
    assert "load settings differ: load.warmup 0.0 → 1.0" in warnings
    assert "offered load" not in warnings and "sessions" not in warnings
