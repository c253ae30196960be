"""Generator core: the load generator's Python alone, answered in-process as smtp-sink answers.

No sockets: a :class:`~smtpbench.load.runner.Runner` with its
:class:`~smtpbench.load.connection.ClientConnection` s (closed loop, 10
sessions, 1 KiB, connections kept) is driven by a scripted peer that replies
to each write as Postfix ``smtp-sink`` does, one read per batch of replies.
Everything the generator does per message runs: building the message, the
client state machine, reply parsing, phase timing, recording, starting the
next transaction. What it leaves out is the event loop and the kernel,
which cost the same for any client (compare ``load.generator``'s CPU per
message with smtp-source's). ``python -m benchmarks.load_core --profile
pipelining`` prints a cProfile of it.
"""

from __future__ import annotations

import asyncio
import time
from time import monotonic_ns

from smtpbench.addresses import Address
from smtpbench.load.connection import ClientConnection
from smtpbench.load.recorder import Recorder
from smtpbench.load.runner import Runner
from smtpbench.messages import MessageFactory
from smtpbench.protocol.client import ClientSession
from smtpbench.scenario import build

from .harness import Options, Report, Table, core_main

NAME = "core"
SESSIONS = 10
MESSAGES = 20_000
FLUSH_MESSAGES = 2_500
EHLO = (b"250-smtp-sink.localhost\r\n250-PIPELINING\r\n250-SIZE 102400000\r\n250-ETRN\r\n"
        b"250-STARTTLS\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250 DSN\r\n")


class ScriptedPeer:
    """The socket's stand-in: replies to what the generator writes, as smtp-sink would."""

    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self.in_data = False
        self.conn: ClientConnection | None = None
        self.closed = False

    def writelines(self, pieces) -> None:
        for piece in pieces:
            self.write(piece)

    def write(self, piece: bytes) -> None:
        if self.in_data:
            if piece.endswith(b"\r\n.\r\n") or piece == b".\r\n":
                self.in_data = False
                self.replies.append(b"250 2.0.0 Ok: queued as 1234\r\n")
            return
        for line in piece.split(b"\r\n")[:-1]:
            verb = line[:4].upper()
            if verb == b"DATA":
                self.in_data = True
                self.replies.append(b"354 End data with <CR><LF>.<CR><LF>\r\n")
            elif verb in (b"EHLO", b"LHLO"):
                self.replies.append(EHLO)
            elif verb == b"QUIT":
                self.replies.append(b"221 Bye\r\n")
            else:
                self.replies.append(b"250 2.0.0 Ok\r\n")

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.conn.connection_lost(None)

    def get_extra_info(self, name, default=None):
        return default


def drive(pipelining: bool, messages: int, record: bool = True) -> float:
    """Run ``messages`` transactions over SESSIONS scripted connections; return the CPU seconds.

    The recorder is flushed every FLUSH_MESSAGES, as a run at ~25,000 msgs/s flushes every 0.1 s;
    ``record=False`` is a run with ``SMTPBENCH_NO_RECORD=1``.
    """
    scenario = build({"load": {"sessions": SESSIONS, "messages": messages, "messages_per_connection": 0,
                               "pipelining": pipelining},
                      "message": {"size": 1024}})
    factory = MessageFactory(scenario.message, scenario.seed, "core", 0, 1)
    runner = Runner(scenario, Address(host="127.0.0.1", port=25), factory, monotonic_ns())
    runner.recorder = Recorder(record=record)
    peers = []
    for _ in range(SESSIONS):
        runner.issued += 1
        session = ClientSession(scenario.load.helo, pipelining)
        runner.connecting[session] = runner.now()  # the message waiting for it (see Runner._open)
        conn = ClientConnection(runner, session, runner.now(), session)
        peer = ScriptedPeer()
        peer.conn = conn
        conn.connection_made(peer)
        peer.replies.append(b"220 smtp-sink.localhost ESMTP\r\n")
        peers.append(peer)
    t0 = time.process_time()
    busy = True
    flushed = 0
    while busy:
        busy = False
        for peer in peers:
            if peer.replies and not peer.closed:
                data = b"".join(peer.replies)
                peer.replies.clear()
                peer.conn.data_received(data)
                busy = True
        if runner.ok - flushed >= FLUSH_MESSAGES:
            runner.recorder.flush()
            flushed = runner.ok
    runner.recorder.flush()
    seconds = time.process_time() - t0
    ok = runner.recorder.totals["ok"] if record else runner.ok
    if ok != messages:
        raise RuntimeError(f"the generator core completed {ok} of {messages} messages")
    return seconds


def _drive(pipelining: bool, messages: int, record: bool = True) -> float:
    """:func:`drive` inside an event loop: the runner creates asyncio objects, as it always has one."""
    async def in_loop() -> float:
        return drive(pipelining, messages, record)

    return asyncio.run(in_loop())


def recording_cost_us(rounds: int = 5, messages: int = MESSAGES) -> float:
    """What recording costs per message in the generator's own Python: pipelining with the recorder
    on and off (as ``SMTPBENCH_NO_RECORD=1``), interleaved rounds, best of each; steadier than any
    end-to-end figure on a shared machine."""
    on, off = [], []
    for _ in range(rounds):
        on.append(_drive(True, messages, True))
        off.append(_drive(True, messages, False))
    return (min(on) - min(off)) / messages * 1e6


MODES = {"no-pipelining": (False, True), "pipelining": (True, True), "pipelining, recording off": (True, False)}


def run(opts: Options) -> Report:
    rounds = 3 if opts.quick else opts.rounds
    messages = MESSAGES // 4 if opts.quick else MESSAGES
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(rounds):  # modes interleaved, so a busy moment of the machine hits them alike
        for mode, (pipelining, record) in MODES.items():
            times[mode].append(_drive(pipelining, messages, record))
    best = {mode: min(t) / messages * 1e6 for mode, t in times.items()}
    rows = [[mode, f"{us:,.2f}"] for mode, us in best.items()]
    recording = best["pipelining"] - best["pipelining, recording off"]
    return Report(
        title="generator core alone (closed loop, 10 sessions, 1 KiB, replies scripted in-process)",
        tables=[Table("best of rounds", ["mode", "us/msg"], rows)],
        notes=["compare with the generator CPU us/msg of load.generator: the rest is event loop and kernel",
               f"recording (per-transaction hot path and the numpy flush every {FLUSH_MESSAGES:,} messages) "
               f"costs {recording:.2f} us/msg here"],
        data={"modes": {mode: {"us_per_message": us, "messages": messages} for mode, us in best.items()},
              "recording_us_per_message": recording},
    )


def main() -> None:
    core_main("python -m benchmarks.load_core", "profile the generator's core", run, MODES,
              lambda mode: _drive(MODES[mode][0], MESSAGES, MODES[mode][1]), top=25)


if __name__ == "__main__":
    main()
