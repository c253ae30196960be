"""Locust throughput: msgs/s per Locust worker process beside ``smtpbench run`` with one process.

The same closed-loop scenario (10 sessions, 1 KiB, connections reused) runs
against one ``smtpbench sink`` three ways, interleaved round by round (the
order rotating, so drift of a shared machine hits all alike):

* ``smtpbench run`` with one process (uvloop, the native generator);
* ``smtpbench locust --workers 1``: a Locust master and one worker (gevent);
* ``smtpbench locust --workers 2``: two workers, msgs/s divided by two.

Reported per way: the median over rounds of msgs/s per generator process,
of the generator's CPU share (from each result's health section) and CPU
microseconds per message (share / rate: what a process costs per message,
less sensitive than the rate to a busy machine), and the ratio Locust
worker / native as the median of per-round ratios. Figures come from the
runs' own result.json (warm-up excluded), not from wall time, so Locust's
start-up is not counted against it.

On a 2-core machine the sink and the generator share the cores: with two
workers the processes compete, so per-worker figures drop; they show what
one more worker adds on this machine, not a worker's ceiling.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from .harness import ROOT, Options, Peer, Report, Table, free_port, median, smtpbench_sink

NAME = "throughput"

SCENARIO = """
name = "locust-throughput"
description = "closed loop, 10 sessions of 1 KiB messages, connections reused"
seed = 1
[load]
model = "closed"
sessions = 10
messages_per_connection = 100
duration = "{duration}s"
warmup = "1s"
[message]
size = "1KiB"
"""

NATIVE, LOCUST1, LOCUST2 = "smtpbench run (1 process)", "Locust, 1 worker", "Locust, 2 workers"
WAYS = (NATIVE, LOCUST1, LOCUST2)
ACCEPTED_EXITS = (0, 1, 3)   # 3: the run says the generator was the bottleneck, which is what is measured


def _measure(way: str, scenario: Path, port: int, folder: Path, seconds: float) -> dict:
    out = folder / "run"
    target = f"127.0.0.1:{port}"
    if way == NATIVE:
        cmd = [sys.executable, "-m", "smtpbench", "run", "-s", str(scenario), "--target", target, "--processes", "1",
               "--out", str(out)]
        processes = 1
    else:
        processes = 1 if way == LOCUST1 else 2
        cmd = [sys.executable, "-m", "smtpbench", "locust", str(scenario), "--workers", str(processes),
               "--target", target, "--out", str(out), "--no-report", "--locust-arg=--only-summary"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=seconds + 180)
    path = out / "result.json"
    if proc.returncode not in ACCEPTED_EXITS or not path.exists():
        raise RuntimeError(f"{way} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    result = json.loads(path.read_text())
    if way == NATIVE:
        cpus = result["health"]["cpu_by_process"]
    else:
        cpus = [w["cpu_median"] for w in result["health"]["workers"]]
    per_process = result["totals"]["msgs_per_s"] / processes
    cpu = statistics.median(cpus) if cpus else float("nan")
    return {"msgs_per_s": per_process, "cpu": cpu, "cpu_us_per_msg": cpu / per_process * 1e6 if per_process else 0.0,
            "failed": result["totals"]["failed"], "verdict": result["verdict"]}


def run(opts: Options) -> Report:
    rounds = 1 if opts.quick else max(1, min(opts.rounds, 3))
    seconds = 3.0 if opts.quick else max(5.0, opts.seconds * 4)
    port = free_port()
    figures: dict[str, list[dict]] = {w: [] for w in WAYS}
    with tempfile.TemporaryDirectory(prefix="smtpbench-bench-locust-") as tmp, \
            Peer("smtpbench-sink", smtpbench_sink(port), port) as _sink:
        scenario = Path(tmp) / "scenario.toml"
        scenario.write_text(SCENARIO.format(duration=seconds + 1))
        for r in range(rounds):
            order = WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]
            for way in order:
                print(f"   round {r + 1}/{rounds}: {way}", flush=True)
                with tempfile.TemporaryDirectory(dir=tmp) as folder:
                    figures[way].append(_measure(way, scenario, port, Path(folder), seconds))
    native = figures[NATIVE]
    rows, data = [], {}
    for way in WAYS:
        f = figures[way]
        rate = median([x["msgs_per_s"] for x in f])
        ratio = median([x["msgs_per_s"] / n["msgs_per_s"] for x, n in zip(f, native) if n["msgs_per_s"]])
        cpu = median([x["cpu"] for x in f])
        us = median([x["cpu_us_per_msg"] for x in f])
        rows.append([way, f"{rate:,.0f}", f"{ratio:.2f}x", f"{cpu:.2f}", f"{us:,.0f}",
                     f"{sum(x['failed'] for x in f)}"])
        data[way] = {"msgs_per_s_per_process": rate, "ratio_to_native": ratio, "cpu_share": cpu,
                     "cpu_us_per_msg": us, "rounds": f}
    table = Table(f"closed loop, 10 sessions, 1 KiB, {seconds:g} s measured (1 s warm-up), median of {rounds} round(s)",
                  ["generator", "msgs/s per process", "vs run", "CPU share", "CPU us/msg", "failed"], rows)
    notes = ["Locust figures are per worker process (total / workers); the sink shares this machine's cores.",
             "A verdict 'invalid' is expected here: the generator is run flat out, so it is the bottleneck."]
    return Report("msgs/s per Locust worker process vs smtpbench run (one process)", tables=[table], notes=notes,
                  data={"ways": data})
