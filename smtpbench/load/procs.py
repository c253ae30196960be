"""Running the generator in one or many processes, and merging what they measured.

Each worker process runs its own event loop and :class:`Runner` over its
slice of the work (sessions and message counts split evenly; in open loop
every P-th arrival of the one shared schedule). They share the start time
``t0`` on CLOCK_MONOTONIC, send progress once per second and their full
export at the end; the parent merges exports losslessly.
"""

from __future__ import annotations

import asyncio
import time
import traceback
from typing import Callable

from .. import eventloop
from ..addresses import Address
from ..messages import MessageFactory
from ..quickexit import exit_now
from ..scenario import Scenario
from .recorder import cpu_series, merge_exports
from .runner import Runner
from .stopping import STOP, ignore_here, ignored_in_children

# s: from "all processes ready" to the common t0. A worker, its message factory built before it
# says ready, reaches its loop 5-14 ms after the start message (measured, 2 cores, 2 workers);
# the rest is margin for a busy machine. A late worker starts late, and its send lag shows it.
START_DELAY = 0.1
SOLO_START_DELAY = 0.05  # s: one process waits for nobody, only for its own loop and pacer to start
# s: the same for a closed loop, which has no pacer and opens nothing before t0: its loop reaches
# the wait for t0 0.8-1.2 ms after t0 is set (5.2 ms at most; 40 runs, 2 shared cores, load 2-6).
# Every invocation waits this long: the 50 ms of the open loop were 9 % of a 0.55 s fixed cost.
SOLO_CLOSED_START_DELAY = 0.02
READY_TIMEOUT = 60.0


async def _run_one(scenario: Scenario, target: Address, factory: MessageFactory, t0_ns: int, index: int, count: int,
                   progress: Callable[[dict], None] | None, conn=None) -> dict:
    """One process's run. Asked to stop early (see :mod:`~smtpbench.load.stopping`) by this
    process's signal (alone) or by the parent over ``conn`` (a worker): the runner ends its load."""
    runner = Runner(scenario, target, factory, t0_ns, index, count, progress)
    loop = asyncio.get_running_loop()
    if conn is None:
        forget = STOP.listen(lambda: loop.call_soon_threadsafe(runner.interrupt))
    else:
        def told() -> None:
            try:
                conn.recv()  # ("stop", ...): the only thing the parent sends once the run is on
            except (EOFError, OSError):  # the parent is gone: nobody will read the result either
                pass
            loop.remove_reader(conn.fileno())
            runner.interrupt()
        loop.add_reader(conn.fileno(), told)
    try:
        return await runner.run()
    finally:
        if conn is None:
            forget()
        else:
            loop.remove_reader(conn.fileno())


def _worker(scenario_json: str, target: Address, run_id: str, index: int, count: int, conn) -> None:
    ignore_here()  # born with the stop signals blocked: the parent takes them (see load.stopping)
    scenario = Scenario.model_validate_json(scenario_json)
    factory = MessageFactory(scenario.message, scenario.seed, run_id, index, count)  # ~10 ms: before t0 is set
    # Start together: say we are ready (imports done), then wait for the common t0.
    conn.send(("ready", index, None))
    kind, _, t0_ns = conn.recv()
    try:
        export = eventloop.run(_run_one(scenario, target, factory, t0_ns, index, count,
                                        lambda p: conn.send(("progress", index, p)), conn))
        conn.send(("done", index, export))
    except BaseException as e:  # the parent reports it; never hang the run
        conn.send(("error", index, "".join(traceback.format_exception(e))))
    finally:
        conn.close()
    # The parent has the export and joins this process before it can report: skip teardown.
    exit_now(0)


class StartTimeout(RuntimeError):
    """The generator processes did not all start in time (too many for the machine, most often)."""


