"""One re-armable, microsecond-precise timer inside the event loop, for the open-loop pacer.

uvloop's timers (libuv's) have millisecond resolution: ``call_at`` fires up to
1 ms early or late, so an arrival schedule at 10,000/s would leave in bursts
of ten. On Linux a timerfd (timerfd_create(2)) is armed with an absolute
``CLOCK_MONOTONIC`` time in nanoseconds and becomes readable when it expires;
the loop watches it like a socket, so an expiry wakes ``epoll_wait`` within
the kernel's timer slack (50 µs by default) and costs no thread and no GIL
hand-over. Python has ``os.timerfd_*`` from 3.13; before that it is called
through ctypes. Elsewhere :class:`CallAtTimer` falls back on ``call_at``.
:class:`TimerFile` is the timerfd alone: the Locust driver's gevent hub
watches one too (see :class:`smtpbench.integrations.work.Clock`).
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import sys
import time

CLOCK_MONOTONIC = 1     # <time.h>; time.monotonic_ns reads the same clock on Linux
TFD_TIMER_ABSTIME = 1   # <sys/timerfd.h>
TFD_NONBLOCK = os.O_NONBLOCK
TFD_CLOEXEC = getattr(os, "O_CLOEXEC", 0o2000000)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class TimerFile:
    """A timerfd, whatever loop watches it: :meth:`set` arms it for a ``time.monotonic_ns()``
    value; its :attr:`fd` turns readable when that time has come, and :meth:`expired` says so."""

    def __init__(self) -> None:
        if hasattr(os, "timerfd_create"):  # Python 3.13+
            self.fd = os.timerfd_create(CLOCK_MONOTONIC, flags=TFD_NONBLOCK | TFD_CLOEXEC)
            self.set = self._set_os
        else:
            libc = ctypes.CDLL(None, use_errno=True)
            fd = libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
            if fd < 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
            self.fd = fd
            self._libc_settime = libc.timerfd_settime
            self._spec = _Itimerspec()
            self._spec_ref = ctypes.byref(self._spec)
            self.set = self._set_ctypes

    def set(self, ns: int) -> None:  # (replaced per instance by one of the two below)
        """Expire at ``ns`` (monotonic), replacing any earlier setting. A time already past expires at
        once (a zero would disarm the timer, so it is never passed)."""

    def _set_os(self, ns: int) -> None:
        os.timerfd_settime_ns(self.fd, flags=TFD_TIMER_ABSTIME, initial=max(ns, 1))

    def _set_ctypes(self, ns: int) -> None:
        value = self._spec.it_value
        value.tv_sec, value.tv_nsec = divmod(max(ns, 1), 1_000_000_000)
        if self._libc_settime(self.fd, TFD_TIMER_ABSTIME, self._spec_ref, None) < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))

    def expired(self) -> bool:
        """Whether the set time has come, taking the expiry (so the fd is no longer readable)."""
        try:
            os.read(self.fd, 8)  # the expiry count
        except BlockingIOError:  # re-set since it turned readable: not due after all
            return False
        return True

    def close(self) -> None:
        os.close(self.fd)


class TimerFD:
    """A :class:`TimerFile` watched by an asyncio ``loop``: ``at(ns)`` arms it, and ``callback()``
    runs in the loop when that time has come (or passed)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback):
        self.loop = loop
        self.callback = callback
        self.file = TimerFile()
        self.fd = self.file.fd
        self.at = self.file.set
        loop.add_reader(self.fd, self._fired)

    def _fired(self) -> None:
        if self.file.expired():
            self.callback()

    def close(self) -> None:
        self.loop.remove_reader(self.fd)
        self.file.close()


class CallAtTimer:
    """The fallback where there is no timerfd: the loop's own timer (about 1 ms resolution)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, callback):
        self.loop = loop
        self.callback = callback
        self._handle = None

    def at(self, ns: int) -> None:
        if self._handle is not None:
            self._handle.cancel()
        delay = (ns - time.monotonic_ns()) / 1e9
        self._handle = self.loop.call_later(max(delay, 0.0), self._fired)

    def _fired(self) -> None:
        self._handle = None
        self.callback()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def has_timerfd() -> bool:
    """Whether :class:`TimerFile` works here (timerfd_create(2) is Linux's)."""
    return sys.platform.startswith("linux")


def loop_timer(loop: asyncio.AbstractEventLoop, callback):
    """The most precise timer this platform offers."""
    if has_timerfd():
        return TimerFD(loop, callback)
    return CallAtTimer(loop, callback)
