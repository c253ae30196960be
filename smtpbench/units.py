"""Human units for scenario files and flags: sizes (``1KiB``) and durations (``20s``)."""

from __future__ import annotations

import math
import re

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3,
}
_TIME_UNITS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}
_NUM = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Zµ]*)\s*$")

SIZE_HELP = "a size such as 512, '1KiB', '10MiB' or '1.5MB'"
DURATION_HELP = "a duration such as 30, '500ms', '20s', '5m' or '1h'"


def _negative(value: str, forms: str) -> None:
    """``"-1s"``: say what is wrong with it rather than that it is no duration at all."""
    text = str(value).strip()
    if text.startswith("-") and _NUM.match(text[1:]):
        raise ValueError(f"must not be negative; expected {forms}, got {value!r}")


def parse_size(value: int | float | str) -> int:
    """Octets from ``1024``, ``"1KiB"``, ``"10MB"``; raises ValueError naming the forms allowed."""
    if isinstance(value, bool):
        raise ValueError(f"expected {SIZE_HELP}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):  # TOML has inf and nan; neither is an amount
            raise ValueError(f"must be a finite number; expected {SIZE_HELP}, got {value!r}")
        if value < 0:
            raise ValueError(f"must not be negative; expected {SIZE_HELP}")
        return int(value)
    _negative(value, SIZE_HELP)
    m = _NUM.match(str(value))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _SIZE_UNITS:
        raise ValueError(f"expected {SIZE_HELP}, got {value!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])


def parse_duration(value: int | float | str) -> float:
    """Seconds from ``30``, ``"500ms"``, ``"20s"``, ``"5m"``; raises ValueError naming the forms allowed."""
    if isinstance(value, bool):
        raise ValueError(f"expected {DURATION_HELP}")
    if isinstance(value, (int, float)):
        if not math.isfinite(value):  # TOML has inf and nan; neither is an amount
            raise ValueError(f"must be a finite number; expected {DURATION_HELP}, got {value!r}")
        if value < 0:
            raise ValueError(f"must not be negative; expected {DURATION_HELP}")
        return float(value)
    _negative(value, DURATION_HELP)
    m = _NUM.match(str(value))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _TIME_UNITS:
        raise ValueError(f"expected {DURATION_HELP}, got {value!r}")
    return float(m.group(1)) * _TIME_UNITS[unit]


def format_size(n: float) -> str:
    for unit, div in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if n >= div:
            return f"{n / div:.1f}{unit}"
    return f"{int(n)}B"


def format_us(us: float) -> str:
    """Microseconds as a short human figure: ``850us``, ``12.3ms``, ``1.20s``."""
    if us < 1000:
        return f"{us:.0f}us"
    if us < 1_000_000:
        return f"{us / 1000:.1f}ms"
    return f"{us / 1e6:.2f}s"
