"""What one generator process is given: its share of the work and its per-phase timeouts, and
where a message that dies with its session is counted.

Shared by the native runner (``smtpbench run``) and the Locust slot, so both split a
run, time out a silent server and label a failure the same way.
"""

from __future__ import annotations

from ..protocol.client import MAIL, PHASES, RSET
from ..scenario import Scenario

#: s: how long a closed-loop slot pauses before it reconnects when its connection failed without
#: carrying a message (refused, reset, a bad banner): a server that turns every session away must
#: not get a tight loop (4 sessions made ~1,500 connections/s against one resetting mid-DATA).
RECONNECT_BACKOFF = 0.05


def phase_timeouts(scenario: Scenario) -> dict[str | None, int]:
    """µs to wait for each phase's reply (RFC 5321 §4.5.3.2 defaults, from ``[load.timeouts]``)."""
    t = scenario.load.timeouts
    us = {phase: int(t.command * 1e6) for phase in PHASES}
    us.update(connect=int(t.connect * 1e6), banner=int(t.banner * 1e6), tls=int(t.connect * 1e6),
              data=int(t.data_init * 1e6), end_of_data=int(t.data_end * 1e6), bdat=int(t.data_end * 1e6))
    us[None] = 0
    return us


def split(total: int, index: int, count: int) -> int:
    """This process's share of ``total`` (sessions, messages), shares differing by at most one."""
    return total // count + (1 if index < total % count else 0)


def connections(scenario: Scenario) -> int:
    """Connections the scenario asks for: its sessions in a closed loop, its cap in an open one
    (a Locust user each; a worker process given none would hold its share of the work unsent)."""
    return scenario.load.sessions if scenario.load.model == "closed" else scenario.load.max_connections


def failed_at(recorder, now: int, phase: str, code: int, kind: str, text: str) -> tuple[str, int, str]:
    """(phase, code, kind) of a message in flight whose session ended awaiting ``phase``'s reply.

    That phase, unless it is the RSET sent after the message before failed (RFC 5321 §4.1.1.5),
    ahead of this message's MAIL: that reply is not the message's own. The message then fails at
    mail, as ``closed`` when a reply or garbage to the RSET ended the session (counted on
    ``recorder`` as an error of its own, at rset, that is no message's), else with the same kind
    (reset, timeout, unfinished), as a chained message does when the one before it dies.
    """
    if phase != RSET:
        return phase, code, kind
    if kind in ("reply", "protocol"):
        recorder.error(now, RSET, code, kind, text)
        kind = "closed"
    return MAIL, 0, kind
