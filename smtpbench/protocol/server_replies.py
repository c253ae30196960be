"""The replies a server session sends most, encoded once per configuration.

A session answers every command with bytes; formatting them per command
(an f-string, a UTF-8 encode, a cache lookup keyed by a fresh tuple) costs
more than the rest of handling a MAIL or RCPT on the sink's hot path. What
a reply says depends only on the configuration (the host name, the offered
extensions, whether enhanced status codes were advertised: RFC 2034 §3), so
:class:`Canned` renders them when a configuration is first used and the
session appends the bytes as they are.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .commands import path_memo
from .replies import format_reply

if TYPE_CHECKING:
    from .server_types import ServerConfig


def ehlo_lines(config: "ServerConfig", tls_active: bool) -> list[str]:
    """The EHLO/LHLO reply's lines: the host name, then one keyword per offered extension (RFC 5321 §4.1.1.1)."""
    lines = [config.hostname]
    for ext in config.extensions:
        if ext == "SIZE":
            lines.append(f"SIZE {config.max_message_size}")  # RFC 1870 §4
        elif ext == "STARTTLS":
            if not tls_active:  # RFC 3207 §4.2: not offered again once TLS is up
                lines.append("STARTTLS")
        elif ext == "AUTH":
            lines.append("AUTH " + " ".join(config.auth_mechanisms))
        elif ext in ("VRFY", "HELP"):
            continue  # always available; not EHLO keywords
        else:
            lines.append(ext)
    return lines


class Canned:
    """One configuration's constant replies, as wire bytes, and the flags the hot path tests.

    Built once per :class:`ServerConfig` (its ``canned`` property); a
    configuration is not changed once sessions use it.
    """

    __slots__ = ("esc", "utf8", "size", "eightbit", "binary", "dsn", "chunking", "auth_required", "lmtp",
                 "max_message_size", "max_recipients", "discard", "check_lines", "senders", "recipients",
                 "ehlo", "ehlo_tls", "helo", "banner",
                 "sender_ok", "recipient_ok", "start_data", "accepted", "reset_ok", "bye")

    def __init__(self, config: "ServerConfig"):
        ext = config.extensions
        self.esc = "ENHANCEDSTATUSCODES" in ext
        self.utf8 = "SMTPUTF8" in ext
        self.size = "SIZE" in ext
        self.eightbit = "8BITMIME" in ext
        self.binary = "BINARYMIME" in ext
        self.dsn = "DSN" in ext
        self.chunking = "CHUNKING" in ext
        self.auth_required = config.auth_required
        self.lmtp = config.lmtp
        self.max_message_size = config.max_message_size
        self.max_recipients = config.max_recipients
        self.discard = not config.keep_body and not config.keep_head  # no octet of a body is kept
        self.check_lines = config.check_line_length
        # MAIL and RCPT arguments parsed before under this configuration (commands.path_memo).
        self.senders = path_memo(b"FROM:", True, self.utf8)
        self.recipients = path_memo(b"TO:", False, self.utf8)
        self.ehlo = format_reply(250, ehlo_lines(config, tls_active=False))
        self.ehlo_tls = format_reply(250, ehlo_lines(config, tls_active=True))
        self.helo = self.wire(250, "", config.hostname)
        self.banner = self.wire(220, "", f"{config.hostname} {config.banner}")
        self.sender_ok = self.wire(250, "2.1.0", "Sender OK")
        self.recipient_ok = self.wire(250, "2.1.5", "Recipient OK")
        self.start_data = self.wire(354, "", "End data with <CR><LF>.<CR><LF>")
        self.accepted = self.wire(250, "2.0.0", "Message accepted")
        self.reset_ok = self.wire(250, "2.0.0", "Reset OK")
        self.bye = self.wire(221, "2.0.0", f"{config.hostname} closing connection")

    def wire(self, code: int, status: str, text: str) -> bytes:
        """One reply as sent under this configuration (the enhanced code only if advertised, RFC 2034 §3)."""
        return format_reply(code, text, status if self.esc else "")
