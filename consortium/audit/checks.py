"""The auditor's checks, one small named function each (after sigstore-python's verifier).

Every function compares what the bundle claims with what the chain holds or what recomputation
gives, and returns :class:`~consortium.audit.results.CheckResult` values whose messages name
the job, the round and the participant. The functions do not decide what runs when, and hold
nothing between calls; :mod:`consortium.audit.verifier` feeds them one round at a time, so
each can also be called on its own (the tamper tests do) and an auditor can read any of them
without the rest. They are the checks of every job; the checks particular to the job's round
protocol live with the protocol, and the verifier dispatches to them
(:mod:`consortium.audit.protocols`).

Check names, in the order an audit reports them (the checks of the job's protocol, FedAvg's in
:mod:`consortium.protocol.fedavg.audit`, come in each round after ``lineage``):

========================  ==================================================================
``chain``                 the endpoint is the chain the bundle says the job ran on
``deployment``            the manifest's addresses are the trusted ledger's (and the pinned one)
``deployer``              the manifest's deployer created the registry in the deployment block
``code``                  the runtime code at each address is the committed artifact's
``job``                   the manifest's job is ``getJob`` on chain
``objects``               every object the job or a round names is present and hashes to its name
``protocol``              the manifest's protocol is the one the job's model spec names
``consented-subjects``    given its data parties' disclosures, every business a hetero-lr/1 job
                          trained on is in both consent trees (:mod:`consortium.audit.consented`)
``manifest``              a round entry is well formed and agrees with its own anchor; the
                          rounds file holds as many entries as the manifest announces
``sequence``              rounds run 1, 2, 3, ... in the bundle
``anchored``              the round's anchor is the commitment the chain stores
``transaction``           the anchoring transaction, its block and its event agree with the anchor
``record``                a record parses and is for this job, round and a job participant
``signature``             a record's EIP-712 signature recovers its participant in the job's domain
``leaf-order``            leaves are in participant address order, each once, indices in place
``merkle-root``           the RFC 6962 root and count over the records are the anchor's
``inclusion-proof``       each record's inclusion proof leads to the anchored root
``lineage``               the anchor's previous model is the previous round's model
``membership``            at the anchoring block, every party was an active member in its role
``consent``               at the anchoring block, every dataset's consent was valid
``events``                the registries' events up to the anchoring block imply the state read
``complete``              every round anchored on chain is in the bundle
``head-model``            the job's head model on chain is the bundle's last model
``model-uses``            each recorded use of the job's model (if any) names a model the job
                          anchored, by the job's consumer or coordinator
========================  ==================================================================
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from eth_typing import ChecksumAddress

from consortium.audit.bundle import ROUNDS, ManifestJob, RecordEntry, RoundEntry
from consortium.audit.chainview import ChainView
from consortium.audit.evidence import Evidence
from consortium.audit.protocols import PROTOCOLS
from consortium.audit.replay import ConsentTerms, ImpliedState
from consortium.audit.results import CheckResult, Scope
from consortium.audit.standing import Standing
from consortium.chain.artifacts import Artifact
from consortium.crypto.eip712 import Domain
from consortium.crypto.merkle import MerkleTree, verify_inclusion
from consortium.crypto.update_record import SignedUpdateRecord
from consortium.errors import ChainRevert, ConsortiumError, UsageError
from consortium.ledger.consents import Consent
from consortium.ledger.deployment import Deployment
from consortium.ledger.jobs import Job, ModelUse, RoundAnchor
from consortium.ledger.members import MemberState
from consortium.ledger.roles import Role
from consortium.protocol.spec import IMPLIED_PROTOCOL, spec_protocol

COMMON_CHECK_NAMES = (
    "chain", "deployment", "deployer", "code", "job", "objects", "protocol", "manifest",
    "sequence", "anchored", "transaction", "record", "signature", "leaf-order", "merkle-root",
    "inclusion-proof", "lineage", "membership", "consent", "events", "complete", "head-model",
)  # fmt: skip
"""The checks of every job, whatever its protocol, in the order an audit reports them; the
protocol's own checks of a round come after ``lineage``."""
MODEL_USES = "model-uses"
"""The check of a job whose model was used (``recordModelUse``): only such jobs report it."""
CONSENTED_SUBJECTS = "consented-subjects"
"""The check of a hetero-lr/1 job audited with its data parties' subject disclosures."""
DISCLOSED_WEIGHTS = "disclosed-weights"
"""The check of a hetero-lr/1 job audited with a data party's disclosure of a round's weights."""
_SET_UP = COMMON_CHECK_NAMES.index("protocol") + 1
_SPLIT = COMMON_CHECK_NAMES.index("lineage") + 1
CHECK_NAMES = tuple(
    dict.fromkeys(
        [
            *COMMON_CHECK_NAMES[:_SET_UP],
            CONSENTED_SUBJECTS,
            *COMMON_CHECK_NAMES[_SET_UP:_SPLIT],
            *(name for audit in PROTOCOLS.values() for name in audit.check_names),
            *COMMON_CHECK_NAMES[_SPLIT:],
            MODEL_USES,
            DISCLOSED_WEIGHTS,
        ]
    )
)
"""Every check an audit can report, whatever the protocol, in the order it reports them."""


