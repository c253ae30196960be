"""The scenario file: one TOML document that drives the sink and the generator.

Every key is validated (pydantic) before any socket opens. A mistake becomes
a :class:`ScenarioError` whose one-line message names the file, the key and
what is allowed; the CLI prints it and exits 2.
"""

# No ``from __future__ import annotations`` here: pydantic would turn each annotation string back
# into a type (a compile and an eval per field) when the models are built, at every start-up.
import hashlib
import ipaddress
import json
import os
import re
import string
from typing import Annotated, Any, Literal, Union

from pydantic import (BeforeValidator, ConfigDict, Discriminator, Field, StrictFloat, StrictInt, Tag, ValidationError,
                      field_validator, model_validator)

from .addresses import ADDRESS_HELP, is_loopback, literal_ip, parse_address
from .faultspec import (Capacity, Fault, Greylist, RateLimit, RecipientOutcomes, Table, check_one_form, min_max,
                        number_or_table)
from .protocol.extensions import DEFAULT_EXTENSIONS, EXTENSIONS
from .schema_errors import format_error
from .units import parse_duration, parse_size

Size = Annotated[int, BeforeValidator(parse_size)]
Duration = Annotated[float, BeforeValidator(parse_duration)]
Extension = Literal[EXTENSIONS]  # type: ignore[valid-type]


class ScenarioError(Exception):
    """A scenario or flag that cannot be used; the message is one clear line."""


class _Table(Table):
    # Also checked when a value is set (the command line's overrides, a sweep's steps).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


#: Processes of a sink or a generator: each is an interpreter of ~50 MB; far more than the CPUs only
#: costs (--workers 999 would start 999 of them).
MAX_WORKERS = 256


def _workers(value: Any) -> int | str:
    if value == "auto":
        return "auto"
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS:
        return value
    raise ValueError(f"expected a positive integer up to {MAX_WORKERS} or 'auto', got {value!r}")


Workers = Annotated[Union[int, str], BeforeValidator(_workers)]


def resolve_workers(value: int | str) -> int:
    """``auto`` is the CPU count (what the process may run on)."""
    if value == "auto":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(value)


def check_listen(value: Any) -> str:
    """Where a sink listens ("" where the key has a default elsewhere): HOST[:PORT] with an IP address
    or localhost (PORT 2525 when left out, 0: any free one), [IPv6]:PORT or unix:/path, checked
    before the sink binds. ValueError says what is allowed."""
    if not isinstance(value, str):
        raise ValueError(f"expected {ADDRESS_HELP}, got {value!r}")
    if value:
        address = parse_address(value)  # a ValueError says the forms
        if not address.path and literal_ip(address.host) is None:
            raise ValueError(f"expected {ADDRESS_HELP} with an IP address or localhost, got {value!r}")
    return value


def _stats_listen(value: Any) -> str:
    # The endpoint takes PUT /faults without authentication: loopback only. It serves TCP (a unix:
    # path was ignored for 127.0.0.1:2525).
    if not isinstance(value, str):
        raise ValueError(f"expected a loopback HOST:PORT such as '127.0.0.1:8025', got {value!r}")
    if value:
        address = parse_address(value, default_port=8025)
        if address.path or not is_loopback(address.host):
            raise ValueError("expected a loopback HOST:PORT such as '127.0.0.1:8025', '[::1]:8025' or 'localhost:8025' "
                             f"(TCP; the endpoint takes unauthenticated PUT /faults), got {value!r}")
    return value


ListenAddress = Annotated[str, BeforeValidator(check_listen)]


class Target(_Table):
    """Where ``run`` sends; where ``bench`` starts the built-in sink."""

    host: str = "127.0.0.1"
    port: int = Field(2525, ge=1, le=65535)  # port 0 is no server's
    lmtp: bool = False  # the target speaks LMTP (RFC 2033); `bench` follows [sink] lmtp


_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_DOMAIN = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def _domain(value: Any) -> str:
    """RFC 5321 §4.1.2: a Domain or an address-literal, what EHLO and the 220 greeting carry
    (a space or CR/LF there would split the command or the reply)."""
    if isinstance(value, str) and len(value) <= 255:
        if _DOMAIN.fullmatch(value):
            return value
        if value.startswith("[") and value.endswith("]"):
            inner = value[1:-1]
            try:
                ipaddress.IPv6Address(inner[5:]) if inner.startswith("IPv6:") else ipaddress.IPv4Address(inner)
                return value
            except ValueError:
                pass
    raise ValueError("expected a domain such as 'mail.example' or an address literal such as '[127.0.0.1]' or "
                     f"'[IPv6:::1]' (RFC 5321 §4.1.2: letters, digits, '-' and dots, no spaces), got {value!r}")


