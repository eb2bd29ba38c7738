"""Member roles as on chain: a bit set."""

from __future__ import annotations

from enum import IntFlag

from consortium.errors import UsageError


class Role(IntFlag):
    """A member's roles; the values are the contract's bit constants."""

    PROVIDER = 1
    CONSUMER = 2
    COORDINATOR = 4
    AUDITOR = 8

    @classmethod
    def parse(cls, text: str) -> Role:
        """Parses a comma-separated list such as ``"provider,consumer"`` (case-insensitive)."""
        roles = cls(0)
        for word in filter(None, (part.strip() for part in text.split(","))):
            try:
                roles |= cls[word.upper()]
            except KeyError:
                names = ", ".join(role.name.lower() for role in cls)  # type: ignore[union-attr]
                raise UsageError(f"unknown role {word!r}: choose from {names}") from None
        if not roles:
            raise UsageError("at least one role is needed")
        return roles

    def describe(self) -> str:
        """The roles as a comma-separated lowercase list, in bit order."""
        return ",".join(role.name.lower() for role in Role if role in self)  # type: ignore[union-attr]
