"""Gas used by every ledger operation, against the naive design of one transaction per update.

Why this benchmark exists: the ledger's claim is that a training round costs the same small
amount of gas however many participants it has, because the chain stores one commitment over
the Merkle root of all update records instead of the records themselves. The issue fixes two
numbers that make the claim checkable:

- anchoring a round costs at most 80,000 gas at 2, 10 and 100 participants;
- the obvious alternative, every participant sending its own update record in its own
  transaction (``NaiveUpdateLog.sol`` beside this file), costs over 2,000,000 gas per round at
  100 participants.

Both designs are measured in the same run on the same fresh chain, so the ratio between them
does not depend on the compiler version or fork rules. Every operation is performed once
through the project's own API (``consortium.ledger``) and its receipt's ``gasUsed`` reported.
The target applies to the anchors of rounds during which membership and consents did not
change; an anchor after such a change re-checks every participant and consent (the slow path)
and grows with the number of participants, which the table shows separately.

Model uses (``recordModelUse``: a scoring or a referral anchored by the job's consumer or
coordinator) are measured on the same jobs, on their fast path and after an epoch moved. A use
must name the job's head model, not any anchored round's: the table shows why, with the anchor
of a variant of the ledger, compiled and deployed in the same run, that indexes every round's
model so that a use could name any of them, against the committed anchor.

The script exits with status 1 when a target is missed. ``--chain`` must be a local development
node (anvil): the accounts are funded from its well-known prefunded key. Run it from the
repository root::

    .venv/bin/python scripts/bench/gas.py [--chain http://127.0.0.1:8545] [--json]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import click
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from outcome import Target, finish
from rich.console import Console
from rich.table import Table
from web3.types import TxReceipt

from consortium.chain.backend import EMBEDDED, connect
from consortium.chain.base import Chain
from consortium.chain.compile import (
    CONTRACTS_DIR,
    SETTINGS,
    build_artifacts,
    find_compiler,
    run_compiler,
    standard_input,
)
from consortium.chain.transact import Transactor
from consortium.errors import ConsortiumError
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment, Founder, deploy
from consortium.ledger.errors import revert_decoder
from consortium.ledger.jobs import REFERRAL, SCORE
from consortium.ledger.roles import Role

SIZES = (2, 10, 100)
ANCHOR_TARGET = 80_000
NAIVE_TARGET = 2_000_000
NAIVE_SOURCE = Path(__file__).with_name("NaiveUpdateLog.sol")
FUNDS = 10**18  # ample for every transaction one account sends here, even on anvil
DAY = 86_400
PURPOSE = "credit-scoring"
OTHER_PURPOSE = "fraud-detection"
THIRD_PURPOSE = "marketing"
REFERRAL_SUBJECTS = 250
# The per-round model index a use of any anchored round's model would need: a mapping beside
# the round commitments, set on every anchor.
_ROUNDS_MAPPING = (
    "    mapping(uint256 jobId => mapping(uint32 round => bytes32 commitment)) private _rounds;\n"
)
_MODEL_INDEX = (
    "    mapping(uint256 jobId => mapping(bytes32 model => bool)) private _anchoredModels;\n"
)
_ROUND_STORE = "        _rounds[jobId][round] = commitment;\n"
_MODEL_INDEX_STORE = "        _anchoredModels[jobId][modelDigest] = true;\n"
QUORUM_BPS = 5_000


class BenchmarkError(ConsortiumError):
    """The chain did not do what a measured step assumes, so its row would be mislabelled."""


@dataclass(frozen=True)
class Row:
    """One measured operation."""

    operation: str
    gas: int
    participants: int | None = None
    note: str = ""
    compared: bool = False  # a round anchor, set against the naive round of the same size
    targeted: bool = False  # held to ANCHOR_TARGET


@dataclass(frozen=True)
class Results:
    """Everything one run measured."""

    chain: str
    ledger: list[Row]
    naive: list[Row]
    naive_rounds: dict[int, int]  # participants -> total gas of one naive round
    seconds: float

    def naive_round(self, row: Row) -> int | None:
        """Gas of the naive round ``row`` is compared with, if it is compared."""
        return self.naive_rounds[row.participants] if row.compared and row.participants else None

    def ratio(self, row: Row) -> float | None:
        """How many times more gas the naive round of the same size costs than ``row``."""
        naive = self.naive_round(row)
        return None if naive is None else naive / row.gas

    def targets(self) -> list[Target]:
        worst = max(r.gas for r in self.ledger if r.targeted)
        naive = self.naive_rounds[max(SIZES)]
        sizes = ", ".join(str(n) for n in SIZES)
        return [
            Target(
                f"anchorRound <= {ANCHOR_TARGET:,} gas at {sizes} participants "
                "(first and steady-state rounds)",
                worst,
                worst <= ANCHOR_TARGET,
            ),
            Target(
                f"naive round > {NAIVE_TARGET:,} gas at {max(SIZES)} participants",
                naive,
                naive > NAIVE_TARGET,
            ),
        ]


def _gas(receipt: TxReceipt) -> int:
    return int(receipt["gasUsed"])


def _check(condition: bool, what: str) -> None:
    if not condition:
        raise BenchmarkError(f"benchmark assumption failed: {what}")


def _digest(label: str) -> bytes:
    """A deterministic non-zero 32-byte value standing for an artifact's digest."""
    return hashlib.sha256(label.encode()).digest()


