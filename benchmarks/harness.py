"""What every benchmark module shares: peers as subprocesses, the neutral client, reports.

Benchmarks compare smtpbench with real peers run side by side on loopback
(DESIGN.md: speed claims are ratios, never timed assertions in tests). The
machine is small and shared, so a module interleaves the servers it
compares and repeats each measurement; :func:`median` and per-round ratios
keep one noisy moment from deciding a verdict.

Every process a benchmark starts is a :class:`Peer` used as a context
manager: it is stopped (SIGTERM, then SIGKILL) however the benchmark ends.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

HOST = "127.0.0.1"  # benchmarks speak to loopback only
ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


# -- options and reports ----------------------------------------------------


@dataclass
class Options:
    """Knobs shared by all benchmark modules (set by ``python -m benchmarks``)."""

    rounds: int = 5          # repetitions of each measurement; the median is reported
    seconds: float = 1.5     # aimed-for duration of one measurement
    quick: bool = False      # fewer rounds, shorter runs: a smoke run of the benchmark itself


@dataclass
class Check:
    """One target from an issue, measured."""

    name: str
    value: float
    target: float
    unit: str = "x"          # "x" for ratios (higher is better), "MiB" for a ceiling
    aim: float | None = None  # a stretch goal, shown but not required
    higher_is_better: bool = True

    @property
    def passed(self) -> bool:
        return self.value >= self.target if self.higher_is_better else self.value <= self.target

    def value_text(self) -> str:
        return f"{self.value:.2f}{self.unit}" if abs(self.value) < 1000 else f"{self.value:,.0f}{self.unit}"

    def target_text(self) -> str:
        op = ">=" if self.higher_is_better else "<"
        text = f"{op} {self.target:,g}{self.unit}"
        return text + (f" (aim {self.aim:g}{self.unit})" if self.aim is not None else "")


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[str]]

    def render(self) -> str:
        """Plain text, first column left-aligned, the others right-aligned."""
        header, rows = self.header, self.rows
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

        def line(cells: list) -> str:
            return "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w)
                             for i, (c, w) in enumerate(zip(cells, widths)))

        rule = line(["-" * w for w in widths])
        return "\n".join([self.caption, line(header), rule, *(line(r) for r in rows)])


@dataclass
class Report:
    """What a benchmark module returns: tables to print, checks, and data for the JSON file."""

    title: str
    tables: list[Table] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        checks = [{**asdict(c), "passed": c.passed} for c in self.checks]
        return {"title": self.title, "checks": checks, "notes": self.notes, **self.data}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def environment() -> dict:
    """Versions and machine facts stored with every result (DESIGN.md: results carry their environment)."""
    env = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg": os.getloadavg(),
    }
    for module in ("uvloop", "aiosmtpd"):
        try:
            env[module] = __import__(module).__version__
        except (ImportError, AttributeError):
            env[module] = None
    postconf = find_program("postconf")
    if postconf:
        out = subprocess.run([postconf, "-d", "mail_version"], capture_output=True, text=True).stdout
        env["postfix"] = out.partition("=")[2].strip() or None
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    env["commit"] = git.stdout.strip() or None
    return env


def write_results(group: str, entries: dict[str, dict]) -> Path:
    """Merge ``entries`` (benchmark name -> JSON) into ``benchmarks/results/<group>.json``."""
    path = Path(__file__).resolve().parent / "results" / f"{group}.json"
    path.parent.mkdir(exist_ok=True)
    try:
        existing = json.loads(path.read_text())
    except (OSError, ValueError):
        existing = {}
    existing.update(entries)
    existing["environment"] = environment()
    path.write_text(json.dumps(existing, indent=2) + "\n")
    return path


# -- processes --------------------------------------------------------------


def find_program(name: str) -> str | None:
    """A program on PATH or in the sbin directories (Postfix installs its tools there)."""
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}", f"/usr/local/sbin/{name}") if os.path.exists(p)), None
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with status {proc.returncode} before listening")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {HOST}:{port} after {timeout:g}s")


def raise_nofile(wanted: int) -> int:
    """Raise this process's RLIMIT_NOFILE to ``wanted`` if allowed; return the soft limit in effect."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    for new_hard in (max(hard, wanted), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, new_hard), new_hard))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Peer:
    """A server subprocess on a loopback port: started, waited for, always stopped."""

    def __init__(self, name: str, argv: list[str], port: int, nofile: int = 0):
        self.name = name
        self.argv = argv
        self.port = port
        self.nofile = nofile
        self.proc: subprocess.Popen | None = None
        self._dir = tempfile.TemporaryDirectory(prefix=f"smtpbench-bench-{name}-")
        self.log_path = Path(self._dir.name) / "output.log"
        self.scratch = Path(self._dir.name)

    def __enter__(self) -> "Peer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        nofile = self.nofile
        log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT,
            start_new_session=True, preexec_fn=(lambda: raise_nofile(nofile)) if nofile else None,
        )
        log.close()
        try:
            wait_port(self.port, proc=self.proc)
        except (RuntimeError, TimeoutError) as e:
            self.stop()
            raise RuntimeError(f"{self.name} did not start ({e}): {self.output()[-2000:]}") from None

    def stop(self, timeout: float = 15.0) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                proc.wait()
        self.proc = None

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def cpu_seconds(self) -> float:
        """User + system CPU of the server process so far (from /proc, clock-tick resolution)."""
        with open(f"/proc/{self.proc.pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_bytes(self) -> int:
        """Resident set size now (VmRSS in /proc/PID/status)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS line")


def smtpbench_sink(port: int, *extra: str) -> list[str]:
    """The argv of one ``smtpbench sink`` worker on uvloop, discarding messages."""
    return [sys.executable, "-m", "smtpbench", "sink", "--listen", f"{HOST}:{port}",
            "--workers", "1", "--loop", "uvloop", "--capture", "none", *extra]


# -- the neutral client -----------------------------------------------------


@dataclass
class ClientRun:
    seconds: float
    client_cpu: float   # CPU seconds smtp-source used (is the client the bottleneck?)
    server_cpu: float   # CPU seconds the server used meanwhile


def timed_client(argv: list[str], peer: Peer, timeout: float, label: str,
                 env: dict | None = None) -> tuple[int, ClientRun, str]:
    """Run a client command against ``peer`` to completion: (exit status, timings, its stderr).

    Wall time as its user sees it, its CPU from rusage, the server's CPU
    meanwhile. Raises if it outlives ``timeout`` (it is killed).
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = peer.cpu_seconds()
    with tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=err)
        # A blocking wait returns the moment the client exits; Popen.wait(timeout) polls with
        # sleeps of up to 50 ms, which rounded every ~1 s measurement up by as much as 5 %.
        killed = threading.Event()
        watchdog = threading.Timer(timeout, lambda: (killed.set(), proc.kill()))
        watchdog.start()
        status = proc.wait()
        seconds = time.perf_counter() - t0
        watchdog.cancel()
        if killed.is_set():
            raise RuntimeError(f"{label} against {peer.name} took over {timeout:g}s")
        cpu1 = peer.cpu_seconds()
        err.seek(0)
        problems = err.read().decode(errors="replace").strip()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    client_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return status, ClientRun(seconds, client_cpu, cpu1 - cpu0), problems


