"""Sink memory: one worker holding 10,000 idle connections stays under 150 MiB RSS.

A client in this process opens the connections (on uvloop, a bounded
number of connects in flight so the listen backlog is never overrun),
reads every banner and then sends nothing. The sink's resident set size
(VmRSS) is read from /proc before and while it holds them; the sink's own
counters (its HTTP stats endpoint) confirm it holds them all. Both
processes get RLIMIT_NOFILE raised for the extra descriptors.

Reported: RSS idle, RSS with the connections, and the difference per
connection (what one more idle client costs the sink).
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request

import uvloop

from .harness import HOST, Check, Options, Peer, Report, Table, free_port, raise_nofile, smtpbench_sink

NAME = "memory"
CONNECTIONS = 10_000
LIMIT_MIB = 150
IN_FLIGHT = 200      # concurrent connects (the sink listens with backlog 4096)
BANNER_TIMEOUT = 30.0
MiB = 1024 * 1024


class _Idle(asyncio.Protocol):
    """Reads the banner, then stays silent."""

    def __init__(self, banner: asyncio.Future):
        self.banner = banner

    def data_received(self, data: bytes) -> None:
        if not self.banner.done():
            self.banner.set_result(data[:3])

    def connection_lost(self, exc) -> None:
        if not self.banner.done():
            self.banner.set_exception(ConnectionError("closed before the banner"))


async def _hold(port: int, n: int, measure) -> dict:
    """Open ``n`` connections, read their banners, call ``measure()`` while holding them."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(IN_FLIGHT)
    transports: list[asyncio.Transport] = []
    codes: dict[str, int] = {}

    async def one() -> None:
        async with gate:
            banner = loop.create_future()
            transport, _ = await loop.create_connection(lambda: _Idle(banner), HOST, port)
            transports.append(transport)
            code = (await asyncio.wait_for(banner, BANNER_TIMEOUT)).decode(errors="replace")
            codes[code] = codes.get(code, 0) + 1

    t0 = time.monotonic()
    try:
        results = await asyncio.gather(*(one() for _ in range(n)), return_exceptions=True)
        opened = time.monotonic() - t0
        errors = [r for r in results if isinstance(r, BaseException)]
        await asyncio.sleep(1.5)  # let the sink settle (its idle sweeper runs every second)
        measured = measure()
    finally:
        for t in transports:
            t.close()
        await asyncio.sleep(0.2)
    return {"banners": codes, "errors": len(errors), "first_error": repr(errors[0]) if errors else None,
            "open_seconds": opened, **measured}


def _sink_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://{HOST}:{port}/stats", timeout=10) as resp:
        return json.loads(resp.read())


def run(opts: Options) -> Report:
    n = CONNECTIONS
    have = raise_nofile(n + 500)
    if have < n + 100:
        raise RuntimeError(f"RLIMIT_NOFILE is {have}; {n} connections need more (raise the hard limit)")
    port, stats_port = free_port(), free_port()
    argv = smtpbench_sink(port, "--max-connections", str(n + 100), "--stats-listen", f"{HOST}:{stats_port}")
    with Peer("smtpbench", argv, port, nofile=n + 500) as sink:
        time.sleep(0.5)
        idle = sink.rss_bytes()

        def measure() -> dict:
            return {"rss_bytes": sink.rss_bytes(), "sink_connections_current": _sink_stats(stats_port)["connections_current"]}

        held = uvloop.run(_hold(port, n, measure))
    rss = held["rss_bytes"]
    per_conn = (rss - idle) / n
    ok = held["banners"].get("220", 0)
    rows = [[f"{n:,} idle connections", f"{idle / MiB:.1f}", f"{rss / MiB:.1f}", f"{per_conn:,.0f}",
             f"{held['sink_connections_current']:,}", f"{held['open_seconds']:.1f}"]]
    notes = []
    if ok != n or held["sink_connections_current"] != n:
        notes.append(f"WARNING: {ok} banners of 220, {held['errors']} errors ({held['first_error']}), "
                     f"sink holds {held['sink_connections_current']}: not all {n} connections were held")
    return Report(
        title="sink memory (one worker, idle connections that read the banner)",
        tables=[Table("resident set size", ["load", "RSS idle MiB", "RSS held MiB", "bytes/conn",
                                            "sink holds", "open s"], rows)],
        checks=[Check(f"RSS with {n:,} idle connections", rss / MiB, LIMIT_MIB, unit=" MiB", higher_is_better=False),
                Check("connections held", float(min(ok, held["sink_connections_current"])), float(n), unit="")],
        notes=notes,
        data={"connections": n, "rss_idle_bytes": idle, "per_connection_bytes": per_conn, **held},
    )
