"""The scenario's description of a misbehaving sink: ``[[sink.faults]]`` and friends.

Only the schema lives here (validated with the rest of the scenario); the
sink's seeded fault policy (``smtpbench.sink.faults``) applies it.
"""

# No ``from __future__ import annotations`` here: pydantic would turn each annotation string back
# into a type (a compile and an eval per field) when the models are built, at every start-up.
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Discriminator, Field, Tag, field_validator,
                      model_validator)

from .units import parse_duration, parse_size

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]

#: Where a rule can act: the connection, the greeting, each command, and the end of the data.
STAGES = ("connect", "banner", "EHLO", "HELO", "LHLO", "MAIL", "RCPT", "DATA", "BDAT", "end-of-data",
          "RSET", "NOOP", "QUIT", "AUTH", "STARTTLS", "VRFY")


class Table(BaseModel):
    """A scenario table: unknown keys refused; TOML's inf and nan, true/false where a number goes,
    and anything else where true/false goes, too (pydantic would take inf as a rate, ``sessions =
    true`` as 1, and ``pipelining = "no"`` or ``implicit_tls = 1`` as a bool)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        # One check per table, not a validator per field: those cost ~60 ms of start-up to build.
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key)
                if field is None:
                    continue
                if isinstance(value, bool) and _numeric(field.annotation):
                    raise ValueError(f"{key} must be a number, not {str(value).lower()}")
                if field.annotation is bool and not isinstance(value, bool):
                    raise ValueError(f"{key} must be true or false, not {value!r}")
        return data


def _numeric(annotation: Any) -> bool:
    """Whether a field holds a number (``int``, ``float``, or either or None), so not a bool."""
    if annotation in (int, float):
        return True
    args = get_args(annotation)
    return get_origin(annotation) in (Union, UnionType) and bool(args) and all(
        a in (int, float, type(None)) for a in args)


def check_one_form(model: BaseModel, forms: dict[str, str]) -> None:
    """A distribution table sets exactly one of ``forms`` (name -> how it is written); a
    ``lognormal`` one has exactly ``median`` and ``p99``. ValueError names what is allowed."""
    if sum(getattr(model, name) is not None for name in forms) != 1:
        raise ValueError("give exactly one of " + ", ".join(f"{name} = {how}" for name, how in forms.items()))
    lognormal = getattr(model, "lognormal", None)
    if lognormal is not None and set(lognormal) != {"median", "p99"}:
        raise ValueError("lognormal needs exactly 'median' and 'p99'")


def min_max(value: Any) -> Any:
    if isinstance(value, (list, tuple)) and len(value) != 2:
        raise ValueError(f"uniform = [min, max] takes two values, got {len(value)}")
    return value


class DelayDistribution(Table):
    """A delay drawn per use: exactly one of ``uniform = [min, max]``,
    ``lognormal = { median, p99 }`` or ``exponential = { mean }``."""

    uniform: Annotated[tuple[Duration, Duration], BeforeValidator(min_max)] | None = None
    lognormal: dict[str, Duration] | None = None
    exponential: dict[str, Duration] | None = None

    @model_validator(mode="after")
    def _one(self) -> "DelayDistribution":
        check_one_form(self, {"uniform": "[min, max]", "lognormal": "{ median, p99 }", "exponential": "{ mean }"})
        if self.exponential is not None and (set(self.exponential) != {"mean"} or self.exponential["mean"] <= 0):
            # The sink draws with rate 1/mean: a mean of 0 divided by zero on every use.
            raise ValueError("exponential needs exactly 'mean', more than 0")
        if self.lognormal is not None and not 0 < self.lognormal["median"] <= self.lognormal["p99"]:
            # log(median) and log(p99 / median): as [message] size says, the same shape must hold here.
            raise ValueError("lognormal needs 0 < median <= p99")
        if self.uniform is not None and self.uniform[0] > self.uniform[1]:
            raise ValueError("uniform = [min, max] needs min <= max")
        return self


def number_or_table(value: Any) -> str:
    """Discriminator for "a number, or a distribution table": pick the union branch up front, so an
    error speaks of the form the user wrote (a bad table is not reported as "expected a duration").
    The tag names are ones format_error leaves out of the key path."""
    return "dict" if isinstance(value, (dict, BaseModel)) else "int"


#: A fixed delay, or one drawn per use.
Delay = Annotated[Union[Annotated[Duration, Tag("int")], Annotated[DelayDistribution, Tag("dict")]],
                  Discriminator(number_or_table)]


def _reply_text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError(f"expected an SMTP reply in quotes, such as '451 4.7.1 try again later', got {v!r}")
    # RFC 5321 §4.2: one line, a code 2xx-5xx, then a space and text or nothing.
    if v and not (len(v) >= 3 and v[:3].isdigit() and v[0] in "2345" and (len(v) == 3 or v[3] == " ")
                  and "\r" not in v and "\n" not in v):
        raise ValueError(f"expected an SMTP reply such as '451 4.7.1 try again later', got {v!r}")
    return v


def _some_reply(v: Any) -> str:
    # Only a fault rule's reply may be "" (none: answer as usual, or the default 421 for close);
    # greylisting and the rate limits send theirs, and leaving the key out gives the default.
    if not _reply_text(v):
        raise ValueError("expected an SMTP reply such as '451 4.7.1 try again later', got '' "
                         "(leave the key out for the default)")
    return v


#: A reply, or "" for none (a fault rule's).
Reply = Annotated[str, BeforeValidator(_reply_text)]
#: A reply that is sent: not "".
SomeReply = Annotated[str, BeforeValidator(_some_reply)]


#: Which of reply, delay and rate each action uses (sink.faults.FaultPolicy._action); others are refused.
ACTION_KEYS = {"reply": ("reply",), "delay": ("delay", "reply"), "close": ("reply",), "disconnect": (),
               "tarpit": ("rate", "reply"), "bandwidth": ("rate",)}


class Fault(Table):
    """One ``[[sink.faults]]`` rule.

    ``action``: ``reply`` (answer ``reply`` instead), ``delay`` (answer after
    ``delay``, normally or with ``reply``), ``close`` (421 and close),
    ``disconnect`` (drop without a word), ``tarpit`` (answer at ``rate`` octets/s),
    ``bandwidth`` (on ``connect``: read the client at ``rate`` octets/s).
    ``match`` is a regular expression searched in the command's argument (the
    sender for MAIL, the recipient for RCPT, the client address for connect).
    """

    on: Literal[STAGES]  # type: ignore[valid-type]
    action: Literal["reply", "delay", "close", "disconnect", "tarpit", "bandwidth"] = "reply"
    probability: float = Field(1.0, ge=0.0, le=1.0)
    match: str = ""
    reply: Reply = ""
    delay: Delay = 0.0
    rate: Size = 0

    @model_validator(mode="after")
    def _complete(self) -> "Fault":
        if self.action == "reply" and not self.reply:
            raise ValueError("action 'reply' needs reply = \"CODE X.Y.Z text\"")
        if self.action == "delay" and self.delay == 0.0:
            raise ValueError("action 'delay' needs delay = a duration or a distribution")
        if self.action in ("tarpit", "bandwidth") and self.rate <= 0:
            raise ValueError(f"action '{self.action}' needs rate = octets per second, e.g. \"100\" or \"1KiB\"")
        if self.action == "bandwidth" and self.on != "connect":
            raise ValueError("action 'bandwidth' acts on = \"connect\" (the whole connection)")
        unused = [k for k in ("reply", "delay", "rate") if k not in ACTION_KEYS[self.action]
                  and getattr(self, k) != Fault.model_fields[k].default]
        if unused:
            takes = " and ".join(ACTION_KEYS[self.action]) or "none of reply, delay and rate"
            raise ValueError(f"action '{self.action}' takes {takes}; {' and '.join(unused)} would be ignored")
        if self.action == "close" and self.reply and not self.reply.startswith("421"):
            # RFC 5321 §3.8: a server that closes says 421; another code would promise a session that is gone.
            raise ValueError(f"action 'close' answers 421 (RFC 5321 §3.8): reply must be a 421 or left out, "
                             f"got {self.reply!r}")
        if self.match:
            import re

            try:
                re.compile(self.match)
            except re.error as e:
                raise ValueError(f"match is not a valid regular expression: {e}") from None
        return self


class Greylist(Table):
    """``[sink.greylist]``: the first try of a (client, sender, recipient) triple gets 451."""

    enabled: bool = True
    retry_after: Duration = 5.0
    expire: Duration = 3600.0
    max_entries: int = Field(100_000, ge=1)
    reply: SomeReply = "451 4.7.1 Greylisted, try again later"

    @model_validator(mode="after")
    def _retry_can_pass(self) -> "Greylist":
        # A retry passes between retry_after and expire after the first try: none could if expire came first.
        if self.expire <= self.retry_after:
            raise ValueError(f"expire ({self.expire:g} s) must be longer than retry_after ({self.retry_after:g} s), "
                             "or no retry ever passes")
        return self


class RateLimit(Table):
    """``[sink.rate_limit]``: beyond these the sink answers ``reply`` (per worker process)."""

    messages_per_second: float = Field(0.0, ge=0.0)   # 0: no limit (token bucket, 1 s burst)
    connections_per_client: int = Field(0, ge=0)      # 0: no limit
    reply: SomeReply = "451 4.7.0 Rate limit exceeded, try again later"
    connection_reply: SomeReply = "421 4.7.0 Too many connections from your address"


class Capacity(Table):
    """``[sink.capacity]``: a server with ``concurrency`` workers each taking ``service_time``
    per message (answered at end of data), so latency grows with load like a real server's."""

    service_time: Delay
    concurrency: int = Field(1, ge=1)


class RecipientOutcomes(Table):
    """``[sink.recipient_outcomes]``: recipients choose their fate by local-part prefix,
    e.g. ``tempfail+x@…`` gets 451, ``reject+x@…`` 550, ``disconnect+x@…`` a dropped connection."""

    enabled: bool = True
    tempfail: Reply = "451 4.2.0 Mailbox temporarily unavailable"
    reject: Reply = "550 5.1.1 Mailbox unavailable"

    @field_validator("tempfail", "reject")
    @classmethod
    def _codes(cls, v: str, info) -> str:
        want = "4" if info.field_name == "tempfail" else "5"
        if not v.startswith(want):
            raise ValueError(f"{info.field_name} must be a {want}xx reply")
        return v
