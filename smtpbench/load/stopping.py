"""Stopping a run early, as users of a benchmark expect (wrk, k6, vegeta, Locust all do).

The first SIGINT (Ctrl-C) or SIGTERM ends the load where it is: no new message
is begun, those in flight get the scenario's drain, and the result of what ran
is written and summarised (the command then exits 128 + the signal's number:
130 or 143). A second one leaves at once, without a result.

Signals are the process's, so this is one object per process (:data:`STOP`):
the command installs it (:func:`install`) before its load, and whatever runs
the load listens to it (:meth:`Stop.listen`). Worker processes leave SIGINT to
their parent, which tells them to stop over their pipe (see
:mod:`~smtpbench.load.procs`): Ctrl-C reaches every process of the terminal's
foreground group, and a worker that took it as its own second signal would be
lost with its measurements.
"""

from __future__ import annotations

import signal
import sys
from typing import Callable

from ..quickexit import exit_now

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Stop:
    """Whether a stop was asked for (``signum``: the signal, 0 while none), and who to tell."""

    def __init__(self) -> None:
        self.signum = 0
        self._stops: list[Callable[[], None]] = []
        self._aborts: list[Callable[[], None]] = []

    @property
    def name(self) -> str:
        """The signal's name (``SIGINT``), or ``""``."""
        return signal.Signals(self.signum).name if self.signum else ""

    def listen(self, stop: Callable[[], None], abort: Callable[[], None] | None = None) -> Callable[[], None]:
        """Call ``stop`` on the first signal (at once if it came already), ``abort`` on the second,
        before the process leaves. Returns a function that stops listening."""
        self._stops.append(stop)
        if abort is not None:
            self._aborts.append(abort)
        if self.signum:
            stop()

        def forget() -> None:
            self._stops.remove(stop)
            if abort is not None:
                self._aborts.remove(abort)
        return forget

    def request(self, signum: int, _frame=None) -> None:
        """The signal handler: the first call stops the load, the second leaves the process."""
        if self.signum:
            print("smtpbench: interrupted again: leaving without a result", file=sys.stderr)
            for abort in list(self._aborts):
                abort()
            exit_now(128 + signum)
        self.signum = signum
        print(f"\nsmtpbench: {self.name}: stopping the load, draining what is in flight "
              f"(again to leave at once, without a result)", file=sys.stderr, flush=True)
        for stop in list(self._stops):
            stop()

    def exit_code(self, code: int) -> int:
        """``code``, or 128 + the signal's number when the run was stopped by one."""
        return 128 + self.signum if self.signum else code


#: This process's (signals are per process).
STOP = Stop()


def install() -> Stop:
    """Take SIGINT and SIGTERM for :data:`STOP` (from the main thread); returns it."""
    for sig in SIGNALS:
        signal.signal(sig, STOP.request)
    return STOP
