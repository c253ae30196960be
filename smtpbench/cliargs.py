"""The command line's grammar: every command's flags, with their help (``smtpbench COMMAND --help``).

What the commands do with them lives in :mod:`smtpbench.cli`.
"""

from __future__ import annotations

import argparse
import re

from . import __version__


class _Parser(argparse.ArgumentParser):
    """argparse takes ``-1s`` (unlike ``-1``) for a flag, so ``--duration -1s`` said "expected one
    argument"; as a value it reaches the unit parser, which says it must not be negative. No flag of
    ours is a digit, so a digit after the dash always begins a value (subparsers inherit the class)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = re.compile(r"^-\d*\.?\d+[a-zA-Zµ]*$")


def _csv(text: str) -> list[str]:
    return [part.strip().upper() for part in text.split(",") if part.strip()]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", "-s", metavar="FILE", help="scenario TOML file (default: built-in defaults)")
    p.add_argument("--loop", choices=("uvloop", "asyncio"), help="event loop (default: uvloop)")


def _sink_parser(sub) -> None:
    p = sub.add_parser("sink", help="run the SMTP sink", description="Accept and count (or capture) mail on loopback.")
    _add_common(p)
    p.add_argument("--listen", "-l", metavar="ADDR", help="HOST:PORT, [IPv6]:PORT or unix:/path (default: the scenario's [target], 127.0.0.1:2525)")
    p.add_argument("--workers", "-w", metavar="N", help="worker processes sharing the port, or 'auto' (= CPU count)")
    p.add_argument("--capture", metavar="SPEC", help="none (default), maildir:DIR or mbox:FILE")
    p.add_argument("--max-connections", type=int, metavar="N", help="concurrent connections per worker; 421 beyond")
    p.add_argument("--idle-timeout", metavar="DURATION", help="close idle connections after this (default 300s, RFC 5321 4.5.3.2.7)")
    p.add_argument("--max-message-size", metavar="SIZE", help="SIZE limit, e.g. 10MiB (552 beyond)")
    p.add_argument("--max-recipients", type=int, metavar="N", help="recipients per message (>= 100; 452 beyond)")
    p.add_argument("--advertise", type=_csv, metavar="EXT,...", help="extensions to offer in EHLO")
    p.add_argument("--hide", action="append", type=str.upper, metavar="EXT", default=[], help="do not offer EXT (repeatable)")
    p.add_argument("--hostname", help="name in the banner and EHLO reply")
    p.add_argument("--lmtp", action="store_true", default=None, help="speak LMTP (RFC 2033) instead of SMTP")
    p.add_argument("--no-line-check", dest="check_line_length", action="store_false", default=None,
                   help="do not refuse text lines over 1000 octets")
    p.add_argument("--grace", metavar="DURATION", help="on SIGINT/SIGTERM, time to let transactions finish (default 5s)")
    p.add_argument("--stats-interval", metavar="DURATION", help="print a stats line this often (default: off)")
    p.add_argument("--stats-file", metavar="FILE", help="append stats as JSON lines to FILE")
    p.add_argument("--stats-listen", metavar="ADDR", help="serve /stats and /metrics over HTTP on this loopback address")
    p.add_argument("--tls-cert", metavar="PEM", help="certificate for STARTTLS / implicit TLS (default: self-signed)")
    p.add_argument("--tls-key", metavar="PEM", help="its private key")
    p.add_argument("--implicit-tls", action="store_true", default=None, help="TLS from the first byte (port-465 style)")
    p.add_argument("--auth-required", action="store_true", default=None, help="530 to MAIL before AUTH")
    p.add_argument("--auth-user", action="append", metavar="USER:PASSWORD", default=None,
                   help="accept only these credentials (repeatable; default: any)")


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="run the load generator against a server",
                       description="Send mail to TARGET as the scenario's [load] and [message] tables say.")
    _add_common(p)
    _add_load_flags(p)


def _bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="sink + load on loopback, cross-checked, with a report",
                       description="Start the built-in sink from the scenario's [sink] table on loopback, run the "
                                   "load against it, cross-check the counts and write the result and report. "
                                   "With --target, benchmark an external server with the same scenario instead.")
    p.add_argument("scenario_file", nargs="?", metavar="SCENARIO", help="scenario TOML file")
    _add_common(p)
    _add_load_flags(p)
    p.add_argument("--listen", metavar="ADDR", help="where the embedded sink listens (default 127.0.0.1 on a free port)")
    p.add_argument("--no-report", action="store_true", help="write result.json only")
    p.add_argument("--relay", action="store_true", default=None,
                   help="relay benchmark: load --target, the sink as its final destination ([relay] table)")
    p.add_argument("--relay-listen", metavar="ADDR", help="where the final-destination sink listens (default [relay] listen)")
    p.add_argument("--drain", metavar="DURATION", help="relay: how long to wait for the queue to drain")


def _add_load_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", "-t", metavar="ADDR", help="HOST:PORT, [IPv6]:PORT or unix:/path (default: the scenario's [target])")
    p.add_argument("--sessions", type=int, metavar="N", help="closed loop with N concurrent sessions")
    p.add_argument("--rate", type=float, metavar="R", help="open loop at R messages/s")
    p.add_argument("--arrival", choices=("constant", "poisson"), help="open-loop arrivals (default constant)")
    p.add_argument("--duration", "-d", metavar="DURATION", help="stop after this long, e.g. 30s")
    p.add_argument("--messages", "-n", type=int, metavar="N", help="stop after N messages")
    p.add_argument("--warmup", metavar="DURATION", help="leave the first DURATION out of the headline figures")
    p.add_argument("--size", metavar="SIZE", help="message size, e.g. 1KiB")
    p.add_argument("--recipients", type=int, metavar="N", help="recipients per message")
    p.add_argument("--messages-per-connection", type=int, metavar="N", help="1 = a new connection per message, 0 = keep it")
    p.add_argument("--max-connections", type=int, metavar="N", help="open loop: connection cap")
    p.add_argument("--processes", "-p", metavar="N", help="generator processes, or 'auto' (= CPU count)")
    p.add_argument("--no-pipelining", dest="pipelining", action="store_false", default=None, help="never pipeline (RFC 2920)")
    p.add_argument("--pipeline-messages", dest="pipeline_messages", action="store_true", default=None,
                   help="closed loop: send each session's next message behind the last one's data (RFC 2920 §3.1)")
    p.add_argument("--lmtp", action="store_true", default=None,
                   help="speak LMTP (RFC 2033: LHLO, a reply per recipient); bench: the embedded sink too")
    p.add_argument("--out", "-o", metavar="DIR", help="run folder (default: results/<run-id>)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="smtpbench", description="SMTP load testing and benchmarking toolkit")
    parser.add_argument("--version", action="version", version=f"smtpbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _sink_parser(sub)
    _run_parser(sub)
    _bench_parser(sub)
    p = sub.add_parser("validate", help="check scenario files", description="Validate scenario files: one line for each (its first problem if bad); exit 2 if any is bad.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p = sub.add_parser("scenarios", help="list the scenario library", description="List scenarios with their descriptions.")
    p.add_argument("--dir", default=None, help="folder to list (default: ./scenarios)")
    _report_parsers(sub)
    _locust_parser(sub)
    return parser


def _report_parsers(sub) -> None:
    p = sub.add_parser("report", help="build HTML reports from result files",
                       description="Write a self-contained HTML report (plots, .hgrm, CSV) for each RUN; for a "
                                   "sweep folder (holding sweep.json), the sweep's report and one per step.")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folder, result.json or sweep folder")
    p.add_argument("--out", "-o", metavar="DIR", help="report folder (default: reports/<run-id>; "
                                                      "with several runs, DIR/<run-id> each)")
    p = sub.add_parser("compare", help="compare runs against a baseline",
                       description="Compare CONTENDER runs with BASELINE: ratios, verdicts with confidence "
                                   "intervals, overlaid plots, fairness warnings.")
    p.add_argument("baseline", metavar="BASELINE", help="run folder or result.json")
    p.add_argument("contenders", nargs="+", metavar="CONTENDER", help="run folder or result.json")
    p.add_argument("--out", "-o", metavar="DIR", help="report folder (default: reports/compare-<baseline>-vs-<contender>)")


def _locust_parser(sub) -> None:
    p = sub.add_parser("locust", help="run a scenario on Locust: a local master and N worker processes",
                       description="Start a headless Locust master with --expect-workers N and N worker processes on "
                                   "this machine, run the scenario with the ready locustfile, and write the same "
                                   "result.json as `run` (see README: Distributed runs with Locust).")
    p.add_argument("scenario_file", nargs="?", metavar="SCENARIO", help="scenario TOML file")
    p.add_argument("--scenario", "-s", metavar="FILE", help=argparse.SUPPRESS)
    p.add_argument("--workers", "-w", metavar="N",
                   help="Locust worker processes, or 'auto' (= CPU count); 0 = one --headless process "
                        "(default: the scenario's load.processes)")
    p.add_argument("--target", "-t", metavar="ADDR", help="HOST:PORT, [IPv6]:PORT or unix:/path (default: the scenario's [target])")
    p.add_argument("--duration", "-d", metavar="DURATION", help="stop after this long, e.g. 30s")
    p.add_argument("--out", "-o", metavar="DIR", help="run folder (default: results/<run-id>)")
    p.add_argument("--phases", action="store_true", help="also one Locust request per SMTP phase")
    p.add_argument("--locust-arg", action="append", default=[], metavar="ARG",
                   help="pass ARG on to the Locust master (repeatable), e.g. --locust-arg=--csv=results/locust")
    p.add_argument("--no-report", action="store_true", help="write result.json only")