def _short(digest: bytes | None) -> str:
    return "none" if digest is None else digest.hex()


def _padded(address: str) -> bytes:
    """An address as the 32-byte word an immutable reference holds."""
    return bytes.fromhex(address.removeprefix("0x")).rjust(32, b"\x00")


# ------------------------------------------------------------------------------ job facts


@dataclass(frozen=True)
class JobFacts:
    """What the rounds are checked against: the job as the chain has it.

    When the chain has no such job (a wrong ledger), the manifest's values stand in so that
    the rounds can still be reported on; the failed ``job`` check already sinks the verdict.
    """

    id: int
    purpose: str
    coordinator: ChecksumAddress
    consumer: ChecksumAddress
    participants: tuple[ChecksumAddress, ...]
    datasets: tuple[int, ...]
    initial_model: bytes
    head_model: bytes | None
    last_round: int | None
    last_anchor_block: int | None
    domain: Domain

    @classmethod
    def of(cls, manifest: ManifestJob, chain_job: Job | None, domain: Domain) -> JobFacts:
        if chain_job is None:
            return cls(
                manifest.id, manifest.purpose, manifest.coordinator, manifest.consumer,
                manifest.participants, manifest.datasets, manifest.initial_model, None, None,
                None, domain,
            )  # fmt: skip
        return cls(
            chain_job.id, chain_job.purpose, chain_job.coordinator, chain_job.consumer,
            chain_job.participants, chain_job.dataset_ids, chain_job.initial_model_digest,
            chain_job.head_model_digest, chain_job.last_round, chain_job.last_anchor_block,
            domain,
        )  # fmt: skip


def check_objects(scope: Scope, evidence: Evidence, what: str) -> Iterator[CheckResult]:
    """Every object read for ``what`` was present and hashed to its name."""
    if not evidence.problems:
        yield scope.passed(
            "objects", f"all {evidence.count} objects of {what} are present and intact"
        )
        return
    for problem_scope, text in evidence.problems:
        yield problem_scope.failed("objects", text)


# ------------------------------------------------------------------------------ job level


def check_chain(scope: Scope, bundle_chain_id: int, chain_id: int) -> CheckResult:
    """The endpoint serves the chain the bundle says the job ran on."""
    return scope.outcome(
        "chain",
        bundle_chain_id == chain_id,
        f"the endpoint is chain {chain_id}, the job's chain",
        f"the bundle is for chain {bundle_chain_id}, but the endpoint is chain {chain_id}",
    )


def check_deployment(
    scope: Scope, bundle_chain_id: int, manifest: Deployment, pinned: str | None, view: ChainView
) -> CheckResult:
    """The manifest names the trusted ledger, and the registries that ledger is bound to."""
    problems = []
    if manifest.chain_id != bundle_chain_id:
        problems.append(
            f"the deployment is on chain {manifest.chain_id}, the bundle says {bundle_chain_id}"
        )
    if pinned is not None and manifest.ledger != pinned:
        problems.append(f"the manifest names ledger {manifest.ledger}, the auditor trusts {pinned}")
    if not view.linked:
        problems.append(
            f"ledger {view.ledger_address} does not answer registry()/consents() "
            f"({view.link_error}): no TrainingLedger there"
        )
    else:
        for role, claimed, actual in (
            ("registry", manifest.registry, view.deployment.registry),
            ("consent registry", manifest.consents, view.deployment.consents),
        ):
            if claimed != actual:
                problems.append(
                    f"the manifest names {role} {claimed}, ledger {view.ledger_address} is "
                    f"bound to {actual}"
                )
    if problems:
        return scope.failed("deployment", "; ".join(problems))
    trust = (
        "the auditor pins it"
        if pinned is not None
        else "unchecked: no ledger is pinned, so that it is the consortium's own ledger rests "
        "on the manifest (pin it with --ledger)"
    )
    return scope.passed(
        "deployment",
        f"ledger {view.ledger_address} on chain {view.chain.chain_id} is bound to registry "
        f"{view.deployment.registry} and consent registry {view.deployment.consents}, as the "
        f"manifest says; {trust}",
    )