def run_load(scenario: Scenario, target: Address, run_id: str, processes: int,
             progress: Callable[[dict], None] | None = None) -> dict:
    """Run the scenario's load against ``target``; return the merged measurements."""
    if processes <= 1:
        factory = MessageFactory(scenario.message, scenario.seed, run_id, 0, 1)
        delay = SOLO_CLOSED_START_DELAY if scenario.load.model == "closed" else SOLO_START_DELAY
        t0_ns = time.monotonic_ns() + int(delay * 1e9)
        export = eventloop.run(_run_one(scenario, target, factory, t0_ns, 0, 1, progress))
        merged = merge_exports([export])
        merged["processes"] = [_proc_summary(export)]
        return merged
    # Here, not at import: one process (the default, and the benchmark's) starts no worker, and
    # multiprocessing with its resource tracker is ~9 M instructions of start-up (callgrind).
    import multiprocessing
    from multiprocessing import resource_tracker

    ctx = multiprocessing.get_context("spawn")
    conns, procs = [], []
    # Ctrl-C reaches the terminal's whole foreground process group (so do a hang-up and `timeout`'s
    # SIGTERM). A worker leaves them to this process, which tells it to stop over its pipe (see
    # load.stopping), so what it measured is kept. The resource tracker first: the first spawn
    # starts it, and starting it unblocks SIGINT and SIGTERM here (CPython 3.11 resource_tracker),
    # which let the workers be born without the block (checked in /proc/PID/status: SigBlk).
    resource_tracker.ensure_running()
    with ignored_in_children():
        for i in range(processes):
            parent_end, child_end = ctx.Pipe(duplex=True)
            p = ctx.Process(target=_worker, args=(scenario.model_dump_json(), target, run_id, i, processes,
                                                  child_end), name=f"smtpbench-load-{i}")
            p.start()
            child_end.close()
            conns.append(parent_end)
            procs.append(p)
    started: list[bool] = []  # (a worker waiting for its start must not be told to stop instead)
    forget = STOP.listen(lambda: started and _tell(conns, ("stop", 0, None)), lambda: [p.kill() for p in procs])
    try:
        # Spawned interpreters take a while to start (more on a busy machine): wait for all, then
        # give every process the same t0 a little ahead.
        for i, c in enumerate(conns):
            if not c.poll(READY_TIMEOUT):
                for p in procs:
                    p.kill()
                raise StartTimeout(f"generator process {i} of {processes} did not start within "
                                   f"{READY_TIMEOUT:.0f} s")
            c.recv()
        t0_ns = time.monotonic_ns() + int(START_DELAY * 1e9)
        for c in conns:
            c.send(("start", 0, t0_ns))
        started.append(True)
        if STOP.signum:  # stopped while they started: they stop at t0
            _tell(conns, ("stop", 0, None))
        return _collect(conns, procs, processes, progress)
    finally:
        forget()


def _tell(conns: list, message: tuple) -> None:
    for c in conns:
        try:
            c.send(message)
        except OSError:  # that worker is done and gone: nothing to stop
            pass


def _collect(conns: list, procs: list, processes: int, progress: Callable[[dict], None] | None) -> dict:
    """Wait for every worker's export (passing on their progress); merge them."""
    import multiprocessing.connection

    exports: list[dict | None] = [None] * processes
    latest: list[dict] = [{} for _ in range(processes)]
    errors = []
    live = set(range(processes))
    while live:
        ready = multiprocessing.connection.wait([conns[i] for i in live], timeout=1.0)
        for c in ready:
            i = conns.index(c)
            try:
                kind, _, payload = c.recv()
            except (EOFError, OSError):
                live.discard(i)
                if exports[i] is None:
                    errors.append(f"generator process {i} died (exit code {procs[i].exitcode})")
                continue
            if kind == "progress":
                latest[i] = payload
                if progress:
                    progress(_sum_progress(latest))
            elif kind == "done":
                exports[i] = payload
                live.discard(i)
            else:
                errors.append(payload)
                live.discard(i)
    for p in procs:
        p.join(timeout=5)
    if errors:
        raise RuntimeError("a generator process failed:\n" + "\n".join(errors))
    merged = merge_exports([e for e in exports if e is not None])
    merged["processes"] = [_proc_summary(e) for e in exports if e is not None]
    return merged


def _sum_progress(parts: list[dict]) -> dict:
    out = {"ok": 0, "failed": 0, "issued": 0, "p99": 0, "elapsed": 0.0}
    for p in parts:
        for k in ("ok", "failed", "issued"):
            out[k] += p.get(k, 0)
        out["p99"] = max(out["p99"], p.get("p99", 0))
        out["elapsed"] = max(out["elapsed"], p.get("elapsed", 0.0))
    return out


def _proc_summary(export: dict) -> dict:
    """Per-process health: CPU share per interval (for the generator-bottleneck verdict)."""
    return {"cpu": cpu_series(export["intervals"]), "totals": export["totals"]}
