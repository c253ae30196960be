"""Load generator: ``smtpbench run`` beside Postfix ``smtp-source``, against one ``smtp-sink``, in one run.

One Postfix ``smtp-sink`` serves every measurement (plain invocation: no
``-w``/``-W`` delays, no ``-d``/``-D`` dumps, no ``-c`` counters, no ``-v``
or ``-s`` logging; those are the switches that cost it time per message,
the rest only shape the EHLO reply; PIPELINING stays announced). Each round
runs, in an order rotating from round to round so a shared machine's drift
hits all alike, the same closed-loop workload (1 KiB, 10 sessions,
connections reused, the same message count N) with:

* ``smtp-source -d -s 10 -l 1024 -m N``: Postfix's C generator. It never
  pipelines: it greets with HELO (so it never even learns of PIPELINING),
  writes one command per write(2) and waits for each reply (checked with
  strace; its manual lists "No SMTP command pipelining support" under BUGS);
* ``smtpbench run --no-pipelining``: one command, one reply, like smtp-source;
* ``smtpbench run``: MAIL, RCPT and DATA in one write (RFC 2920);
* ``smtpbench run`` with ``SMTPBENCH_NO_RECORD=1``: the same, per-transaction
  recording off (see ``smtpbench/load/recorder.py``): what recording costs
  (after the rounds, RECORDING_PAIRS more back-to-back pairs of on and off,
  and the verdict from all pairs: by throughput and by in-run CPU per message,
  result.json's totals.cpu_us; and by component: what recording costs in the
  generator's Python alone, measured in process by ``load.core``, over that
  CPU per message);
* ``smtpbench run --pipeline-messages``: each session's next MAIL, RCPT and
  DATA in the same write as the last message's data (RFC 2920 §3.1): one
  round trip per message;
* the floor (``benchmarks/floor_client.py``), lockstep and pipelined: a uvloop
  client that measures and checks nothing, what any Python client pays in
  event loop and system calls before doing its own work;
* ``smtpbench run --messages 10``: the fixed cost of one invocation
  (interpreter start, imports, the common start: 20 ms for one closed-loop
  process, see ``smtpbench/load/procs.py``; result file).

msgs/s is N / wall time of the command, as its user sees it; "in-run"
excludes the fixed cost (smtpbench: N over ``totals.duration_us``, from the
common start until every session has quit). Generator CPU per message is
the child's rusage over N; "marginal" subtracts the fixed-cost run's CPU.
smtp-sink's CPU per message and its busy share (CPU over in-run time) show
whether the sink, not a generator, set the pace.

Then the open loop: at half of the closed-loop maximum measured above
(the median in-run msgs/s of ``smtpbench run`` with pipelining), for
``--duration 10s --warmup 1s``: achieved msgs/s (``totals.msgs_per_s``)
against the target, and the send lag and pick-up (sched) lag percentiles
from result.json. Beside it, without a target: the same at an eighth of
the maximum (is a late send the generator's load or the machine's?), and
the machine's own floor: how late a bare thread wakes when it sleeps to a
schedule at the target's inter-arrival period (a small shared VM can wake
a sleeper hundreds of microseconds late; no generator sends earlier than
it is woken).

Issue 3's targets: without pipelining at least 1.0x smtp-source's msgs/s,
with pipelining at least 1.3x; recording on/off at least 0.95; open loop
within 1 % of the target rate with send lag p99 under 1 ms.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .harness import (HOST, Check, Options, Peer, Report, Table, find_program, free_port, median, smtp_source,
                      timed_client)
from .load_core import recording_cost_us

NAME = "generator"

SESSIONS = 10
SIZE = 1024
SOURCE = "smtp-source"
NO_PIPE = "smtpbench --no-pipelining"
PIPE = "smtpbench"
NO_RECORD = "smtpbench, recording off"
CHAIN = "smtpbench --pipeline-messages"
FLOOR_LOCK = "floor: bare uvloop client, lockstep"
FLOOR_PIPE = "floor: bare uvloop client, pipelined"
MODES = (SOURCE, NO_PIPE, PIPE, NO_RECORD, CHAIN, FLOOR_LOCK, FLOOR_PIPE)
SMTPBENCH = (NO_PIPE, PIPE, NO_RECORD, CHAIN)
FIXED_MESSAGES = 10
#: Extra back-to-back pairs of recording on and off (order alternating) after the rounds: a 5 %
#: target needs more pairs than the rounds give on a shared machine, where one run swings ±20 %.
RECORDING_PAIRS = 6
PROBE = 5000
MAX_MESSAGES = 500_000
ACCEPTED_EXITS = (0, 3)  # 3: the run found the generator saturated (flat out, that is what is measured)
HALF, EIGHTH = "1/2", "1/8"  # open-loop rates, as fractions of the closed-loop maximum


@dataclass
class Measurement:
    wall: float              # s: the command, start to exit
    cpu: float               # s: the generator's user + system CPU
    sink_cpu: float          # s: smtp-sink's CPU meanwhile
    in_run: float            # s: smtpbench: common start to all sessions quit; smtp-source: = wall
    result: dict | None = None  # smtpbench's result.json


def _sink() -> Peer:
    program = find_program("smtp-sink")
    if program is None or find_program("smtp-source") is None:
        raise RuntimeError("Postfix smtp-sink/smtp-source are not installed (Debian: apt-get install postfix)")
    port = free_port()
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []  # smtp-sink refuses root without a user
    return Peer("smtp-sink", [program, *as_user, f"{HOST}:{port}", "1000"], port)


def _smtpbench(sink: Peer, folder: Path, args: list[str], record: bool, timeout: float) -> Measurement:
    """One ``smtpbench run`` (one process, uvloop) against the sink, timed from outside and inside."""
    out = folder / f"run-{time.monotonic_ns()}"
    env = {k: v for k, v in os.environ.items() if k != "SMTPBENCH_NO_RECORD"}
    if not record:
        env["SMTPBENCH_NO_RECORD"] = "1"
    cmd = [sys.executable, "-m", "smtpbench", "run", "--target", f"{HOST}:{sink.port}", "--processes", "1",
           "--loop", "uvloop", "--size", "1KiB", "--messages-per-connection", "0", *args, "--out", str(out)]
    label = f"smtpbench run {' '.join(args)}"
    status, timed, problems = timed_client(cmd, sink, timeout, label, env)
    path = out / "result.json"
    if status not in ACCEPTED_EXITS or not path.exists():
        raise RuntimeError(f"{label} failed ({status}): {problems[-1500:]}")
    result = json.loads(path.read_text())
    totals = result["totals"]
    if totals["failed"]:
        raise RuntimeError(f"{label}: {totals['failed']} messages failed: {result['errors'][:3]}")
    return Measurement(timed.seconds, timed.client_cpu, timed.server_cpu, totals["duration_us"] / 1e6, result)


def _closed(sink: Peer, folder: Path, mode: str, n: int, timeout: float) -> Measurement:
    if mode == SOURCE:
        r = smtp_source(["-d", "-s", str(SESSIONS), "-l", str(SIZE), "-m", str(n)], sink, timeout)
        return Measurement(r.seconds, r.client_cpu, r.server_cpu, r.seconds)
    if mode in (FLOOR_LOCK, FLOOR_PIPE):
        cmd = [sys.executable, "-m", "benchmarks.floor_client", HOST, str(sink.port), str(n), str(SESSIONS)]
        status, r, problems = timed_client(cmd + (["--pipelining"] if mode == FLOOR_PIPE else []), sink, timeout, mode)
        if status:
            raise RuntimeError(f"{mode} failed ({status}): {problems[-1500:]}")
        return Measurement(r.seconds, r.client_cpu, r.server_cpu, r.seconds)
    flags = {NO_PIPE: ["--no-pipelining"], CHAIN: ["--pipeline-messages"]}.get(mode, [])
    args = ["--sessions", str(SESSIONS), "--messages", str(n)] + flags
    m = _smtpbench(sink, folder, args, record=mode != NO_RECORD, timeout=timeout)
    totals = m.result["totals"]
    sent = totals["issued"] if mode == NO_RECORD else totals["ok"]  # recording off: issued, none failed
    if sent != n:
        raise RuntimeError(f"{mode}: {sent} of {n} messages went through")
    return m


def run(opts: Options) -> Report:
    load_before = os.getloadavg()
    # Long enough that smtpbench's fixed cost per invocation (interpreter, imports, common start,
    # result file: about half a second) is a small part of the wall time users compare.
    seconds = 1.0 if opts.quick else max(8.0, 5 * opts.seconds)
    open_seconds = 3 if opts.quick else 10
    rounds = min(opts.rounds, 3) if opts.quick else opts.rounds
    timeout = max(120.0, 30 * seconds)
    runs: dict[str, list[Measurement]] = {m: [] for m in MODES}
    fixed: list[Measurement] = []
    pairs: dict[str, list[Measurement]] = {PIPE: [], NO_RECORD: []}
    opened: dict[str, list[Measurement]] = {HALF: [], EIGHTH: []}
    with tempfile.TemporaryDirectory(prefix="smtpbench-bench-load-") as tmp, _sink() as sink:
        folder = Path(tmp)
        # Calibrate N on smtp-source (the baseline), and warm smtpbench up once.
        probe = _closed(sink, folder, SOURCE, PROBE, timeout)
        n = max(PROBE, min(MAX_MESSAGES, int(round(PROBE / probe.wall * seconds, -3))))
        _closed(sink, folder, PIPE, PROBE, timeout)
        for r in range(rounds):
            order = list(MODES[r % len(MODES):] + MODES[:r % len(MODES)])
            if r % 2:  # recording on and off: each goes first in half of the rounds
                i, j = order.index(PIPE), order.index(NO_RECORD)
                order[i], order[j] = order[j], order[i]
            for mode in order:
                print(f"   round {r + 1}/{rounds} {mode}: {n} messages", end="", flush=True)
                m = _closed(sink, folder, mode, n, timeout)
                runs[mode].append(m)
                print(f" in {m.wall:.2f}s = {n / m.wall:,.0f}/s (in-run {n / m.in_run:,.0f}/s)", flush=True)
            fixed.append(_closed(sink, folder, PIPE, FIXED_MESSAGES, timeout))
        for k in range(0 if opts.quick else RECORDING_PAIRS):
            for mode in (PIPE, NO_RECORD) if k % 2 else (NO_RECORD, PIPE):
                print(f"   recording pair {k + 1}/{RECORDING_PAIRS} {mode}: {n} messages", end="", flush=True)
                m = _closed(sink, folder, mode, n, timeout)
                pairs[mode].append(m)
                print(f" in {m.wall:.2f}s (in-run {n / m.in_run:,.0f}/s)", flush=True)
        closed_max = median([m.result["totals"]["msgs_per_s"] for m in runs[PIPE]])
        rates = {HALF: round(closed_max / 2), EIGHTH: round(closed_max / 8)}
        floor = _timer_floor(1 / rates[HALF], 1.0 if opts.quick else 3.0)
        open_rounds = min(rounds, 3)
        for r in range(open_rounds):
            for key in (HALF, EIGHTH) if r % 2 == 0 else (EIGHTH, HALF):
                rate = rates[key]
                print(f"   round {r + 1}/{open_rounds} open loop at {rate:,}/s for {open_seconds}s", end="", flush=True)
                m = _smtpbench(sink, folder, ["--rate", str(rate), "--duration", f"{open_seconds + 1}s",
                                              "--warmup", "1s"], record=True, timeout=timeout)
                opened[key].append(m)
                print(f": {m.result['totals']['msgs_per_s']:,.1f}/s, send lag p99 "
                      f"{m.result['latency']['send_lag']['p99']} us", flush=True)
    rec_cost = recording_cost_us(rounds=3 if opts.quick else 11)
    report = _report(runs, fixed, pairs, rec_cost, opened, n, rates, closed_max, rounds, floor)
    load = report.data["load_average"] = {"before": load_before, "after": os.getloadavg()}
    if max(load["before"][0], load["after"][0]) > (os.cpu_count() or 1) / 2:
        report.notes.append(f"the machine was busy (1-min load average {load['before'][0]:.1f} before, "
                            f"{load['after'][0]:.1f} after, {os.cpu_count()} CPUs): msgs/s is noisy, CPU/msg steadier")
    return report


def _timer_floor(period: float, seconds: float) -> dict:
    """How late a thread wakes that sleeps to a schedule of ``period`` s (µs percentiles), alone."""
    late = []
    due = time.perf_counter()
    end = due + seconds
    while due < end:
        due += period
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        late.append((time.perf_counter() - due) * 1e6)
    q = statistics.quantiles(late, n=1000, method="inclusive")
    return {"period_us": period * 1e6, "samples": len(late), "p50": q[499], "p99": q[989], "p99.9": q[998],
            "max": max(late)}


def _row_figures(ms: list[Measurement], n: int, fixed: list[Measurement] | None) -> dict:
    """Medians over rounds for one mode."""
    fixed_cpu = median([f.cpu for f in fixed]) if fixed else 0.0
    return {
        "msgs_per_s_wall": median([n / m.wall for m in ms]),
        "msgs_per_s_in_run": median([n / m.in_run for m in ms]),
        "cpu_us_per_msg": median([m.cpu / n * 1e6 for m in ms]),
        "cpu_us_per_msg_marginal": median([(m.cpu - fixed_cpu) / n * 1e6 for m in ms]),
        "generator_busy": median([(m.cpu - fixed_cpu) / m.in_run for m in ms]),
        "sink_cpu_us_per_msg": median([m.sink_cpu / n * 1e6 for m in ms]),
        "sink_busy": median([m.sink_cpu / m.in_run for m in ms]),
        "wall_s": [m.wall for m in ms],
        "in_run_s": [m.in_run for m in ms],
    }


def _run_cpu_us(m: Measurement) -> float:
    """smtpbench's own CPU per message for the run itself (no start-up, no result file)."""
    totals = m.result["totals"]
    return totals["cpu_us"] / totals["issued"]