Domain = Annotated[str, BeforeValidator(_domain)]


def _capture(value: Any) -> str:
    if isinstance(value, str) and (value == "none" or value.startswith(("maildir:", "mbox:"))
                                   and len(value.split(":", 1)[1]) > 0):
        return value
    raise ValueError(f"expected 'none', 'maildir:DIR' or 'mbox:FILE', got {value!r}")


class Sink(_Table):
    """``[sink]``: how ``smtpbench sink`` (and ``bench``) behaves."""

    listen: ListenAddress = ""  # default: the [target] address
    workers: Workers = 1
    hostname: Domain = "smtpbench.localhost"
    advertise: list[Extension] = Field(default_factory=lambda: list(DEFAULT_EXTENSIONS))
    # RFC 1870 §4: "SIZE 0" advertises no limit, yet the sink would refuse every message.
    max_message_size: Annotated[Size, Field(ge=1)] = 10 * 1024 * 1024
    max_recipients: int = Field(1000, ge=100)
    max_connections: int = Field(10000, ge=1)
    idle_timeout: Annotated[Duration, Field(gt=0)] = 300.0  # 0 closed a connection at its first pause
    grace: Duration = 5.0
    capture: Annotated[str, BeforeValidator(_capture)] = "none"
    check_line_length: bool = True
    lmtp: bool = False
    stats_interval: Duration = 0.0
    stats_file: str = ""
    stats_listen: Annotated[str, BeforeValidator(_stats_listen)] = ""
    tls_cert: str = ""       # PEM; with STARTTLS advertised or implicit_tls and none given: self-signed
    tls_key: str = ""
    implicit_tls: bool = False  # TLS from the first byte (RFC 8314, port-465 style)
    auth_mechanisms: list[Literal["PLAIN", "LOGIN"]] = Field(default_factory=lambda: ["PLAIN", "LOGIN"])
    auth_required: bool = False  # 530 to MAIL before AUTH (RFC 4954 §6)
    auth_users: dict[str, str] = Field(default_factory=dict)  # empty: any credentials pass
    relay_log: str = ""  # relay mode: log stamped arrivals here (see smtpbench.sink.relay)
    faults: list[Fault] = Field(default_factory=list)
    greylist: Greylist | None = None
    rate_limit: RateLimit | None = None
    capacity: Capacity | None = None
    recipient_outcomes: RecipientOutcomes = Field(default_factory=RecipientOutcomes)

    @property
    def wants_tls(self) -> bool:
        return self.implicit_tls or "STARTTLS" in self.advertise


#: msgs/s: intended times are whole microseconds. Far above, the schedule's float time stopped advancing
#: (rate = 1e300: the pacer took arrivals due at t0 forever, gigabytes, and Ctrl-C could not stop it).
MAX_RATE = 1_000_000


class Stage(_Table):
    """One open-loop stage: move to ``rate`` msgs/s over ``duration`` (linear ramp when ``ramp``)."""

    duration: Duration
    rate: float = Field(ge=0.0, le=MAX_RATE)
    ramp: bool = False


class Timeouts(_Table):
    """Client-side per-phase timeouts; defaults from RFC 5321 §4.5.3.2."""

    # A zero would fail every phase at once (or at a sweep's whim): each must be some time.
    connect: Annotated[Duration, Field(gt=0)] = 30.0
    banner: Annotated[Duration, Field(gt=0)] = 300.0
    command: Annotated[Duration, Field(gt=0)] = 300.0
    data_init: Annotated[Duration, Field(gt=0)] = 120.0
    data_end: Annotated[Duration, Field(gt=0)] = 600.0


class Auth(_Table):
    """``[load.auth]``: credentials the generator authenticates with (RFC 4954)."""

    mechanism: Literal["PLAIN", "LOGIN"] = "PLAIN"
    username: str
    password: str


