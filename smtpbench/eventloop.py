"""The event loop choice, in one place: uvloop when present, asyncio otherwise.

The CLI sets the choice (``--loop``); worker processes, which start from a
fresh interpreter, read it from the environment so they run on the same loop.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Coroutine

ENV = "SMTPBENCH_LOOP"


def choose(name: str | None) -> str:
    """Record the loop for this process and its workers; returns the name in effect."""
    if name:
        os.environ[ENV] = name
    return current()


def current() -> str:
    name = os.environ.get(ENV, "uvloop")
    if name == "uvloop":
        try:
            import uvloop  # noqa: F401
        except ImportError:
            return "asyncio"
    return name


def run(coro: Coroutine[Any, Any, Any]) -> Any:
    """Run a coroutine to completion on the chosen loop."""
    if current() == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)
