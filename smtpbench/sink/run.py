"""Running the sink: one process, or N worker processes sharing the port (SO_REUSEPORT).

With workers, each process has its own event loop and listening socket on
the same port; the kernel spreads connections among them. Workers send
their counters to the parent every 250 ms and once more, final, after their
graceful drain; the parent sums them (``merge``) for the stats line, the
HTTP endpoint and the final report.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import signal
import socket
import sys
from typing import TextIO

from .. import eventloop
from ..addresses import Address
from ..scenario import Sink
from ..schema_errors import format_error
from .monitor import Monitor
from .server import SinkServer, StartError, open_capture_checked
from .stats import merge

PUSH_INTERVAL = 0.25


def _stop_event() -> asyncio.Event:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _listening(names: list, address: Address) -> str:
    if address.path:
        return f"smtpbench sink listening on unix:{address.path}"
    shown = []
    for name in names:
        host, port = name[0], name[1]
        shown.append(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")
    return "smtpbench sink listening on " + ", ".join(dict.fromkeys(shown))


def _cannot_listen(address: Address, e: OSError) -> StartError:
    return StartError(f"key 'sink.listen' (--listen): cannot listen on {address}: {e.strerror or e}")


async def _listen(server: SinkServer, address: Address) -> list:
    try:
        return await server.listen(address)
    except OSError as e:
        raise _cannot_listen(address, e) from None


async def _single(settings: Sink, address: Address, out: TextIO, seed: int) -> dict:
    stop = _stop_event()
    server = SinkServer(settings, seed=seed)
    names = await _listen(server, address)
    try:
        monitor = Monitor(settings, server.stats.snapshot, out,
                          faults=_fault_endpoint(lambda rules, payload: server.set_faults(rules)))
        await monitor.start()
        print(_listening(names, address), file=out, flush=True)  # only now: all of it is up
        monitor.announce()
        await stop.wait()
        await server.drain(settings.grace)
        return await monitor.stop()
    finally:
        server.remove_socket_files()  # also when the stats endpoint could not start


async def _worker(settings_json: str, address: Address, conn, seed: int, control) -> None:
    settings = Sink.model_validate_json(settings_json)
    stop = _stop_event()
    server = SinkServer(settings, seed=seed)
    names = await server.listen(address, reuse_port=True)

    def on_control() -> None:
        try:
            kind, payload = control.recv()
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(control.fileno())
            return
        if kind == "faults":
            server.set_faults(faults_from_json(payload))

    asyncio.get_running_loop().add_reader(control.fileno(), on_control)
    conn.send(("ready", names))
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), PUSH_INTERVAL)
        except asyncio.TimeoutError:
            pass
        conn.send(("stats", server.stats.snapshot()))
    await server.drain(settings.grace)
    conn.send(("final", server.stats.snapshot()))
    conn.close()


def worker_main(settings_json: str, address: Address, conn, seed: int, control) -> None:
    """Entry point of a worker process (spawned: a fresh interpreter)."""
    eventloop.run(_worker(settings_json, address, conn, seed, control))


def faults_from_json(payload: str) -> list:
    from pydantic import TypeAdapter

    from ..faultspec import Fault

    return TypeAdapter(list[Fault]).validate_json(payload)


FAULTS_SOURCE = "PUT /faults"
EMPTY_FAULTS = f"{FAULTS_SOURCE}: the body is empty; expected a JSON list of rules ([] clears them)\n"


def fault_rules_error(e) -> str:
    """One line for a rejected ``PUT /faults`` body, worded as a scenario error (the first problem,
    its key path under ``faults``, and what is allowed), e.g.
    ``PUT /faults: unknown key 'faults.0.bogus'; allowed here: on, action, ...``."""
    if isinstance(e, UnicodeDecodeError):
        return f"{FAULTS_SOURCE}: the body is not UTF-8"
    err = e.errors()[0]
    if err["type"] == "json_invalid":  # the input is the whole body: not worth echoing
        return f"{FAULTS_SOURCE}: not valid JSON: {err['msg'].removeprefix('Invalid JSON: ')}"
    # The body is the [[sink.faults]] list: its key paths start at Sink's "faults" field.
    return format_error(FAULTS_SOURCE, {**err, "loc": ("faults", *err["loc"])}, Sink)


def _fault_endpoint(apply):
    """``PUT /faults`` with a JSON list of rules (the ``[[sink.faults]]`` schema) replaces them live;
    a body that is empty or not valid rules gets 400 with one line (:func:`fault_rules_error`) and changes nothing."""
    from pydantic import ValidationError

    def handle(method: str, path: str, body: bytes):
        if path != "/faults" or method not in ("PUT", "POST"):
            return None
        if not body.strip():  # a PUT without --data, say: clearing the rules takes an explicit []
            return 400, "text/plain", EMPTY_FAULTS.encode()
        try:
            rules = faults_from_json(body.decode("utf-8"))
        except (ValidationError, UnicodeDecodeError) as e:
            return 400, "text/plain", (fault_rules_error(e) + "\n").encode()
        payload = json.dumps([r.model_dump(mode="json") for r in rules])
        apply(rules, payload)
        return 200, "application/json", (payload + "\n").encode()

    return handle


def _reserve(address: Address) -> tuple[socket.socket, Address]:
    """Bind (not listen) the port with SO_REUSEPORT so port 0 means one port for all workers."""
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((address.host, address.port))
    return sock, Address(host=address.host, port=sock.getsockname()[1])


async def _parent(settings: Sink, address: Address, workers: int, out: TextIO, seed: int) -> dict:
    stop = _stop_event()
    loop = asyncio.get_running_loop()
    # Capture and TLS fail here with the key named, rather than in every worker with none.
    open_capture_checked(settings.capture).close()
    SinkServer.tls_context(settings)
    try:
        reserved, address = _reserve(address)
    except OSError as e:
        raise _cannot_listen(address, e) from None
    ctx = multiprocessing.get_context("spawn")
    procs, conns = [], []
    latest: list[dict] = [{} for _ in range(workers)]
    finals = [False] * workers
    ready = [asyncio.get_running_loop().create_future() for _ in range(workers)]
    done = asyncio.Event()

    def reader(i: int, conn) -> None:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            finals[i] = True
            if all(finals):
                done.set()
            return
        if kind == "ready":
            if not ready[i].done():
                ready[i].set_result(payload)
        else:
            latest[i] = payload
            if kind == "final":
                finals[i] = True
                loop.remove_reader(conn.fileno())
                if all(finals):
                    done.set()

    json_settings = settings.model_dump_json()
    controls = []
    for i in range(workers):
        recv_end, send_end = ctx.Pipe(duplex=False)
        control_recv, control_send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=worker_main, args=(json_settings, address, send_end, seed + i, control_recv),
                           name=f"smtpbench-sink-{i}")
        proc.start()
        send_end.close()
        control_recv.close()
        controls.append(control_send)
        procs.append(proc)
        conns.append(recv_end)
        loop.add_reader(recv_end.fileno(), reader, i, recv_end)
    try:
        names = await asyncio.wait_for(asyncio.gather(*ready), 60)
    except (asyncio.TimeoutError, Exception):
        for p in procs:
            p.terminate()
        raise StartError(f"key 'sink.listen' (--listen): the sink workers did not start on {address} "
                         f"(is the port in use?)") from None
    finally:
        reserved.close()
    def forward(rules: list, payload: str) -> None:
        for c in controls:
            try:
                c.send(("faults", payload))
            except OSError:
                pass

    monitor = Monitor(settings, lambda: merge(latest), out, faults=_fault_endpoint(forward))
    try:
        await monitor.start()
    except StartError:
        for p in procs:
            p.terminate()
            p.join(timeout=settings.grace + 2)
        raise
    print(_listening(names[0], address) + f" ({workers} workers)", file=out, flush=True)
    monitor.announce()
    stopper = asyncio.ensure_future(stop.wait())
    dead = asyncio.ensure_future(done.wait())
    await asyncio.wait([stopper, dead], return_when=asyncio.FIRST_COMPLETED)
    for p in procs:
        if p.is_alive():
            p.terminate()  # SIGTERM: each worker drains gracefully
    try:
        await asyncio.wait_for(done.wait(), settings.grace + 10)
    except asyncio.TimeoutError:
        print("smtpbench sink: a worker did not finish in time; its last counters are used", file=sys.stderr)
    for p in procs:
        p.join(timeout=2)
        if p.is_alive():
            p.kill()
    stopper.cancel()
    dead.cancel()
    return await monitor.stop()


def run_sink(settings: Sink, address: Address, workers: int, out: TextIO = sys.stdout, seed: int = 1) -> dict:
    """Run until SIGINT/SIGTERM; return the final (merged) counters."""
    if workers <= 1:
        return eventloop.run(_single(settings, address, out, seed))
    return eventloop.run(_parent(settings, address, workers, out, seed))
