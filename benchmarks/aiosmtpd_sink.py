"""aiosmtpd on uvloop with a discard handler: the Python peer of the sink benchmark.

Run as ``python benchmarks/aiosmtpd_sink.py HOST PORT``; stops on SIGTERM or
SIGINT and prints the number of messages it accepted. It is aiosmtpd as a
user would run it (its own SMTP class, default limits), only the handler
throws the message away, as the other sinks in the comparison do.
"""

from __future__ import annotations

import asyncio
import signal
import sys

import uvloop
from aiosmtpd.smtp import SMTP


class Discard:
    """Accept every message, keep nothing but a count."""

    def __init__(self) -> None:
        self.messages = 0

    async def handle_DATA(self, server, session, envelope) -> str:
        self.messages += 1
        return "250 2.0.0 Message accepted"


async def main(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    handler = Discard()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="aiosmtpd.localhost", ident="aiosmtpd benchmark"),
        host, port, backlog=4096,
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(f"aiosmtpd listening on {host}:{port}", flush=True)
    await stop.wait()
    server.close()
    print(f"messages={handler.messages}", flush=True)


if __name__ == "__main__":
    uvloop.run(main(sys.argv[1], int(sys.argv[2])))
