"""A pydantic validation error as one line: the file, the key path, what is wrong, what is allowed.

Used for scenario files and flags (:mod:`smtpbench.scenario`) and for ``PUT /faults`` bodies.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel

#: The parts of an error's location that name a validator or union branch, not a key (a key such as
#: 'listen' or 'interval' may start like one).
_PYDANTIC_TAG = re.compile(r"function-\w+\[.*\]|(int|str|float|bool|tuple|list|dict)(\[.*\])?")


def format_error(source: str, err: dict, model: type[BaseModel]) -> str:
    """One line for a pydantic error ``err`` in ``source``: the key path, what is wrong, what is
    allowed (unknown keys list the keys allowed there). Also used for ``PUT /faults`` bodies."""
    loc = [str(p) for p in err["loc"] if not _PYDANTIC_TAG.fullmatch(str(p))]
    key = ".".join(loc) if loc else "(top level)"
    if not loc and "sweep value" in err["msg"]:
        key = "sweep.values"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        parent = _model_at(model, loc[:-1])
        allowed = ", ".join(parent.model_fields) if parent else ""
        return f"{source}: unknown key '{key}'" + (f"; allowed here: {allowed}" if allowed else "")
    if err["type"] == "literal_error":
        return f"{source}: key '{key}': {msg} (got {err.get('input')!r})"
    got = err.get("input")
    suffix = "" if "got" in msg or isinstance(got, dict) else f" (got {got!r})"
    return f"{source}: key '{key}': {msg}{suffix}"


def _model_at(model: type[BaseModel], path: list[str]) -> type[BaseModel] | None:
    cur: Any = model
    for part in path:
        if part.isdigit():
            continue
        field = getattr(cur, "model_fields", {}).get(part)
        if field is None:
            return None
        ann = field.annotation
        for cand in (ann, *getattr(ann, "__args__", ())):
            if isinstance(cand, type) and issubclass(cand, BaseModel):
                cur = cand
                break
            for sub in getattr(cand, "__args__", ()):
                if isinstance(sub, type) and issubclass(sub, BaseModel):
                    cur = sub
                    break
    return cur if isinstance(cur, type) else None