def _paired(a: list[float], b: list[float]) -> float:
    return median([x / y for x, y in zip(a, b) if y])


def _report(runs, fixed, pairs, rec_cost, opened, n, rates, closed_max, rounds, floor) -> Report:
    figs = {mode: _row_figures(runs[mode], n, fixed if mode in SMTPBENCH else None) for mode in MODES}
    wall = {mode: [n / m.wall for m in runs[mode]] for mode in MODES}
    in_run = {mode: [n / m.in_run for m in runs[mode]] for mode in MODES}
    reported = {mode: [m.result["totals"]["msgs_per_s"] for m in runs[mode]] for mode in (NO_PIPE, PIPE, CHAIN)}
    vs_source = {mode: _paired(wall[mode], wall[SOURCE]) for mode in MODES}
    vs_source_in_run = {mode: _paired(in_run[mode], in_run[SOURCE]) for mode in MODES}
    fixed_wall, fixed_cpu = median([f.wall for f in fixed]), median([f.cpu for f in fixed])
    rows = []
    for mode in MODES:
        f = figs[mode]
        shown = median(reported[mode]) if mode in reported else None
        rows.append([mode, f"{f['msgs_per_s_wall']:,.0f}", f"{vs_source[mode]:.2f}x",
                     f"{f['msgs_per_s_in_run']:,.0f}", f"{vs_source_in_run[mode]:.2f}x",
                     f"{shown:,.0f}" if shown else "-",
                     f"{f['cpu_us_per_msg']:.0f}", f"{f['cpu_us_per_msg_marginal']:.0f}" if mode in SMTPBENCH else "-",
                     f"{f['generator_busy']:.0%}", f"{f['sink_cpu_us_per_msg']:.0f}", f"{f['sink_busy']:.0%}"])
    closed = Table(
        f"closed loop: 1 KiB, {SESSIONS} sessions, connections reused, {n:,} messages per run, one smtp-sink; "
        f"median of {rounds} rounds",
        ["generator", "msgs/s (wall)", "vs smtp-source", "msgs/s in-run", "vs smtp-source (in-run)",
         "result.json msgs/s", "gen CPU us/msg", "marginal us/msg", "gen busy", "sink CPU us/msg", "sink busy"],
        rows)
    # Recording on/off: every pair, the rounds' and the extra ones. Throughput per pair, and what the
    # generator's in-run CPU per message says (CPU-bound, on/off throughput = CPU off / CPU on).
    on, off = runs[PIPE] + pairs[PIPE], runs[NO_RECORD] + pairs[NO_RECORD]
    in_run_on, in_run_off = [n / m.in_run for m in on], [n / m.in_run for m in off]
    wall_on, wall_off = [n / m.wall for m in on], [n / m.wall for m in off]
    rec_in_run = _paired(in_run_on, in_run_off)
    rec_wall = _paired(wall_on, wall_off)
    cpu_on, cpu_off = [_run_cpu_us(m) for m in on], [_run_cpu_us(m) for m in off]
    rec_by_cpu = _paired(cpu_off, cpu_on)
    recording = Table(
        f"recording on vs off (smtpbench run with pipelining; off = SMTPBENCH_NO_RECORD=1): {len(on)} pairs, "
        "medians; on/off is the median of per-pair ratios",
        ["figure", "recording on", "recording off", "on/off"],
        [["msgs/s in-run", f"{median(in_run_on):,.0f}", f"{median(in_run_off):,.0f}", f"{rec_in_run:.3f}"],
         ["msgs/s (wall)", f"{median(wall_on):,.0f}", f"{median(wall_off):,.0f}", f"{rec_wall:.3f}"],
         ["generator in-run CPU us/msg (totals.cpu_us / issued)", f"{median(cpu_on):.1f}", f"{median(cpu_off):.1f}",
          f"{rec_by_cpu:.3f} ({median(cpu_on) - median(cpu_off):+.1f} us/msg)"]])
    # By component: recording's own cost (in process, load.core) over the whole cost per message.
    rec_by_component = 1 - rec_cost / median(cpu_on)
    recording.rows.append(["by component: recording's cost in load.core over the CPU us/msg above",
                           f"{median(cpu_on):.1f}", f"{median(cpu_on) - rec_cost:.1f}",
                           f"{rec_by_component:.3f} ({rec_cost:+.2f} us/msg)"])
    open_table, open_data, med, abs_dev = _open_loop(opened, rates, closed_max)
    floor_table = Table(
        "this machine's floor: how late a bare thread wakes, sleeping to a schedule at the 1/2-max inter-arrival "
        "period, nothing of ours running (us)",
        ["period", "samples", "p50", "p99", "p99.9", "max"],
        [[f"{floor['period_us']:.0f}", f"{floor['samples']:,}",
          *(f"{floor[k]:,.0f}" for k in ("p50", "p99", "p99.9", "max"))]])
    checks = [
        Check("smtpbench --no-pipelining / smtp-source (msgs/s, wall)", vs_source[NO_PIPE], 1.0),
        Check("smtpbench with pipelining / smtp-source (msgs/s, wall)", vs_source[PIPE], 1.3),
        Check("smtpbench --pipeline-messages / smtp-source (msgs/s, wall)", vs_source[CHAIN], 1.3),
        Check("recording on / off (msgs/s in-run)", rec_in_run, 0.95),
        Check("recording on / off (by generator in-run CPU per message)", rec_by_cpu, 0.95),
        Check("recording on / off (by component: load.core's cost over the CPU per message)", rec_by_component, 0.95),
        Check("open loop: achieved rate off target (median |deviation|)", abs_dev, 1.0, unit="%",
              higher_is_better=False),
        Check("open loop: send lag p99 (median over rounds)", med[HALF]["send_lag_p99"] / 1000, 1.0, unit=" ms",
              higher_is_better=False),
    ]
    bytes_per_msg = runs[PIPE][0].result["totals"]["bytes"] / n
    notes = [
        f"medians of {rounds} interleaved rounds; ratios are medians of per-round ratios",
        f"fixed cost of one smtpbench run invocation (--messages {FIXED_MESSAGES}): {fixed_wall:.2f} s wall, "
        f"{fixed_cpu:.2f} s CPU; it is in the wall figures, not in the in-run ones",
        f"message size on the wire: smtpbench {bytes_per_msg:,.0f} octets (headers included); smtp-source -l {SIZE} "
        f"sends {SIZE} octets of body plus about 100 of headers",
        "smtp-source never pipelines (HELO, one command per write, waits for each reply)",
    ]
    for mode in MODES:
        if figs[mode]["sink_busy"] >= 0.9:
            notes.append(f"{mode}: smtp-sink was busy {figs[mode]['sink_busy']:.0%} of a core: the sink, "
                         "not the generator, limited this figure")
        if mode in SMTPBENCH and figs[mode]["generator_busy"] >= 0.9:
            notes.append(f"{mode}: the generator was busy {figs[mode]['generator_busy']:.0%} of a core: "
                         "CPU-bound (one process)")
    if figs[SOURCE]["generator_busy"] >= 0.9:
        notes.append(f"smtp-source was busy {figs[SOURCE]['generator_busy']:.0%} of a core")
    data = {
        "rounds": rounds, "messages_per_run": n, "sessions": SESSIONS, "size": SIZE,
        "modes": figs, "ratios_vs_smtp_source": {"wall": vs_source, "in_run": vs_source_in_run},
        "recording_on_off": {"pairs": len(on), "in_run": rec_in_run, "wall": rec_wall, "by_cpu": rec_by_cpu,
                             "by_component": rec_by_component, "recording_us_per_msg_in_process": rec_cost,
                             "cpu_us_per_msg": {"on": cpu_on, "off": cpu_off}},
        "fixed_cost": {"wall_s": fixed_wall, "cpu_s": fixed_cpu},
        "open_loop": {"closed_max": closed_max, "rates": rates, "rounds": open_data, "median": med,
                      "median_abs_deviation_percent": abs_dev, "timer_floor_us": floor},
    }
    return Report("smtpbench run vs smtp-source, recording cost, open-loop accuracy (one smtp-sink)",
                  tables=[closed, recording, open_table, floor_table], checks=checks, notes=notes, data=data)


