"""Stopping a run early, as users of a benchmark expect (wrk, k6, vegeta, Locust all do).

The first SIGINT (Ctrl-C), SIGTERM or SIGHUP ends the load where it is: no new
message is begun, those in flight get the scenario's drain, and the result of
what ran is written and summarised (the command then exits 128 + the signal's
number: 130, 143 or 129). A second one leaves at once, without a result (and
without the half-written file of one: :meth:`Stop.scratch`). The
same signal again within :data:`SAME_STOP` seconds is the same stop: ``timeout``
and systemd signal the command and then its whole process group, back to back.

Signals are the process's, so this is one object per process (:data:`STOP`):
the command installs it (:func:`install`) before its load and lets it go
(:func:`release`) once the load's result is saved; whatever runs the load
listens to it (:meth:`Stop.listen`). Worker processes leave these signals to
their parent, which tells them to stop over their pipe (see
:mod:`~smtpbench.load.procs`): a terminal's Ctrl-C, its hang-up and ``kill
-TERM -PGID`` reach every process of the group, and a worker that took one as
its own would be lost with its measurements.
"""

from __future__ import annotations

import os
import signal
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from ..quickexit import exit_now

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
#: s: the same signal again within this is the first one delivered twice (see the module docstring);
#: a person pressing Ctrl-C twice takes longer.
SAME_STOP = 0.2


def say(text: str) -> None:
    """Write ``text`` to standard error from a signal handler."""
    # os.write, not print: a signal handler runs between two bytecodes of whatever the main thread
    # was doing, maybe a write to stderr (the progress bar's), and a buffered stream is not reentrant.
    try:
        os.write(2, text.encode())
    except OSError:
        pass


class Stop:
    """Whether a stop was asked for (``signum``: the signal, 0 while none), and who to tell."""

    def __init__(self) -> None:
        self.signum = 0
        self._at = 0.0
        self._stops: list[Callable[[], None]] = []
        self._aborts: list[Callable[[], None]] = []
        self._scratch: set[str] = set()
        self._folders: list[str] = []
        self.quiet = False   # the first signal's line is not written (whoever sent it has said so)

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

    @contextmanager
    def scratch(self, path: str) -> Iterator[None]:
        """Around writing ``path``, a temporary file renamed into place at the end: a second signal
        meanwhile removes it before leaving. It leaves between two bytecodes (exit_now, os._exit:
        nothing unwinds), and the half-written file stayed beside the results. One unlink: the
        second signal is no slower."""
        self._scratch.add(path)
        try:
            yield
        finally:
            self._scratch.discard(path)

    def made(self, folder: str) -> None:
        """``folder`` was made for the result: a second signal removes it if it is still empty (an
        empty run folder stayed behind, and ``smtpbench report results/*`` refused it, and the rest)."""
        self._folders.append(folder)

    def request(self, signum: int, _frame=None) -> None:
        """The signal handler: the first call stops the load, the second leaves the process."""
        if self.signum:
            if signum == self.signum and time.monotonic() - self._at < SAME_STOP:
                return
            say("smtpbench: interrupted again: leaving without a result\n")
            for path in list(self._scratch):
                try:
                    os.unlink(path)
                except OSError:  # not made yet, or renamed into place already
                    pass
            for folder in self._folders:
                try:
                    os.rmdir(folder)
                except OSError:  # it holds something (the embedded sink's log, a finished step)
                    pass
            for abort in list(self._aborts):
                abort()
            exit_now(128 + signum)
        self.signum, self._at = signum, time.monotonic()
        if not self.quiet:
            say(f"\nsmtpbench: {self.name}: stopping the load, draining what is in flight "
                f"(again to leave at once, without a result)\n")
        for stop in list(self._stops):
            stop()


#: This process's (signals are per process).
STOP = Stop()


def install() -> Stop:
    """Take :data:`SIGNALS` for :data:`STOP` (from the main thread); returns it."""
    for sig in SIGNALS:
        signal.signal(sig, STOP.request)
    return STOP


def release() -> None:
    """The load's result is saved: the signals are the process's own again (Ctrl-C leaves, say
    while a report is drawn; nothing is stopped or kept by then)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for sig in SIGNALS[1:]:
        signal.signal(sig, signal.SIG_DFL)


def exit_code(result: dict, code: int) -> int:
    """``code``, or 128 + the signal's number when one stopped this result's load."""
    stopped = result.get("interrupted")
    if stopped and stopped.get("signal") in signal.Signals.__members__:
        return 128 + signal.Signals[stopped["signal"]]
    return code


@contextmanager
def ignored_in_children() -> Iterator[None]:
    """Around spawning worker processes: they are born ignoring :data:`SIGNALS` (their parent tells
    them to stop). The signals are blocked meanwhile, so one that comes is not lost: it reaches this
    process's handler when the block ends; a child ignores them first, then unblocks (ignore_here)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def ignore_here() -> None:
    """In a worker, first thing: ignore :data:`SIGNALS`, then take the block its parent spawned
    it under away (a pending one is discarded, being ignored)."""
    for sig in SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
