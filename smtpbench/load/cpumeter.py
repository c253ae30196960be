"""The generator's own CPU share, interval by interval (one of its health signals)."""

from __future__ import annotations

import time
from time import monotonic_ns


class CpuMeter:
    """This process's CPU time over wall time since the last reading (1.0 = one core busy)."""

    def __init__(self) -> None:
        self.restart()

    def restart(self) -> None:
        """Start measuring from now (at t0, so start-up is not counted)."""
        self._at = (time.process_time(), monotonic_ns())

    def share(self) -> float:
        cpu, wall = time.process_time(), monotonic_ns()
        share = (cpu - self._at[0]) / max((wall - self._at[1]) / 1e9, 1e-9)
        self._at = (cpu, wall)
        return share