def check_deployer(
    scope: Scope, manifest: Deployment, registry: str, creator: str | None
) -> CheckResult:
    """The manifest's deployer is the account whose transaction in the manifest's deployment
    block created the trusted registry (``creator``, None when no transaction of that block
    created it)."""
    block = manifest.block_number
    if creator is None:
        return scope.failed(
            "deployer",
            f"no transaction of block {block}, the manifest's deployment block, created "
            f"registry {registry}, so the manifest's deployer {manifest.deployer} is unconfirmed",
        )
    return scope.outcome(
        "deployer",
        creator == manifest.deployer,
        f"registry {registry} was created in block {block} by {creator}, the manifest's deployer",
        f"registry {registry} was created in block {block} by {creator}, the manifest names "
        f"deployer {manifest.deployer}",
    )


def check_code(
    scope: Scope, artifact: Artifact, address: str, code: bytes, expected_immutables: set[str]
) -> CheckResult:
    """The runtime code at ``address`` is the artifact's ``deployedBytecode``.

    Immutables are written into the runtime code at deployment, so the artifact has zeros at
    their byte ranges (``immutableReferences``). Those ranges are compared separately: each
    immutable must hold one value at all its references, and ``expected_immutables``
    (addresses the contract must be bound to) must be among the values.
    """
    scope = scope.at(address)
    name = artifact.name
    expected = bytes.fromhex(artifact.deployed_bytecode.removeprefix("0x"))
    if not code:
        return scope.failed("code", f"{name}: there is no contract code at {address}")
    if len(code) != len(expected):
        return scope.failed(
            "code",
            f"{name} at {address}: the runtime code is {len(code)} bytes, the committed "
            f"artifact's is {len(expected)}",
        )
    chain_masked, artifact_masked = bytearray(code), bytearray(expected)
    values: dict[str, set[bytes]] = {}
    for ident, references in artifact.immutable_references.items():
        for reference in references:
            start, length = reference["start"], reference["length"]
            values.setdefault(ident, set()).add(code[start : start + length])
            chain_masked[start : start + length] = bytes(length)
            artifact_masked[start : start + length] = bytes(length)
    if chain_masked != artifact_masked:
        pairs = enumerate(zip(chain_masked, artifact_masked, strict=True))
        first = next(i for i, (a, b) in pairs if a != b)
        return scope.failed(
            "code",
            f"{name} at {address}: the runtime code differs from the committed artifact "
            f"(first at byte {first}, outside the immutables)",
        )
    inconsistent = sorted(ident for ident, held in values.items() if len(held) > 1)
    if inconsistent:
        return scope.failed(
            "code", f"{name} at {address}: immutables {inconsistent} differ between references"
        )
    held = {next(iter(v)) for v in values.values()}
    missing = sorted(a for a in expected_immutables if _padded(a) not in held)
    if missing:
        return scope.failed(
            "code", f"{name} at {address}: its immutables are not bound to {', '.join(missing)}"
        )
    bound = f", bound to {', '.join(sorted(expected_immutables))}" if expected_immutables else ""
    return scope.passed(
        "code",
        f"{name} at {address}: the runtime code ({len(code)} bytes) is the committed "
        f"artifact's{bound}",
    )


