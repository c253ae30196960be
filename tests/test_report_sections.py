"""Report sections that a clean loopback run does not exercise: errors, failed thresholds, open loop,
sink counters and cross-check, idle intervals, escaping, and the CLI with several runs or a bad path.

The results are synthetic but schema-true: a real Recorder fed known transactions, turned into a
result by the real ``build_result`` (see report_helpers.synthetic_result).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from report_helpers import PageReader, synthetic_result, write_result

from smtpbench.cli import main
from smtpbench.console import summary_text
from smtpbench.metrics import Histogram
from smtpbench.report import data, exports, figures, tables
from smtpbench.report.build import build_report

FAILURES = {1: [("rcpt", 451, "reply"), ("end_of_data", 0, "timeout")], 2: [("mail", 550, "reply")],
            3: [("rcpt", 451, "reply")]}


@pytest.fixture(scope="module")
def failing() -> dict:
    """4 s, 1 s warm-up, four failures, a p99 threshold that fails, and bench's sink sections."""
    result = synthetic_result([100, 200, 300, 300], 2.0, warmup=1, failures=FAILURES,
                              thresholds={"response.p99": "1ms", "error_rate": 0.5})
    result["sink"] = {"messages": 899, "connections": 3, "replies": {"250": 1800}}
    result["crosscheck"] = {"client_ok": 900, "sink_messages": 899, "difference": -1, "passed": False}
    result["health"]["valid"] = False
    result["health"]["reasons"].append("1 message(s) the client saw accepted were not counted by the sink")
    result["verdict"] = "invalid"
    return result


def test_errors_table_and_plot(failing):
    rows = tables.errors(failing).rows
    assert [r[:4] for r in rows] == [["rcpt", "451", "reply", "2"], ["end_of_data", "–", "timeout", "1"],
                                     ["mail", "550", "reply", "1"]]
    assert rows[0][4:6] == ["1.001", "3.001"]  # first and last seen (s)
    errs = figures.figures(failing)["errors"].series
    assert sum(errs["4xx"].y) == 2 and sum(errs["5xx"].y) == 1 and sum(errs["other"].y) == 1
    assert errs["4xx"].y[1] == 1 and errs["other"].y[1] == 1
    t = failing["totals"]
    assert sum(sum(s.y) for s in errs.values()) == t["failed"] + t["warmup_failed"] == 4


def test_thresholds_verdict_sink_and_crosscheck(failing):
    ths = tables.thresholds(failing)
    assert [r[0] for r in ths.rows] == ["response.p99", "error_rate"]
    assert [r[-1] for r in ths.rows] == ["FAIL", "pass"] and ths.classes == ["fail", "pass"]
    lines = tables.verdict_lines(failing)
    assert any("not counted by the sink" in line for line in lines)
    assert any(line.startswith("threshold response.p99 ≤ 1ms failed") for line in lines)
    all_tables = tables.tables(failing)
    assert list(all_tables)[-2:] == ["sink", "crosscheck"]
    assert ["messages", "899"] in all_tables["sink"].rows
    failing["sink"].update(time=1795926934.405, elapsed=2.538)   # shown as a time and in seconds
    sink_rows = dict(tables.tables(failing)["sink"].rows)
    assert (sink_rows["time"], sink_rows["elapsed"]) == ("2026-11-29 04:35:34 UTC", "2.538 s")
    assert ["passed", "False"] in all_tables["crosscheck"].rows and "fail" in all_tables["crosscheck"].classes


def test_a_thresholds_limit_is_shown_in_the_unit_of_its_observed_value(failing):
    """error_rate = 0.01 was shown as "0.01" beside an observed "7.2976%" (a 1 % limit read as 0.01 %),
    and no limit said which way it bound (min_throughput is a floor)."""
    rows = {r[0]: r[1:] for r in tables.thresholds(failing).rows}
    assert rows["error_rate"][:2] == ["≤ 50%", f"{failing['totals']['error_rate']:.4%}"]
    assert rows["response.p99"][0] == "≤ 1ms"
    assert tables.limit_text("error_rate", 0.001) == "≤ 0.1%"
    assert tables.limit_text("min_throughput", 1500) == "≥ 1,500 msgs/s"
    # The summary run and bench print says it alike (it read "error_rate <= 0.5: observed 7.2976%").
    assert f"threshold error_rate ≤ 50%: observed {failing['totals']['error_rate']:.4%} [pass]" in summary_text(failing)


