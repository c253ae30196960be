"""The server role of SMTP (RFC 5321) and LMTP (RFC 2033), without I/O.

:class:`ServerSession` takes the bytes a client sent (:meth:`ServerSession.feed`)
and returns the replies to write, in order, as a list the driver hands to
``transport.writelines`` in one call: every complete command in a read is
answered before control returns (RFC 2920 pipelining, and the batching that
makes Postfix's smtp-sink fast). Whatever a client sends, the session either
answers with a proper reply code or asks the driver to close; no input makes
it raise, and no input makes its buffers grow past a fixed bound.

Decisions that are policy, not protocol (accept a message, check AUTH
credentials, inject faults) are delegated to a :class:`ServerHooks` object.
"""

from __future__ import annotations

from .commands import parse_path_and_params, split_command_line
from .data import (
    SEAM_STARTS, TERMINATOR, DataReceiver, dots_matter, find_terminator, long_line_in, unstuffed_size,
)
from .errors import ProtocolError
from .limits import MAX_COMMAND_LINE
from .mail_params import check_mail_params
from .replies import format_reply
from .server_auth import AuthMixin
from .server_chunking import ChunkingMixin
from .server_types import (  # noqa: F401  (re-exported: the core's public types)
    AUTH_WAIT, BDAT, CLOSED, DATA, DEFAULT_EXTENSIONS, EXTENSIONS, INIT, MAIL, RCPT, READY, Action, Envelope,
    ServerConfig, ServerCounters, ServerHooks, new_envelope,
)
from .server_types import EVERY_STAGE as _EVERY, NO_STAGE as _NONE

_DEFAULT_HOOKS = ServerHooks()
#: The envelope before HELO/EHLO, empty, shared by every session: nothing changes the
#: envelope between transactions (MAIL makes a new one), and one per connection cost
#: as much as the rest of its setup.
_NO_ENVELOPE = Envelope()
_TOO_BIG = (552, "5.3.4", "Message size exceeds fixed limit")  # RFC 1870: answered after the terminator
_LONG_LINE = (500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.6: 1000 octets)")
_REPLY_CACHE: dict[tuple[int, str, str], bytes] = {}

#: Command line (with its line end) -> (handler, stage, argument); the handler is the
#: unbound function (see _HANDLERS). Benchmark clients send the same few lines again
#: and again, and splitting one anew cost more than handling it. Bounded: a client
#: that sends ever new lines only makes it start over.
_LINES: dict[bytes, tuple] = {}
_LINES_MAX = 1024


