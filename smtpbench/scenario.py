"""The scenario file: one TOML document that drives the sink and the generator.

Every key is validated (pydantic) before any socket opens. A mistake becomes
a :class:`ScenarioError` whose one-line message names the file, the key and
what is allowed; the CLI prints it and exits 2.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator, model_validator

from .protocol.server import DEFAULT_EXTENSIONS, EXTENSIONS
from .units import DURATION_HELP, SIZE_HELP, parse_duration, parse_size

Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
Extension = Literal[EXTENSIONS]  # type: ignore[valid-type]


class ScenarioError(Exception):
    """A scenario or flag that cannot be used; the message is one clear line."""


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def _workers(value: Any) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) >= 1:
        return int(value)
    raise ValueError(f"expected a positive integer or 'auto', got {value!r}")


Workers = Annotated[Union[int, str], BeforeValidator(_workers)]


def resolve_workers(value: int | str) -> int:
    """``auto`` is the CPU count (what the process may run on)."""
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(value)


class Target(_Table):
    """Where ``run`` sends; where ``bench`` starts the built-in sink."""

    host: str = "127.0.0.1"
    port: int = Field(2525, ge=0, le=65535)


class Fault(_Table):
    """One ``[[sink.faults]]`` rule (applied by the sink's seeded fault policy)."""

    on: Literal["connect", "banner", "EHLO", "HELO", "MAIL", "RCPT", "DATA", "end-of-data", "RSET", "QUIT"]
    probability: float = Field(1.0, ge=0.0, le=1.0)
    reply: str = ""
    delay: Duration = 0.0
    action: Literal["reply", "delay", "disconnect", "close"] = "reply"
    match: str = ""

    @field_validator("reply")
    @classmethod
    def _reply(cls, v: str) -> str:
        if v and not (len(v) >= 3 and v[:3].isdigit() and v[0] in "2345"):
            raise ValueError(f"expected an SMTP reply such as '451 4.7.1 try again later', got {v!r}")
        return v


def _capture(value: str) -> str:
    if value == "none" or value.startswith(("maildir:", "mbox:")) and len(value.split(":", 1)[1]) > 0:
        return value
    raise ValueError(f"expected 'none', 'maildir:DIR' or 'mbox:FILE', got {value!r}")


class Sink(_Table):
    """``[sink]``: how ``smtpbench sink`` (and ``bench``) behaves."""

    listen: str = ""  # default: the [target] address
    workers: Workers = 1
    hostname: str = "smtpbench.localhost"
    advertise: list[Extension] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    max_message_size: Size = 10 * 1024 * 1024
    max_recipients: int = Field(1000, ge=100)
    max_connections: int = Field(10000, ge=1)
    idle_timeout: Duration = 300.0
    grace: Duration = 5.0
    capture: Annotated[str, BeforeValidator(_capture)] = "none"
    check_line_length: bool = True
    lmtp: bool = False
    stats_interval: Duration = 0.0
    stats_file: str = ""
    stats_listen: str = ""
    faults: list[Fault] = Field(default_factory=list)


class Stage(_Table):
    """One open-loop stage: move to ``rate`` msgs/s over ``duration`` (linear ramp when ``ramp``)."""

    duration: Duration
    rate: float = Field(ge=0.0)
    ramp: bool = False


class Timeouts(_Table):
    """Client-side per-phase timeouts; defaults from RFC 5321 §4.5.3.2."""

    connect: Duration = 30.0
    banner: Duration = 300.0
    command: Duration = 300.0
    data_init: Duration = 120.0
    data_end: Duration = 600.0


class Load(_Table):
    """``[load]``: what ``smtpbench run`` offers."""

    model: Literal["closed", "open"] = "closed"
    sessions: int = Field(10, ge=1)
    messages_per_connection: int = Field(100, ge=0)
    think_time: Duration = 0.0
    rate: float | None = Field(None, gt=0)
    arrival: Literal["constant", "poisson"] = "constant"
    stages: list[Stage] = Field(default_factory=list)
    max_connections: int = Field(100, ge=1)
    duration: Duration | None = 20.0
    messages: int | None = Field(None, ge=1)
    warmup: Duration = 0.0
    processes: Workers = 1
    pipelining: bool = True
    helo: str = "smtpbench.client"
    timeouts: Timeouts = Field(default_factory=Timeouts)

    @model_validator(mode="after")
    def _open_needs_rate(self) -> "Load":
        if self.model == "open" and self.rate is None and not self.stages:
            raise ValueError("open loop needs 'rate' (msgs/s) or 'stages'")
        return self


class Distribution(_Table):
    """A size or count distribution: exactly one of the forms."""

    uniform: tuple[Size, Size] | None = None
    lognormal: dict[str, Size] | None = None
    choices: list[tuple[Size, float]] | None = None

    @model_validator(mode="after")
    def _one(self) -> "Distribution":
        forms = [f for f in ("uniform", "lognormal", "choices") if getattr(self, f) is not None]
        if len(forms) != 1:
            raise ValueError("give exactly one of uniform = [min, max], lognormal = { median, p99 }, "
                             "choices = [[value, weight], ...]")
        if self.lognormal is not None and set(self.lognormal) != {"median", "p99"}:
            raise ValueError("lognormal needs exactly 'median' and 'p99'")
        if self.uniform is not None and self.uniform[0] > self.uniform[1]:
            raise ValueError("uniform = [min, max] needs min <= max")
        return self


class Message(_Table):
    """``[message]``: what each message looks like."""

    size: Union[Size, Distribution] = 1024
    recipients: Union[int, Distribution] = 1
    sender: str = "sender{n}@smtpbench.example"
    recipient: str = "rcpt{n}@smtpbench.example"
    subject: str = "smtpbench message {seq}"
    body: Literal["7bit", "8bit", "utf8"] = "7bit"
    headers: dict[str, str] = Field(default_factory=dict)
    attachments: int = Field(0, ge=0)
    eml_dir: str = ""

    @field_validator("recipients")
    @classmethod
    def _rcpts(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 1:
            raise ValueError("recipients must be at least 1")
        return v


class Scenario(_Table):
    """A whole scenario file, resolved: every default filled in."""

    name: str = "default"
    description: str = ""
    seed: int = 1
    target: Target = Field(default_factory=Target)
    sink: Sink = Field(default_factory=Sink)
    load: Load = Field(default_factory=Load)
    message: Message = Field(default_factory=Message)
    thresholds: dict[str, Union[str, float]] = Field(default_factory=dict)

    def digest(self) -> str:
        """A short hash of the resolved scenario, so reports can tell runs of the same one."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


_HELP = {"Size": SIZE_HELP, "Duration": DURATION_HELP}


def _format_error(source: str, err: dict, model: type[BaseModel]) -> str:
    loc = [str(p) for p in err["loc"] if not str(p).startswith(("function-", "int", "str", "float", "tuple", "list", "dict"))
           or str(p).isdigit()]
    key = ".".join(loc) if loc else "(top level)"
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


def build(data: dict, source: str = "<scenario>") -> Scenario:
    """Validate a scenario mapping; raise :class:`ScenarioError` with the first problem."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(_format_error(source, e.errors()[0], Scenario)) from None


def load(path: str | os.PathLike | None) -> Scenario:
    """Read and validate a scenario file (``None``: the built-in defaults)."""
    if path is None:
        return Scenario()
    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ScenarioError(f"{source}: no such scenario file") from None
    except tomllib.TOMLDecodeError as e:
        raise ScenarioError(f"{source}: not valid TOML: {e}") from None
    except OSError as e:
        raise ScenarioError(f"{source}: cannot read: {e.strerror}") from None
    return build(data, source)


def override(scenario: Scenario, source: str, **changes: Any) -> Scenario:
    """Apply CLI flags (``table__key=value``) on top of a scenario, validated like the file."""
    data = scenario.model_dump()
    for name, value in changes.items():
        if value is None:
            continue
        table, _, key = name.partition("__")
        if key:
            data.setdefault(table, {})[key] = value
        else:
            data[table] = value
    return build(data, source)
