"""Protocol limits, each one named and tied to the RFC that sets it.

These are the defaults; a sink or client may be configured to be stricter or
more lenient, but never silently: configuration passes its own values in.
"""

#: RFC 5321 §4.5.3.1.4: a command line is at most 512 octets including CRLF.
MAX_COMMAND_LINE = 512

#: RFC 5321 §4.5.3.1.6: a text line is at most 1000 octets including CRLF.
MAX_TEXT_LINE = 1000

#: RFC 5321 §4.5.3.1.5: a reply line is at most 512 octets including CRLF.
MAX_REPLY_LINE = 512

#: RFC 5321 §4.5.3.1.8: a server must accept at least 100 recipients.
MIN_RECIPIENTS = 100

#: RFC 5321 §4.5.3.1.3: a path (reverse-path or forward-path) is at most 256 octets.
MAX_PATH = 256

#: A multi-line reply longer than this many lines is treated as hostile by the
#: client reader (no RFC limit exists; real EHLO replies have ~10-20 lines).
MAX_REPLY_LINES = 256

#: RFC 5321 §4.5.3.2 timeouts, in seconds (the protocol core does not keep
#: time; drivers read these as their defaults).
TIMEOUT_INITIAL_220 = 300.0     # §4.5.3.2.1
TIMEOUT_MAIL = 300.0            # §4.5.3.2.2
TIMEOUT_RCPT = 300.0            # §4.5.3.2.3
TIMEOUT_DATA_INIT = 120.0       # §4.5.3.2.4
TIMEOUT_DATA_BLOCK = 180.0      # §4.5.3.2.5
TIMEOUT_DATA_TERM = 600.0       # §4.5.3.2.6
TIMEOUT_SERVER_IDLE = 300.0     # §4.5.3.2.7 (the server waits at least 5 minutes)
