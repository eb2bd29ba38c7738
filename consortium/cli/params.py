"""Command-line value types shared by several groups."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime

import click

from consortium.errors import UsageError
from consortium.ledger.roles import Role
from consortium.ledger.values import address

_HEX = re.compile(r"^0[xX][0-9a-fA-F]*$")
_RELATIVE = re.compile(r"^\+(\d+)([smhdw])$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


class RolesType(click.ParamType):
    """Comma-separated roles such as ``provider,consumer``."""

    name = "ROLES"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, Role):
            return value
        try:
            return Role.parse(str(value))
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


MAX_DIGITS = 80
"""Longer decimal text is beyond every uint the contracts take (2**256 has 78 digits), and
past what Python converts to int (4,300 digits) it would not even parse."""


class UInt(click.ParamType):
    """A decimal integer that fits the contracts' ``uint<bits>``, at least ``low``.

    Ids, times and nonces go to the chain as fixed-width unsigned integers; a larger number
    would only fail inside the ABI encoder, with a traceback instead of a message.
    """

    def __init__(self, bits: int, low: int = 0) -> None:
        self.bits = bits
        self.low = low
        self.name = f"UINT{bits}"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, int) and not isinstance(value, bool):
            return self._bounded(value, param, ctx)
        text = str(value).strip()
        if not text.isdecimal():
            self.fail(f"{text!r} is not a whole number", param, ctx)
        if len(text) > MAX_DIGITS:
            self.fail(f"a {len(text)}-digit number is beyond uint{self.bits}", param, ctx)
        return self._bounded(int(text), param, ctx)

    def _bounded(self, number: int, param: click.Parameter | None, ctx: click.Context | None):
        if number >= 2**self.bits:
            self.fail(f"{number} is beyond uint{self.bits}", param, ctx)
        if number < self.low:
            self.fail(f"{number} is less than {self.low}", param, ctx)
        return number


TIME_BITS = 64
"""Every time the contracts keep is a ``uint64`` of unix seconds."""


def _on_chain_time(text: str, seconds: int) -> int:
    """``seconds`` if the contracts can hold it; else a usage error naming what was given."""
    if seconds < 0:
        raise UsageError(f"time {text!r} is before 1970, which the chain cannot record")
    if seconds >= 2**TIME_BITS:
        raise UsageError(f"time {text!r} is beyond uint{TIME_BITS} seconds")
    return seconds


class TimeType(click.ParamType):
    """A point in time: ``now``, unix seconds, an ISO 8601 date or time (UTC unless it says
    otherwise), or ``+N`` with a unit s/m/h/d/w relative to now.

    Converted to a callable taking the chain's "now", because relative times must be relative
    to the chain's clock, not the local one. A time the contracts cannot hold (before 1970,
    beyond uint64) is refused here if it is absolute, and when it is resolved if it is
    relative.
    """

    name = "TIME"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if callable(value):
            return value
        text = str(value).strip()
        resolve = self._parse(text, param, ctx)
        try:
            _on_chain_time(text, resolve(0))  # an absolute time, or a relative one's offset
        except UsageError as exc:
            self.fail(str(exc), param, ctx)
        return lambda now: _on_chain_time(text, resolve(now))

    def _parse(
        self, text: str, param: click.Parameter | None, ctx: click.Context | None
    ) -> Callable[[int], int]:
        """``text`` as a function of the chain's now, not yet checked against uint64."""
        if len(text) > MAX_DIGITS:
            self.fail(f"{text[:20]!r}... is beyond uint{TIME_BITS} seconds", param, ctx)
        if text == "now":
            return lambda now: now
        if match := _RELATIVE.match(text):
            offset = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            return lambda now: now + offset
        if text.isdigit():
            seconds = int(text)
            return lambda now: seconds
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            self.fail(f"{text!r} is not now, unix seconds, ISO 8601 or +N[smhdw]", param, ctx)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        seconds = int(parsed.timestamp())
        return lambda now: seconds


class AccountType(click.ParamType):
    """An address, or the name of a keystore account (looked up later, with the config).

    Anything written as hex must be a whole address with a valid EIP-55 checksum if it has
    one: otherwise a truncated or mistyped address would fall through to the keystore lookup
    and fail with a confusing "unknown account".
    """

    name = "ADDRESS"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        text = str(value).strip()
        if _HEX.match(text):
            try:
                return address(text)
            except UsageError as exc:
                self.fail(str(exc), param, ctx)
        return text


ROLES = RolesType()
TIME = TimeType()
ACCOUNT = AccountType()
ID = UInt(256, low=1)
"""A job, proposal or dataset id: the contracts number each from 1, as uint256."""


account_option = click.option(
    "--account",
    "-a",
    "account",
    envvar="CONSORTIUM_ACCOUNT",
    required=True,
    help="Keystore account (name or address) that signs [env: CONSORTIUM_ACCOUNT].",
)
json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print JSON for machines instead of a table."
)


epochs_option = click.option(
    "--epochs",
    type=click.IntRange(1, 100),
    default=1,
    show_default=True,
    help="Local training epochs per round.",
)