def _funded(chain: Chain) -> LocalAccount:
    account: LocalAccount = Account.create()
    chain.fund(account.address, FUNDS)
    return account


def _last_receipt(chain: Chain, sender: LocalAccount) -> TxReceipt:
    """The receipt of ``sender``'s transaction in the latest block: the one it just sent.

    For the wrappers that return what a transaction created (an id) rather than its receipt;
    the embedded chain and an automining dev node mine every transaction in its own block.
    """
    block = chain.w3.eth.get_block("latest", full_transactions=True)
    sent = [tx for tx in block["transactions"] if tx["from"] == sender.address]  # type: ignore[index]
    _check(len(sent) == 1, f"the latest block holds the transaction {sender.address} just sent")
    return chain.w3.eth.get_transaction_receipt(sent[0]["hash"])  # type: ignore[index]


def _founders(accounts: Sequence[tuple[LocalAccount, str, Role]]) -> list[Founder]:
    return [Founder(to_checksum_address(a.address), name, roles) for a, name, roles in accounts]


def _deployment_gas(chain: Chain, deployment: Deployment) -> dict[str, int]:
    """Gas of the three contract creations of ``deployment``, by contract name.

    ``deploy`` returns addresses only, so the creation receipts are found in the blocks from the
    deployment's first block to the latest, by the address each transaction created.
    """
    names = {
        deployment.registry: "ConsortiumRegistry",
        deployment.consents: "ConsentRegistry",
        deployment.ledger: "TrainingLedger",
    }
    found: dict[str, int] = {}
    for number in range(deployment.block_number, chain.w3.eth.block_number + 1):
        for tx_hash in chain.w3.eth.get_block(number)["transactions"]:
            receipt = chain.w3.eth.get_transaction_receipt(tx_hash)  # type: ignore[arg-type]
            if receipt["contractAddress"] in names:
                found[names[receipt["contractAddress"]]] = _gas(receipt)
    _check(len(found) == len(names), "the three deployment transactions were found")
    return found