def check_job(
    scope: Scope, manifest: ManifestJob, chain_job: Job | None, error: str
) -> CheckResult:
    """The manifest's job record is exactly what ``getJob`` returns."""
    if chain_job is None:
        return scope.failed("job", f"the ledger has no job {manifest.id}: {error}")
    differences = [
        name
        for name, claimed, actual in (
            ("purpose", manifest.purpose, chain_job.purpose),
            ("coordinator", manifest.coordinator, chain_job.coordinator),
            ("consumer", manifest.consumer, chain_job.consumer),
            ("participants", manifest.participants, chain_job.participants),
            ("datasets", manifest.datasets, chain_job.dataset_ids),
            ("modelSpec", manifest.model_spec, chain_job.model_spec_digest),
            ("initialModel", manifest.initial_model, chain_job.initial_model_digest),
        )
        if claimed != actual
    ]
    return scope.outcome(
        "job",
        not differences,
        f"the manifest's job is the chain's ({len(chain_job.participants)} participants, "
        f"{len(chain_job.dataset_ids)} datasets, purpose {chain_job.purpose!r}, "
        f"{chain_job.last_round} rounds anchored, {chain_job.status})",
        f"the manifest's job differs from getJob on chain in: {', '.join(differences)}",
    )


def check_protocol(
    scope: Scope, protocol: str, spec: Any | None, spec_digest: bytes
) -> CheckResult:
    """The manifest's protocol is the one the job's model spec (the object ``spec_digest``
    names, as ``getJob`` has it) names; a spec naming none implies FedAvg, as every job
    created before specs named their protocol ran it."""
    where = f"the job's model spec {spec_digest.hex()}"
    if spec is None:
        return scope.failed(
            "protocol", f"cannot check protocol {protocol!r}: {where} is unreadable"
        )
    try:
        named = spec_protocol(spec)
    except UsageError as exc:
        return scope.failed("protocol", f"{where} names no usable protocol: {exc}")
    implied = "protocol" not in spec
    source = f"{where} names none, which implies {named!r}" if implied else f"{where} names it"
    return scope.outcome(
        "protocol",
        named == protocol,
        f"the bundle's protocol {protocol!r} is the job's: {source}",
        f"the bundle's protocol is {protocol!r}, but "
        + (
            f"{where} names none, which implies {IMPLIED_PROTOCOL!r}"
            if implied
            else f"{where} names {named!r}"
        ),
    )


def check_round_count(scope: Scope, announced: int, read: int) -> CheckResult:
    """``rounds.jsonl`` holds as many lines as the manifest announces: a file cut short or
    lengthened is evidence of damage even where the lines left are well formed."""
    return scope.outcome(
        "manifest",
        read == announced,
        f"{ROUNDS} holds the {announced} round entries the manifest announces",
        f"{ROUNDS} holds {read} line(s), the manifest announces {announced} round entries",
    )


def check_complete(scope: Scope, bundled: Sequence[int], last_round: int | None) -> CheckResult:
    """Every anchored round (1..lastRound on chain) is in the bundle, and nothing else is."""
    if last_round is None:
        return scope.failed("complete", "cannot tell which rounds are anchored: no job on chain")
    anchored = set(range(1, last_round + 1))
    present = set(bundled)
    missing = sorted(anchored - present)
    extra = sorted(present - anchored)
    problems = []
    if missing:
        problems.append(
            f"round(s) {', '.join(map(str, missing))} anchored on chain but not in the bundle"
        )
    if extra:
        problems.append(f"round(s) {', '.join(map(str, extra))} in the bundle but not anchored")
    if problems:
        return scope.failed("complete", "; ".join(problems))
    return scope.passed("complete", f"the bundle holds all {last_round} rounds anchored on chain")


def check_head_model(
    scope: Scope, head: bytes | None, last_model: bytes | None, last_round: int
) -> CheckResult:
    """The job's head model on chain is the bundle's last model: nothing came after it."""
    what = f"round {last_round}'s model" if last_round else "the initial model"
    return scope.outcome(
        "head-model",
        head is not None and head == last_model,
        f"the job's head model on chain is {what} {_short(last_model)}",
        f"the job's head model on chain is {_short(head)}, the bundle ends with {what} "
        f"{_short(last_model)}",
    )


