"""``python -m benchmarks [GROUP | GROUP.NAME ...]``: run benchmarks, print tables, write JSON.

Exit status: 0, or 1 with ``--strict`` when a target was missed; 2 when a
benchmark could not run (a peer missing, a server that did not start).
"""

from __future__ import annotations

import argparse
import compileall
import importlib
import sys
import time
from pathlib import Path

import smtpbench

from . import REGISTRY
from .harness import Options, Report, Table, write_results


def _selected(names: list[str]) -> list[tuple[str, str]]:
    """(group, module) pairs for GROUP or GROUP.NAME arguments; all when none."""
    chosen = []
    for arg in names or list(REGISTRY):
        group, _, name = arg.partition(".")
        if group not in REGISTRY:
            raise SystemExit(f"unknown benchmark group {group!r}; groups: {', '.join(REGISTRY)}")
        modules = REGISTRY[group]
        if name:
            match = [m for m in modules if m == f"{group}_{name}" or m == name]
            if not match:
                short = [m.removeprefix(f"{group}_") for m in modules]
                raise SystemExit(f"unknown benchmark {arg!r}; in {group}: {', '.join(short)}")
            modules = tuple(match)
        chosen += [(group, m) for m in modules if (group, m) not in chosen]
    return chosen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n")[0])
    parser.add_argument("names", nargs="*", metavar="GROUP[.NAME]", help=f"what to run (groups: {', '.join(REGISTRY)})")
    parser.add_argument("--rounds", type=int, default=5, help="repetitions of each measurement (default 5)")
    parser.add_argument("--seconds", type=float, default=1.5, help="aimed-for length of one measurement (default 1.5)")
    parser.add_argument("--quick", action="store_true", help="short runs, 3 rounds: checks the benchmarks run")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    args = parser.parse_args(argv)
    chosen = _selected(args.names)
    if args.list:
        for group, module in chosen:
            print(f"{group}.{module.removeprefix(group + '_')}")
        return 0
    opts = Options(rounds=max(1, args.rounds), seconds=args.seconds, quick=args.quick)
    # Time smtpbench as an installed package runs: from bytecode. An editable checkout under
    # PYTHONDONTWRITEBYTECODE would otherwise compile every module at each start (~0.4 s of
    # every ``smtpbench run`` measured from outside).
    compileall.compile_dir(str(Path(smtpbench.__file__).parent), quiet=1)
    reports: list[tuple[str, Report]] = []
    by_group: dict[str, dict] = {}
    broken = False
    for group, module_name in chosen:
        module = importlib.import_module(f"{__package__}.{module_name}")
        label = f"{group}.{module.NAME}"
        print(f"== {label}", flush=True)
        t0 = time.monotonic()
        try:
            report = module.run(opts)
        except (RuntimeError, OSError) as e:
            print(f"{label}: could not run: {e}", file=sys.stderr)
            broken = True
            continue
        print(f"   ({time.monotonic() - t0:.0f}s)\n")
        reports.append((label, report))
        by_group.setdefault(group, {})[module.NAME] = report.to_json()
    for label, report in reports:
        print(f"\n## {label}: {report.title}")
        for t in report.tables:
            print("\n" + t.render())
        for note in report.notes:
            print(f"  note: {note}")
    checks = [(label, c) for label, r in reports for c in r.checks]
    if checks:
        rows = [[f"{label}: {c.name}", c.value_text(), c.target_text(), "PASS" if c.passed else "FAIL"]
                for label, c in checks]
        print("\n" + Table("targets", ["check", "measured", "target", "verdict"], rows).render())
    for group, entries in by_group.items():
        print(f"\nresults written to {write_results(group, entries)}")
    if broken:
        return 2
    return 1 if args.strict and not all(c.passed for _, c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
