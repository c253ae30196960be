"""`smtpbench report`: a real short run becomes a self-contained page with every table, plot and export.

The plots are checked through the data behind them (``figures()`` and ``figures.json``), never
pixels: throughput sums to the totals, spectra are monotonic, histograms hold every message. The
page is opened in headless chromium, which must show every image with no console error and fetch
nothing but the file itself and its data URIs.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys

import pytest
from conftest import launch_sink, require_command
from report_helpers import PageReader, inspect_page, smtpbench_run

from smtpbench.report import exports, figures, tables

TABLES = ("throughput", "latency", "phases", "errors", "thresholds", "health")
PLOTS = ("throughput", "latency_over_time", "spectrum", "phases", "histogram", "errors", "concurrency", "health")
SESSIONS = 4


@pytest.fixture(scope="module")
def real_report(tmp_path_factory):
    """One real closed-loop run (3 s, 1 s warm-up) against a sink subprocess, and its report via the CLI.

    Module-scoped so the four checks below share one run; the sink is started as conftest's
    ``start_sink`` does (that fixture is function-scoped).
    """
    tmp = tmp_path_factory.mktemp("report")
    sink = launch_sink(str(tmp / "sink-stats.jsonl"))
    try:
        result = smtpbench_run(tmp / "run", sink.address, "--sessions", str(SESSIONS), "--duration", "3s",
                               "--warmup", "1s")
    finally:
        sink.stop()
    out = tmp / "report"
    cli = subprocess.run([sys.executable, "-m", "smtpbench", "report", str(tmp / "run"), "--out", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr
    assert f"report: {out / 'index.html'}" in cli.stdout
    return result, out, (out / "index.html").read_text(encoding="utf-8")


def test_every_table_and_plot_is_on_the_page(real_report):
    result, _, text = real_report
    page = PageReader(text)
    for name in TABLES:
        assert f"table-{name}" in page.tables, f"table {name} missing"
    for name in ("throughput", "latency", "phases", "health"):
        assert page.tables[f"table-{name}"], f"table {name} is empty"
    if not result["errors"]:
        assert "no failed transactions" in page.text
    if not result["thresholds"]:
        assert "the scenario sets no thresholds" in page.text
    assert sorted(page.figures) == sorted(f"plot-{n}" for n in PLOTS)
    assert len(page.images) == len(PLOTS)

    overview = page.rows("overview")
    assert result["scenario_hash"] in overview["scenario"][0]
    assert overview["command"][0] == result["command"]
    assert result["environment"]["python"] in overview["versions"][0]
    assert overview["load"][0].startswith(f"closed loop, {SESSIONS} sessions")
    verdict = {"ok": "VALID · all thresholds passed", "thresholds_failed": "VALID · THRESHOLDS FAILED",
               "invalid": "INVALID RUN"}[result["verdict"]]
    assert verdict in page.text
    for reason in result["health"]["reasons"]:  # a noisy machine may make the run invalid: then it says why
        assert reason in page.text

    t = result["totals"]
    thr = page.rows("table-throughput")
    assert thr["offered rate"][0].startswith("–")  # closed loop offers no rate
    assert f"{t['msgs_per_s']:,.1f} msgs/s" in thr["accepted (OK)"][0] and f"{t['mb_per_s']:,.3f} MB/s" in thr["accepted (OK)"][0]
    assert thr["OK / failed"][0].startswith(f"{t['ok']:,} / {t['failed']:,}")

    lat = page.rows("table-latency")
    assert lat["percentile"] == ["response (corrected)", "service (uncorrected)", "send lag"]
    for p in ("p50", "p90", "p99", "p99.9", "p99.99", "max"):
        assert lat[p][:2] == [tables.ms(result["latency"]["response"][p]), tables.ms(result["latency"]["service"][p])]
    assert set(page.rows("table-phases")) - {"phase"} == set(result["latency"]["phases"])
    assert page.rows("table-health")["valid"] == ["yes" if result["health"]["valid"] else "NO"]


def test_a_ramp_after_its_warm_up_offers_what_it_accepts(sink, tmp_path):
    """A 2 s ramp to 300/s with a 1 s warm-up: 75 arrivals in the warm-up, 225 after it. The Throughput
    table read 150 msgs/s offered and released (the whole schedule's mean) beside ~225 sent and accepted."""
    scenario = tmp_path / "ramp.toml"
    scenario.write_text('[load]\nmodel = "open"\nwarmup = "1s"\n'
                        '[[load.stages]]\nduration = "2s"\nrate = 300\nramp = true\n')
    result = smtpbench_run(tmp_path / "run", sink.address, "--scenario", str(scenario))
    assert result["totals"]["issued"] == pytest.approx(300, abs=2)
    rows = {r[0]: r[1] for r in tables.throughput(result).rows}
    assert rows["offered rate"] == "225.0 msgs/s"
    assert rows["arrivals released"] == tables.rate(result["timeseries"]["offered"][result["timeseries"]["t"].index(1)])
    assert float(rows["arrivals released"].split()[0]) == pytest.approx(225, abs=3)
    assert float(rows["accepted (OK)"].split()[0].replace(",", "")) == pytest.approx(225, rel=0.1)


def test_page_is_self_contained(real_report):
    _, out, text = real_report
    page = PageReader(text)
    assert not {"script", "link", "iframe", "object"} & page.tags
    assert not re.search(r"(src|href)=\"(https?:)?//", text)
    assert "@import" not in text and "url(" not in text
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    for link in page.links:  # in-page anchors, or files written beside the page
        assert link.startswith("#") or (out / link).is_file(), link


def test_data_behind_the_plots(real_report):
    result, out, _ = real_report
    figs = figures.figures(result)
    assert list(figs) == list(PLOTS)
    assert json.loads((out / "figures.json").read_text()) == json.loads(exports.figures_json(figs))
    t, ts = result["totals"], result["timeseries"]
    n = len(ts["t"])

    thr = figs["throughput"].series
    assert "offered" not in thr  # closed loop
    assert sum(thr["ok"].y) == t["ok"] + t["warmup_ok"] > 0
    assert sum(thr["failed"].y) == t["failed"] + t["warmup_failed"]
    assert sum(thr["sent"].y) == t["issued"]
    assert figs["throughput"].shade == (0.0, 1.0)  # the warm-up

    over_time = figs["latency_over_time"]
    assert over_time.shade == (0.0, 1.0)
    for i in range(n):
        column = [over_time.series[f"response {p}"].y[i] for p in figures.LATENCY_PCTS]
        if ts["ok"][i] == 0:
            assert column == [None] * len(column)  # an idle interval is a gap, not 0 ms
        else:
            assert column == sorted(column)

    for name in ("response (corrected)", "service (uncorrected)"):
        s = figs["spectrum"].series[name]
        assert all(a < b for a, b in zip(s.x, s.x[1:])) and all(a <= b for a, b in zip(s.y, s.y[1:]))
    spectrum = figs["spectrum"].series["response (corrected)"]
    assert spectrum.y[spectrum.x.index(2)] == result["latency"]["response"]["p50"] / 1000  # 1/(1-0.5) = 2
    assert spectrum.y[-1] <= result["latency"]["response"]["max"] / 1000

    for name in ("response", "service"):
        h = figs["histogram"].series[name]
        assert len(h.x) == len(h.y) + 1 and all(a < b for a, b in zip(h.x, h.x[1:]))
        assert sum(h.y) == result["latency"][name]["count"] == t["ok"]

    bars = figs["phases"].series
    assert bars["p50"].x and set(bars["p50"].x) <= set(result["latency"]["phases"])
    assert all(a <= b for a, b in zip(bars["p50"].y, bars["p99"].y))
    assert sum(sum(s.y) for s in figs["errors"].series.values()) == t["failed"] + t["warmup_failed"]
    conc = figs["concurrency"].series
    assert len(conc["connections"].y) == n and 0 < max(conc["messages in flight"].y) <= SESSIONS
    cpu = figs["health"].series["generator CPU (% of a core)"].y
    assert len(cpu) == n and 0 < max(cpu) <= 100 * result["load"]["processes"] + 5


def test_exports_beside_the_page(real_report):
    result, out, _ = real_report
    for name in PLOTS:
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"<svg" in (out / f"{name}.svg").read_bytes()[:2000]
    for name in ("response", "service"):
        text = (out / f"{name}.hgrm").read_text()
        assert text.split("\n", 1)[0].split() == ["Value", "Percentile", "TotalCount", "1/(1-Percentile)"]
        rows = exports.parse_hgrm(text)
        values, pcts, counts = zip(*rows)
        assert list(values) == sorted(values) and list(counts) == sorted(counts)
        assert all(a < b for a, b in zip(pcts, pcts[1:])) and pcts[-1] == 1.0
        assert counts[-1] == result["latency"][name]["count"]
        assert values[pcts.index(0.5)] == round(result["latency"][name]["p50"] / 1000, 3)
        assert f"#[Max     = {result['latency'][name]['max'] / 1000:12.3f}" in text
    lines = (out / "timeseries.csv").read_text().splitlines()
    header = lines[0].split(",")
    assert len(lines) == 1 + len(result["timeseries"]["t"])
    ok = header.index("ok")
    assert sum(int(line.split(",")[ok]) for line in lines[1:]) == sum(result["timeseries"]["ok"])
    assert "response_p99_us" in header and "service_p99_us" in header


def test_page_shows_its_images_in_headless_chromium(real_report):
    chromium = require_command("chromium")
    _, out, _ = real_report
    seen = inspect_page(chromium, out / "index.html")
    assert seen["title"].startswith("smtpbench")
    assert len(seen["images"]) == len(PLOTS)
    for img in seen["images"]:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    assert seen["errors"] == []
    assert seen["requests"] and all(url.startswith(("file:", "data:")) for url in seen["requests"]), seen["requests"]


def test_matplotlib_is_imported_only_when_drawing():
    code = ("import sys, smtpbench.cli, smtpbench.report, smtpbench.report.build, smtpbench.report.compare; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported eagerly'")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_ci_installs_chromium():
    """The browser check must not be skipped in CI: .ci/run installs Debian's chromium."""
    ci = open(os.path.join(os.path.dirname(__file__), "..", ".ci", "run"), encoding="utf-8").read()
    assert re.search(r"apt-get install[^\n]*\bchromium\b", ci)
