"""Command lines: parsing (server side) and formatting (client side).

RFC 5321 §4.1.1 (verbs), §4.1.2 (path syntax), §4.1.3-§4.1.4 (order);
ESMTP parameters per RFC 5321 §4.1.2 ``esmtp-param``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import ProtocolError
from .limits import MAX_PATH

#: Verbs this core knows; anything else is answered with 500 (RFC 5321 §4.2.4).
VERBS = frozenset(
    b"HELO EHLO LHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY EXPN HELP STARTTLS AUTH".split()
)


@dataclass(slots=True)
class Command:
    """A parsed command line: upper-cased verb and raw argument text."""

    verb: bytes
    arg: bytes


def parse_command_line(line: bytes) -> Command:
    """Split a command line (without CRLF) into verb and argument.

    Raises :class:`ProtocolError` 500 for an empty or unknown verb.
    """
    return Command(*split_command_line(line))


def split_command_line(line: bytes) -> tuple[bytes, bytes]:
    """:func:`parse_command_line` as a ``(verb, arg)`` tuple (the server's hot path)."""
    sp = line.find(b" ")
    if sp < 0:
        verb, arg = line, b""
    else:
        verb, arg = line[:sp], line[sp + 1 :]
    verb = verb.upper()
    if verb not in VERBS:
        if not verb:
            raise ProtocolError(500, "5.5.2", "Syntax error, command unrecognized")
        raise ProtocolError(500, "5.5.1", "Command unrecognized")
    return verb, arg.strip(b" ")


def _is_keyword(key: str) -> bool:
    # esmtp-keyword = (ALPHA / DIGIT) *(ALPHA / DIGIT / "-")
    return bool(key) and key[0].isascii() and key[0].isalnum() and all(
        c.isascii() and (c.isalnum() or c == "-") for c in key
    )


def _valid_value(value: str, utf8: bool) -> bool:
    # esmtp-value = 1*(%d33-60 / %d62-126); RFC 6531 §3.3 adds UTF-8 for SMTPUTF8.
    if not value:
        return False
    for c in value:
        o = ord(c)
        if o == 61 or o < 33 or o == 127 or (o > 127 and not utf8):
            return False
    return True


#: (prefix, allow_null, utf8) -> {argument: what _parse_path_and_params returned for it}.
#: A benchmark's client sends the same few paths over and over; parsing one again
#: cost the server more than the rest of its MAIL or RCPT. Bounded: a client that
#: sends ever new paths only makes it start over. Refusals are not kept.
_PARSED: dict[tuple[bytes, bool, bool], dict[bytes, tuple[str, dict[str, str | None]]]] = {}
_PARSED_MAX = 1024


def path_memo(prefix: bytes, allow_null: bool, utf8: bool) -> dict[bytes, tuple[str, dict[str, str | None]]]:
    """The memo :func:`parse_path_and_params` keeps for these arguments: argument -> (address, params).

    For a hot path to look in before calling it (a lookup costs a fraction of
    the call). The entries are shared: copy the params before changing them.
    """
    memo = _PARSED.get((prefix, allow_null, utf8))
    if memo is None:
        memo = _PARSED[(prefix, allow_null, utf8)] = {}
    return memo


def parse_path_and_params(
    arg: bytes, prefix: bytes, allow_null: bool, utf8: bool = True
) -> tuple[str, dict[str, str | None]]:
    """Parse ``FROM:<path> PARAMS`` / ``TO:<path> PARAMS``.

    Returns ``(address, params)``; the address has no angle brackets and any
    source route (RFC 5321 §4.1.2, ``@a,@b:``; to be accepted and ignored,
    Appendix C) removed. Parameter keys are upper-cased; a bare keyword maps
    to ``None``. A space after the colon is tolerated, as most servers do.
    The params dict is the caller's own (a copy of the remembered one).
    """
    memo = path_memo(prefix, allow_null, utf8)
    known = memo.get(arg)
    if known is None:
        known = _parse_path_and_params(arg, prefix, allow_null, utf8)
        if len(memo) >= _PARSED_MAX:
            memo.clear()  # in place: hot paths hold the dict (path_memo)
        memo[arg] = known
    return known[0], known[1].copy()


def _parse_path_and_params(arg: bytes, prefix: bytes, allow_null: bool, utf8: bool) -> tuple[str, dict[str, str | None]]:
    simple = _SIMPLE_PATHS.get(prefix)
    m = simple.match(arg) if simple is not None else None
    if m is not None and m.end(1) - m.start(1) + 2 <= MAX_PATH:
        # The common case, user@host.domain, without the general path
        # below: it would accept it and return the same.
        path = m.group(1).decode("ascii")
        tail = arg[m.end() :]
    else:
        path, tail = _parse_path(arg, prefix, allow_null)
    params: dict[str, str | None] = {}
    if tail and not tail.startswith(b" "):
        raise ProtocolError(501, "5.5.4", "Garbage after address")
    try:
        text = tail.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(501, "5.5.4", "Parameters are not valid UTF-8") from None
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _is_keyword(key) or (eq and not _valid_value(value, utf8)):
            raise ProtocolError(501, "5.5.4", f"Bad parameter syntax: {item[:40]}")
        params[key.upper()] = value if eq else None
    return path, params


def _parse_path(arg: bytes, prefix: bytes, allow_null: bool) -> tuple[str, bytes]:
    """The general path syntax; returns the address and what follows the closing '>'."""
    n = len(prefix)
    if arg[:n].upper() != prefix:
        raise ProtocolError(501, "5.5.4", f"Syntax: {prefix.decode()}<address>")
    rest = arg[n:].lstrip(b" ")
    if not rest.startswith(b"<"):
        raise ProtocolError(501, "5.1.7" if prefix == b"FROM:" else "5.1.3", "Address must be in angle brackets")
    close = _find_path_end(rest)
    if close < 0:
        raise ProtocolError(501, "5.5.4", "Unterminated address")
    raw = rest[1:close]
    if len(raw) + 2 > MAX_PATH:
        raise ProtocolError(501, "5.1.3", "Path too long")
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(501, "5.6.7", "Address is not valid UTF-8") from None
    if path.startswith("@"):
        colon = path.find(":")
        if colon < 0:
            raise ProtocolError(501, "5.1.3", "Bad source route")
        path = path[colon + 1 :]
    if not path:
        if not allow_null:
            raise ProtocolError(501, "5.1.3", "Null address not allowed here")
    elif not _plausible_mailbox(path):
        raise ProtocolError(501, "5.1.3", "Bad address syntax")
    return path, rest[close + 1 :]


# ``FROM:<local@dom.ain>`` with an ASCII word-ish local part and a dot-separated
# domain of non-empty labels: a subset of what _parse_path accepts, matched by
# one regex (the prefix case-insensitively, spaces after the colon tolerated).
_SIMPLE_MAILBOX = rb"<([\w.+=-]+@[\w-]+(?:\.[\w-]+)*)>"
_SIMPLE_PATHS = {
    prefix: re.compile(rb"(?i:%s) *" % re.escape(prefix) + _SIMPLE_MAILBOX) for prefix in (b"FROM:", b"TO:")
}


def _find_path_end(rest: bytes) -> int:
    """Index of the '>' closing the path, honouring a quoted local part."""
    quoted = False
    i = 1
    n = len(rest)
    while i < n:
        c = rest[i]
        if quoted:
            if c == 0x5C:  # backslash quotes the next char (RFC 5321 quoted-pairSMTP)
                i += 1
            elif c == 0x22:
                quoted = False
        elif c == 0x22:
            quoted = True
        elif c == 0x3E:
            return i
        elif c == 0x3C:
            return -1
        i += 1
    return -1


def _plausible_mailbox(path: str) -> bool:
    """Light mailbox check: local@domain, or a bare local part (postmaster)."""
    if any(ord(c) < 32 or c == "\x7f" for c in path):
        return False
    at = path.rfind("@")
    if at < 0:
        return path.lower() == "postmaster"
    local, domain = path[:at], path[at + 1 :]
    if not local or not domain or " " in domain:
        return False
    if domain.startswith("["):
        return domain.endswith("]")
    return all(label for label in domain.rstrip(".").split("."))


def needs_smtputf8(address: str) -> bool:
    """RFC 6531: a non-ASCII address requires the SMTPUTF8 parameter."""
    return not address.isascii()


def format_params(params: dict[str, str | None] | None) -> str:
    if not params:
        return ""
    return "".join(f" {k}" if v is None else f" {k}={v}" for k, v in params.items())


def mail_from(address: str, params: dict[str, str | None] | None = None) -> bytes:
    """``MAIL FROM:<address> [params]`` with CRLF (client side)."""
    return f"MAIL FROM:<{address}>{format_params(params)}\r\n".encode("utf-8")


def rcpt_to(address: str, params: dict[str, str | None] | None = None) -> bytes:
    """``RCPT TO:<address> [params]`` with CRLF (client side)."""
    return f"RCPT TO:<{address}>{format_params(params)}\r\n".encode("utf-8")


def simple(verb: str, arg: str = "") -> bytes:
    """Any other command line, e.g. ``simple("EHLO", "client.example")``."""
    return (f"{verb} {arg}\r\n" if arg else f"{verb}\r\n").encode("utf-8")
