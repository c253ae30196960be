"""AUTH PLAIN and LOGIN (RFC 4954) for the server session; credentials are the policy's to judge.

A mixin of :class:`~smtpbench.protocol.server.ServerSession`; it uses the
session's state, reply() and hooks.authenticate().
"""

from __future__ import annotations

import base64
import binascii

from .errors import ProtocolError
from .server_types import AUTH_WAIT, INIT, READY


class AuthMixin:
    __slots__ = ()  # the session's slots hold the state

    def _auth_cmd(self, arg: bytes) -> None:
        if not self._has("AUTH"):
            raise ProtocolError(502, "5.5.1", "AUTH not offered")
        if self.state == INIT:
            raise ProtocolError(503, "5.5.1", "Send EHLO first")
        if self.authenticated:
            raise ProtocolError(503, "5.5.1", "Already authenticated")
        if self.state != READY:
            raise ProtocolError(503, "5.5.1", "AUTH not allowed during a transaction")
        parts = arg.split()
        if not parts:
            raise ProtocolError(501, "5.5.4", "Syntax: AUTH mechanism")
        mech = parts[0].upper().decode("ascii", "replace")
        if mech not in self.config.auth_mechanisms:
            raise ProtocolError(504, "5.5.4", "Unrecognized authentication type")
        initial = parts[1] if len(parts) > 1 else None
        if mech == "PLAIN":
            if initial is None:
                self._auth = ("PLAIN", None)
                self.state = AUTH_WAIT
                self._out.append(b"334 \r\n")
                return
            self._auth_plain(initial)
        else:  # LOGIN
            self._auth = ("LOGIN", None)
            self.state = AUTH_WAIT
            if initial is None:
                self._out.append(b"334 VXNlcm5hbWU6\r\n")  # "Username:"
            else:
                self._auth_continue(initial)

    def _auth_continue(self, line: bytes) -> None:
        mech, user = self._auth
        if line == b"*":
            self._auth = None
            self.state = READY
            raise ProtocolError(501, "5.0.0", "Authentication cancelled")
        if mech == "PLAIN":
            self._auth = None
            self.state = READY
            self._auth_plain(line)
            return
        text = self._b64(line)
        if user is None:
            self._auth = ("LOGIN", text)
            self._out.append(b"334 UGFzc3dvcmQ6\r\n")  # "Password:"
            return
        self._auth = None
        self.state = READY
        self._auth_result("LOGIN", user, text)

    def _b64(self, data: bytes) -> str:
        try:
            return base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            self._auth = None
            self.state = READY
            raise ProtocolError(501, "5.5.2", "Cannot decode response") from None

    def _auth_plain(self, data: bytes) -> None:
        parts = self._b64(data).split("\0")
        if len(parts) != 3:
            raise ProtocolError(501, "5.5.2", "Malformed PLAIN response")
        self._auth_result("PLAIN", parts[1], parts[2])

    def _auth_result(self, mech: str, user: str, password: str) -> None:
        if self.hooks.authenticate(mech, user, password):
            self.authenticated = True
            self.reply(235, "2.7.0", "Authentication successful")
        else:
            self.reply(535, "5.7.8", "Authentication credentials invalid")
