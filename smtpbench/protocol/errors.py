"""The one exception type of the protocol core.

Every parse or sequencing failure is a :class:`ProtocolError` that carries the
reply a server should send, so drivers never have to map exceptions to codes.
"""


class ProtocolError(Exception):
    """Malformed or out-of-sequence SMTP input.

    ``code`` and ``status`` (an RFC 3463 enhanced status code, without the
    class digit's meaning changed) are what a server answers; a client that
    meets a malformed *reply* raises it too, with ``code`` 0.
    """

    def __init__(self, code: int, status: str, text: str):
        super().__init__(f"{code} {status} {text}")
        self.code = code
        self.status = status
        self.text = text
        self.replies: list = []  # a client's reader: the replies completed before the bad line