class Load(_Table):
    """``[load]``: what ``smtpbench run`` offers."""

    model: Literal["closed", "open"] = "closed"
    sessions: int = Field(10, ge=1)
    messages_per_connection: int = Field(100, ge=0)
    think_time: Duration = 0.0
    rate: float | None = Field(None, gt=0, le=MAX_RATE)
    arrival: Literal["constant", "poisson"] = "constant"
    stages: list[Stage] = Field(default_factory=list)
    max_connections: int = Field(100, ge=1)
    duration: Duration | None = 20.0  # None or 0 with messages (--messages alone): no time limit
    messages: int | None = Field(None, ge=1)
    warmup: Duration = 0.0
    drain: Duration = 10.0  # after the last arrival, time for messages in flight to finish
    processes: Workers = 1
    pipelining: bool = True
    pipeline_messages: bool = False  # closed loop: next MAIL…DATA right behind the data (RFC 2920 §3.1)
    helo: Domain = "smtpbench.client"
    tls: Literal["none", "starttls", "opportunistic", "implicit"] = "none"
    tls_verify: bool = False   # loopback benchmarks use throw-away certificates
    tls_resume: bool = True    # offer the last TLS session again (resumption)
    auth: Auth | None = None
    bdat: Literal["when-offered", "never"] = "when-offered"  # RFC 3030 CHUNKING instead of DATA
    retries: int = Field(0, ge=0)  # resend a message deferred with 4xx this many times at most
    retry_schedule: list[Duration] = Field(default_factory=lambda: [1.0])  # wait before retry k (last repeats)
    timeouts: Timeouts = Field(default_factory=Timeouts)

    @model_validator(mode="before")
    @classmethod
    def _infer_model(cls, data: Any) -> Any:
        # rate or stages without a model mean the open loop, unless sessions say the closed one too.
        if isinstance(data, dict) and data.get("model") is None:
            open_keys = [k for k in ("rate", "stages") if data.get(k)]
            if open_keys and "sessions" in data:
                raise ValueError(f"{' and '.join(open_keys)} (open loop) and sessions (closed loop): "
                                 "say which with model = \"open\" or model = \"closed\"")
            if open_keys:
                data = {**data, "model": "open"}
        return data

    @model_validator(mode="after")
    def _open_needs_rate(self) -> "Load":
        if self.model == "open" and self.rate is None and not self.stages:
            raise ValueError("open loop needs 'rate' (msgs/s) or 'stages'")
        # A key of the other model would be ignored: a closed loop with rate = 5 runs at full speed.
        if self.model == "closed" and (self.rate is not None or self.stages):
            given = " and ".join(k for k in ("rate", "stages") if getattr(self, k))
            raise ValueError(f"{given} set the open loop's arrivals (model = \"open\"); "
                             "the closed loop runs 'sessions' back to back, with 'think_time'")
        if self.model == "open" and self.rate is not None and self.stages:
            raise ValueError("give 'rate' or 'stages', not both (each stage has its own rate)")
        if self.model == "open" and self.think_time:
            raise ValueError("think_time is for the closed loop; an open loop's arrivals follow 'rate' or 'stages'")
        if self.duration == 0:
            # No time limit: the run ends on its message count, and without one it never would.
            if self.messages is None:
                raise ValueError("duration = 0 means no time limit, which needs 'messages' (the run would never "
                                 "end); give a duration > 0, or messages")
            self.duration = None
        if self.stages and not any(st.rate > 0 for st in self.stages):
            raise ValueError("stages: at least one stage needs rate > 0 (with all at 0 nothing is sent)")
        if self.duration and self.warmup >= self.duration:
            # The headline figures leave the warm-up out: nothing would be left to measure.
            raise ValueError(f"warmup ({self.warmup:g} s) must be shorter than duration ({self.duration:g} s)")
        if self.pipeline_messages:
            # The next message of a session goes out with the data of the last: that is the
            # closed loop without think time, over a pipelining session, sending each message once.
            clash = ("pipelining = false" if not self.pipelining else "model = \"open\"" if self.model == "open"
                     else "think_time > 0" if self.think_time else "retries > 0" if self.retries else "")
            if clash:
                raise ValueError(f"pipeline_messages = true needs a closed loop with pipelining, no think_time "
                                 f"and no retries (here: {clash})")
        return self