def check_model_uses(
    scope: Scope, uses: Sequence[ModelUse], anchored: Iterable[bytes], facts: JobFacts
) -> CheckResult:
    """Every use of the job's model the chain recorded names a model one of the job's
    ``anchored`` rounds produced and was recorded by the job's consumer or coordinator; the
    message lists each (index, kind, caller, subjects, block), what an auditor asks first."""
    models = set(anchored)
    callers = {facts.consumer: "consumer", facts.coordinator: "coordinator"}
    listed, problems = [], []
    for use in uses:
        caller = callers.get(use.caller, "neither consumer nor coordinator")
        listed.append(
            f"use {use.use_index} {use.kind} by {use.caller} ({caller}) on {use.subjects:,} "
            f"subject(s) in block {use.block_number}"
        )
        if use.model_digest not in models:
            problems.append(f"use {use.use_index} names model {use.model_digest.hex()}, no round's")
        if use.caller not in callers:
            problems.append(f"use {use.use_index} was recorded by {use.caller}")
    listing = "; ".join(listed)
    return scope.outcome(
        MODEL_USES,
        not problems,
        f"{len(uses)} use(s) of models the job anchored, each by its consumer or coordinator: "
        f"{listing}",
        f"{'; '.join(problems)} (of {len(uses)} use(s): {listing})",
    )


# ------------------------------------------------------------------------------ round level


def check_manifest_entry(scope: Scope, entry: RoundEntry, job_id: int) -> CheckResult:
    """The round entry agrees with its own anchor (round, job, model and metrics digests)."""
    anchor = entry.anchor
    problems = []
    if anchor.job_id != job_id:
        problems.append(f"its anchor is for job {anchor.job_id}")
    if anchor.round != entry.round:
        problems.append(f"its anchor is for round {anchor.round}")
    if entry.model != anchor.model_digest:
        problems.append(
            f"model {entry.model.hex()} is not the anchor's {anchor.model_digest.hex()}"
        )
    if entry.metrics != anchor.metrics_digest:
        problems.append(
            f"metrics {entry.metrics.hex()} are not the anchor's {anchor.metrics_digest.hex()}"
        )
    return scope.outcome(
        "manifest",
        not problems,
        "the round entry agrees with its anchor",
        "the round entry disagrees with itself: " + "; ".join(problems),
    )


def check_sequence(scope: Scope, round_number: int, expected: int) -> CheckResult:
    """Rounds are contiguous from 1 in the bundle: a dropped round shows at its successor."""
    if round_number == expected:
        if expected == 1:
            return scope.passed("sequence", "round 1 is the bundle's first round")
        return scope.passed("sequence", f"round {round_number} follows round {expected - 1}")
    if round_number > expected:
        gap = (
            f"round {expected} is missing"
            if round_number == expected + 1
            else f"rounds {expected} to {round_number - 1} are missing"
        )
        return scope.failed(
            "sequence", f"round {round_number} follows round {expected - 1} in the bundle: {gap}"
        )
    return scope.failed(
        "sequence",
        f"round {round_number} comes after round {expected - 1} in the bundle: repeated or "
        "out of order",
    )


def check_anchored(scope: Scope, entry: RoundEntry, job_id: int, view: ChainView) -> CheckResult:
    """``roundCommitment`` of this job and the entry's round is keccak256 of the bundle's anchor.

    The commitment covers the anchor's job, round and block, so an anchor that holds here is
    this job's round, anchored in the block it names; another job's anchor does not hold,
    whatever that job's chain record says.
    """
    anchor = entry.anchor
    try:
        stored = view.round_commitment(job_id, entry.round)
    except ChainRevert as exc:
        return scope.failed("anchored", f"the chain holds no anchor of this round: {exc}")
    commitment = anchor.commitment()
    return scope.outcome(
        "anchored",
        stored == commitment,
        f"round {entry.round} is anchored on chain with commitment 0x{stored.hex()} "
        f"(block {anchor.block_number})",
        f"round {entry.round}'s anchor in the bundle has commitment 0x{commitment.hex()}, "
        f"the chain stores 0x{stored.hex()} for job {job_id} round {entry.round}",
    )


