"""Deploying the three contracts and remembering where they are.

The deployment file is the one place that says which addresses on which chain are "the ledger".
It is written once, atomically, and never overwritten by a deployment to the same chain: a second
`deploy` would silently fork the consortium's history.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from eth_utils import is_address, to_checksum_address

from consortium.chain.artifacts import load_artifact
from consortium.chain.base import Chain
from consortium.chain.transact import Transactor
from consortium.errors import UsageError
from consortium.files import write_text_atomically
from consortium.jsonio import NoSuchFile, read_json_file
from consortium.ledger.errors import revert_decoder
from consortium.ledger.roles import Role

DEPLOYMENT_FORMAT = 1
DEPLOY_AGAIN = "move the file away and re-run `consortium deploy`"
MAX_DEPLOYMENT_BYTES = 2**20
"""The largest deployment file read; one holds four addresses and two numbers."""


@dataclass(frozen=True)
class Founder:
    """A founding member, admitted at deployment without a vote."""

    address: ChecksumAddress
    name: str
    roles: Role


@dataclass(frozen=True)
class Deployment:
    """Where the consortium's contracts live."""

    chain_id: int
    registry: ChecksumAddress
    consents: ChecksumAddress
    ledger: ChecksumAddress
    block_number: int
    deployer: ChecksumAddress

    def to_json(self) -> dict[str, object]:
        return {"format": DEPLOYMENT_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, data: object, *, source: str) -> Deployment:
        """Parses and validates a deployment record; ``source`` names it in errors."""
        if not isinstance(data, dict) or data.get("format") != DEPLOYMENT_FORMAT:
            raise UsageError(f"{source}: not a deployment file of format {DEPLOYMENT_FORMAT}")
        try:
            addresses = {
                key: _address(data[key], f"{source}: {key}")
                for key in ("registry", "consents", "ledger", "deployer")
            }
            chain_id, block_number = data["chain_id"], data["block_number"]
        except KeyError as exc:
            raise UsageError(f"{source}: missing field {exc.args[0]}") from None
        if not isinstance(chain_id, int) or not isinstance(block_number, int):
            raise UsageError(f"{source}: chain_id and block_number must be integers")
        return cls(chain_id=chain_id, block_number=block_number, **addresses)

    @classmethod
    def load(cls, path: Path) -> Deployment:
        """Reads the deployment file at ``path``."""
        try:
            data = read_json_file(path, what="deployment file", max_bytes=MAX_DEPLOYMENT_BYTES)
        except NoSuchFile:
            raise UsageError(f"no deployment at {path}: run `consortium deploy` first") from None
        return cls.from_json(data, source=str(path))

    def require_code(self, chain: Chain, source: str, remedy: str = DEPLOY_AGAIN) -> None:
        """Refuses a deployment whose contracts are not on ``chain``; ``source`` names where
        the deployment was read, ``remedy`` what to do about it.

        After a development chain is reset (its state file deleted) the deployment file still
        names the old addresses, now empty: calls to them return nothing and transactions to
        them succeed without doing anything, so the error would surface far from its cause.
        One ``eth_getCode`` per contract and connection catches it where the ledger is opened.
        """
        empty = [a for a in self.contracts() if not chain.has_code(a)]
        if empty:
            raise UsageError(
                f"{source} names contracts with no code on chain {self.chain_id} at "
                f"{', '.join(empty)}: the chain was reset? {remedy}"
            )

    def contracts(self) -> tuple[ChecksumAddress, ...]:
        """The addresses of the registry, the consent registry and the training ledger."""
        return (self.registry, self.consents, self.ledger)

    def save(self, path: Path) -> None:
        """Writes the file atomically; refuses to replace another deployment on the same chain."""
        if path.exists():
            existing = Deployment.load(path)
            if existing == self:
                return
            if existing.chain_id == self.chain_id:
                raise UsageError(
                    f"{path} already records a deployment on chain {self.chain_id} "
                    f"(ledger {existing.ledger}); move it away to deploy anew"
                )
        write_text_atomically(path, json.dumps(self.to_json(), indent=2) + "\n")


def _address(value: object, what: str) -> ChecksumAddress:
    if not isinstance(value, str) or not is_address(value):
        raise UsageError(f"{what} is not an address: {value!r}")
    return to_checksum_address(value)


def deploy(
    chain: Chain,
    deployer: LocalAccount,
    founders: list[Founder],
    *,
    quorum_bps: int,
    proposal_lifetime: int,
) -> Deployment:
    """Deploys the registry, the consent registry and the training ledger, in that order."""
    if not founders:
        raise UsageError("a consortium needs at least one founding member")
    transactor = Transactor(chain, deployer, revert_decoder())
    registry_artifact = load_artifact("ConsortiumRegistry")
    registry, receipt = transactor.deploy(
        registry_artifact.abi,
        registry_artifact.bytecode,
        [f.address for f in founders],
        [f.name for f in founders],
        [int(f.roles) for f in founders],
        quorum_bps,
        proposal_lifetime,
    )
    consents_artifact = load_artifact("ConsentRegistry")
    consents, _ = transactor.deploy(consents_artifact.abi, consents_artifact.bytecode, registry)
    ledger_artifact = load_artifact("TrainingLedger")
    ledger, _ = transactor.deploy(ledger_artifact.abi, ledger_artifact.bytecode, registry, consents)
    return Deployment(
        chain_id=chain.chain_id,
        registry=registry,
        consents=consents,
        ledger=ledger,
        block_number=receipt["blockNumber"],
        deployer=deployer.address,
    )