class Distribution(_Table):
    """A size or count distribution: exactly one of the forms."""

    uniform: Annotated[tuple[Size, Size], BeforeValidator(min_max)] | None = None
    lognormal: dict[str, Size] | None = None
    choices: list[tuple[Size, float]] | None = None

    @model_validator(mode="after")
    def _one(self) -> "Distribution":
        check_one_form(self, {"uniform": "[min, max]", "lognormal": "{ median, p99 }",
                              "choices": "[[value, weight], ...]"})
        if self.uniform is not None and self.uniform[0] > self.uniform[1]:
            raise ValueError("uniform = [min, max] needs min <= max")
        if self.lognormal is not None and not 0 < self.lognormal["median"] <= self.lognormal["p99"]:
            raise ValueError("lognormal needs 0 < median <= p99")
        if self.choices is not None and (not self.choices or any(w < 0 for _, w in self.choices)
                                         or sum(w for _, w in self.choices) <= 0):
            raise ValueError("choices needs at least one [value, weight] pair, weights >= 0 and not all 0")
        return self

    def minimum(self) -> float:
        """The smallest value this distribution can give."""
        if self.uniform is not None:
            return self.uniform[0]
        if self.choices is not None:
            return min(v for v, w in self.choices if w > 0)
        return 0.0  # lognormal: unbounded below; draws are clamped by the user

    def maximum(self) -> float:
        """The largest value this distribution can give (lognormal: its p99; draws may go beyond)."""
        if self.uniform is not None:
            return self.uniform[1]
        if self.choices is not None:
            return max(v for v, w in self.choices if w > 0)
        return self.lognormal["p99"]


#: Placeholders allowed in the sender, recipient and subject patterns (filled in by messages.py).
PATTERN_FIELDS = ("n", "seq", "process")

#: Header fields the message factory writes itself, and the [message] key that sets them, if any.
GENERATED_HEADERS = {
    "date": "", "message-id": "", "from": "sender", "to": "recipient", "subject": "subject",
    "mime-version": "", "content-type": "body/attachments", "content-transfer-encoding": "body/attachments",
    "x-smtpbench-run": "", "x-smtpbench-seq": "", "x-smtpbench-sent": "",
}


def _check_pattern(value: str) -> str:
    """A pattern is one header line of text with only the known ``{placeholders}``."""
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain CR or LF (it becomes a header and an SMTP command)")
    allowed = ", ".join("{%s}" % f for f in PATTERN_FIELDS)
    try:
        parsed = list(string.Formatter().parse(value))
    except ValueError as e:
        raise ValueError(f"bad braces ({e}); placeholders are {allowed}, and {{{{ or }}}} for a literal brace") from None
    for _, field, spec, conv in parsed:
        if field in PATTERN_FIELDS and (spec or conv):
            written = "{" + field + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"{written}: no format specs or conversions; placeholders are {allowed} as they are")
        if field is not None and field not in PATTERN_FIELDS:
            raise ValueError(f"unknown placeholder {{{field}}}; allowed: {allowed}")
    return value


def _check_address(value: str) -> str:
    sample = _check_pattern(value).format(n=0, seq=0, process=0)
    local, at, domain = sample.rpartition("@")
    if not at or not local or not domain or any(c.isspace() or c in "<>(),;:\\\"" for c in sample):
        raise ValueError("expected a mailbox pattern such as 'user{n}@example.org' "
                         "(local@domain, no spaces, quotes or angle brackets)")
    return value


SizeOrDistribution = Annotated[Union[Annotated[Size, Tag("int")], Annotated[Distribution, Tag("dict")]],
                               Discriminator(number_or_table)]
CountOrDistribution = Annotated[Union[Annotated[int, Tag("int")], Annotated[Distribution, Tag("dict")]],
                                Discriminator(number_or_table)]


