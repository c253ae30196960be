"""Listen and target addresses: ``HOST:PORT``, ``[v6]:PORT``, ``unix:/path``."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

ADDRESS_HELP = "HOST:PORT, [IPv6]:PORT or unix:/path"


@dataclass(frozen=True)
class Address:
    host: str = "127.0.0.1"
    port: int = 2525
    path: str = ""  # a unix socket path, when set

    def __str__(self) -> str:
        if self.path:
            return f"unix:{self.path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_address(text: str, default_port: int = 2525) -> Address:
    """Parse an address; raises ValueError naming the accepted forms."""
    text = text.strip()
    if text.startswith("unix:"):
        path = text[5:]
        if not path:
            raise ValueError(f"empty unix socket path; expected {ADDRESS_HELP}")
        return Address(path=path)
    host, port = text, str(default_port)
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unclosed '[' in {text!r}; expected {ADDRESS_HELP}")
        host = text[1:end]
        rest = text[end + 1 :]
        if rest:
            if not rest.startswith(":"):
                raise ValueError(f"bad address {text!r}; expected {ADDRESS_HELP}")
            port = rest[1:]
    elif text.count(":") == 1:
        host, port = text.split(":")
    elif text.count(":") > 1:
        raise ValueError(f"IPv6 addresses need brackets: [{text}]:PORT")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"bad port in {text!r}; expected {ADDRESS_HELP} with PORT 0-65535")
    return Address(host=host or "127.0.0.1", port=int(port))


def literal_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address ``host`` names when it is a literal one or ``localhost`` (no DNS); else None."""
    if host == "localhost":
        return ipaddress.ip_address("127.0.0.1")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    """``localhost`` or a loopback IP (127.0.0.0/8, ::1); other names could resolve anywhere."""
    ip = literal_ip(host)
    return ip is not None and ip.is_loopback
