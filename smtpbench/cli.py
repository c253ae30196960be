"""The command line: the only module that reads argv, picks the event loop, and prints.

Exit codes (documented in the README):
  0  success
  1  a threshold failed
  2  usage or configuration error (bad flag, bad scenario)
  3  the run is invalid (the generator, not the server, was the bottleneck; or messages were lost)
"""

from __future__ import annotations

import argparse
import sys

from . import __version__, eventloop
from .addresses import parse_address
from .scenario import ScenarioError, load, override, resolve_workers

EXIT_OK, EXIT_THRESHOLDS, EXIT_USAGE, EXIT_INVALID = 0, 1, 2, 3


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smtpbench", description="SMTP load testing and benchmarking toolkit")
    parser.add_argument("--version", action="version", version=f"smtpbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _sink_parser(sub)
    return parser


def cmd_sink(args: argparse.Namespace) -> int:
    from .sink.run import run_sink

    source = args.scenario or "<defaults>"
    scenario = load(args.scenario)
    sink = scenario.sink
    advertise = args.advertise if args.advertise is not None else list(sink.advertise)
    advertise = [ext for ext in advertise if ext not in set(args.hide)]
    flags = {
        "sink__workers": args.workers, "sink__capture": args.capture,
        "sink__max_connections": args.max_connections, "sink__idle_timeout": args.idle_timeout,
        "sink__max_message_size": args.max_message_size, "sink__max_recipients": args.max_recipients,
        "sink__advertise": advertise, "sink__hostname": args.hostname, "sink__lmtp": args.lmtp,
        "sink__check_line_length": args.check_line_length, "sink__grace": args.grace,
        "sink__stats_interval": args.stats_interval, "sink__stats_file": args.stats_file,
        "sink__stats_listen": args.stats_listen, "sink__listen": args.listen,
    }
    scenario = override(scenario, f"{source} (with command-line flags)", **flags)
    sink = scenario.sink
    listen_text = sink.listen or f"{scenario.target.host}:{scenario.target.port}"
    try:
        address = parse_address(listen_text)
    except ValueError as e:
        raise ScenarioError(f"{source}: key 'sink.listen' (--listen): {e}") from None
    workers = resolve_workers(sink.workers)
    if address.path and workers > 1:
        raise ScenarioError(f"{source}: key 'sink.workers': unix sockets take workers = 1 (SO_REUSEPORT is TCP only)")
    try:
        run_sink(sink, address, workers)
    except OSError as e:
        print(f"smtpbench sink: cannot listen on {address}: {e.strerror or e}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


COMMANDS = {"sink": cmd_sink}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    eventloop.choose(getattr(args, "loop", None))
    try:
        return COMMANDS[args.command](args)
    except ScenarioError as e:
        print(f"smtpbench: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
