"""What the Locust tests share: the ready locustfile, a sink to aim at, and the commands of a master and
its workers (every Locust process is a subprocess: importing Locust monkey-patches the process it is in)."""

from __future__ import annotations

import sys
from pathlib import Path

from conftest import SinkProcess, launch_sink

ROOT = Path(__file__).resolve().parent.parent
LOCUSTFILE = ROOT / "smtpbench" / "integrations" / "locustfile.py"
HOST = "127.0.0.1"


def start_sink(folder: Path, scenario: Path | None = None) -> SinkProcess:
    """``smtpbench sink`` on a free loopback port (configured from ``scenario``), its stats in ``folder``."""
    extra = ["--scenario", str(scenario)] if scenario is not None else []
    return launch_sink(str(folder / "sink-stats.jsonl"), *extra, host=HOST)


def master_cmd(port: str, workers: int, scenario: Path, target: str, out: Path) -> list[str]:
    """A headless Locust master on the ready locustfile, waiting for ``workers`` workers on ``port``."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--master", "--expect-workers",
            str(workers), "--master-bind-host", HOST, "--master-bind-port", port, "--scenario", str(scenario),
            "--host", target, "--smtp-out", str(out), "--only-summary"]


def worker_cmd(port: str) -> list[str]:
    """A Locust worker of the master listening on ``port``."""
    return [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--worker", "--master-host", HOST,
            "--master-port", port]


def processes_with(text: str) -> list[str]:
    """The command lines of the running processes that contain ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args.replace("\0", " "))
    return found
