"""EHLO capability parsing (RFC 5321 §4.1.1.1: one keyword and its parameters per line)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Capabilities:
    """What a server offered in its EHLO (or LHLO) reply."""

    keywords: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, lines: tuple[str, ...] | list[str]) -> "Capabilities":
        """The first line is the server's greeting name; each later line a keyword [params]."""
        kw: dict[str, str] = {}
        for line in list(lines)[1:]:
            key, _, params = line.strip().partition(" ")
            if key:
                kw[key.upper()] = params.strip()
        return cls(kw)

    def has(self, keyword: str) -> bool:
        return keyword in self.keywords

    @property
    def size_limit(self) -> int | None:
        """RFC 1870: ``SIZE n``; 0 or no number means no fixed limit."""
        if "SIZE" not in self.keywords:
            return None
        value = self.keywords["SIZE"]
        return int(value) if value.isdigit() and int(value) > 0 else None

    @property
    def auth_mechanisms(self) -> set[str]:
        return set(self.keywords.get("AUTH", "").upper().split())
