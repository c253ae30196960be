"""What one generator process is given: its share of the work and its per-phase timeouts.

Shared by the native runner (``smtpbench run``) and the Locust slot, so both split a
run and time out a silent server the same way.
"""

from __future__ import annotations

from ..protocol.client import PHASES
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