def measure_deployment_and_governance(chain: Chain) -> list[Row]:
    """Deploys a five-founder consortium and opens one proposal of each kind.

    With quorum 50 % of 5 members a proposal needs 3 approvals, so the proposer's own vote and
    a first approval leave it pending and a second approval executes it.
    """
    accounts = [_funded(chain) for _ in range(5)]
    roles = Role.PROVIDER | Role.CONSUMER
    deployment = deploy(
        chain,
        accounts[0],
        _founders([(a, f"Founder {i}", roles) for i, a in enumerate(accounts)]),
        quorum_bps=QUORUM_BPS,
        proposal_lifetime=DAY,
    )
    rows = [
        Row(f"deploy {name}", gas, note="5 founders" if name == "ConsortiumRegistry" else "")
        for name, gas in _deployment_gas(chain, deployment).items()
    ]
    first, second, third, fourth, fifth = (Ledger(chain, deployment, a).members for a in accounts)
    newcomer = Account.create().address

    added = first.propose_add(newcomer, "Newcomer", Role.PROVIDER)
    _check(not added.executed, "a new proposal needs more approvals")
    rows.append(Row("proposeAddMember", _gas(added.receipt), note="pending"))
    pending = second.approve(added.proposal_id)
    _check(not pending.executed, "the second approval of five members leaves it pending")
    rows.append(Row("approve", _gas(pending.receipt), note="quorum not reached"))
    executed = third.approve(added.proposal_id)
    _check(executed.executed, "the third approval executes it")
    rows.append(Row("approve", _gas(executed.receipt), note="executes (add)"))

    rows.append(
        Row(
            "proposeChangeRoles",
            _gas(first.propose_roles(accounts[1].address, Role.PROVIDER).receipt),
            note="pending",
        )
    )
    rows.append(
        Row("proposeChangeQuorum", _gas(first.propose_quorum(6_000).receipt), note="pending")
    )
    removal = first.propose_remove(newcomer)
    rows.append(Row("proposeRemoveMember", _gas(removal.receipt), note="pending"))
    # Six members now: 3 approvals fall short of the 4 needed until a member leaves.
    second.approve(removal.proposal_id)
    _check(not third.approve(removal.proposal_id).executed, "3 of 6 approvals are not enough")
    rows.append(Row("leave", _gas(fifth.leave())))
    rows.append(Row("execute", _gas(fourth.execute(removal.proposal_id)), note="remove"))
    return rows


@dataclass(frozen=True)
class JobConsortium:
    """A consortium whose founders include every participant any measured job needs."""

    deployment: Deployment
    coordinator: LocalAccount
    provider: LocalAccount
    consumer: LocalAccount
    participants: list[LocalAccount]

    def ledger(self, chain: Chain, account: LocalAccount) -> Ledger:
        return Ledger(chain, self.deployment, account)


def found_job_consortium(chain: Chain) -> JobConsortium:
    """Admits the 100 participants at deployment: no vote, one transaction, no funding."""
    coordinator, provider, consumer = (_funded(chain) for _ in range(3))
    participants: list[LocalAccount] = [Account.create() for _ in range(max(SIZES))]
    deployment = deploy(
        chain,
        coordinator,
        _founders(
            [
                (coordinator, "Research Institute", Role.COORDINATOR | Role.AUDITOR),
                (provider, "Logistics Platform", Role.PROVIDER),
                (consumer, "Bank A", Role.CONSUMER),
                *((p, f"Participant {i:03}", Role.PROVIDER) for i, p in enumerate(participants)),
            ]
        ),
        quorum_bps=QUORUM_BPS,
        proposal_lifetime=DAY,
    )
    return JobConsortium(deployment, coordinator, provider, consumer, participants)


def measure_consents(chain: Chain, consortium: JobConsortium) -> tuple[list[Row], int]:
    """Registers the jobs' dataset and grants its consents; returns the rows and its id.

    The consumer gets consent for the jobs' purpose directly and, relayed, for another purpose
    that :func:`measure_jobs` revokes to move the consent epoch.
    """
    provider, consumer = consortium.provider, consortium.consumer
    consents = consortium.ledger(chain, provider).consents
    dataset = consents.register("shipments", _digest("schema"), _digest("subjects v1"))
    rows = [Row("registerDataset", _gas(_last_receipt(chain, provider)))]
    consents.update_subjects(dataset, _digest("subjects v2"))
    rows.append(Row("updateSubjectsRoot", _gas(_last_receipt(chain, provider))))
    now = consortium.ledger(chain, provider).now()
    until = now + 365 * DAY
    granted = consents.grant(dataset, consumer.address, PURPOSE, now, until)
    rows.append(Row("grantConsent", _gas(granted)))
    grant = consents.sign_grant(
        provider, dataset, consumer.address, OTHER_PURPOSE, now, until, deadline=now + DAY
    )
    relayed = consortium.ledger(chain, consortium.coordinator).consents.relay_grant(grant)
    rows.append(Row("grantConsentBySig", _gas(relayed), note="relayed"))
    return rows, dataset


