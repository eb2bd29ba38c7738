"""One connection to a deployed consortium, as one member (or as a read-only observer)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import Any

from eth_account.signers.local import LocalAccount
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import BlockIdentifier, EventData, TxReceipt

from consortium.chain.artifacts import load_artifact
from consortium.chain.base import Chain
from consortium.chain.transact import Transactor
from consortium.crypto.devkeys import refuse_dev_key
from consortium.errors import UsageError
from consortium.ledger.consents import Consents
from consortium.ledger.deployment import Deployment
from consortium.ledger.errors import revert_decoder
from consortium.ledger.jobs import Jobs
from consortium.ledger.members import Members


class Ledger:
    """The three contracts of one deployment, bound to a chain and optionally a signer.

    Reads work without a signer; every write needs one and is signed locally. The well-known
    development keys are refused on any chain that is not a local one.
    """

    def __init__(
        self,
        chain: Chain,
        deployment: Deployment,
        signer: LocalAccount | None = None,
        *,
        source: str = "the deployment",
    ) -> None:
        """``source`` names where ``deployment`` was read, for the errors that refuse it."""
        if chain.chain_id != deployment.chain_id:
            raise UsageError(
                f"{source} is on chain {deployment.chain_id}, "
                f"but the endpoint is chain {chain.chain_id}"
            )
        if signer is not None:
            refuse_dev_key(signer.address, chain.chain_id)
        deployment.require_code(chain, source)
        self.chain = chain
        self.deployment = deployment
        self.signer = signer
        self._transactor = Transactor(chain, signer, revert_decoder()) if signer else None
        self.registry = self._contract("ConsortiumRegistry", deployment.registry)
        self.consent_registry = self._contract("ConsentRegistry", deployment.consents)
        self.training = self._contract("TrainingLedger", deployment.ledger)

    def _contract(self, name: str, address: str) -> Contract:
        return self.chain.w3.eth.contract(address=address, abi=load_artifact(name).abi)

    def as_signer(self, signer: LocalAccount) -> Ledger:
        """The same deployment on the same chain, acting as ``signer``."""
        return Ledger(self.chain, self.deployment, signer)

    @property
    def address(self) -> str:
        """The signer's address."""
        if self.signer is None:
            raise UsageError("this action needs an account: pass --account")
        return self.signer.address

    @property
    def transactor(self) -> Transactor:
        """The signer's transactor, for callers that sign, journal and broadcast in steps."""
        if self._transactor is None:
            raise UsageError("this action needs an account: pass --account")
        return self._transactor

    def send(self, fn: ContractFunction) -> TxReceipt:
        """Sends ``fn`` as a transaction signed by the signer; reverts raise ChainRevert."""
        return self.transactor.send(fn)

    def call(self, fn: ContractFunction, block: BlockIdentifier = "latest") -> Any:
        """Calls a view function (as the signer, if any: saves the node a sender lookup);
        reverts raise ChainRevert."""
        sender = self.signer.address if self.signer else None
        return Transactor.call_view(fn, revert_decoder(), block_identifier=block, sender=sender)

    @staticmethod
    def events(contract: Contract, event: str, receipt: TxReceipt) -> Sequence[EventData]:
        """The ``event`` logs that ``contract`` emitted in ``receipt``."""
        return contract.events[event]().process_receipt(receipt, errors=DISCARD)

    def now(self) -> int:
        """The latest block's timestamp: the chain's idea of now."""
        return int(self.chain.w3.eth.get_block("latest")["timestamp"])

    @cached_property
    def members(self) -> Members:
        return Members(self)

    @cached_property
    def consents(self) -> Consents:
        return Consents(self)

    @cached_property
    def jobs(self) -> Jobs:
        return Jobs(self)
