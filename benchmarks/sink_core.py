"""Sink core: the protocol state machine alone, fed the reads smtp-source makes.

No sockets: a :class:`ServerSession` configured as ``smtpbench sink``
configures it (discard mode, the sink's hooks) is fed what Postfix
``smtp-source`` sends, one read per command as a non-pipelining client
does (MAIL, RCPT, DATA, then the body). Reported: microseconds of
Python per message, the share of the sink's per-message CPU in the
throughput benchmark that is protocol work rather than event loop and
kernel. With ``python -m benchmarks.sink_core --profile a`` it prints
where that time goes (cProfile).
"""

from __future__ import annotations

import time

from smtpbench.protocol.server import ServerSession
from smtpbench.scenario import Sink
from smtpbench.sink.server import SinkServer

from .harness import Options, Report, Table, core_main

NAME = "core"
READ = 256 * 1024  # uvloop's read buffer: a body arrives in reads of at most this much


def smtp_source_body(payload: int) -> bytes:
    """A message as smtp-source sends it: a few headers, ``payload`` octets in 80-octet lines, the terminator."""
    headers = (b"From: <foo@client.localhost>\r\nTo: <foo@client.localhost>\r\n"
               b"Date: Sat, 28 Nov 2026 10:00:00 +0000 (UTC)\r\nMessage-Id: <1.2.3@client.localhost>\r\n\r\n")
    line = b"X" * 78 + b"\r\n"
    lines, rest = divmod(payload, len(line))
    return headers + line * lines + b"X" * rest + b"\r\n.\r\n"


WORKLOADS = {  # key -> (title, payload octets, messages timed)
    "a": ("1 KiB", 1024, 20_000),
    "c": ("100 KiB", 100 * 1024, 2_000),
}


def replay(payload: int, messages: int) -> float:
    """Feed ``messages`` transactions into one session; return the CPU seconds taken."""
    server = SinkServer(Sink())
    # As SinkConnection does: per-connection fault hooks when a fault policy is active.
    hooks = server.hooks if server.policy is None else server.fault_hooks("127.0.0.1")
    session = ServerSession(server.config, server.stats, hooks)
    session.greeting()
    session.feed(b"EHLO client.localhost\r\n")
    body = smtp_source_body(payload)
    reads = [body[i:i + READ] for i in range(0, len(body), READ)]
    mail, rcpt, data = b"MAIL FROM:<foo@client.localhost>\r\n", b"RCPT TO:<foo@client.localhost>\r\n", b"DATA\r\n"
    feed = session.feed
    t0 = time.process_time()  # CPU time: others' processes on a shared machine do not count
    for _ in range(messages):
        feed(mail)
        feed(rcpt)
        feed(data)
        for chunk in reads:
            feed(chunk)
    seconds = time.process_time() - t0
    if server.stats.messages != messages:
        raise RuntimeError(f"the core accepted {server.stats.messages} of {messages} messages")
    return seconds


def run(opts: Options) -> Report:
    rounds = 3 if opts.quick else opts.rounds
    rows, data = [], {}
    for key, (title, payload, messages) in WORKLOADS.items():
        if opts.quick:
            messages //= 4
        us = min(replay(payload, messages) for _ in range(rounds)) / messages * 1e6
        rows.append([f"({key}) {title}", f"{us:,.1f}"])
        data[key] = {"payload": payload, "us_per_message": us, "messages": messages}
    return Report(
        title="sink protocol core alone (smtp-source's reads, no I/O)",
        tables=[Table("best of rounds", ["workload", "us/msg"], rows)],
        notes=["compare with the server CPU us/msg of sink.throughput: the rest is event loop and kernel"],
        data={"workloads": data},
    )


def main() -> None:
    core_main("python -m benchmarks.sink_core", "profile the sink's protocol core", run, WORKLOADS,
              lambda key: replay(*WORKLOADS[key][1:]), top=20)


if __name__ == "__main__":
    main()