def _compile_naive() -> tuple[list[dict[str, Any]], str]:
    """ABI and creation bytecode of the baseline, compiled with the project's settings."""
    source_input = {
        "language": "Solidity",
        "sources": {NAIVE_SOURCE.name: {"content": NAIVE_SOURCE.read_text(encoding="utf-8")}},
        "settings": SETTINGS,
    }
    compiled = run_compiler(find_compiler(), source_input)["contracts"][NAIVE_SOURCE.name]
    naive = compiled["NaiveUpdateLog"]
    return naive["abi"], "0x" + naive["evm"]["bytecode"]["object"]


def measure_naive(chain: Chain, consortium: JobConsortium) -> tuple[list[Row], dict[int, int]]:
    """One round of updates at each size, every participant sending its own transaction.

    The baseline checks membership against the same registry as the ledger. Each size uses its
    own job id, so every record lands in fresh storage as in a real round.
    """
    decoder = revert_decoder()
    abi, bytecode = _compile_naive()
    deployer = Transactor(chain, consortium.coordinator, decoder)
    address, receipt = deployer.deploy(abi, bytecode, consortium.deployment.registry)
    rows = [Row("deploy NaiveUpdateLog", _gas(receipt))]
    log = chain.w3.eth.contract(address=address, abi=abi)
    for account in consortium.participants:
        chain.fund(account.address, FUNDS)
    totals: dict[int, int] = {}
    for job_id, size in enumerate(SIZES, start=1):
        gas = [
            _gas(
                Transactor(chain, account, decoder).send(
                    log.functions.submitUpdate(
                        job_id,
                        1,
                        _digest(f"update {job_id} {i}"),
                        _digest(f"model {job_id} 0"),
                        _digest(f"metrics {job_id} {i}"),
                        1_000 + i,
                    )
                )
            )
            for i, account in enumerate(consortium.participants[:size])
        ]
        totals[size] = sum(gas)
        rows.append(
            Row(
                f"submitUpdate x {size} (one round)",
                totals[size],
                participants=size,
                note=f"{totals[size] // size:,} per update",
            )
        )
    return rows, totals


def measure_jobs(
    chain: Chain, consortium: JobConsortium, dataset: int
) -> tuple[list[Row], dict[int, int]]:
    """A job per size, two anchors each, then a consent revocation and a third anchor each;
    returns the rows and the job ids by size.

    The revocation (of a consent no job uses) moves the consent epoch, which sends every job's
    next anchor through the full re-check of its participants and consents.
    """
    coordinating = consortium.ledger(chain, consortium.coordinator)
    jobs = coordinating.jobs
    rows: list[Row] = []
    job_ids: dict[int, int] = {}
    for size in SIZES:
        job_ids[size] = jobs.create(
            purpose=PURPOSE,
            model_spec_digest=_digest("spec"),
            initial_model_digest=_digest(f"model {size} 0"),
            consumer=consortium.consumer.address,
            participants=[p.address for p in consortium.participants[:size]],
            dataset_ids=[dataset],
        )
        receipt = _last_receipt(chain, consortium.coordinator)
        rows.append(Row("createJob", _gas(receipt), participants=size))

    def anchor(size: int, round_number: int, note: str, revalidates: bool) -> None:
        _, receipt = jobs.anchor(
            job_ids[size],
            round_number,
            _digest(f"root {size} {round_number}"),
            (1 << size) - 1,  # every participant
            _digest(f"model {size} {round_number}"),
            _digest(f"metrics {size} {round_number}"),
        )
        revalidated = bool(coordinating.events(coordinating.training, "JobRevalidated", receipt))
        _check(revalidated == revalidates, f"round {round_number} at {size}: {note}")
        row = Row("anchorRound", _gas(receipt), size, note, compared=True, targeted=not revalidates)
        rows.append(row)

    for size in SIZES:
        anchor(size, 1, "first round", revalidates=False)
    for size in SIZES:
        anchor(size, 2, "steady state", revalidates=False)
    consents = consortium.ledger(chain, consortium.provider).consents
    revoked = consents.revoke(dataset, consortium.consumer.address, OTHER_PURPOSE)
    rows.append(Row("revokeConsent", _gas(revoked), note="moves consent epoch"))
    for size in SIZES:
        anchor(size, 3, "slow path: epoch moved", revalidates=True)
    rows.append(Row("closeJob", _gas(jobs.close(job_ids[max(SIZES)]))))
    return rows, job_ids


