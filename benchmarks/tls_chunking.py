"""TLS and CHUNKING: what STARTTLS, TLS session resumption and BDAT cost or save, sink and generator.

One ``smtpbench sink`` (STARTTLS and CHUNKING offered, a self-signed
certificate) and ``smtpbench run`` (one process, closed loop), both on
loopback, both ours: the figures are the pair's. Compared, each pair
interleaved round by round with the order rotating (so drift of a shared
machine hits both sides alike):

* **STARTTLS vs plain**, 1 KiB messages, 10 sessions, connections reused:
  the cost of encryption on the data path.
* **TLS handshakes per second**, a new connection per message
  (``messages_per_connection = 1``), STARTTLS with session resumption on
  and off, beside plain new connections: msgs/s is handshakes/s here.
* **BDAT vs DATA**, 100 KiB messages, 10 sessions, connections reused:
  RFC 3030 chunks (no dot-stuffing, no terminator scan) against DATA.

Figures come from each run's result.json (warm-up excluded): msgs/s, the
generator's CPU per message (from its health section), the TLS phase's
median (the handshake's latency), the share of resumed handshakes; the
sink's CPU per message comes from /proc over the run. Ratios are medians
of per-round ratios. No targets: the issue asks for the figures.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .harness import ROOT, Options, Peer, Report, Table, free_port, median, smtpbench_sink

NAME = "chunking"

OFFERED = "PIPELINING,SIZE,8BITMIME,ENHANCEDSTATUSCODES,STARTTLS,CHUNKING"
ACCEPTED_EXITS = (0, 1, 3)  # 3: the generator was the bottleneck; flat out, that is expected


@dataclass(frozen=True)
class Config:
    key: str
    title: str
    load: str       # [load] keys besides the common ones
    size: str = "1KiB"


CONFIGS = (
    Config("plain", "plain, reused connections", 'tls = "none"\nmessages_per_connection = 0'),
    Config("starttls", "STARTTLS, reused connections", 'tls = "starttls"\nmessages_per_connection = 0'),
    Config("plain-new", "plain, new connection per message", 'tls = "none"\nmessages_per_connection = 1'),
    Config("tls-full", "STARTTLS per message, full handshakes",
           'tls = "starttls"\ntls_resume = false\nmessages_per_connection = 1'),
    Config("tls-resumed", "STARTTLS per message, resumption on",
           'tls = "starttls"\ntls_resume = true\nmessages_per_connection = 1'),
    Config("data", "100 KiB by DATA", 'bdat = "never"\nmessages_per_connection = 0', "100KiB"),
    Config("bdat", "100 KiB by BDAT", 'bdat = "when-offered"\nmessages_per_connection = 0', "100KiB"),
)
BY_KEY = {c.key: c for c in CONFIGS}

#: (label, contender, baseline): the ratios printed, contender / baseline.
RATIOS = (
    ("STARTTLS / plain (1 KiB, reused connections)", "starttls", "plain"),
    ("resumed / full handshakes (handshakes per second)", "tls-resumed", "tls-full"),
    ("full-handshake TLS / plain (new connection per message)", "tls-full", "plain-new"),
    ("BDAT / DATA (100 KiB)", "bdat", "data"),
)

SCENARIO = """
name = "tls-chunking-{key}"
seed = 1
[load]
model = "closed"
sessions = 10
duration = "{duration}s"
warmup = "1s"
{load}
[message]
size = "{size}"
"""


def _measure(config: Config, sink: Peer, folder: Path, seconds: float) -> dict:
    scenario = folder / "scenario.toml"
    scenario.write_text(SCENARIO.format(key=config.key, duration=seconds + 1, load=config.load, size=config.size))
    out = folder / "run"
    cpu0 = sink.cpu_seconds()
    proc = subprocess.run([sys.executable, "-m", "smtpbench", "run", "-s", str(scenario), "--target",
                           f"127.0.0.1:{sink.port}", "--processes", "1", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=seconds + 120)
    sink_cpu = sink.cpu_seconds() - cpu0
    path = out / "result.json"
    if proc.returncode not in ACCEPTED_EXITS or not path.exists():
        raise RuntimeError(f"{config.key} failed ({proc.returncode}): {proc.stderr[-1500:]}")
    result = json.loads(path.read_text())
    totals = result["totals"]
    rate = totals["msgs_per_s"]
    cpus = result["health"]["cpu_by_process"]
    gen_cpu = median(cpus) if cpus else float("nan")
    handshakes = totals.get("tls_resumed", 0) + totals.get("tls_full", 0)
    everything = totals["ok"] + totals["warmup_ok"]
    tls = result["latency"]["phases"].get("tls")
    return {
        "msgs_per_s": rate,
        "mb_per_s": totals["mb_per_s"],
        "generator_cpu_us_per_msg": gen_cpu / rate * 1e6 if rate else float("nan"),
        "sink_cpu_us_per_msg": sink_cpu / everything * 1e6 if everything else float("nan"),
        "tls_p50_us": tls["p50"] if tls else None,
        "resumed_share": totals.get("tls_resumed", 0) / handshakes if handshakes else None,
        "failed": totals["failed"],
        "accepted": everything,
        "verdict": result["verdict"],
    }


def run(opts: Options) -> Report:
    rounds = 1 if opts.quick else max(1, min(opts.rounds, 3))
    seconds = 2.0 if opts.quick else max(3.0, opts.seconds * 2)
    port = free_port()
    figures: dict[str, list[dict]] = {c.key: [] for c in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="smtpbench-bench-tls-") as tmp:
        argv = smtpbench_sink(port, "--advertise", OFFERED, "--stats-file", str(Path(tmp) / "sink.jsonl"))
        with Peer("smtpbench-sink", argv, port) as sink:
            for r in range(rounds):
                # Pairs stay together (seconds apart) so their per-round ratio cancels drift.
                pairs = [(b, c) for _, c, b in RATIOS]
                for baseline, contender in pairs:
                    order = (baseline, contender) if r % 2 == 0 else (contender, baseline)
                    for key in order:
                        if len(figures[key]) > r:
                            continue  # measured already this round, for another pair
                        print(f"   round {r + 1}/{rounds}: {BY_KEY[key].title}", end="", flush=True)
                        with tempfile.TemporaryDirectory(dir=tmp) as folder:
                            f = _measure(BY_KEY[key], sink, Path(folder), seconds)
                        figures[key].append(f)
                        print(f": {f['msgs_per_s']:,.0f} msgs/s", flush=True)
        lines = (Path(tmp) / "sink.jsonl").read_text().splitlines()
        counted = json.loads(lines[-1])["messages"] if lines else None
    return _report(figures, rounds, seconds, counted)


def _fmt(value, spec: str, none: str = "-") -> str:
    return none if value is None else format(value, spec)


def _report(figures: dict[str, list[dict]], rounds: int, seconds: float, counted: int | None) -> Report:
    rows, data = [], {"rounds": rounds, "seconds_per_measurement": seconds, "configs": {}, "ratios": {}}
    for c in CONFIGS:
        f = figures[c.key]
        tls = [x["tls_p50_us"] for x in f if x["tls_p50_us"] is not None]
        resumed = [x["resumed_share"] for x in f if x["resumed_share"] is not None]
        summary = {
            "title": c.title, "size": c.size,
            "msgs_per_s": median([x["msgs_per_s"] for x in f]),
            "mb_per_s": median([x["mb_per_s"] for x in f]),
            "generator_cpu_us_per_msg": median([x["generator_cpu_us_per_msg"] for x in f]),
            "sink_cpu_us_per_msg": median([x["sink_cpu_us_per_msg"] for x in f]),
            "tls_p50_us": median(tls) if tls else None,
            "resumed_share": median(resumed) if resumed else None,
            "failed": sum(x["failed"] for x in f),
            "rounds": f,
        }
        data["configs"][c.key] = summary
        rows.append([c.title, f"{summary['msgs_per_s']:,.0f}", f"{summary['mb_per_s']:.1f}",
                     f"{summary['sink_cpu_us_per_msg']:,.0f}", f"{summary['generator_cpu_us_per_msg']:,.0f}",
                     _fmt(summary["tls_p50_us"] and summary["tls_p50_us"] / 1000, ".2f"),
                     _fmt(summary["resumed_share"] and summary["resumed_share"] * 100, ".0f"),
                     str(summary["failed"])])
    ratio_rows = []
    for label, contender, baseline in RATIOS:
        pairs = list(zip(figures[contender], figures[baseline]))
        rate = median([a["msgs_per_s"] / b["msgs_per_s"] for a, b in pairs if b["msgs_per_s"]])
        sink_cpu = median([a["sink_cpu_us_per_msg"] / b["sink_cpu_us_per_msg"] for a, b in pairs])
        gen_cpu = median([a["generator_cpu_us_per_msg"] / b["generator_cpu_us_per_msg"] for a, b in pairs])
        data["ratios"][f"{contender}/{baseline}"] = {"label": label, "msgs_per_s": rate,
                                                     "sink_cpu_per_msg": sink_cpu, "generator_cpu_per_msg": gen_cpu}
        ratio_rows.append([label, f"{rate:.2f}x", f"{sink_cpu:.2f}x", f"{gen_cpu:.2f}x"])
    notes = [f"closed loop, 10 sessions, one generator process, {seconds:g} s measured after a 1 s warm-up, "
             f"median of {rounds} round(s); sink and generator share this machine's cores",
             "with a new connection per message, msgs/s is TLS handshakes per second; TLS 1.3 resumption "
             "(PSK with ECDHE) saves the certificate signature and its check, not the key exchange",
             "'invalid' verdicts are expected: the generator runs flat out, so it may be the bottleneck"]
    if any(s["failed"] for s in data["configs"].values()):
        notes.append("WARNING: some messages failed; see the JSON for which configuration")
    accepted = sum(x["accepted"] for f in figures.values() for x in f)
    data["messages_accepted_by_generator"], data["messages_counted_by_sink"] = accepted, counted
    if counted != accepted:
        notes.append(f"WARNING: the sink counted {counted} messages, the generator saw {accepted} accepted")
    return Report(
        title="STARTTLS, TLS resumption and BDAT (smtpbench sink and run, loopback)",
        tables=[
            Table("per configuration", ["configuration", "msgs/s", "MB/s", "sink CPU us/msg", "gen CPU us/msg",
                                        "TLS p50 ms", "resumed %", "failed"], rows),
            Table("ratios (median of per-round ratios)", ["comparison", "msgs/s", "sink CPU/msg", "gen CPU/msg"],
                  ratio_rows),
        ],
        notes=notes, data=data,
    )