def check_transaction(
    scope: Scope, entry: RoundEntry, previous_block: int | None, view: ChainView
) -> CheckResult:
    """The bundle's transaction anchored this round: mined successfully in the anchor's block,
    to the ledger, with a RoundAnchored event whose fields and commitment are the anchor's,
    in a block whose timestamp is the anchor's. This is where events and state must agree.
    """
    anchor = entry.anchor
    tx = view.anchor_transaction(entry.transaction)
    if tx is None:
        return scope.failed("transaction", f"the chain knows no transaction {entry.transaction}")
    problems = []
    if tx.status != 1:
        problems.append("it failed")
    if tx.to != view.ledger_address:
        problems.append(f"it was sent to {tx.to}, not the ledger")
    if tx.block_number != anchor.block_number:
        problems.append(f"it was mined in block {tx.block_number}, not {anchor.block_number}")
    expected = {
        "jobId": anchor.job_id,
        "round": anchor.round,
        "merkleRoot": anchor.merkle_root,
        "participantCount": anchor.participant_count,
        "participantMask": anchor.participant_mask,
        "modelDigest": anchor.model_digest,
        "metricsDigest": anchor.metrics_digest,
        "previousModelDigest": anchor.previous_model_digest,
        "commitment": anchor.commitment(),
    }
    if previous_block is not None:
        expected["previousAnchorBlock"] = previous_block
    matching = [
        event
        for event in tx.events
        if all(_same(event.get(key), value) for key, value in expected.items())
    ]
    if len(matching) != 1:
        problems.append(
            f"it emitted {len(tx.events)} RoundAnchored event(s), none with the anchor's fields"
            if not matching
            else "it emitted the anchor's RoundAnchored event more than once"
        )
    if not problems:
        timestamp = view.block(anchor.block_number).timestamp
        if timestamp != anchor.timestamp:
            problems.append(f"block {anchor.block_number} has timestamp {timestamp}")
    return scope.outcome(
        "transaction",
        not problems,
        f"transaction {entry.transaction} anchored round {anchor.round} in block "
        f"{anchor.block_number}; its RoundAnchored event is the anchor",
        f"transaction {entry.transaction} does not anchor this round: " + "; ".join(problems),
    )


def _same(value: Any, expected: Any) -> bool:
    if isinstance(expected, bytes):
        return isinstance(value, bytes | bytearray) and bytes(value) == expected
    return value == expected


def check_record(
    scope: Scope,
    position: int,
    signed: SignedUpdateRecord | None,
    error: str,
    facts: JobFacts,
    round_number: int,
) -> CheckResult:
    """Record ``position`` parses, and is for this job, this round and a job participant."""
    if signed is None:
        return scope.failed("record", f"record {position} is unusable: {error}")
    record = signed.record
    problems = []
    if record.job_id != facts.id:
        problems.append(f"it is for job {record.job_id}")
    if record.round != round_number:
        problems.append(f"it is for round {record.round}")
    if record.participant not in facts.participants:
        problems.append(f"{record.participant} is not a participant of job {facts.id}")
    return scope.outcome(
        "record",
        not problems,
        f"record {position} is this participant's record for job {facts.id} round {round_number}",
        f"record {position} does not belong here: " + "; ".join(problems),
    )


def check_signature(scope: Scope, signed: SignedUpdateRecord, domain: Domain) -> CheckResult:
    """The record's EIP-712 signature recovers its participant in the trusted job's domain."""
    try:
        signed.verify(domain)
    except ConsortiumError as exc:
        return scope.failed("signature", str(exc))
    return scope.passed(
        "signature",
        f"the record is signed by {signed.record.participant} for chain {domain.chain_id} "
        f"ledger {domain.verifying_contract}",
    )


@dataclass(frozen=True)
class LoadedRecord:
    """A ``records[]`` entry with its object bytes (the leaf) and parsed record, if readable."""

    position: int
    entry: RecordEntry
    leaf: bytes | None
    signed: SignedUpdateRecord | None
    error: str

    @property
    def participant(self) -> ChecksumAddress | None:
        return None if self.signed is None else self.signed.record.participant


def check_leaf_order(scope: Scope, records: Sequence[LoadedRecord]) -> CheckResult:
    """Leaves are ordered by participant address ascending, each participant once, and each
    ``leafIndex`` is the leaf's position: the one order that gives the anchored root."""
    problems = []
    for loaded in records:
        if loaded.entry.leaf_index != loaded.position:
            problems.append(f"record {loaded.position} claims leaf index {loaded.entry.leaf_index}")
    keys = [(r.position, r.participant) for r in records if r.participant is not None]
    for (_, a), (position, b) in pairwise(keys):
        if a.lower() == b.lower():
            problems.append(f"participant {b} has a second record at position {position}")
        elif a.lower() > b.lower():
            problems.append(f"participant {b} at position {position} comes after {a}")
    return scope.outcome(
        "leaf-order",
        not problems,
        f"{len(records)} records in participant address order, each participant once",
        "the records are not in leaf order: " + "; ".join(problems),
    )


