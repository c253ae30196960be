"""TLS for both halves: server and client contexts, a self-signed certificate, session resumption.

STARTTLS (RFC 3207) and implicit TLS (RFC 8314, port-465 style) use the same
contexts. A sink without a configured certificate makes a throw-away
self-signed one at start (the ``cryptography`` package), good for loopback
benchmarks and nothing else.

Session resumption: asyncio (and uvloop) create the TLS object through
``SSLContext.wrap_bio`` without a ``session`` argument, so the client context
here is a subclass that passes the last session it saw. With TLS 1.3 the
session ticket arrives after the handshake; it is picked up when the next
connection is made.
"""

from __future__ import annotations

import datetime
import os
import ssl
import tempfile


def self_signed(folder: str | None = None, hostname: str = "smtpbench.localhost") -> tuple[str, str]:
    """Write a self-signed certificate and key (PEM); return their paths."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = folder or tempfile.mkdtemp(prefix="smtpbench-tls-")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname), x509.DNSName("localhost")]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path = os.path.join(folder, "cert.pem")
    key_path = os.path.join(folder, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    return cert_path, key_path


def server_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class ResumingContext(ssl.SSLContext):
    """A client context that offers the last TLS session it saw (resumption)."""

    resume = True
    last_session: ssl.SSLSession | None = None

    def wrap_bio(self, incoming, outgoing, server_side=False, server_hostname=None, session=None):
        if session is None and self.resume and self.last_session is not None:
            session = self.last_session
        return super().wrap_bio(incoming, outgoing, server_side=server_side,
                                server_hostname=server_hostname, session=session)

    def remember(self, ssl_object) -> bool:
        """Keep the connection's session for the next one; True when this one was resumed."""
        if ssl_object is None:
            return False
        if self.resume:  # reading .session copies it (~0.2 ms of CPU): only when it will be offered
            sess = ssl_object.session
            if sess is not None:
                self.last_session = sess
        return bool(ssl_object.session_reused)


def client_context(verify: bool = False, resume: bool = True, cafile: str | None = None) -> ResumingContext:
    ctx = ResumingContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.resume = resume
    if verify:
        ctx.load_verify_locations(cafile) if cafile else ctx.load_default_certs()
    else:
        # A benchmark against loopback servers with throw-away certificates.
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx
