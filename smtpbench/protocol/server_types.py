"""What a server session is configured with, counts, and asks its policy: the core's types.

Kept apart from the state machine (server.py) so drivers and policies can
import them without the session, and so each file stays about one thing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Collection

from .extensions import DEFAULT_EXTENSIONS, EXTENSIONS
from .limits import MIN_RECIPIENTS
from .server_replies import Canned

if TYPE_CHECKING:
    from .server import ServerSession


# Session states (RFC 5321 §4.1.4 command order). Those below DATA read command
# lines (the session tests ``state < DATA``); the others a body, a chunk or an AUTH answer.
INIT, READY, MAIL, RCPT, DATA, BDAT, AUTH_WAIT, CLOSED = range(8)


class _Every:
    """The stages of a command hook that asked for all of them (``command_stages = None``)."""

    __slots__ = ()

    def __contains__(self, stage: object) -> bool:
        return True


EVERY_STAGE = _Every()
NO_STAGE: frozenset = frozenset()  # the stages hooked when no command hook is overridden


@dataclass
class ServerConfig:
    """What a server session advertises and enforces."""

    hostname: str = "smtpbench.localhost"
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    max_message_size: int = 10 * 1024 * 1024
    max_recipients: int = 1000  # at least MIN_RECIPIENTS (RFC 5321 §4.5.3.1.8)
    max_errors: int = 20  # then 421 and close, as Postfix's smtpd_hard_error_limit
    keep_body: bool = False
    keep_head: int = 0  # octets of each message's start kept even in discard mode (header parsing)
    check_line_length: bool = True
    lmtp: bool = False
    tls_active: bool = False
    auth_mechanisms: tuple[str, ...] = ("PLAIN", "LOGIN")
    auth_required: bool = False
    banner: str = "ESMTP smtpbench"

    def __post_init__(self) -> None:
        unknown = set(self.extensions) - set(EXTENSIONS)
        if unknown:
            raise ValueError(f"unknown extensions {sorted(unknown)}; allowed: {', '.join(EXTENSIONS)}")
        if self.max_recipients < MIN_RECIPIENTS:
            raise ValueError(f"max_recipients must be at least {MIN_RECIPIENTS} (RFC 5321 §4.5.3.1.8)")

    @cached_property
    def canned(self) -> Canned:
        """The constant replies and flags sessions use, built on first use (so: configure, then serve)."""
        return Canned(self)


@dataclass
class ServerCounters:
    """Counters a session adds to; one instance is shared by a process's sessions."""

    transactions: int = 0
    messages: int = 0
    recipients: int = 0
    bytes: int = 0
    bdat_chunks: int = 0
    protocol_errors: int = 0
    # Replies sent, by code (read them as ``replies``): the pre-encoded ones (server_replies.Canned:
    # the banner, HELO/EHLO, MAIL, RCPT, DATA, the accepted message, RSET, QUIT) are counted
    # apart, in attributes: an attribute increment costs about half of a dict update.
    other_replies: dict[int, int] = field(default_factory=dict)
    ok_220: int = 0
    ok_221: int = 0
    ok_250: int = 0
    ok_354: int = 0

    @property
    def replies(self) -> dict[int, int]:
        """Replies sent, by code (a new dict)."""
        replies = dict(self.other_replies)
        for code, n in ((220, self.ok_220), (221, self.ok_221), (250, self.ok_250), (354, self.ok_354)):
            if n:
                replies[code] = replies.get(code, 0) + n
        return replies


@dataclass(slots=True)
class Envelope:
    """One mail transaction as received."""

    mail_from: str = ""
    mail_params: dict = field(default_factory=dict)
    rcpt_to: list[str] = field(default_factory=list)
    helo: str = ""
    smtputf8: bool = False
    head: bytes = b""  # the first octets of the message, when the config keeps them (relay mode)


_new = object.__new__


def new_envelope(mail_from: str, mail_params: dict, helo: str, smtputf8: bool) -> Envelope:
    """``Envelope(mail_from, mail_params, [], helo, smtputf8)``, made without calling the class.

    Per MAIL on the sink's hot path: through ``type.__call__`` the dataclass's
    ``__init__`` took 3,400 instructions, this 2,200 (callgrind). It sets every
    field, as ``__init__`` would (a test compares the two).
    """
    env = _new(Envelope)
    env.mail_from = mail_from
    env.mail_params = mail_params
    env.rcpt_to = []
    env.helo = helo
    env.smtputf8 = smtputf8
    env.head = b""
    return env


@dataclass(frozen=True, slots=True)
class Action:
    """What a policy hook may ask for besides a plain reply (fault injection).

    ``kind``: ``"delay"`` — answer after ``seconds`` (with ``reply`` instead of the
    normal answer when given); the session pauses and the driver calls
    :meth:`ServerSession.resume` when the time is up. ``"disconnect"`` — drop
    the connection without a word. ``"tarpit"`` — answer normally, but the driver
    writes the reply at ``rate`` octets per second.
    """

    kind: str
    seconds: float = 0.0
    reply: tuple[int, str, str] | None = None
    rate: float = 0.0


class ServerHooks:
    """Policy decisions; subclass and override. Defaults accept everything.

    ``command`` and ``message`` may return ``(code, status, text)`` to answer
    with that reply instead, an :class:`Action`, or None to go on normally.
    """

    #: The stages (verbs, as ``command`` receives them) ``command`` is called for; None: all of
    #: them. A collection the hooks may change in place: sessions read it on every command.
    #: The session skips the call for other verbs (it is the commonest call on the hot path).
    command_stages: "Collection[str] | None" = None

    def message(self, envelope: Envelope, body: bytes | None, size: int) -> "tuple[int, str, str] | Action | None":
        """Called at end of data. Return ``(code, status, text)`` to refuse, or None to accept."""
        return None

    def authenticate(self, mechanism: str, username: str, password: str) -> bool:
        return True

    def command(self, stage: str, session: "ServerSession", arg: bytes) -> "tuple[int, str, str] | Action | None":
        """Called before a command is handled; return a reply to override it (fault injection)."""
        return None
