"""Command-line value types shared by several groups."""

from __future__ import annotations

import re
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


class TimeType(click.ParamType):
    """A point in time: ``now``, unix seconds, an ISO 8601 date or time (UTC unless it says
    otherwise), or ``+N`` with a unit s/m/h/d/w relative to now.

    Converted to a callable taking the chain's "now", because relative times must be relative
    to the chain's clock, not the local one.
    """

    name = "TIME"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None):
        if callable(value):
            return value
        text = str(value).strip()
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
