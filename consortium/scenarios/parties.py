"""A simulated party: its key and its own directory (store, journal), under a run's output
directory. Every scenario's parties are made here, so each keeps its key and data the same way,
and every scenario grows its consortium by the same votes (:func:`vote_in`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from consortium.chain.base import Chain
from consortium.crypto.keystore import MAX_KEYSTORE_BYTES
from consortium.files import write_text_atomically
from consortium.jsonio import read_json_file
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment, Founder, deploy
from consortium.ledger.roles import Role
from consortium.scenarios.keys import simulation_key
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal, JournalReader

# Simulation keys derive from the seed (anyone can recompute them) and serve on local development
# chains only; the password only keeps the keystore format.
SIMULATION_PASSWORD = "consortium-simulation"
SIMULATION_SCRYPT_N = 2**10
PRIVATE_DIRECTORY, PRIVATE_FILE = 0o700, 0o600  # a party's directory and its key file
PARTY_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
"""Party names become directory names under the output directory; nothing else is one."""


@dataclass
class Party:
    """A party's key and its own directory (store, journal)."""

    name: str
    account: LocalAccount
    directory: Path

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.directory / "store")

    def journal(self) -> Journal:
        """The party's journal, opened as its one writer."""
        return Journal(self.directory / "journal.jsonl")

    def journal_reader(self) -> JournalReader:
        """The party's journal, read without taking the writer's place (for export)."""
        return JournalReader(self.directory / "journal.jsonl")

    @classmethod
    def create(cls, name: str, out: Path, *, seed: int) -> Party:
        """The party ``name`` with the key already in its directory (one kept by a set-up that
        was interrupted, or put there to run a scenario with other keys: the global model
        depends on them through the aggregation order), or else with its simulation key,
        derived from ``seed`` and ``name`` (:func:`~consortium.scenarios.keys.simulation_key`).

        A simulation key is predictable by anyone who knows the seed: it serves on local
        development chains only, which :func:`set_up` and :func:`load` insist on."""
        directory = out / "parties" / name
        if (directory / "key.json").exists():
            return cls.load(name, out)
        # The key is only encrypted with a well-known password: the file keeps it from other
        # users of this machine, though whoever knows the seed can derive it anyway.
        directory.mkdir(mode=PRIVATE_DIRECTORY, parents=True, exist_ok=True)
        directory.chmod(PRIVATE_DIRECTORY)  # also one an interrupted set-up left, and umask
        account = simulation_key(seed, name)
        keystore = Account.encrypt(
            account.key, SIMULATION_PASSWORD, kdf="scrypt", iterations=SIMULATION_SCRYPT_N
        )
        write_text_atomically(directory / "key.json", json.dumps(keystore), mode=PRIVATE_FILE)
        return cls(name, account, directory)

    @classmethod
    def load(cls, name: str, out: Path) -> Party:
        directory = out / "parties" / name
        keystore = read_json_file(
            directory / "key.json", what="party key file", max_bytes=MAX_KEYSTORE_BYTES
        )
        return cls(
            name, Account.from_key(Account.decrypt(keystore, SIMULATION_PASSWORD)), directory
        )


FUNDS = 10**20
"""What each party of a simulation is given on the local development chain."""


def found(
    chain: Chain,
    parties: Sequence[Party],
    institute: Party,
    bank: Party,
    report: Callable[[str], None],
) -> Deployment:
    """Funds ``parties`` and deploys the contracts, founded by the research ``institute``
    (coordinator and auditor) and ``bank`` (provider and consumer), with a quorum of half the
    members and a week for proposals: how every scenario's consortium starts."""
    for party in parties:
        chain.fund(party.account.address, FUNDS)
    report("deploying the contracts")
    return deploy(
        chain,
        institute.account,
        [
            Founder(
                institute.account.address, "Research Institute", Role.COORDINATOR | Role.AUDITOR
            ),
            Founder(bank.account.address, bank.name, Role.PROVIDER | Role.CONSUMER),
        ],
        quorum_bps=5000,
        proposal_lifetime=7 * 86_400,
    )


def vote_in(
    ledgers: Mapping[str, Ledger],
    founders: Sequence[Party],
    newcomers: Sequence[tuple[Party, Role]],
    report: Callable[[str], None],
) -> None:
    """Admits each newcomer, in order, with its roles by the members' votes: the first founder
    proposes, the other members approve until the proposal executes, and each newcomer votes
    on the proposals after its own. ``ledgers`` holds each party's ledger by party name."""
    members = list(founders)
    for newcomer, roles in newcomers:
        report(f"voting {newcomer.name} in")
        outcome = ledgers[members[0].name].members.propose_add(
            newcomer.account.address, newcomer.name, roles
        )
        for voter in members[1:]:
            if outcome.executed:
                break
            outcome = ledgers[voter.name].members.approve(outcome.proposal_id)
        members.append(newcomer)
