"""The SMTP extensions the server can advertise: names only, with no import of the server.

The scenario validates ``[sink] advertise`` against them; importing the server session for
these two tuples cost `smtpbench run` (which runs no server) ~20 M instructions of start-up.
"""

#: Extensions the server can advertise, in EHLO order.
EXTENSIONS = (
    "PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES",
    "CHUNKING", "BINARYMIME", "DSN", "STARTTLS", "AUTH", "VRFY", "HELP",
)
DEFAULT_EXTENSIONS = ("PIPELINING", "SIZE", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN")
