"""The sink's stats endpoint: ``GET /stats`` (JSON) and ``GET /metrics`` (Prometheus).

Two read-only routes do not justify a web framework dependency in the sink's
processes; this is a bounded HTTP/1.0-style responder on asyncio (the request
head is capped at 8 KiB, its body at 64 KiB, the whole request must arrive
within REQUEST_TIMEOUT, and the connection closes after one answer).
"""

from __future__ import annotations

import asyncio
import json
from typing import Callable

from .stats import prometheus

MAX_HEAD = 8192
MAX_BODY = 65536
#: Seconds from connect to a whole request, then 408 (RFC 9110 §15.5.9) and the close. Once per
#: connection, not per read: a client that sent nothing, or a request an octet at a time, held
#: its connection and buffer for ever, and many such accumulate. (Module level: tests shorten it.)
REQUEST_TIMEOUT = 5.0


class StatsHTTP(asyncio.Protocol):
    def __init__(self, snapshot: Callable[[], dict], extra: Callable[[str, str, bytes], tuple[int, str, bytes] | None] | None = None):
        self.snapshot = snapshot
        self.extra = extra
        self.buf = bytearray()
        self.transport = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(REQUEST_TIMEOUT, self._timed_out)

    def _timed_out(self) -> None:
        self.timer = None
        self._send(408, "text/plain", b"request timeout\n")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def data_received(self, data: bytes) -> None:
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buf) > MAX_HEAD:
                self._send(431, "text/plain", b"request header too large\n")
            return
        if end > MAX_HEAD:  # a whole head in one read is capped too, not only one still coming
            self._send(431, "text/plain", b"request header too large\n")
            return
        head = bytes(self.buf[:end]).decode("latin-1")
        length = 0
        for line in head.split("\r\n")[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length" and value.strip().isdigit():
                length = int(value.strip())
        if length > MAX_BODY:
            self._send(413, "text/plain", b"request body too large\n")
            return
        if len(self.buf) < end + 4 + length:
            return  # the body is still coming
        request = head.split("\r\n", 1)[0].split()
        if len(request) < 2:
            self._send(400, "text/plain", b"bad request\n")
            return
        method, path = request[0], request[1].split("?", 1)[0]
        if method == "GET" and path == "/stats":
            self._send(200, "application/json", json.dumps(self.snapshot(), indent=1).encode() + b"\n")
        elif method == "GET" and path == "/metrics":
            self._send(200, "text/plain; version=0.0.4", prometheus(self.snapshot()).encode())
        else:
            answer = self.extra(method, path, bytes(self.buf[end + 4 : end + 4 + length])) if self.extra else None
            if answer is None:
                self._send(404, "text/plain", b"try /stats or /metrics\n")
            else:
                self._send(*answer)

    def _send(self, status: int, ctype: str, body: bytes) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.transport.is_closing():
            return  # answered already
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 408: "Request Timeout", 413: "Content Too Large",
                  431: "Request Header Fields Too Large"}.get(status, "")
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        self.transport.write(head + body)
        self.transport.close()


async def serve_stats(host: str, port: int, snapshot: Callable[[], dict], extra=None) -> asyncio.AbstractServer:
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: StatsHTTP(snapshot, extra), host, port)
