"""The project's exception hierarchy.

Every error a user can cause derives from :class:`ConsortiumError` and carries a one-line
message and the process exit code the CLI uses for it, so that the CLI can turn any of them
into a clean message without a traceback.
"""

from __future__ import annotations


class ConsortiumError(Exception):
    """Base of every error the project raises on purpose."""

    exit_code = 1


class UsageError(ConsortiumError):
    """The user's input, configuration or files are wrong; nothing was sent to the chain."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration field is missing or invalid; the message names the field."""


class KeystoreError(UsageError):
    """A key file cannot be created, read or decrypted."""


class ChainUnavailable(ConsortiumError):
    """The chain endpoint cannot be reached or behaves unexpectedly."""


class ChainRevert(ConsortiumError):
    """The chain refused a call or transaction; carries the decoded custom error.

    ``name`` is the Solidity custom error's name (or ``Error``/``Panic`` for the built-in
    ones), ``args`` its decoded arguments by parameter name.
    """

    def __init__(self, name: str, args: dict[str, object], message: str) -> None:
        super().__init__(message)
        self.name = name
        self.args_by_name = args


class TransactionFailed(ConsortiumError):
    """A transaction was mined with status 0 and no decodable reason."""


class TransactionRejected(ConsortiumError):
    """The node refused to accept a transaction (insufficient funds, nonce or fee too low)."""