def eml_names(folder: str) -> list[str]:
    """The ``*.eml`` files in ``folder``, by name; ValueError when it is missing or has none."""
    if not os.path.isdir(folder):
        raise ValueError(f"no such folder {folder!r}; expected a folder of .eml files")
    names = sorted(n for n in os.listdir(folder)
                   if n.lower().endswith(".eml") and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise ValueError(f"no .eml files in {folder!r}; expected a folder of .eml files")
    return names


#: What the message factory makes itself and an .eml file brings instead (see messages.py).
EML_REPLACES = ("size", "subject", "headers", "attachments", "body")


#: Recipients of one message: 100 times the 1,000 of a default sink or Postfix (smtpd_recipient_limit),
#: and each is a line the generator builds and sends. 10**8 once passed and grew memory 150 MB/s.
MAX_RECIPIENTS = 100_000


class Message(_Table):
    """``[message]``: what each message looks like (built by :mod:`smtpbench.messages`)."""

    size: SizeOrDistribution = 1024
    recipients: CountOrDistribution = 1
    sender: str = "sender{n}@smtpbench.example"
    recipient: str = "rcpt{n}@smtpbench.example"
    subject: str = "smtpbench message {seq}"
    body: Literal["7bit", "8bit", "utf8"] = "7bit"
    headers: dict[str, str] = Field(default_factory=dict)
    attachments: int = Field(0, ge=0)
    eml_dir: str = ""

    @field_validator("eml_dir")
    @classmethod
    def _eml_dir(cls, v: str) -> str:
        # Checked here, not when each generator process starts (a worker's traceback, after the sink started).
        if v:
            eml_names(v)
        return v

    @model_validator(mode="after")
    def _eml_alone(self) -> "Message":
        # The files are sent as they are: a key that shapes the generated message would be ignored.
        # (Set means "not the default": after CLI flags every key is written out.)
        clash = [k for k in EML_REPLACES
                 if getattr(self, k) != Message.model_fields[k].get_default(call_default_factory=True)]
        if self.eml_dir and clash:
            raise ValueError(f"eml_dir sends its .eml files as they are; {', '.join(clash)} would be ignored: "
                             f"remove {'it' if len(clash) == 1 else 'them'} or eml_dir")
        return self

    @field_validator("recipients")
    @classmethod
    def _rcpts(cls, v: Any) -> Any:
        if isinstance(v, int) and not 1 <= v <= MAX_RECIPIENTS:
            raise ValueError(f"recipients must be 1 to {MAX_RECIPIENTS:,}")
        if isinstance(v, Distribution) and v.lognormal is None and v.minimum() < 1:
            raise ValueError("recipients must be at least 1 (every value of the distribution)")
        if isinstance(v, Distribution) and v.maximum() > MAX_RECIPIENTS:
            raise ValueError(f"recipients must be at most {MAX_RECIPIENTS:,} (every value of the distribution; "
                             "a lognormal's p99)")
        return v

    @field_validator("sender", "recipient")
    @classmethod
    def _address(cls, v: str) -> str:
        return _check_address(v)

    @field_validator("subject")
    @classmethod
    def _subject(cls, v: str) -> str:
        return _check_pattern(v)

    @field_validator("headers")
    @classmethod
    def _headers(cls, v: dict[str, str]) -> dict[str, str]:
        for name, value in v.items():
            # RFC 5322 §3.6.8: field-name = 1*ftext, printable US-ASCII except ":".
            if not name or any(not 33 <= ord(c) <= 126 or c == ":" for c in name):
                raise ValueError(f"header name {name!r} must be printable ASCII without spaces or ':'")
            if "\r" in value or "\n" in value:
                raise ValueError(f"header {name!r} must not contain CR or LF")
            if len(name) + len(value.encode("utf-8")) > 900:
                raise ValueError(f"header {name!r} is too long (RFC 5322 §2.1.1: a line is at most 998 octets)")
            key = GENERATED_HEADERS.get(name.lower())
            if key is not None:
                hint = f"; set it with message.{key}" if key and "/" not in key else ""
                raise ValueError(f"header {name!r} is written by smtpbench itself{hint}")
        return v


#: What a ``[sweep]`` may step: the parameters people compare configurations by.
SWEEPABLE = ("load.rate", "load.sessions", "load.messages_per_connection", "load.max_connections",
             "message.size", "message.recipients", "sink.workers", "sink.max_connections")


class Sweep(_Table):
    """``[sweep]``: run the scenario once per value of one parameter (``bench``/``run``)."""

    parameter: Literal[SWEEPABLE]  # type: ignore[valid-type]
    values: list[Union[StrictFloat, StrictInt, str]] = Field(min_length=1)  # (true is not 1 here)


class Relay(_Table):
    """``[relay]``: measure delivery through the server under test to the sink (``bench --relay``)."""

    enabled: bool = False
    listen: ListenAddress = "127.0.0.1:2526"   # where the sink (the final destination) listens
    drain: Duration = 30.0           # after the load: how long to wait for the queue to empty
    clock_offset_ms: float = 0.0     # sink clock minus generator clock, when on different machines


#: A scenario name starts run ids, results/<run-id> folders and Message-IDs: one safe file name.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _name(value: Any) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise ValueError("expected 1-64 ASCII letters, digits, '.', '_' or '-', starting with a letter or digit "
                         f"(it names the run's folder), got {value!r}")
    return value