def measure_model_uses(
    chain: Chain, consortium: JobConsortium, dataset: int, job_ids: dict[int, int]
) -> list[Row]:
    """A scoring on each job's final model (round 3; the largest job is closed), a referral,
    then a consent granted and revoked to move the epoch and a scoring on each job again.

    A use runs the job's full re-check when an epoch moved, as an anchor does.
    """
    using = consortium.ledger(chain, consortium.consumer)
    rows: list[Row] = []

    def record(size: int, kind: str, subjects: int, note: str, revalidates: bool) -> None:
        using.jobs.record_model_use(
            job_ids[size],
            _digest(f"model {size} 3"),
            kind,
            _digest(f"query {size} {kind} {len(rows)}"),
            _digest(f"result {size} {kind} {len(rows)}"),
            subjects,
        )
        receipt = _last_receipt(chain, consortium.consumer)
        revalidated = bool(using.events(using.training, "JobRevalidated", receipt))
        _check(revalidated == revalidates, f"model use at {size}: {note}")
        rows.append(Row("recordModelUse", _gas(receipt), size, note))

    for size in SIZES:
        record(size, SCORE, 1, "score, first use", revalidates=False)
    record(max(SIZES), REFERRAL, REFERRAL_SUBJECTS, "referral, steady state", revalidates=False)
    consents = consortium.ledger(chain, consortium.provider).consents
    now = using.now()
    consents.grant(dataset, consortium.consumer.address, THIRD_PURPOSE, now, now + DAY)
    consents.revoke(dataset, consortium.consumer.address, THIRD_PURPOSE)
    for size in SIZES:
        record(size, SCORE, 1, "slow path: epoch moved", revalidates=True)
    return rows


def _model_index_ledger() -> tuple[list[dict[str, Any]], str]:
    """ABI and creation bytecode of TrainingLedger with a per-round model index added."""
    source_input = standard_input(CONTRACTS_DIR)
    source = source_input["sources"]["TrainingLedger.sol"]
    text: str = source["content"]
    _check(
        text.count(_ROUNDS_MAPPING) == 1 and text.count(_ROUND_STORE) == 1,
        "TrainingLedger.sol declares and sets _rounds as the model-index variant expects",
    )
    source["content"] = text.replace(_ROUNDS_MAPPING, _ROUNDS_MAPPING + _MODEL_INDEX).replace(
        _ROUND_STORE, _ROUND_STORE + _MODEL_INDEX_STORE
    )
    artifact = build_artifacts(run_compiler(find_compiler(), source_input))["TrainingLedger"]
    return artifact["abi"], artifact["bytecode"]


def measure_model_index(chain: Chain, consortium: JobConsortium, dataset: int) -> int:
    """Gas of a steady-state anchor (round 2, smallest job) on the model-index variant,
    deployed beside the consortium's registries and driven through the same API."""
    abi, bytecode = _model_index_ledger()
    deployment = consortium.deployment
    address, _ = Transactor(chain, consortium.coordinator, revert_decoder()).deploy(
        abi, bytecode, deployment.registry, deployment.consents
    )
    variant = Ledger(chain, dataclasses.replace(deployment, ledger=address), consortium.coordinator)
    size = min(SIZES)
    job = variant.jobs.create(
        purpose=PURPOSE,
        model_spec_digest=_digest("spec"),
        initial_model_digest=_digest("index model 0"),
        consumer=consortium.consumer.address,
        participants=[p.address for p in consortium.participants[:size]],
        dataset_ids=[dataset],
    )
    receipts = [
        variant.jobs.anchor(
            job,
            r,
            _digest(f"index root {r}"),
            (1 << size) - 1,  # every participant
            _digest(f"index model {r}"),
            _digest(f"index metrics {r}"),
        )[1]
        for r in (1, 2)
    ]
    return _gas(receipts[-1])


