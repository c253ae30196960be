"""The floor: the least a Python client on uvloop can do per SMTP message.

``python -m benchmarks.floor_client HOST PORT MESSAGES SESSIONS [--pipelining]``

Not a generator: it measures nothing, checks nothing (it only waits for the
last line of each reply), sends one fixed 1 KiB message over and over. It is
what any asyncio/uvloop client pays in event loop and system calls before it
does any work of its own, so ``load.generator`` shows it beside smtp-source
and smtpbench: the distance from smtpbench to this floor is smtpbench's own
Python; the distance from the floor to smtp-source is the price of the
language and the event loop.
"""

from __future__ import annotations

import asyncio
import sys

import uvloop

BODY = (b"From: <floor@client.localhost>\r\nTo: <floor@client.localhost>\r\nSubject: floor\r\n\r\n"
        + (b"X" * 78 + b"\r\n") * 12 + b"X" * 64 + b"\r\n.\r\n")
MAIL, RCPT, DATA = b"MAIL FROM:<floor@client.localhost>\r\n", b"RCPT TO:<floor@client.localhost>\r\n", b"DATA\r\n"

# What each reply prompts, by step: (what to write, the step after). Steps count replies.
GREET, EHLO_SENT, READY, RCPT_NEXT, DATA_NEXT, BODY_NEXT, QUIT_SENT = range(7)


class FloorClient(asyncio.Protocol):
    def __init__(self, left: list[int], pipelining: bool, done: asyncio.Future):
        self.left = left
        self.pipelining = pipelining
        self.done = done
        self.step = GREET
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data
        start = 0
        while True:
            end = buf.find(b"\r\n", start)
            if end < 0:
                break
            if buf[start + 3:start + 4] != b"-":  # the last line of a reply
                self.reply()
            start = end + 2
        self.buf = buf[start:]

    def reply(self) -> None:
        step, write = self.step, self.transport.write
        if step == GREET:
            write(b"EHLO floor.localhost\r\n")
            self.step = EHLO_SENT
        elif step in (EHLO_SENT, READY):
            if self.left[0] <= 0:
                write(b"QUIT\r\n")
                self.step = QUIT_SENT
                return
            self.left[0] -= 1
            if self.pipelining:
                write(MAIL + RCPT + DATA)
                self.step = -2  # two replies (MAIL, RCPT) to pass over, then DATA's 354
            else:
                write(MAIL)
                self.step = RCPT_NEXT
        elif step == -2:
            self.step = -1
        elif step == -1:
            self.step = BODY_NEXT
        elif step == RCPT_NEXT:
            write(RCPT)
            self.step = DATA_NEXT
        elif step == DATA_NEXT:
            write(DATA)
            self.step = BODY_NEXT
        elif step == BODY_NEXT:
            write(BODY)
            self.step = READY
        elif step == QUIT_SENT:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.done.done():
            self.done.set_result(None)


async def main(host: str, port: int, messages: int, sessions: int, pipelining: bool) -> None:
    loop = asyncio.get_running_loop()
    left = [messages]
    done = []
    for _ in range(sessions):
        fut = loop.create_future()
        await loop.create_connection(lambda fut=fut: FloorClient(left, pipelining, fut), host, port)
        done.append(fut)
    await asyncio.gather(*done)


if __name__ == "__main__":
    host, port, messages, sessions = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    uvloop.run(main(host, port, messages, sessions, "--pipelining" in sys.argv[5:]))