def smtp_source(args: list[str], peer: Peer, timeout: float) -> ClientRun:
    """Run Postfix ``smtp-source`` against ``peer`` to completion and time it.

    Raises if it fails or prints a warning (a failed run is not a measurement).
    """
    program = find_program("smtp-source")
    if program is None:
        raise RuntimeError("smtp-source is not installed (Debian: apt-get install postfix)")
    label = f"smtp-source {' '.join(args)}"
    status, run, problems = timed_client([program, *args, f"{HOST}:{peer.port}"], peer, timeout, label)
    if status != 0 or problems:
        raise RuntimeError(f"{label} against {peer.name} failed ({status}): {problems[:500]}")
    return run


def core_main(prog: str, description: str, run, choices, call, top: int) -> None:
    """``main()`` of an in-process core benchmark: print its table, or with ``--profile CHOICE``
    a cProfile of ``call(CHOICE)`` sorted by own time."""
    import argparse
    import cProfile
    import pstats

    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--profile", choices=sorted(choices), help="print a cProfile of this case")
    parser.add_argument("--top", type=int, default=top, help="functions to show")
    args = parser.parse_args()
    if not args.profile:
        print(run(Options()).tables[0].render())
        return
    profile = cProfile.Profile()
    profile.runcall(call, args.profile)
    pstats.Stats(profile).sort_stats("tottime").print_stats(args.top)