def run(chain: Chain) -> Results:
    start = time.perf_counter()
    governance = measure_deployment_and_governance(chain)
    consortium = found_job_consortium(chain)
    consent_rows, dataset = measure_consents(chain, consortium)
    naive_rows, naive_rounds = measure_naive(chain, consortium)
    job_rows, job_ids = measure_jobs(chain, consortium, dataset)
    use_rows = measure_model_uses(chain, consortium, dataset, job_ids)
    (steady,) = (
        r.gas
        for r in job_rows
        if r.operation == "anchorRound"
        and r.participants == min(SIZES)
        and r.note == "steady state"
    )
    indexed = measure_model_index(chain, consortium, dataset)
    index_row = Row(
        "anchorRound + model index",
        indexed,
        min(SIZES),
        f"steady state, {indexed - steady:+,} per round",
    )
    return Results(
        chain=chain.description,
        ledger=governance + consent_rows + job_rows + use_rows + [index_row],
        naive=naive_rows,
        naive_rounds=naive_rounds,
        seconds=time.perf_counter() - start,
    )


def _cell(value: int | float | None, suffix: str = "") -> str:
    if value is None:
        return "-"
    return f"{value:,.1f}{suffix}" if isinstance(value, float) else f"{value:,}{suffix}"


def _table(title: str, *comparisons: str) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column("operation", no_wrap=True)
    for column in ("participants", "gas", *comparisons):
        table.add_column(column, justify="right", no_wrap=True)
    table.add_column("note", no_wrap=True)
    return table


def print_table(results: Results) -> None:
    console = Console()
    if not console.is_terminal:  # piped or under make: rich would assume 80 columns
        console = Console(width=120)
    ledger = _table(f"Ledger operations on {results.chain}", "naive round", "naive / this")
    for row in results.ledger:
        ledger.add_row(
            row.operation,
            _cell(row.participants),
            _cell(row.gas),
            _cell(results.naive_round(row)),
            _cell(results.ratio(row), "x"),
            row.note,
        )
    naive = _table("Baseline: NaiveUpdateLog, one transaction per model update")
    for row in results.naive:
        naive.add_row(row.operation, _cell(row.participants), _cell(row.gas), row.note)
    console.print(ledger, naive)
    for target in results.targets():
        console.print(target.verdict_line())
    console.print(f"measured in {results.seconds:.1f} s")


def print_json(results: Results) -> None:
    def row_json(section: str, row: Row) -> dict[str, Any]:
        return {"section": section, **asdict(row), "ratio": results.ratio(row)}

    document = {
        "chain": results.chain,
        "seconds": round(results.seconds, 1),
        "rows": [row_json("ledger", r) for r in results.ledger]
        + [row_json("naive", r) for r in results.naive],
        "targets": [asdict(t) for t in results.targets()],
    }
    click.echo(json.dumps(document, indent=2))


@click.command()
@click.option(
    "--chain",
    "chain_url",
    default=EMBEDDED,
    show_default=True,
    help="'embedded' (in-process) or the JSON-RPC URL of a local dev node such as anvil.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the rows and targets as JSON.")
def main(chain_url: str, as_json: bool) -> None:
    """Print the gas of every ledger operation and check the issue's two targets."""
    finish(lambda: measure_on(chain_url), as_json, print_json, print_table)


def measure_on(chain_url: str) -> Results:
    chain = connect(chain_url)
    try:
        return run(chain)
    finally:
        chain.close()


if __name__ == "__main__":
    main()