def test_full_report_of_a_failing_run(failing, tmp_path):
    path = build_report(failing, str(tmp_path / "r"))
    page = PageReader(open(path, encoding="utf-8").read())
    assert "INVALID RUN" in page.text and "not counted by the sink" in page.text
    for name in ("errors", "thresholds", "sink", "crosscheck"):
        assert page.tables[f"table-{name}"], name
    assert page.rows("table-errors")["rcpt"][:3] == ["451", "reply", "2"]
    assert len(page.images) == len(figures.BUILDERS)


def test_open_loop_shows_offered_rate():
    result = synthetic_result([100, 100, 100], 1.0, open_rate=100)
    thr = figures.throughput(result).series
    assert sum(thr["offered"].y) == 300 == sum(thr["sent"].y)
    assert tables.throughput(result).rows[0] == ["offered rate", "100.0 msgs/s"]
    assert tables.describe_load(result).startswith("open loop, 100 msgs/s constant arrivals")


def test_a_staged_load_is_described_by_its_stages_length():
    """Stages of 8 s under the default 20 s duration end the load at 8 s: the report's load line read "20 s"."""
    result = synthetic_result([100, 100, 100], 1.0, open_rate=100)
    result["load"].update(rate=None, duration_s=20, stages=[{"duration": 3, "rate": 400, "ramp": True},
                                                             {"duration": 5, "rate": 400, "ramp": False}])
    text = tables.describe_load(result)
    assert "400/s for 3s (ramp) → 400/s for 5s" in text and ", 8 s" in text and "20 s" not in text, text
    result["load"]["duration_s"] = 6  # a duration shorter than the stages cuts them
    assert ", 6 s" in tables.describe_load(result)


def test_a_message_size_that_is_not_a_number_is_shown_as_written():
    """A hand-edited size ("big") was a TypeError in the report's header (format_size compared it with 1024)."""
    result = synthetic_result([10, 10], 1.0)
    result["scenario"]["message"]["size"] = "big"
    assert tables.describe_message(result).startswith("big messages")


def test_failures_are_drawn_in_the_same_colour_whatever_the_load_model():
    """Coloured by position, a closed loop's failed line came out green (the open loop's red)."""
    for result in (synthetic_result([10, 10], 1.0), synthetic_result([10, 10], 1.0, open_rate=10)):
        series = figures.throughput(result).series
        assert series["failed"].color == "C3" and series["ok"].color == "C2"


def test_one_session_is_singular():
    """"closed loop, 1 sessions" in the header and "(closed loop: 1 sessions)" in the Throughput table."""
    result = synthetic_result([10, 10], 1.0, load__sessions=1)
    assert tables.describe_load(result).startswith("closed loop, 1 session,")
    assert tables.throughput(result).rows[0][1].endswith("(closed loop: 1 session)")


def test_idle_interval_is_a_gap_and_left_out_of_statistics():
    result = synthetic_result([100, 0, 100, 100], 1.0)
    p99 = figures.latency_over_time(result).series["response p99"].y
    idle = result["timeseries"]["t"].index(1)
    assert p99[idle] is None and p99[idle + 1] is not None
    assert data.interval_values(result, "msgs_per_s").tolist() == [100, 0, 100, 100]
    assert len(data.interval_values(result, "response.p99")) == 3  # no percentile of nothing


def test_hgrm_rows_are_the_histogram_percentiles():
    result = synthetic_result([500, 500], 3.0, spread=0.8)
    h = data.histogram(result, "response")
    rows = exports.parse_hgrm(exports.hgrm(h))
    assert rows[0][1] == 0.0 and rows[-1] == (h.max / 1000, 1.0, h.total)
    for value, pct, count in rows[:-1]:
        assert value == round(h.percentile(pct * 100) / 1000, 3)
        assert count >= int(np.ceil(pct * h.total))
    # five levels per halving: 0, .1 … .5, .55 … .75, .775 …
    assert [round(p, 4) for _, p, _ in rows[:8]] == [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.55, 0.6]