def check_merkle_root(
    scope: Scope,
    records: Sequence[LoadedRecord],
    anchor: RoundAnchor,
    round_participants: Sequence[str],
) -> CheckResult:
    """The RFC 6962 root over the records' bytes, in the bundle's order, and their count are
    the anchor's, and the records are those of the participants its mask names
    (``round_participants``), each one's."""
    if any(r.leaf is None for r in records):
        return scope.failed("merkle-root", "cannot recompute the root: a record object is missing")
    tree = MerkleTree(r.leaf for r in records if r.leaf is not None)
    problems = []
    if tree.size != anchor.participant_count:
        problems.append(f"{tree.size} records, the anchor counts {anchor.participant_count}")
    signers = {r.participant for r in records if r.participant is not None}  # else: `record`
    if len(signers) == len(records) and signers != set(round_participants):
        named = ", ".join(round_participants) or "none"
        problems.append(f"the records are not those of the participants it names ({named})")
    if tree.root != anchor.merkle_root:
        problems.append(f"root {tree.root.hex()}, the anchor's is {anchor.merkle_root.hex()}")
    return scope.outcome(
        "merkle-root",
        not problems,
        f"the {tree.size} records give the anchored root {tree.root.hex()}",
        "the records do not give the anchored tree: " + "; ".join(problems),
    )


def check_inclusion_proof(scope: Scope, loaded: LoadedRecord, anchor: RoundAnchor) -> CheckResult:
    """The record's bundled inclusion proof leads to the anchored root (RFC 9162 2.1.3.2)."""
    if loaded.leaf is None:
        return scope.failed(
            "inclusion-proof", f"record {loaded.position}: the record object is missing"
        )
    try:
        verify_inclusion(
            loaded.leaf,
            loaded.entry.leaf_index,
            anchor.participant_count,
            loaded.entry.proof,
            anchor.merkle_root,
        )
    except ConsortiumError as exc:
        return scope.failed("inclusion-proof", f"record {loaded.position}: {exc}")
    return scope.passed(
        "inclusion-proof",
        f"record {loaded.position}'s proof includes it as leaf {loaded.entry.leaf_index} of "
        f"{anchor.participant_count} under the anchored root",
    )


def check_lineage(
    scope: Scope, anchor: RoundAnchor, previous: bytes | None, source: str
) -> CheckResult:
    """The chain's record of this round's predecessor model is the previous round's model."""
    if previous is None:
        return scope.failed("lineage", f"cannot check: {source} is unknown")
    return scope.outcome(
        "lineage",
        anchor.previous_model_digest == previous,
        f"the anchor's previous model is {source} {previous.hex()}",
        f"the anchor's previous model is {anchor.previous_model_digest.hex()}, not {source} "
        f"{previous.hex()}",
    )


# ------------------------------------------------------------------------------ standing


def check_membership(
    scope: Scope, state: MemberState, role: Role | None, label: str, block: int
) -> CheckResult:
    """As of the anchoring block, the account was an active member (holding ``role``)."""
    needed = f" with role {role.describe()}" if role else ""
    if not state.ever_joined:
        return scope.failed("membership", f"the {label} was never a member (block {block})")
    ok = state.active and (role is None or role in state.roles)
    held = state.roles.describe() if state.roles else "no roles"
    return scope.outcome(
        "membership",
        ok,
        f"the {label} was an active member{needed} as of block {block}",
        f"the {label} was not an active member{needed} as of block {block} "
        f"(active: {state.active}, roles: {held})",
    )


