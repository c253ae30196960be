"""Watching a running sink: periodic stats lines, a JSON-lines file, the HTTP endpoint."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Callable, TextIO

from ..scenario import Sink
from ..addresses import parse_address
from .http import serve_stats
from .server import StartError
from .stats import Clock, final_report, stats_line


class Monitor:
    def __init__(self, settings: Sink, snapshot: Callable[[], dict], out: TextIO, faults=None):
        self.faults = faults
        self.settings = settings
        self.snapshot = snapshot
        self.out = out
        self.clock = Clock()
        self._http = None
        self._task: asyncio.Task | None = None
        self._file = None

    async def start(self) -> None:
        """Open the stats file and the endpoint (StartError naming the key when one fails); nothing is
        printed, so the sink says it is listening only once all of it is (see :meth:`announce`)."""
        s = self.settings
        if s.stats_file:
            try:
                self._file = open(s.stats_file, "a", encoding="utf-8")
            except OSError as e:
                raise StartError(f"key 'sink.stats_file' (--stats-file): cannot append to {s.stats_file!r}: "
                                 f"{e.strerror or e}") from None
        if s.stats_listen:
            addr = parse_address(s.stats_listen, default_port=8025)
            try:
                self._http = await serve_stats(addr.host, addr.port, self.snapshot, self.faults)
            except OSError as e:
                raise StartError(f"key 'sink.stats_listen' (--stats-listen): cannot listen on {addr}: "
                                 f"{e.strerror or e}") from None
        if s.stats_interval > 0 or self._file:
            self._task = asyncio.ensure_future(self._tick(s.stats_interval or 1.0))

    def announce(self) -> None:
        if self._http:
            host, port = self._http.sockets[0].getsockname()[:2]
            shown = f"[{host}]" if ":" in host else host
            self._say(f"stats endpoint on http://{shown}:{port}/stats and /metrics")

    def _say(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    def _record(self, snap: dict) -> None:
        if self._file:
            row = {"elapsed": round(self.clock.elapsed(), 3), "time": round(time.time(), 3), **snap}
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()

    async def _tick(self, interval: float) -> None:
        previous = None
        while True:
            await asyncio.sleep(interval)
            snap = self.snapshot()
            if self.settings.stats_interval > 0:
                self._say(stats_line(snap, previous, self.clock.elapsed(), interval))
            self._record(snap)
            previous = snap

    async def stop(self) -> dict:
        """Stop watching; write and print the final figures; return them."""
        if self._task:
            self._task.cancel()
        if self._http:
            self._http.close()
        snap = self.snapshot()
        self._record(snap)
        if self._file:
            self._file.close()
        self._say(final_report(snap, self.clock.elapsed()))
        return snap
