"""Sink throughput: smtpbench sink against Postfix smtp-sink and aiosmtpd, one run, same client.

Postfix ``smtp-source`` is the neutral client (C, one process, no
pipelining: it waits for every reply, so per-command latency of the server
decides the rate). The three servers run side by side for the whole
benchmark; each round measures every workload on every server, the server
order rotating from round to round, so slow drift of a shared machine hits
all servers alike. A measurement's message count is calibrated per server
from a warm-up run so it lasts about ``--seconds``.

Reported per workload: the median msgs/s of each server over the rounds,
and the ratios smtpbench/peer as the median of the per-round ratios (each
round's measurements are seconds apart, so pairing them cancels most of
the background noise). Server CPU per message and how busy the client was
tell whether a figure is the server's limit or the client's.

Issue 2's targets: at least 1.0x (aim 1.1x) smtp-sink on (a) and (b), at
least 3x smtp-sink on (c), at least 5x aiosmtpd on (a).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .harness import Check, Options, Peer, Report, Table, find_program, free_port, median, smtp_source, smtpbench_sink

NAME = "throughput"


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    args: tuple[str, ...]   # smtp-source flags, without -m and the address
    probe: int              # messages in the warm-up run that calibrates the count


WORKLOADS = (
    Workload("a", "1 KiB, 10 sessions, connections reused", ("-d", "-s", "10", "-l", "1024"), 1000),
    Workload("b", "1 KiB, 10 sessions, new connection per message", ("-s", "10", "-l", "1024"), 500),
    Workload("c", "100 KiB, 20 sessions, connections reused", ("-d", "-s", "20", "-l", "102400"), 200),
)

SMTPBENCH, SMTP_SINK, AIOSMTPD = "smtpbench", "smtp-sink", "aiosmtpd"
SERVERS = (SMTPBENCH, SMTP_SINK, AIOSMTPD)
MAX_MESSAGES = 500_000


def _peers() -> dict[str, Peer]:
    sink = find_program("smtp-sink")
    if sink is None or find_program("smtp-source") is None:
        raise RuntimeError("Postfix smtp-sink/smtp-source are not installed (Debian: apt-get install postfix)")
    ports = {name: free_port() for name in SERVERS}
    # smtp-sink refuses to run as root without a user to switch to.
    as_user = ["-u", "nobody"] if os.geteuid() == 0 else []
    ours = Peer(SMTPBENCH, [], ports[SMTPBENCH])
    ours.argv = smtpbench_sink(ports[SMTPBENCH], "--stats-file", str(ours.scratch / "stats.jsonl"))
    return {
        SMTPBENCH: ours,
        SMTP_SINK: Peer(SMTP_SINK, [sink, *as_user, f"127.0.0.1:{ports[SMTP_SINK]}", "1000"], ports[SMTP_SINK]),
        AIOSMTPD: Peer(AIOSMTPD, [sys.executable, str(Path(__file__).with_name("aiosmtpd_sink.py")),
                                  "127.0.0.1", str(ports[AIOSMTPD])], ports[AIOSMTPD]),
    }


def _counted(peer: Peer) -> int | None:
    """Messages the stopped server says it accepted (None when it cannot tell)."""
    if peer.name == SMTPBENCH:
        lines = (peer.scratch / "stats.jsonl").read_text().splitlines()
        return json.loads(lines[-1])["messages"] if lines else None
    if peer.name == AIOSMTPD:
        for line in reversed(peer.output().splitlines()):
            if line.startswith("messages="):
                return int(line.partition("=")[2])
    return None


def _fmt_rate(values: list[float]) -> str:
    mid = median(values)
    spread = (max(values) - min(values)) / 2 / mid * 100 if mid else 0.0
    return f"{mid:,.0f} ±{spread:.0f}%"


def run(opts: Options) -> Report:
    load_before = os.getloadavg()[0]
    seconds = 0.5 if opts.quick else opts.seconds
    rounds = min(opts.rounds, 3) if opts.quick else opts.rounds
    timeout = max(120.0, 20 * seconds)
    peers = _peers()
    sent = {name: 0 for name in SERVERS}
    counts: dict[tuple[str, str], int] = {}
    runs: dict[tuple[str, str], list] = {(w.key, s): [] for w in WORKLOADS for s in SERVERS}
    counted: dict[str, int | None] = {}
    try:
        for peer in peers.values():
            peer.start()

        def measure(w: Workload, server: str, n: int):
            result = smtp_source([*w.args, "-m", str(n)], peers[server], timeout)
            sent[server] += n
            return result

        for w in WORKLOADS:  # calibrate: a warm-up run sets each measurement's message count
            for server in SERVERS:
                probe = measure(w, server, w.probe)
                rate = w.probe / probe.seconds
                counts[w.key, server] = max(w.probe, min(MAX_MESSAGES, int(round(rate * seconds, -2))))
        for r in range(rounds):
            order = SERVERS[r % 3:] + SERVERS[:r % 3]
            for w in WORKLOADS:
                for server in order:
                    n = counts[w.key, server]
                    print(f"  round {r + 1}/{rounds} ({w.key}) {server}: {n} messages", end="", flush=True)
                    result = measure(w, server, n)
                    runs[w.key, server].append(result)
                    print(f" in {result.seconds:.2f}s = {n / result.seconds:,.0f}/s", flush=True)
    finally:
        for peer in peers.values():
            peer.stop()
    for name, peer in peers.items():
        counted[name] = _counted(peer)
    report = _report(runs, counts, sent, counted, rounds, seconds)
    load = report.data["load_average_1min"] = [load_before, os.getloadavg()[0]]
    if max(load) > (os.cpu_count() or 1):
        report.notes.append(f"the machine was busy (1-min load average {load[0]:.1f} before, {load[1]:.1f} after, "
                            f"{os.cpu_count()} CPUs): msgs/s ratios are noisy; CPU per message is steadier")
    return report


def _report(runs, counts, sent, counted, rounds, seconds) -> Report:
    rates = {k: [counts[k] / x.seconds for x in v] for k, v in runs.items()}
    main_rows, cpu_rows, data = [], [], {"rounds": rounds, "seconds_per_measurement": seconds, "workloads": {}}
    ratios: dict[tuple[str, str], float] = {}
    for w in WORKLOADS:
        entry = {"title": w.title, "smtp_source_args": [*w.args, "-m", "N"], "servers": {}, "ratios": {}}
        for peer in (SMTP_SINK, AIOSMTPD):
            paired = [a / b for a, b in zip(rates[w.key, SMTPBENCH], rates[w.key, peer])]
            ratios[w.key, peer] = median(paired)
            entry["ratios"][f"smtpbench/{peer}"] = {"median": ratios[w.key, peer], "per_round": paired}
        cpu_cells, cpu_us = [], {}
        for server in SERVERS:
            xs = runs[w.key, server]
            n = counts[w.key, server]
            server_us = median([x.server_cpu / n * 1e6 for x in xs])
            client_busy = median([x.client_cpu / x.seconds * 100 for x in xs])
            cpu_us[server] = server_us
            cpu_cells += [f"{server_us:,.0f}", f"{client_busy:.0f}%"]
            entry["servers"][server] = {
                "messages_per_run": n,
                "median_msgs_per_s": median(rates[w.key, server]),
                "msgs_per_s": rates[w.key, server],
                "seconds": [x.seconds for x in xs],
                "server_cpu_us_per_msg": server_us,
                "client_busy_percent": client_busy,
            }
        # CPU per message is steadier than msgs/s on a busy machine: a second opinion.
        cpu_ratio = cpu_us[SMTP_SINK] / cpu_us[SMTPBENCH] if cpu_us[SMTPBENCH] else float("nan")
        entry["ratios"]["cpu_smtp-sink/smtpbench"] = cpu_ratio
        data["workloads"][w.key] = entry
        main_rows.append([f"({w.key}) {w.title}", *(_fmt_rate(rates[w.key, s]) for s in SERVERS),
                          f"{ratios[w.key, SMTP_SINK]:.2f}x", f"{ratios[w.key, AIOSMTPD]:.2f}x"])
        cpu_rows.append([f"({w.key})", *cpu_cells, f"{cpu_ratio:.2f}x"])
    checks = [
        Check("(a) smtpbench/smtp-sink", ratios["a", SMTP_SINK], 1.0, aim=1.1),
        Check("(b) smtpbench/smtp-sink", ratios["b", SMTP_SINK], 1.0, aim=1.1),
        Check("(c) smtpbench/smtp-sink", ratios["c", SMTP_SINK], 3.0),
        Check("(a) smtpbench/aiosmtpd", ratios["a", AIOSMTPD], 5.0),
    ]
    notes = [f"msgs/s: median of {rounds} interleaved rounds, ± half the range; ratios: median of per-round ratios"]
    for server in (SMTPBENCH, AIOSMTPD):
        if counted[server] is not None and counted[server] != sent[server]:
            notes.append(f"WARNING: {server} counted {counted[server]} messages, smtp-source sent {sent[server]}")
    data["messages_sent"] = sent
    data["messages_counted"] = counted
    cpu_header = ["workload"] + [f"{s} {col}" for s in SERVERS for col in ("CPU us/msg", "client busy")]
    cpu_header.append("CPU/msg smtp-sink/smtpbench")
    return Report(
        title="sink throughput (smtp-source client, 1 sink process each)",
        tables=[
            Table("msgs/s", ["workload", *SERVERS, "vs smtp-sink", "vs aiosmtpd"], main_rows),
            Table("server CPU per message, and smtp-source's CPU use (100% = client-bound)", cpu_header, cpu_rows),
        ],
        checks=checks, notes=notes, data=data,
    )
