"""The MAIL command's ESMTP parameters a server accepts: each one only when its
extension was offered (RFC 5321 §4.1.1.11: 555 for one that was not)."""

from __future__ import annotations

from .errors import ProtocolError


def check_mail_params(params: dict[str, str | None], c, auth_offered: bool) -> bool:
    """Check MAIL's ESMTP parameters against what was offered (``c``: the configuration's
    :class:`~smtpbench.protocol.server_replies.Canned`); True for SMTPUTF8 (RFC 6531 §3.4)."""
    utf8 = False
    for key, value in params.items():
        if key == "SIZE" and c.size:
            if value is None or not (value.isascii() and value.isdigit()):
                raise ProtocolError(501, "5.5.4", "Bad SIZE parameter")
            if int(value) > c.max_message_size:
                # RFC 1870 §6.1: refuse up front when the declared size is too big.
                raise ProtocolError(552, "5.3.4", "Message size exceeds fixed limit")
        elif key == "BODY" and c.eightbit:
            allowed = ("7BIT", "8BITMIME", "BINARYMIME") if c.binary else ("7BIT", "8BITMIME")
            if value is None or value.upper() not in allowed:
                raise ProtocolError(501, "5.5.4", "BODY must be one of " + ", ".join(allowed))
        elif key == "SMTPUTF8" and c.utf8:
            if value is not None:
                raise ProtocolError(501, "5.5.4", "SMTPUTF8 takes no value")
            utf8 = True
        elif key in ("RET", "ENVID") and c.dsn:
            pass  # RFC 3461 §4.3-4.4: accepted; a sink never sends DSNs
        elif key == "AUTH" and auth_offered:
            pass  # RFC 4954 §5
        else:
            raise ProtocolError(555, "5.5.4", f"Unsupported parameter {key}")
    return utf8