def test_spectrum_and_log_bins_of_a_known_histogram():
    h = Histogram()
    h.record_many([100] * 50 + [1000] * 40 + [10000] * 9 + [100000])
    s = data.spectrum(h)
    assert s["value"][list(s["percentile"]).index(0.5)] == 100
    assert s["value"][-1] == 100000 and s["count"][-1] == 100
    edges, counts = data.log_bins(h)
    assert counts.sum() == 100 and np.all(np.diff(edges) > 0)
    assert counts[np.searchsorted(edges, 1001.5, side="right") - 1] == 40  # 1000 µs: bucket [1000, 1003]


def test_text_from_the_result_is_escaped():
    result = synthetic_result([10, 10], 1.0)
    result["command"] = "smtpbench run <script>alert(1)</script>"
    result["errors"] = [{"phase": "mail", "code": 550, "kind": "reply", "count": 1, "first_s": 0.1, "last_s": 0.1,
                         "example": "550 <img src=x onerror=alert(1)>"}]
    from smtpbench.report import html

    text = html.run_page(result, tables.overview(result), [], tables.tables(result), {}, {}, [])
    assert "<script>" not in text and "<img src=x" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_cli_writes_one_report_per_run(tmp_path, capsys):
    runs = [write_result(tmp_path / f"run{i}", synthetic_result([50, 50], 1.0 + i, run_id=f"r{i}")) for i in (1, 2)]
    assert main(["report", str(runs[0]), str(runs[1] / "result.json"), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    for i in (1, 2):
        index = tmp_path / "out" / f"r{i}" / "index.html"
        assert f"report: {index}" in out and index.is_file()
        assert (index.parent / "response.hgrm").is_file() and (index.parent / "spectrum.svg").is_file()
        assert json.loads((index.parent / "figures.json").read_text())["throughput"]["series"]["ok"]["y"][:2] == [50, 50]


def test_cli_rejects_what_is_not_a_result(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "no such result file or run folder" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text('{"schema": "other"}')
    assert main(["report", str(tmp_path / "bad.json")]) == 2
    assert "not a smtpbench result" in capsys.readouterr().err


def test_a_run_with_no_accepted_message_shows_no_latency():
    """Empty histograms summarise as zeros: the tables must show a dash, not a made-up 0.000 ms."""
    dead = synthetic_result([0] * 3, 1.0, failures={k: [("connect", 0, "refused")] * 4 for k in range(3)})
    rows = tables.latency(dead).rows
    assert all(cell == tables.DASH for row in rows[:-1] for cell in row[1:]), rows
    assert rows[-1][1:] == ["0"] * (len(rows[-1]) - 1)  # the count is a real 0
    assert not tables.phases(dead).rows and "no SMTP phase was timed" in tables.phases(dead).note
    dead["latency"]["phases"]["mail"] = Histogram().summary()
    phase = tables.phases(dead).rows[-1]
    assert phase[:2] == ["mail", "0"] and set(phase[2:]) == {tables.DASH}


@pytest.mark.parametrize("edit, named", [
    (lambda r: r["timeseries"].pop("ok"), "timeseries.ok"),
    (lambda r: r["totals"].pop("msgs_per_s"), "totals.msgs_per_s"),
    (lambda r: r["load"].update(model=None), "load.model"),
    (lambda r: r.update(errors=None), "errors"),
    (lambda r: r["errors"][0].pop("count"), "errors"),
    (lambda r: r["timeseries"]["failed"].pop(), "timeseries.failed"),
    (lambda r: r["timeseries"]["response"]["p99"].pop(), "timeseries.response.p99"),
    (lambda r: r["latency"]["response"].pop("p99"), "latency.response"),
    # A key that may hold null is still one the report reads: left out, it was a KeyError.
    (lambda r: r["load"].pop("warmup_s"), "load.warmup_s"),
    (lambda r: r["timeseries"]["response"].pop("p99"), "timeseries.response.p99"),
    (lambda r: r["timeseries"]["service"].pop("p99"), "timeseries.service.p99"),
])
@pytest.mark.parametrize("command", ["report", "compare"])
def test_a_hand_edited_result_is_one_line_and_exit_2(failing, tmp_path, capsys, edit, named, command):
    """A result cut down inside a table gave a KeyError/TypeError traceback (exit 1) half-way through a report."""
    good = write_result(tmp_path / "good", failing)
    broken = json.loads(json.dumps(failing))
    edit(broken)
    bad = write_result(tmp_path / "bad", broken)
    args = ["report", str(bad), "--out", str(tmp_path / "out")] if command == "report" else \
        ["compare", str(good), str(bad), "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a complete smtpbench result" in err and named in err, err


def test_an_empty_folder_says_it_holds_no_result(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    assert "no result.json in this folder" in capsys.readouterr().err


def test_a_load_end_inside_an_interval_cuts_it_from_the_statistics():
    """A load that stopped half-way through its last second (interrupted, or on its message count):
    that interval's counts are over half a second, so it is left out of the measured ones."""
    result = synthetic_result([300, 300, 200], 1.0, open_rate=300)
    result["totals"]["load_end_us"] = 3_000_000
    assert data.measured(result).tolist() == [t >= 0 for t in result["timeseries"]["t"]]
    assert data.measured_rate(result, "ok") == pytest.approx(800 / 3)
    result["totals"]["load_end_us"] = 2_500_000
    assert data.measured(result).sum() == 2


def test_axis_labels_stay_inside_the_image():
    """Five-digit rates (a closed loop past 10,000 msgs/s) pushed the y-axis label off the left edge."""
    from smtpbench.report import plots

    fast = figures.Figure("throughput", "Throughput over time", figures.TIME, "messages/s",
                          {"ok": figures.Series([0.5, 1.5, 2.5], [17857, 18213, 15447])})
    fig = plots.render(fast)
    ax = fig.axes[0]
    fig.canvas.draw()  # as savefig does: labels take their places
    renderer = fig.canvas.get_renderer()
    assert ax.yaxis.label.get_window_extent(renderer).x0 >= 0
    assert ax.get_tightbbox(renderer).x0 >= 0


def test_a_long_legend_stays_inside_the_image():
    """With two generator processes the health plot's legend entry ran off the image's right edge
    ("CPU of the busiest of 2 process" and the rest cut)."""
    from smtpbench.report import plots

    result = synthetic_result([100, 100], 1.0)
    result["load"]["processes"] = 2
    fig = plots.render(figures.health(result))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    legend = next(a.get_legend() for a in fig.axes if a.get_legend())
    assert legend.get_window_extent(renderer).x1 <= fig.get_figwidth() * fig.dpi
    assert fig.axes[0].get_tightbbox(renderer).x0 >= 0


def test_count_axes_start_at_zero_and_an_empty_plot_keeps_its_time_axis():
    """A relay backlog of 0 throughout drew its axis from -0.04 to 0.04 and rates of 10-20 msgs/s one
    from 10; a run with no latency drew its time axis from -0.04 to 0.04 s instead of over the run."""
    from smtpbench.report import plots

    fig = plots.render(figures.Figure("relay", "t", figures.TIME, "messages/s", {
        "delivered": figures.Series([0.5, 1.5, 2.5], [20, 10, 19]),
        "backlog": figures.Series([0.5, 1.5, 2.5], [0, 0, 0], secondary=True)}))
    left, right = fig.axes
    assert left.get_ylim()[0] == 0 and right.get_ylim() == (0, 1)
    dead = synthetic_result([0, 0, 0], 1.0)
    t = dead["timeseries"]["t"]
    assert plots.render(figures.latency_over_time(dead)).axes[0].get_xlim() == (t[0], t[-1] + 1)


def test_the_tallest_stack_of_failures_is_not_cut_by_the_frame():
    """An empty "other" class stacked on top pinned the axis' top to the tallest stack (46 of 46)."""
    from smtpbench.report import plots

    result = synthetic_result([100, 100, 100], 1.0, failures={1: [("rcpt", 451, "reply")] * 3,
                                                              2: [("mail", 550, "reply")] * 2})
    fig_data = figures.errors_over_time(result)
    assert not any(fig_data.series["other"].y)
    tallest = max(map(sum, zip(*(s.y for s in fig_data.series.values()))))
    assert plots.render(fig_data).axes[0].get_ylim()[1] > tallest


def test_the_spectrum_ends_at_the_maximum():
    """The p = 1 row was dropped for want of a finite x, and with it the slowest messages: a run with
    a 295 ms maximum drew its spectrum up to 192 ms."""
    result = synthetic_result([300, 300], 1.0)
    h = data.histogram(result, "response")
    series = figures.spectrum_series(result, "response")
    assert series.x[-1] == h.total and series.y[-1] == h.max / 1000
    assert series.y == sorted(series.y) and all(a < b for a, b in zip(series.x, series.x[1:]))
    exact = synthetic_result([512, 512], 1.0)  # 1024 messages: a level lands on x = 1024
    series = figures.spectrum_series(exact, "response")
    assert series.x[-1] == 1024 and all(a < b for a, b in zip(series.x, series.x[1:]))
    assert series.y[-1] == data.histogram(exact, "response").max / 1000


def test_errors_counted_with_the_warm_up_say_so():
    """result.json's errors cover the whole run; the headline 'failed' leaves the warm-up out."""
    result = synthetic_result([100, 100, 100], 1.0, warmup=1, failures={0: [("rcpt", 451, "reply")] * 3,
                                                                        2: [("rcpt", 451, "reply")]})
    t = result["totals"]
    assert (t["warmup_failed"], t["failed"]) == (3, 1) and sum(e["count"] for e in result["errors"]) == 4
    note = tables.errors(result).note
    assert f"{t['warmup_failed']:,} of the {t['failed'] + t['warmup_failed']:,} failures came in the warm-up" in note


def test_cpu_of_several_processes_is_named_as_the_busiest():
    """Processes' CPU gauges merge as their maximum: with two, the plot is one process's share, not the total."""
    result = synthetic_result([100, 100], 1.0)
    assert "generator CPU (% of a core)" in figures.health(result).series
    result["load"]["processes"] = 2
    assert list(figures.health(result).series)[0] == "CPU of the busiest of 2 processes (% of a core)"


def test_the_health_plots_two_axes_in_two_colours():
    """CPU (left axis) and loop lag (right axis) were drawn in one colour, told apart by the dashes alone."""
    cpu, lag = figures.health(synthetic_result([100, 100], 1.0)).series.values()
    assert lag.secondary and cpu.color and lag.color and cpu.color != lag.color


def test_a_load_shorter_than_an_interval_is_named_in_the_throughput_plot():
    """500 messages in 0.07 s drew one point at '500 messages/s' beside a table saying 8,171 msgs/s."""
    result = synthetic_result([500], 1.0)
    result["totals"]["load_end_us"] = 70_472
    note = figures.throughput(result).note
    assert "the load ended 0.070 s into the interval from 0 s" in note and "read low" in note
    result["totals"]["load_end_us"] = 1_000_000
    assert figures.throughput(result).note == ""


def test_the_headline_rate_is_named_accepted_not_completed(failing):
    """msgs_per_s leaves failed messages out: labelled 'completed', a 40 % error run read as unfinished."""
    rows = {r[0]: r[1] for r in tables.throughput(failing).rows}
    assert "completed" not in rows
    assert rows["accepted (OK)"].startswith(tables.rate(failing["totals"]["msgs_per_s"]))


@pytest.mark.parametrize("edit, named", [
    (lambda r: r["timeseries"]["ok"].__setitem__(1, "x"), "timeseries.ok"),
    (lambda r: r["histograms"]["response"].pop("total"), "histograms.response"),
    (lambda r: r["histograms"]["response"].update(buckets="zz"), "histograms.response"),
    (lambda r: r["intervals"][1]["response"].pop("total"), "intervals.1"),
    (lambda r: r["errors"][0].update(first_s="soon"), "errors.0"),
    (lambda r: r["latency"]["phases"].update(mail=5), "latency.phases.mail"),
    (lambda r: r["thresholds"][0].pop("observed"), "thresholds"),
    (lambda r: r["health"].update(reasons="oops"), "health.reasons"),
    (lambda r: r["totals"].update(load_end_us="later"), "totals.load_end_us"),
    (lambda r: r["totals"].update(warmup_failed="some"), "totals.warmup_failed"),
    (lambda r: r["timeseries"].update(interval_s="1s"), "timeseries.interval_s"),
    (lambda r: r.update(interrupted={"signal": "SIGINT", "at_s": "soon"}), "interrupted"),
    (lambda r: r["load"].update(stages=[{"rate": 100}]), "load.stages"),
    (lambda r: r["load"].update(model="open", rate="fast"), "load.rate"),
    # Found by setting each figure of a real result to a string, a null, a list: each was a TypeError.
    (lambda r: r["latency"]["send_lag"].update(p99="x"), "latency.send_lag"),
    (lambda r: r["latency"]["phases"]["mail"].update(count=None), "latency.phases.mail"),
    (lambda r: r["totals"].update(bytes=None), "totals.bytes"),
    (lambda r: r["health"].update(cpu_by_process="x"), "health.cpu_by_process"),
    (lambda r: r["timeseries"].update(interval_s=None), "timeseries.interval_s"),
    (lambda r: r["timeseries"]["ok"].__setitem__(0, None), "timeseries.ok"),
    (lambda r: r["load"].update(messages="many"), "load.messages"),
    (lambda r: r.update(relay={"accepted": 3, "delivery_latency": {"count": 3, "p50": "x"}}), "relay.delivery_latency"),
    (lambda r: r.update(scenario="quickstart"), "scenario"),
    (lambda r: r.update(environment=None), "environment"),
    (lambda r: r["scenario"].update(message=[]), "scenario.message"),
    (lambda r: r.update(relay={"accepted": 3, "timeseries": {"t": [0, 1], "accepted": [2, 1], "delivered": [2]}}),
     "relay.timeseries"),
])
def test_a_result_with_bad_values_is_one_line_and_exit_2(failing, tmp_path, capsys, edit, named):
    """Values of the wrong type deep inside (a string in a time series, a histogram cut down) crashed a
    report with ValueError/KeyError/TypeError."""
    broken = json.loads(json.dumps(failing))
    edit(broken)
    bad = write_result(tmp_path / "bad", broken)
    assert main(["report", str(bad), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "not a complete smtpbench result" in err and named in err, err


def test_reports_of_several_runs_with_free_text_ids_stay_in_the_out_folder(tmp_path, capsys):
    """`report A B --out DIR` joined DIR with each raw run id: '../escaped' wrote its report beside DIR."""
    runs = [write_result(tmp_path / name, synthetic_result([10, 10], 1.0, run_id=run_id))
            for name, run_id in (("a", "../escaped"), ("b", "nightly run/42"))]
    assert main(["report", *map(str, runs), "--out", str(tmp_path / "out")]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == ["escaped", "nightly-run-42"]
    assert not (tmp_path / "escaped").exists()


def test_a_comparison_of_free_text_run_ids_stays_under_reports():
    """report_dir made a run id safe, comparison_dir did not: "../../x" put a comparison two levels up."""
    from smtpbench.report.build import comparison_dir

    folder = comparison_dir([{"run_id": "../../elsewhere"}, {"run_id": "nightly run/42"}], "reports")
    assert folder == os.path.join("reports", "compare-elsewhere-vs-nightly-run-42")


@pytest.mark.parametrize("run_id, folder", [("nightly run 42", "nightly-run-42"), ("../../elsewhere", "elsewhere"),
                                            ("default-20261129-043530-b210", "default-20261129-043530-b210")])
def test_a_run_id_names_its_report_folder_safely(run_id, folder):
    """Any run id gets a report (Locust's --smtp-run-id is free text); one holding a path stays a name
    under reports/ rather than sending the report elsewhere (or being refused)."""
    from smtpbench.report.build import report_dir

    assert report_dir({"run_id": run_id}, "reports") == os.path.join("reports", folder)
