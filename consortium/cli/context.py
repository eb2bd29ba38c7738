"""The object the root command puts in ``ctx.obj`` for every subcommand."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import click
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress

from consortium.chain.backend import connect
from consortium.chain.base import Chain
from consortium.cli.passwords import resolve_password
from consortium.config import Config, load_config
from consortium.crypto.keystore import Keystore
from consortium.errors import UsageError
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment
from consortium.ledger.values import address


@dataclass
class CliContext:
    """Global options, and what is derived from them on first use.

    The configuration is loaded lazily so that ``--help`` and commands that need no
    configuration still work when the configuration file is broken.
    """

    config_path: Path | None = None

    @cached_property
    def config(self) -> Config:
        return load_config(self.config_path)

    @cached_property
    def _chain(self) -> Chain:
        network = self.config.network
        if self.config.is_embedded:
            raise UsageError(
                "network.url is 'embedded', a chain that lives inside one process only; "
                "point it at a node (see `consortium chain start`) for commands that build "
                "on each other"
            )
        return connect(
            network.url,
            chain_id=network.chain_id or None,
            poll_latency=network.poll_latency,
            confirmations=network.confirmations,
        )

    def chain(self) -> Chain:
        """The configured chain endpoint, connected on first use."""
        return self._chain

    def deployment(self) -> Deployment:
        return Deployment.load(self.config.deployment_file)

    def signer(self, account: str) -> LocalAccount:
        """The unlocked key of keystore ``account``, refused if it is a public dev key here."""
        keystore = self.keystore()
        keystore.get(account)  # an unknown account fails before the password prompt
        password = resolve_password(os.environ, confirm=False)
        return keystore.signer(account, password, self.chain().chain_id)

    def ledger(self, account: str | None = None) -> Ledger:
        """The deployed consortium, acting as ``account`` or read-only without one."""
        deployment = self.deployment()  # a missing deployment is named before any connection
        signer = self.signer(account) if account else None
        return Ledger(self.chain(), deployment, signer, source=str(self.config.deployment_file))

    def keystore(self) -> Keystore:
        return Keystore(self.config.keystore_dir, self.config.keys.scrypt_n)

    def resolve_address(self, name_or_address: str) -> ChecksumAddress:
        """An address as given, or the address of a keystore account of that name.

        Other parties' addresses are not in the local keystore, so an address is accepted
        without a lookup.
        """
        if name_or_address.startswith("0x"):
            return address(name_or_address)
        return self.keystore().get(name_or_address).address


# Finds the CliContext in the context chain; ``ensure`` lets a group run without the root.
pass_context = click.make_pass_decorator(CliContext, ensure=True)