class ServerSession(AuthMixin, ChunkingMixin):
    """One SMTP/LMTP server connection's protocol state."""

    # Slots: cheaper to set up per connection and to read per command, and smaller per idle connection.
    __slots__ = ("config", "counters", "hooks", "state", "closing", "abort", "paused", "tarpit", "_held",
                 "starttls", "tls_active", "authenticated", "envelope", "errors", "_esc", "_buf", "_overlong",
                 "_data", "_bdat_left", "_bdat_last", "_bdat_parts", "_bdat_size", "_bdat_refuse", "_bdat_prev",
                 "_size", "_auth", "_out", "_command_hook", "_hooked", "_c", "_blank",
                 "attention")

    def __init__(self, config: ServerConfig, counters: ServerCounters | None = None,
                 hooks: ServerHooks | None = None):
        self.config = config
        self._c = config.canned
        self.counters = counters if counters is not None else ServerCounters()
        self.hooks = hooks or _DEFAULT_HOOKS
        self.state = INIT
        self.closing = False          # driver closes after writing the replies
        self.abort = False            # driver drops the connection at once (a fault)
        self.paused = 0.0             # > 0: driver waits this long, then calls resume()
        self.tarpit = 0.0             # > 0: driver writes this batch of replies at this many octets/s
        self._held: tuple | None = None  # what resume() finishes
        self.starttls = False         # driver must upgrade to TLS, then call tls_started()
        # Set with any of the five above: the driver then has more to do than write the
        # replies and looks at them; until then one test per read is enough.
        self.attention = False
        self.tls_active = config.tls_active
        self.authenticated = False
        # The empty envelope between transactions; MAIL starts a new one (never this one).
        self._blank = self.envelope = _NO_ENVELOPE
        self.errors = 0
        self._esc = self._c.esc
        self._buf = bytearray()
        self._overlong = False        # discarding the rest of a too-long command line
        self._data: DataReceiver | None = None
        self._bdat_left = 0
        self._bdat_last = False
        self._bdat_parts: list[bytes] = []
        self._bdat_size = 0
        self._bdat_refuse: tuple[int, str, str] | None = None
        self._bdat_prev = INIT
        self._size = 0
        self._auth: tuple[str, str | None] | None = None  # (mechanism, LOGIN username)
        self._out: list[bytes] = []
        # The command hook is called only when overridden, and only for the stages it
        # asked for: the default one answers None, and a command no hook looks at is
        # handled at once (the commonest call on the hot path is the one not made).
        hooks = self.hooks
        overridden = type(hooks).command is not ServerHooks.command or "command" in getattr(hooks, "__dict__", ())
        self._command_hook = hooks.command if overridden else None
        stages = hooks.command_stages
        self._hooked = _NONE if not overridden else _EVERY if stages is None else stages

    # -- output -----------------------------------------------------------

    def reply(self, code: int, status: str, text: str) -> None:
        """Queue a reply (the enhanced code is sent only if advertised, RFC 2034 §3)."""
        key = (code, status if self._esc else "", text)
        wire = _REPLY_CACHE.get(key)
        if wire is None:
            wire = format_reply(code, key[2], key[1])
            if len(_REPLY_CACHE) < 4096:  # constant replies; bounded all the same
                _REPLY_CACHE[key] = wire
        self._out.append(wire)
        replies = self.counters.other_replies
        replies[code] = replies.get(code, 0) + 1

    def greeting(self) -> list[bytes]:
        """The 220 banner (RFC 5321 §4.3.1); call once when the connection opens."""
        out = self._out = [self._c.banner]  # pre-encoded replies: server_replies.Canned
        self.counters.ok_220 += 1
        return out

    def refuse(self, code: int = 421, status: str = "4.3.2", text: str = "Service not available, closing channel") -> list[bytes]:
        """A reply-and-close at connect time (e.g. too many connections)."""
        self._out = []
        self.reply(code, status, f"{self.config.hostname} {text}")
        self._close()
        return self._out

    # -- input ------------------------------------------------------------

    def feed(self, data: bytes) -> list[bytes]:
        """Consume bytes from the client; return the replies to send, in order."""
        out = self._out = []
        state = self.state
        if state == CLOSED:
            return out  # RFC 5321 §4.1.1.10: nothing after QUIT is read
        if self.paused:
            self._buf += data  # the driver paused reading; keep what was already in flight
            return out
        if not self._buf and type(data) is bytes:
            # The usual reads from a client that waits for each reply: a body that
            # ends in this read, or one whole command line. What the loop below
            # does, minus the buffer.
            if state == DATA:
                end = self._body(data, 0)
                if end < 0 or end == len(data):
                    return out
                data = data[end:]
                if self.paused:
                    self._buf += data
                    return out
                state = self.state
            if state < DATA and not self._overlong and not self.starttls:  # a command state
                known = _LINES.get(data)  # a hit is one whole line, seen before
                if known is not None:
                    if known[1] in self._hooked:
                        self._command(data, known)
                        return out
                    try:  # _command, minus the hook no one set for this stage
                        known[0](self, known[2])
                    except ProtocolError as e:
                        self._error(e.code, e.status, e.text)
                    return out
                nl = data.find(b"\n")
                if nl == len(data) - 1 and 0 < nl < MAX_COMMAND_LINE and data[nl - 1] == 13:
                    self._command(data)
                    return out
        buf = self._buf
        buf += data
        pos = 0
        n = len(buf)
        while pos < n and self.state != CLOSED and not self.starttls and not self.paused:
            state = self.state
            if state == DATA:
                end = self._body(buf, pos)
                if end < 0:
                    pos = n
                    break
                pos = end
                continue
            if state == BDAT:
                pos = self._bdat_chunk(buf, pos, n)
                continue
            nl = buf.find(b"\n", pos)
            if nl < 0:
                if n - pos > MAX_COMMAND_LINE:
                    # A line that never ends: drop it as it comes, answer once
                    # it ends (RFC 5321 §4.5.3.1.4), memory stays bounded.
                    self._overlong = True
                    pos = n
                break
            end = nl - 1 if nl > pos and buf[nl - 1] == 13 else nl
            start, pos = pos, nl + 1
            if self._overlong or end - start + 2 > MAX_COMMAND_LINE:
                self._overlong = False
                if state == AUTH_WAIT:
                    # RFC 4954 §4: a 5xx reply ends the exchange for the client, so it ends here
                    # too; otherwise its next command would be taken for a SASL response.
                    self._auth = None
                    self.state = READY
                self._error(500, "5.5.2", "Line too long (RFC 5321 4.5.3.1.4: 512 octets)")
                continue
            if state == AUTH_WAIT:
                try:
                    self._auth_continue(bytes(buf[start:end]))
                except ProtocolError as e:  # cancelled or undecodable response (RFC 4954 §4)
                    self._error(e.code, e.status, e.text)
                continue
            self._command(bytes(buf[start:pos]))
        if self.starttls:
            pos = n  # RFC 3207 §4.2 / CVE-2011-0411: discard what was pipelined after STARTTLS
        if pos:
            del buf[:pos]
        return out

    def tls_started(self) -> None:
        """The driver finished the TLS handshake: forget everything (RFC 3207 §4.2)."""
        self.starttls = False
        self.attention = False
        self.tls_active = True
        self.state = INIT
        # §4.2 "any knowledge obtained from the client ... not obtained from the TLS negotiation
        # itself": an AUTH made in the clear too, or --auth-required let MAIL through unasked.
        self.authenticated = False
        self._blank = self.envelope = _NO_ENVELOPE
        self._buf.clear()

    def _command(self, raw: bytes, known: tuple | None = None) -> None:
        """Handle one command line, ``raw`` with its line end (CRLF, or a bare LF)."""
        try:
            if known is None:
                known = _LINES.get(raw) or _split(raw)
            handler, stage, arg = known
            if stage in self._hooked:
                hooked = self._command_hook(stage, self, arg)
                if hooked is not None:
                    if type(hooked) is Action:
                        if not self._act(hooked, ("command", handler, arg)):
                            return
                    else:
                        self._refuse(hooked, handler, arg)
                        return
            handler(self, arg)
        except ProtocolError as e:
            self._error(e.code, e.status, e.text)

    def _override(self, reply: tuple[int, str, str]) -> None:
        self.reply(*reply)
        if reply[0] == 421:  # RFC 5321 §3.8: 421 means the server closes
            self._close()

    def _refuse(self, reply: tuple[int, str, str], handler, arg: bytes) -> None:
        """Answer a command with a policy's reply instead of handling it. A refused BDAT's chunk
        is still read and discarded (RFC 3030 §2): taken for commands, its octets would smuggle some in."""
        if reply[0] != 421 and handler is ServerSession._bdat:
            self._bdat(arg, refuse=reply)
        else:
            self._override(reply)

    def _act(self, action: Action, held: tuple) -> bool:
        """Apply a policy action; True when the command should still be handled now."""
        self.attention = True  # each action is the driver's to carry out
        kind = action.kind
        if kind == "disconnect":
            self.abort = True
            self._close()
            return False
        if kind == "tarpit":
            self.tarpit = action.rate
            if action.reply is not None:
                self._refuse(action.reply, held[1], held[2])
                return False
            return True
        if kind == "delay" and action.seconds > 0:
            self.paused = action.seconds
            self._held = (held, action.reply)
            return False
        if action.reply is not None:
            self._refuse(action.reply, held[1], held[2])
            return False
        return True

    def resume(self) -> list[bytes]:
        """The delay asked for by a hook is over: answer, then go on with buffered input."""
        self._out = []
        held, reply = self._held
        self._held = None
        self.paused = 0.0
        self.attention = False  # what follows sets it again if need be
        if reply is not None:
            if held[0] == "message":
                self._complete(reply)
            else:
                self._refuse(reply, held[1], held[2])
        elif held[0] == "command":
            try:
                held[1](self, held[2])
            except ProtocolError as e:
                self._error(e.code, e.status, e.text)
        else:
            self._complete(held[1])
        early = self._out
        if self.state == CLOSED or self.paused:
            return early
        return early + self.feed(b"")

    def _error(self, code: int, status: str, text: str) -> None:
        self.counters.protocol_errors += 1
        self.errors += 1
        self.reply(code, status, text)
        if self.errors >= self.config.max_errors:
            self.reply(421, "4.7.0", f"{self.config.hostname} Too many errors, closing")
            self._close()

    def _close(self) -> None:
        self.state = CLOSED
        self.closing = True
        self.attention = True

    # -- commands ---------------------------------------------------------

    def _reset(self) -> None:
        # The envelope a hook was given stays as it was: the next MAIL makes a new one.
        self.envelope = self._blank
        self._data = None
        if self._bdat_parts:
            self._bdat_parts = []
        if self._bdat_prev:  # a BDAT was seen since the last reset (a DATA-only session skips this)
            self._bdat_size = 0
            self._bdat_prev = INIT

    def _greet(self, arg: bytes, ehlo: bool) -> None:
        if not arg:
            raise ProtocolError(501, "5.5.4", "Syntax: EHLO hostname")
        self._reset()
        self._blank = self.envelope = new_envelope("", {}, arg.decode("utf-8", "replace"), False)
        self.state = READY
        c = self._c
        self._out.append((c.ehlo_tls if self.tls_active else c.ehlo) if ehlo else c.helo)
        self.counters.ok_250 += 1

    def _helo(self, arg: bytes) -> None:
        if self.config.lmtp:
            raise ProtocolError(500, "5.5.1", "LMTP requires LHLO (RFC 2033 4.1)")
        self._greet(arg, ehlo=False)

    def _ehlo(self, arg: bytes) -> None:
        if self.config.lmtp:
            raise ProtocolError(500, "5.5.1", "LMTP requires LHLO (RFC 2033 4.1)")
        self._greet(arg, ehlo=True)

    def _lhlo(self, arg: bytes) -> None:
        if not self.config.lmtp:
            raise ProtocolError(500, "5.5.1", "Command unrecognized")
        self._greet(arg, ehlo=True)

    def _has(self, ext: str) -> bool:
        return ext in self.config.extensions

    def _mail(self, arg: bytes) -> None:
        if self.state != READY:
            if self.state == INIT:
                raise ProtocolError(503, "5.5.1", "Send EHLO/HELO first")
            raise ProtocolError(503, "5.5.1", "Nested MAIL command")
        c = self._c
        if c.auth_required and not self.authenticated:
            raise ProtocolError(530, "5.7.0", "Authentication required")
        known = c.senders.get(arg)  # parse_path_and_params' memo, without the call
        if known is None:
            path, params = parse_path_and_params(arg, b"FROM:", allow_null=True, utf8=c.utf8)
        else:
            path, params = known[0], known[1].copy() if known[1] else {}  # the envelope's own
        utf8 = check_mail_params(params, c, self._has("AUTH")) if params else False
        if not utf8 and not path.isascii():
            raise ProtocolError(553, "5.6.7", "Non-ASCII address needs SMTPUTF8 (RFC 6531 3.5)")
        self.envelope = new_envelope(path, params, self._blank.helo, utf8)
        self.state = MAIL
        self._out.append(c.sender_ok)
        self.counters.ok_250 += 1

    def _rcpt(self, arg: bytes) -> None:
        state = self.state
        if state != RCPT and state != MAIL:
            raise ProtocolError(503, "5.5.1", "Need MAIL command")
        c = self._c
        known = c.recipients.get(arg)  # parse_path_and_params' memo, without the call (params only read)
        path, params = known if known is not None else parse_path_and_params(arg, b"TO:", allow_null=False, utf8=c.utf8)
        for key in params:
            if not (key in ("NOTIFY", "ORCPT") and c.dsn):
                raise ProtocolError(555, "5.5.4", f"Unsupported parameter {key}")
        env = self.envelope
        if not path.isascii() and not env.smtputf8:
            raise ProtocolError(553, "5.6.7", "Non-ASCII address needs SMTPUTF8 (RFC 6531 3.5)")
        rcpts = env.rcpt_to
        if len(rcpts) >= c.max_recipients:
            # RFC 5321 §4.5.3.1.10: 452 lets the client send the rest later; not toward max_errors
            # (a pipelining client lost the accepted ones' message to 421 after 20 more).
            self.counters.protocol_errors += 1
            self.reply(452, "4.5.3", "Too many recipients")
            return
        rcpts.append(path)
        self.state = RCPT
        self._out.append(c.recipient_ok)
        self.counters.ok_250 += 1

    def _data_cmd(self, arg: bytes) -> None:
        if arg:
            raise ProtocolError(501, "5.5.4", "DATA takes no argument")
        if self.state != RCPT:
            if self.state == MAIL:
                raise ProtocolError(503 if not self.envelope.rcpt_to else 554, "5.5.1", "Need RCPT command")
            raise ProtocolError(503, "5.5.1", "Need MAIL command")
        if self._bdat_prev == RCPT:
            # RFC 3030 §2: DATA after a BDAT of this transaction gets 503, a BDAT 0 too
            # (the octet count alone missed it).
            raise ProtocolError(503, "5.5.1", "DATA after BDAT (RFC 3030 4.2)")
        self.state = DATA  # the body's first read makes the receiver, if it needs one (_body)
        self._out.append(self._c.start_data)
        self.counters.ok_354 += 1

    def _body(self, buf: bytes | bytearray, pos: int) -> int:
        """Take body octets from ``buf[pos:]``; return the index past the terminator
        (the message is then answered), or -1 when the body goes on."""
        rx = self._data
        if rx is None:
            # A body's first read. One that is not kept and ends in it (the sink's usual
            # case) is checked here, as a DataReceiver would check it, without making one.
            c = self._c
            if c.discard and pos == 0 and type(buf) is bytes and buf and buf[0] not in SEAM_STARTS:
                end = buf.find(TERMINATOR) if len(buf) < 4096 else find_terminator(buf)
                if end >= 0:
                    size = end + 2  # the body keeps the CRLF before "."
                    if size > c.max_message_size and unstuffed_size(buf, size) > c.max_message_size:
                        self._finish(None, size, _TOO_BIG)
                    elif c.check_lines and long_line_in(buf, size):
                        self._finish(None, size, _LONG_LINE)
                    else:
                        self._finish(None, size, None)
                    return end + 5
            cfg = self.config
            rx = self._data = DataReceiver(cfg.keep_body, cfg.max_message_size, cfg.check_line_length, cfg.keep_head,
                                           dots_matter(self.envelope.mail_params.get("SIZE"), cfg.max_message_size))
        end = rx.feed(buf, pos)
        if end >= 0:
            self._end_of_data()
        return end

    def _end_of_data(self) -> None:
        rx = self._data
        self._data = None
        if not (rx.head_limit or rx.oversize or rx.long_line or rx.keep):
            self._finish(None, rx.size, None)  # a good body, discarded
            return
        if rx.head_limit:
            self.envelope.head = rx.head()
        if rx.oversize:
            self._finish(None, rx.size, _TOO_BIG)
        elif rx.long_line:
            self._finish(None, rx.size, _LONG_LINE)
        else:
            self._finish(rx.body() if rx.keep else None, rx.size, None)

    def _finish(self, body: bytes | None, size: int, refusal: tuple[int, str, str] | None) -> None:
        self.counters.transactions += 1
        self._size = size
        if refusal is None:
            refusal = self.hooks.message(self.envelope, body, size)
            if type(refusal) is Action:
                self.attention = True  # each action is the driver's to carry out
                action = refusal
                refusal = action.reply
                if action.kind == "delay" and action.seconds > 0:
                    # The answer (and the count) waits; the driver resumes us.
                    self.paused = action.seconds
                    self._held = (("message", refusal), None)
                    self.state = READY
                    return
                if action.kind == "disconnect":
                    self.abort = True
                    self._close()
                    self._reset()
                    return
                if action.kind == "tarpit":
                    self.tarpit = action.rate
        self._complete(refusal)

    def _complete(self, refusal: tuple[int, str, str] | None) -> None:
        """Answer the end of a message (and count it when accepted)."""
        env = self.envelope
        c = self.counters
        size = self._size
        nrcpt = len(env.rcpt_to)
        if refusal is None:
            c.messages += 1
            c.recipients += nrcpt
            c.bytes += size
            # The error limit counts errors "without delivering mail" (Postfix's hard limit): with
            # pipelining, each refused MAIL also costs 503s to its RCPTs and DATA/BDAT.
            self.errors = 0
        if self._c.lmtp:
            # RFC 2033 §4.2: one reply per accepted recipient, in RCPT order.
            for rcpt in env.rcpt_to:
                if refusal is None:
                    self.reply(250, "2.0.0", f"<{rcpt}> delivered")
                else:
                    self.reply(*refusal)
        elif refusal is None:
            self._out.append(self._c.accepted)
            c.ok_250 += 1
        else:
            self.reply(*refusal)
            if refusal[0] == 421:
                self._close()
                self._reset()
                return
        self.state = READY
        self._reset()

    def _rset(self, arg: bytes) -> None:
        self._reset()
        if self.state != INIT:
            self.state = READY
        self._out.append(self._c.reset_ok)
        self.counters.ok_250 += 1

    def _noop(self, arg: bytes) -> None:
        self.reply(250, "2.0.0", "OK")

    def _quit(self, arg: bytes) -> None:
        self._out.append(self._c.bye)
        self.counters.ok_221 += 1
        self._close()

    def _vrfy(self, arg: bytes) -> None:
        if not arg:
            raise ProtocolError(501, "5.5.4", "Syntax: VRFY address")
        # RFC 5321 §3.5.3: 252 when the server will not verify but would accept.
        self.reply(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery")

    def _expn(self, arg: bytes) -> None:
        raise ProtocolError(502, "5.5.1", "EXPN not implemented")

    def _help(self, arg: bytes) -> None:
        self.reply(214, "2.0.0", "Commands: HELO EHLO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP")

    def _starttls(self, arg: bytes) -> None:
        if not self._has("STARTTLS"):
            raise ProtocolError(502, "5.5.1", "STARTTLS not offered")
        if self.tls_active:
            raise ProtocolError(503, "5.5.1", "TLS already active")
        if arg:
            raise ProtocolError(501, "5.5.4", "STARTTLS takes no argument")
        self.reply(220, "2.0.0", "Ready to start TLS")
        self.starttls = True
        self.attention = True


#: Verb -> handler, the unbound function (one table for all sessions: a per-session
#: dict of bound methods would cost every idle connection a kilobyte or two, and
#: a method name looked up per command costs a getattr and a bound method).
_HANDLERS = {
    b"HELO": ServerSession._helo, b"EHLO": ServerSession._ehlo, b"LHLO": ServerSession._lhlo,
    b"MAIL": ServerSession._mail, b"RCPT": ServerSession._rcpt, b"DATA": ServerSession._data_cmd,
    b"BDAT": ServerSession._bdat, b"RSET": ServerSession._rset, b"NOOP": ServerSession._noop,
    b"QUIT": ServerSession._quit, b"VRFY": ServerSession._vrfy, b"EXPN": ServerSession._expn,
    b"HELP": ServerSession._help, b"STARTTLS": ServerSession._starttls, b"AUTH": ServerSession._auth_cmd,
}


def _split(raw: bytes) -> tuple:
    """Split a command line with its line end (raising 500 for an unknown verb); remember it in _LINES."""
    verb, arg = split_command_line(raw[:-2] if raw.endswith(b"\r\n") else raw[:-1])
    known = (_HANDLERS[verb], verb.decode(), arg)
    if verb != b"AUTH":  # AUTH's argument may carry a password: never kept
        if len(_LINES) >= _LINES_MAX:
            _LINES.clear()
        _LINES[raw] = known
    return known