LATENCIES = tuple((k, p) for k in ("sched_lag", "send_lag", "response") for p in ("p50", "p99"))


def _open_loop(opened: dict[str, list[Measurement]], rates: dict[str, int], closed_max: float):
    """The open-loop table: each round at 1/2 of the max, the medians at 1/2 and 1/8."""
    rows, data, med = [], {}, {}
    for key, ms in opened.items():
        entries = []
        for m in ms:
            t, lat, health = m.result["totals"], m.result["latency"], m.result["health"]
            entries.append({
                "achieved": t["msgs_per_s"], "deviation_percent": (t["msgs_per_s"] / rates[key] - 1) * 100,
                "ok": t["ok"], "failed": t["failed"], "send_rate": health["send_rate"],
                "cpu": median(health["cpu_by_process"]), "sink_busy": m.sink_cpu / m.in_run,
                "verdict": m.result["verdict"], **{f"{k}_{p}": lat[k][p] for k, p in LATENCIES}})
        data[key] = entries
        med[key] = {k: median([e[k] for e in entries]) for k in entries[0] if k != "verdict"}
        shown = [(f"{key} max, round {i + 1}", e) for i, e in enumerate(entries)] if key == HALF else []
        for label, e in [*shown, (f"{key} max, median", med[key])]:
            rows.append([label, f"{rates[key]:,}", f"{e['achieved']:,.1f}", f"{e['deviation_percent']:+.2f}%",
                         *(f"{e[f'{k}_{p}']:,.0f}" for k, p in LATENCIES), f"{e['cpu']:.0%}", f"{e['sink_busy']:.0%}",
                         f"{e['failed']:.0f}"])
    abs_dev = median([abs(e["deviation_percent"]) for e in data[HALF]])
    table = Table(
        f"open loop at fractions of the closed-loop max ({closed_max:,.0f} msgs/s): constant arrivals, 1 KiB, "
        "connections reused; latencies in us",
        ["run", "target/s", "achieved/s", "vs target", "sched p50", "sched p99", "send lag p50", "send lag p99",
         "response p50", "response p99", "gen CPU", "sink busy", "failed"],
        rows)
    return table, data, med, abs_dev