def check_consent(
    scope: Scope,
    dataset_id: int,
    owner: str,
    owner_state: MemberState | None,
    consent: Consent | None,
    facts: JobFacts,
    timestamp: int,
    block: int,
) -> CheckResult:
    """As of the anchoring block, dataset ``dataset_id`` could be used by the job's consumer
    for the job's purpose at the anchor's time: granted, not revoked, inside its window, and
    its owner an active PROVIDER (as ``isConsentValid`` has it). The consumer's own datasets
    need no consent."""
    if owner == facts.consumer:
        return scope.passed(
            "consent", f"dataset {dataset_id} is the consumer's own: no consent needed"
        )
    if consent is None or consent.granted_at == 0:
        return scope.failed(
            "consent",
            f"dataset {dataset_id} of {owner} has no consent to {facts.consumer} for "
            f"{facts.purpose!r} as of block {block}",
        )
    problems = []
    state = consent.state(timestamp)
    if state != "valid":
        problems.append(f"the consent is {state} at the anchor's time {timestamp}")
    if owner_state is None or not owner_state.is_provider:
        problems.append(f"its owner {owner} is not an active provider")
    return scope.outcome(
        "consent",
        not problems,
        f"dataset {dataset_id} of {owner} was consented to {facts.consumer} for "
        f"{facts.purpose!r} as of block {block}",
        f"dataset {dataset_id} of {owner}, consent to {facts.consumer} for {facts.purpose!r} "
        f"as of block {block}: " + "; ".join(problems),
    )


def check_events(
    scope: Scope, implied: ImpliedState, standing: Standing, facts: JobFacts, start: int
) -> Iterator[CheckResult]:
    """As of the block the standing checks read, the membership and consent events from the
    deployment block ``start`` on imply exactly the state the registries hold, for every
    account and dataset read: the chain's two records of the same history agree.

    One passing result per round; a failed one per account or dataset that disagrees, about
    the member, or about the dataset's owner.
    """
    problems = list(_member_disagreements(implied, standing))
    problems += _dataset_disagreements(implied, standing, facts)
    block = standing.block
    if not problems:
        yield scope.passed(
            "events",
            f"the membership and consent events of blocks {start} to {block} imply the state "
            f"the registries hold as of block {block} for {len(standing.members)} accounts and "
            f"{len(facts.datasets)} datasets",
        )
    for participant, text in problems:
        yield scope.at(participant).failed(
            "events", f"events of blocks {start} to {block} and state disagree: {text}"
        )


def _member_disagreements(
    implied: ImpliedState, standing: Standing
) -> Iterator[tuple[str | None, str]]:
    for account, state in standing.members.items():
        replayed = implied.member(account)
        if replayed != state:
            text = (
                f"the events make {account} {_member_text(replayed)}, the registry holds "
                f"{_member_text(state)}"
            )
            yield account, text


def _dataset_disagreements(
    implied: ImpliedState, standing: Standing, facts: JobFacts
) -> Iterator[tuple[str | None, str]]:
    for dataset_id in facts.datasets:
        owner = standing.owners.get(dataset_id)
        replayed = implied.owners.get(dataset_id)
        if replayed != owner:
            text = (
                f"dataset {dataset_id}: the events name owner {replayed or 'none'}, the consent "
                f"registry {owner or 'none'}"
            )
            yield owner or replayed, text
        consent = standing.consents.get(dataset_id)
        if consent is None:
            continue  # the consumer's own dataset, or unknown: no consent was read
        held = _terms(consent)
        terms = implied.consent(dataset_id, facts.consumer, facts.purpose)
        if terms != held:
            text = (
                f"dataset {dataset_id}: the events make the consent to {facts.consumer} for "
                f"{facts.purpose!r} {_consent_text(terms)}, the consent registry holds "
                f"{_consent_text(held)}"
            )
            yield owner, text


def _terms(consent: Consent) -> ConsentTerms | None:
    """A consent as read, in the terms its events carry (None: never granted)."""
    if not consent.granted_at:
        return None
    return ConsentTerms(consent.valid_from, consent.valid_until, consent.revoked)


def _member_text(state: MemberState) -> str:
    if not state.ever_joined:
        return "never a member"
    roles = state.roles.describe() or "no roles"
    return f"{'an active' if state.active else 'a former'} member ({roles})"


def _consent_text(terms: ConsentTerms | None) -> str:
    if terms is None:
        return "never granted"
    revoked = ", revoked" if terms.revoked else ""
    return f"valid from {terms.valid_from} until {terms.valid_until}{revoked}"


def undecided_standing(
    scope: Scope, subjects: Iterable[tuple[str, str | None, str]], reason: str
) -> Iterator[CheckResult]:
    """``membership``/``consent`` results for state the node cannot serve; each subject is
    (check name, participant, what was to be checked)."""
    for name, participant, what in subjects:
        yield scope.at(participant).undecided(name, f"cannot check {what}: {reason}")
