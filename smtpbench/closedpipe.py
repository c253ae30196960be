"""Standard output that outlives its reader: ``smtpbench … | head -3``.

When the reader of a pipe goes away, the next write raises BrokenPipeError,
and from the middle of a command: after a run's result.json is written but
before its report is, or with its exit code (the verdict) not yet returned.
Output nobody reads is not worth losing either for. :func:`tolerate` wraps
``sys.stdout`` so that from the first such write on, output is dropped (the
descriptor is pointed at /dev/null, so what is still buffered goes nowhere
too) and the command carries on to its end and its own exit code.
"""

from __future__ import annotations

import os
import sys


class ReaderGone:
    """A text stream's stand-in that drops what it is given once the pipe behind it is closed."""

    def __init__(self, stream) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> int:
        if not self.gone:
            try:
                return self._stream.write(text)
            except BrokenPipeError:
                self._drop()
        return len(text)

    def flush(self) -> None:
        if not self.gone:
            try:
                self._stream.flush()
            except BrokenPipeError:
                self._drop()

    def _drop(self) -> None:
        self.gone = True
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, self._stream.fileno())
        finally:
            os.close(devnull)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def tolerate() -> None:
    """Make ``sys.stdout`` survive a closed pipe (see the module's docstring)."""
    if sys.stdout is not None and not isinstance(sys.stdout, ReaderGone):
        sys.stdout = ReaderGone(sys.stdout)