class Scenario(_Table):
    """A whole scenario file, resolved: every default filled in."""

    name: Annotated[str, BeforeValidator(_name)] = "default"
    description: str = ""
    seed: int = 1
    target: Target = Field(default_factory=Target)
    sink: Sink = Field(default_factory=Sink)
    load: Load = Field(default_factory=Load)
    message: Message = Field(default_factory=Message)
    thresholds: dict[str, Any] = Field(default_factory=dict)  # checked by _thresholds, which says what is allowed
    sweep: Sweep | None = None
    relay: Relay = Field(default_factory=Relay)

    @model_validator(mode="after")
    def _sweep_values(self) -> "Scenario":
        if self.sweep is not None:
            for value in self.sweep.values:
                step(self, value)  # each step must validate on its own
        return self

    @field_validator("thresholds")
    @classmethod
    def _thresholds(cls, v: dict) -> dict:
        from .thresholds import check_key

        for key, value in v.items():
            try:
                check_key(key, value)
            except ValueError as e:
                raise ValueError(f"{key} = {value!r}: {e}") from None
        return v

    def digest(self) -> str:
        """A short hash of the resolved scenario, so reports can tell runs of the same one."""
        blob = json.dumps(self.model_dump(mode="json"), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def step(scenario: Scenario, value: Any) -> Scenario:
    """The scenario with the sweep parameter set to ``value`` (and no sweep of its own)."""
    table, key = scenario.sweep.parameter.split(".")
    data = scenario.model_dump()
    data["sweep"] = None
    data[table][key] = value
    if scenario.sweep.parameter == "load.rate":  # each step an open loop at that rate, as run --rate
        data["load"].update(model="open", stages=[], think_time=0.0)
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        msg = e.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"sweep value {value!r} for {scenario.sweep.parameter}: {msg}") from None


def build(data: dict, source: str = "<scenario>") -> Scenario:
    """Validate a scenario mapping; raise :class:`ScenarioError` with the first problem."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(format_error(source, e.errors()[0], Scenario)) from None


def load(path: str | os.PathLike | None) -> Scenario:
    """Read and validate a scenario file (``None``: the built-in defaults)."""
    if path is None:
        return Scenario()
    import tomllib  # here: a run without a scenario file (flags alone) reads no TOML (~9 M instructions)

    source = os.fspath(path)
    try:
        with open(source, "rb") as f:
            # A resolved scenario saved as JSON (run folders keep one) loads the same way.
            data = json.load(f) if source.endswith(".json") else tomllib.load(f)
    except FileNotFoundError:
        raise ScenarioError(f"{source}: no such scenario file") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
        raise ScenarioError(f"{source}: not valid {'JSON' if source.endswith('.json') else 'TOML'}: {e}") from None
    except UnicodeDecodeError as e:
        # TOML (and our JSON) is UTF-8 only; a Latin-1 or UTF-16 file fails here, before the parser.
        kind = "JSON" if source.endswith(".json") else "TOML"
        raise ScenarioError(f"{source}: not valid {kind} (not UTF-8: byte 0x{e.object[e.start]:02x} at offset "
                            f"{e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ScenarioError(f"{source}: cannot read: {e.strerror}") from None
    return build(data, source)


def override(scenario: Scenario, source: str, clear: tuple[str, ...] = (), flags: dict[str, str] | None = None,
             **changes: Any) -> Scenario:
    """Apply CLI flags (``table__key=value``; None = not given) on top of a scenario, validated like
    the file; keys in ``clear`` are set to None (unset). An error names the flag beside the key it
    set: ``--`` and the key's last part (``sink.stats_listen``: ``--stats-listen``) unless ``flags``
    maps the dotted key to another."""
    data = scenario.model_dump()
    for name in clear:
        changes[name] = None
    for name, value in changes.items():
        if value is None and name not in clear:
            continue
        table, _, key = name.partition("__")
        if key:
            data.setdefault(table, {})[key] = value
        else:
            data[table] = value
    try:
        return build(data, source)
    except ScenarioError as e:
        text = str(e)
        for name, value in changes.items():
            if value is not None:
                dotted = name.replace("__", ".")
                flag = (flags or {}).get(dotted) or "--" + dotted.rpartition(".")[2].replace("_", "-")
                text = text.replace(f"key '{dotted}':", f"key '{dotted}' ({flag}):")
        raise ScenarioError(text) from None
