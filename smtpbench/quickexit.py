"""Leaving a finished process without tearing the interpreter down.

When a command is done, its results are on disk and its output written. What
Python would do next, module teardown and collecting every object of numpy,
pydantic and uvloop one by one, only frees memory the kernel frees anyway:
about 70 ms on this machine (measured: 83 ms from the last ``atexit`` handler
to exit with smtpbench's modules loaded, 13 ms with none). A benchmark's user
times the whole command, so every smtpbench command, and each generator worker
process, skips it.

``atexit`` handlers still run (multiprocessing's clean-up, say), and standard
output and error are flushed first, so nothing written is lost.
"""

from __future__ import annotations

import atexit
import os
import sys
from typing import NoReturn


def exit_now(code: int | None) -> NoReturn:
    """Run ``atexit`` handlers, flush stdout and stderr, and end the process with ``code`` (None: 0)."""
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe (`smtpbench … | head`) or a closed stream
            pass
    os._exit(code or 0)
