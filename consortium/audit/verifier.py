"""The auditor's verifier: runs every check of :mod:`consortium.audit.checks` over a bundle,
and in each round the checks of the job's protocol, which it dispatches to on the bundle's
protocol id (:mod:`consortium.audit.protocols`) once the ``protocol`` check has compared that
id with the job's model spec, whose digest the chain holds.

It trusts the chain (at the ledger address the auditor pins, or the manifest's, which the
``deployment`` and ``code`` checks then vouch for) and recomputation, and nothing the
coordinator wrote: every digest in the bundle is re-derived from bytes, every claim about the
chain is read back from it.

The audit streams. Results are yielded as they are found, one round at a time; a round's
line of ``rounds.jsonl`` and its objects are read, checked and dropped before the next line is
read, and what is carried from round to round is a few digests and block numbers. Only the
list of round numbers and model digests grows with the rounds (for the completeness check and
model look-ups), by a few hundred bytes a round.
Membership and consent are read as of the block before each anchoring block, each fact once
for as long as the chain shows it cannot have changed (:mod:`consortium.audit.standing`), so
an audit costs a handful of calls per round, often none. The registries' events are read
once, forward, in bounded block ranges as the rounds advance, and replayed
(:mod:`consortium.audit.replay`) to compare with that state.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from eth_typing import ChecksumAddress

from consortium.audit.bundle import (
    MAX_JSON_OBJECT_BYTES,
    ROUNDS,
    AuditBundle,
    RoundEntry,
    RoundLine,
    parse_json,
)
from consortium.audit.chainview import ChainView, StateUnavailable
from consortium.audit.checks import (
    MODEL_USES,
    JobFacts,
    LoadedRecord,
    check_anchored,
    check_chain,
    check_code,
    check_complete,
    check_consent,
    check_deployer,
    check_deployment,
    check_events,
    check_head_model,
    check_inclusion_proof,
    check_job,
    check_leaf_order,
    check_lineage,
    check_manifest_entry,
    check_membership,
    check_merkle_root,
    check_model_uses,
    check_objects,
    check_protocol,
    check_record,
    check_round_count,
    check_sequence,
    check_signature,
    check_transaction,
    undecided_standing,
)
from consortium.audit.consented import check_consented_subjects, require_disclosures_fit
from consortium.audit.disclosed_weights import check_disclosed_weights, require_weights_fit
from consortium.audit.evidence import Evidence
from consortium.audit.protocols import protocol_audit
from consortium.audit.replay import ImpliedState
from consortium.audit.results import CheckResult, Scope
from consortium.audit.standing import Standing, StandingReader
from consortium.audit.timeline import (
    CHAIN_ERRORS,
    RegistryEvents,
    ReplayError,
    TimelineReader,
    deployed_at,
    first_line,
)
from consortium.chain.artifacts import load_artifact
from consortium.chain.backend import EMBEDDED, connect
from consortium.chain.base import Chain
from consortium.crypto.canonical import jcs
from consortium.crypto.digests import from_hex32, model_digest
from consortium.crypto.eip712 import Domain
from consortium.crypto.update_record import SignedUpdateRecord
from consortium.errors import ChainRevert, ChainUnavailable, ConsortiumError, UsageError
from consortium.jsonio import read_json_file
from consortium.ledger.jobs import Job, mask_participants
from consortium.ledger.roles import Role
from consortium.ledger.values import address
from consortium.protocol.audit import AuditedRound
from consortium.protocol.vertical.disclosure import Disclosure, PartyDisclosure
from consortium.protocol.vertical.weights_disclosure import WeightsDisclosure

_DIGEST_TEXT = re.compile(r"(0x)?[0-9a-fA-F]{64}")


def open_chain(url: str) -> Chain:
    """The chain endpoint at ``url`` for an audit.

    The embedded chain is refused: it starts empty in this process, so no job could be on it.
    """
    if url == EMBEDDED:
        raise UsageError(
            "the embedded chain starts empty in this process and holds no job: audit against "
            "the node the job ran on (--chain URL, or network.url in the configuration)"
        )
    return connect(url)


def verify_bundle(
    bundle: AuditBundle,
    chain: Chain,
    *,
    ledger: str | None = None,
    disclosures: Sequence[Disclosure] = (),
) -> Iterator[CheckResult]:
    """Every check of the bundle's job against ``chain``, streamed; see :class:`JobAudit`."""
    return JobAudit(bundle, chain, ledger=ledger, disclosures=disclosures).run()


class JobAudit:
    """One audit of one bundle against one chain.

    ``ledger`` pins the TrainingLedger address the auditor trusts; without it the manifest's
    address is used, and the ``code`` and ``job`` checks say whether it holds the real
    contract and job. ``disclosures``, what the data parties of a hetero-lr/1 job disclose,
    add checks: their subject disclosures the ``consented-subjects`` check, their weights
    disclosures one ``disclosed-weights`` result each (all refused at once, as a usage error,
    when they cannot be about the bundle's job). After :meth:`run` has been consumed,
    :attr:`round_models` and :meth:`model_verified` tell which model each round produced and
    whether everything it depends on was verified.
    """

    def __init__(
        self,
        bundle: AuditBundle,
        chain: Chain,
        *,
        ledger: str | None = None,
        disclosures: Sequence[Disclosure] = (),
    ) -> None:
        job = bundle.job
        self.disclosures = tuple(d for d in disclosures if isinstance(d, PartyDisclosure))
        self.weights = tuple(d for d in disclosures if isinstance(d, WeightsDisclosure))
        require_disclosures_fit(bundle.protocol, job.id, job.datasets, self.disclosures)
        require_weights_fit(bundle.protocol, job.id, job.participants, self.weights)
        self.bundle = bundle
        self.chain = chain
        self.pinned = None if ledger is None else address(ledger)
        self.protocol = protocol_audit(bundle.protocol)
        self.job_ok = True
        self.round_models: dict[int, bytes] = {}
        self.round_ok: dict[int, bool] = {}
        self._bundled: list[int] = []
        self._previous_round = 0
        self._previous_model: bytes | None = None
        self._previous_source = "the job's initial model"
        self._previous_block: int | None = 0
        self._in_rounds = False
        self._events: RegistryEvents | ConsortiumError | None = None  # see _registry_events
        self._implied = ImpliedState()

    # ------------------------------------------------------------------ bookkeeping

    def _note(self, result: CheckResult) -> CheckResult:
        """Tracks which parts of the job verified, for :meth:`model_verified`."""
        if result.round is None:
            if not self._in_rounds:
                self.job_ok = self.job_ok and result.ok
        else:
            self.round_ok[result.round] = self.round_ok.get(result.round, True) and result.ok
        return result

    def model_verified(self, round_number: int) -> bool:
        """Whether the job's set-up checks and every check of rounds 1..``round_number`` held:
        then round ``round_number``'s model is proven to be what those rounds produced."""
        return (
            self.job_ok
            and round_number in self.round_models
            and all(self.round_ok.get(r, False) for r in range(1, round_number + 1))
        )

    # ------------------------------------------------------------------ the audit

    def run(self) -> Iterator[CheckResult]:
        """Yields every result: the job's set-up, then each round in bundle order, then
        completeness, the head model and, if the job's model was used, its uses."""
        for result in self._run():
            yield self._note(result)

    def _run(self) -> Iterator[CheckResult]:
        bundle = self.bundle
        scope = Scope(bundle.job.id)
        chain_check = check_chain(scope, bundle.chain_id, self.chain.chain_id)
        yield chain_check
        if not chain_check.ok:
            return  # nothing else on this endpoint can be about the job
        ledger_address = self.pinned or bundle.deployment.ledger
        view = ChainView(self.chain, ledger_address, bundle.deployment)
        self.view = view
        yield check_deployment(scope, bundle.chain_id, bundle.deployment, self.pinned, view)
        registry, consents = view.deployment.registry, view.deployment.consents
        yield self._deployer_check(scope)
        code_ok = True
        for name, where, bound in (
            ("ConsortiumRegistry", registry, set()),
            ("ConsentRegistry", consents, {registry}),
            ("TrainingLedger", ledger_address, {registry, consents}),
        ):
            code = check_code(scope, load_artifact(name), where, view.code(where), bound)
            code_ok = code_ok and code.ok
            yield code
        if not code_ok:
            # Whatever answers at these addresses is not the committed contracts: nothing it
            # says about the job can be believed, so no round is checked against it.
            for line in bundle.rounds():
                yield Scope(bundle.job.id, line.claimed_round).failed(
                    "anchored",
                    f"not checked: the contracts at ledger {ledger_address} are not the "
                    "committed ones (see the code check)",
                )
            return

        chain_job: Job | None = None
        error = ""
        try:
            chain_job = view.job(bundle.job.id)
        except ChainRevert as exc:
            error = str(exc)
        yield check_job(scope, bundle.job, chain_job, error)
        self.facts = facts = JobFacts.of(
            bundle.job, chain_job, Domain(self.chain.chain_id, ledger_address)
        )
        self._previous_model = facts.initial_model
        self.standing = StandingReader(view, facts.id, facts.consumer, facts.purpose)
        evidence = Evidence(bundle.objects)
        self.protocol.read_model(
            evidence, facts.initial_model, scope, "initial model (base of round 1)"
        )
        spec_digest = chain_job.model_spec_digest if chain_job else bundle.job.model_spec
        self.spec = spec = evidence.json(spec_digest, scope, "model spec")
        yield from check_objects(scope, evidence, "the job (initial model and model spec)")
        yield check_protocol(scope, bundle.protocol, spec, spec_digest)
        if self.disclosures:
            yield from check_consented_subjects(
                scope, self.disclosures, spec, facts.consumer, facts.datasets, view
            )

        self._in_rounds = True
        for line in bundle.rounds():
            yield from self._round(line)
        # Every line, well formed or not, added one round number to _bundled.
        yield check_round_count(scope, len(bundle), len(self._bundled))
        yield check_complete(scope, self._bundled, facts.last_round)
        yield check_head_model(scope, facts.head_model, self._previous_model, self._previous_round)
        if chain_job is not None and chain_job.model_use_count:
            yield self._model_uses_check(scope)
        for disclosure in self.weights:
            yield self._disclosed_weights_check(scope, disclosure)

    def _disclosed_weights_check(self, scope: Scope, disclosure: WeightsDisclosure) -> CheckResult:
        """One weights disclosure against the model its round anchored, read from the bundle."""
        digest = self.round_models.get(disclosure.round)
        model = None
        if digest is not None:
            where = f"round {disclosure.round}'s model"
            model = Evidence(self.bundle.objects).json(digest, scope, where)
        return check_disclosed_weights(
            scope,
            disclosure,
            model,
            self.spec,
            self.facts.consumer,
            self.model_verified(disclosure.round),
        )

    def _round(self, line: RoundLine) -> Iterator[CheckResult]:
        facts = self.facts
        try:
            entry = line.entry()
        except UsageError as exc:
            number = line.claimed_round
            yield Scope(facts.id, number).failed(
                "manifest", f"round entry {line.position} of {ROUNDS} is malformed: {exc}"
            )
            self._advance(number, None, f"round {number}'s model", None)
            return
        scope = Scope(facts.id, entry.round)
        anchor = entry.anchor
        # The round's tensors hash in the background while its anchor is read from the chain.
        evidence = Evidence(self.bundle.objects)
        records = self._load_records(scope, entry, evidence)
        audited = AuditedRound(
            scope, anchor, entry.refused, tuple(r.signed for r in records), facts.participants,
            self._previous_model, self._previous_source, facts.consumer, self.spec,
            facts.last_round,
        )  # fmt: skip
        evidence.prefetch_models(self.protocol.prefetch(audited))
        yield check_manifest_entry(scope, entry, facts.id)
        yield check_sequence(scope, entry.round, self._previous_round + 1)
        anchored = check_anchored(scope, entry, facts.id, self.view)
        yield anchored
        transaction = check_transaction(scope, entry, self._previous_block, self.view)
        yield transaction
        protocol_objects = self.protocol.read(audited, evidence)  # the global model included
        yield from check_objects(scope, evidence, f"round {entry.round}")

        for loaded in records:
            at = scope.at(loaded.participant)
            yield check_record(at, loaded.position, loaded.signed, loaded.error, facts, entry.round)
            if loaded.signed is not None:
                yield check_signature(at, loaded.signed, facts.domain)
        yield check_leaf_order(scope, records)
        taking_part = mask_participants(facts.participants, anchor.participant_mask)
        yield check_merkle_root(scope, records, anchor, taking_part)
        for loaded in records:
            yield check_inclusion_proof(scope.at(loaded.participant), loaded, anchor)
        yield check_lineage(scope, anchor, self._previous_model, self._previous_source)
        yield from self.protocol.check(audited, protocol_objects)
        outsiders = [
            r.participant
            for r in records
            if r.participant is not None and r.participant not in facts.participants
        ]
        if anchored.ok:
            yield from self._standing_checks(scope, entry, taking_part, outsiders)
            if transaction.ok:
                self._note_anchor_block(entry)
        else:
            reason = "cannot check: the bundle's anchor is not the chain's, so its block is unknown"
            for name in ("membership", "consent", "events"):
                yield scope.failed(name, reason)
        self._advance(
            entry.round,
            anchor.model_digest,
            f"round {entry.round}'s model",
            anchor.block_number if anchored.ok else None,
        )

    def _model_uses_check(self, scope: Scope) -> CheckResult:
        """The job's model uses, read from its ``ModelUsed`` events in bounded block ranges."""
        try:
            uses = self.view.ledger.jobs.model_uses(self.facts.id)
        except CHAIN_ERRORS as exc:
            return scope.undecided(
                MODEL_USES, f"cannot read the job's model uses: {first_line(exc)}"
            )
        return check_model_uses(scope, uses, self.round_models.values(), self.facts)

    def _deployer_check(self, scope: Scope) -> CheckResult:
        """The manifest's deployer against the creator of the trusted registry, in the block
        the manifest names as the deployment's."""
        deployment, registry = self.bundle.deployment, self.view.deployment.registry
        try:
            creator = self.view.creator(registry, deployment.block_number)
        except ChainUnavailable as exc:
            return scope.undecided(
                "deployer", f"cannot read who created registry {registry}: {first_line(exc)}"
            )
        return check_deployer(scope, deployment, registry, creator)

    def _advance(self, number: int, model: bytes | None, source: str, block: int | None) -> None:
        self._bundled.append(number)
        self._previous_round = number
        self._previous_model = model
        self._previous_source = source
        self._previous_block = block
        if model is not None:
            self.round_models[number] = model

    def _load_records(
        self, scope: Scope, entry: RoundEntry, evidence: Evidence
    ) -> list[LoadedRecord]:
        """Each ``records[]`` entry with its leaf bytes and parsed record (or why not)."""
        loaded = []
        for position, record_entry in enumerate(entry.records):
            leaf = evidence.get(record_entry.digest, scope, f"update record {position}")
            signed, error = None, "its object is missing or corrupt"
            if leaf is not None:
                try:
                    signed = SignedUpdateRecord.from_json(parse_json(leaf))
                    if signed.leaf() != leaf:
                        signed, error = None, "its object is not the record's canonical form"
                except (ValueError, ConsortiumError) as exc:
                    error = f"it is not an update record: {exc}"
            loaded.append(LoadedRecord(position, record_entry, leaf, signed, error))
        return loaded

    # ------------------------------------------------------------------ membership, consent

    def _standing_checks(
        self,
        scope: Scope,
        entry: RoundEntry,
        taking_part: Sequence[str],
        outsiders: list[ChecksumAddress],
    ) -> Iterator[CheckResult]:
        """Membership and consent as of the block before the anchoring block, with consent
        windows evaluated at the anchor's timestamp: exactly what ``anchorRound`` saw, as
        the anchoring transaction ran first in its block on an auto-mining chain; on a chain
        with several transactions per block, state changed earlier in the same block would
        have made the contract refuse the anchor. Then the events against that state.

        As the contract does, only the round's participants (``taking_part``, its anchor's
        mask) must be members, and the datasets of the job's other participants need no
        consent in it: each left-out participant gets one result saying it took no part.
        """
        facts = self.facts
        block = entry.anchor.block_number - 1
        left_out = [p for p in facts.participants if p not in taking_part]
        for participant in left_out:
            yield scope.at(participant).passed(
                "membership",
                f"{participant} took no part in round {entry.round} (the anchor's participant "
                "set leaves it out): neither its membership nor its datasets' consents count",
            )
        accounts: list[tuple[str, Role | None, str]] = [
            (facts.coordinator, Role.COORDINATOR, "coordinator"),
            (facts.consumer, Role.CONSUMER, "consumer"),
            *((p, None, "participant") for p in taking_part),
            *((p, None, "record's participant") for p in dict.fromkeys(outsiders)),
        ]
        try:
            standing = self.standing.read(
                entry.round, block, (a for a, _, _ in accounts), facts.datasets
            )
        except StateUnavailable as exc:
            subjects = [("membership", a, f"the {label}") for a, _, label in accounts]
            subjects += [("consent", None, f"dataset {d}") for d in facts.datasets]
            subjects += [("events", None, "the registry events against the registries' state")]
            yield from undecided_standing(scope, subjects, str(exc))
            return
        for account, role, label in accounts:
            yield check_membership(scope.at(account), standing.members[account], role, label, block)
        for dataset_id in facts.datasets:
            yield self._consent_check(scope, dataset_id, standing, entry.anchor.timestamp, left_out)
        yield from self._events_check(scope, standing)

    def _consent_check(
        self,
        scope: Scope,
        dataset_id: int,
        standing: Standing,
        timestamp: int,
        left_out: Sequence[str],
    ) -> CheckResult:
        block = standing.block
        if dataset_id in standing.unknown:
            return scope.failed(
                "consent",
                f"dataset {dataset_id} is unknown as of block {block}: "
                f"{standing.unknown[dataset_id]}",
            )
        owner = standing.owners[dataset_id]
        if owner in left_out:
            return scope.at(owner).passed(
                "consent",
                f"dataset {dataset_id} is {owner}'s, who took no part in this round: "
                "its consent is not needed",
            )
        return check_consent(
            scope.at(owner), dataset_id, owner, standing.members[owner],
            standing.consents.get(dataset_id), self.facts, timestamp, block,
        )  # fmt: skip

    def _note_anchor_block(self, entry: RoundEntry) -> None:
        """When the round's anchoring block held nothing but its anchoring transaction (which
        only reads the registries), the registries' state after it is the state just read:
        the next round, if anchored in the next block, needs no reads of its own."""
        block = entry.anchor.block_number
        if self.view.block(block).transactions == (entry.transaction,):
            self.standing.unchanged_in(block)

    # ------------------------------------------------------------------ events

    def _open_events(self) -> RegistryEvents | ConsortiumError:
        """The replay of the registries' events from the deployment block, or why there is
        none: ReplayError when the chain contradicts that block, StateUnavailable when it
        cannot tell. Every round's ``events`` check then says so.

        The deployment block is the manifest's word, and where the replay starts decides what
        it sees: it must be where the trusted registry appeared (code there, none the block
        before).
        """
        view, facts = self.view, self.facts
        start = self.bundle.deployment.block_number
        registry = view.deployment.registry
        confirmed = deployed_at(self.chain, registry, start)
        if confirmed is None:
            return StateUnavailable(
                f"the node cannot tell whether registry {registry} was deployed in block "
                f"{start}, the manifest's deployment block, where the replay would start"
            )
        if not confirmed:
            return ReplayError(
                f"the manifest's deployment block {start} is not where registry {registry} "
                "was deployed"
            )
        reader = TimelineReader(
            self.chain,
            registry=view.ledger.registry,
            consents=view.ledger.consent_registry,
            ledger=view.training,
            job_id=facts.id,
            datasets=facts.datasets,
        )
        return RegistryEvents(reader, start, horizon=facts.last_anchor_block or start)

    def _events_check(self, scope: Scope, standing: Standing) -> Iterator[CheckResult]:
        """The events up to the standing's block, replayed onto the state they implied so far,
        against the standing."""
        try:
            events = self._registry_events()
            self._implied.apply(events.until(standing.block))
        except ReplayError as exc:
            yield scope.failed("events", f"cannot replay the registry events: {exc}")
            return
        except CHAIN_ERRORS as exc:
            yield scope.undecided(
                "events",
                f"cannot read the registry events up to block {standing.block}: {first_line(exc)}",
            )
            return
        yield from check_events(scope, self._implied, standing, self.facts, events.start)

    def _registry_events(self) -> RegistryEvents:
        """The replay's events, set up by the first round that needs them (or why not)."""
        if self._events is None:
            self._events = self._open_events()
        if isinstance(self._events, ConsortiumError):
            raise self._events.with_traceback(None)
        return self._events


# ------------------------------------------------------------------------------ models


@dataclass(frozen=True)
class ModelProvenance:
    """Where a model comes from, according to a verified bundle.

    ``round`` is the round that produced the model (None if no bundled round did);
    ``verified`` is True only if the job's set-up and every round up to that one passed
    every check, so the model provably came out of those anchored rounds.
    """

    digest: bytes
    round: int | None
    verified: bool
    initial: bool
    message: str

    def to_json(self) -> dict[str, object]:
        return {
            "model": self.digest.hex(),
            "round": self.round,
            "verified": self.verified,
            "initial": self.initial,
            "message": self.message,
        }


def model_digest_from(text_or_path: str) -> bytes:
    """The model digest a user gives: 64 hex digits (with or without ``0x``), a model
    manifest file (JSON ``{tensor name: tensor digest}``, as stored in bundles and stores),
    or an ``.npz`` file of the model's tensors.

    Raises:
        UsageError: if it is none of these.
    """
    if _DIGEST_TEXT.fullmatch(text_or_path):
        return bytes.fromhex(text_or_path.removeprefix("0x").lower())
    path = Path(text_or_path)
    if not path.is_file():
        raise UsageError(f"{text_or_path!r} is neither a model digest (64 hex digits) nor a file")
    if path.suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                tensors = {name: archive[name] for name in archive.files}
            return model_digest(tensors)
        except (OSError, ValueError, ConsortiumError) as exc:
            raise UsageError(f"{path}: not a model's tensors: {exc}") from None
    manifest = read_json_file(path, what="model manifest", max_bytes=MAX_JSON_OBJECT_BYTES)
    if not isinstance(manifest, dict) or not manifest:
        raise UsageError(f"{path}: not a model manifest (a JSON object of tensor digests)")
    for name, value in manifest.items():
        from_hex32(value, what=f"{path}: tensor {name!r}")
    return model_digest_of_manifest(manifest)


def model_digest_of_manifest(manifest: dict[str, str]) -> bytes:
    """SHA-256 of the manifest's JCS bytes: the model digest (DESIGN.md, tensor digest)."""
    return hashlib.sha256(jcs(manifest)).digest()


def locate_model(
    bundle: AuditBundle, chain: Chain, digest: bytes, *, ledger: str | None = None
) -> tuple[ModelProvenance, list[CheckResult]]:
    """Audits the bundle and says which verified round, if any, produced model ``digest``;
    also returns the failed (or undecided) results, which explain a negative answer."""
    audit = JobAudit(bundle, chain, ledger=ledger)
    problems = [r for r in audit.run() if not r.ok]
    job = bundle.job.id
    rounds = [r for r, model in audit.round_models.items() if model == digest]
    initial = digest == bundle.job.initial_model
    if not rounds:
        if initial:
            text = f"model {digest.hex()} is job {job}'s initial model: no round produced it"
        else:
            text = f"model {digest.hex()} was produced by no round of job {job} in the bundle"
        return ModelProvenance(digest, None, False, initial, text), problems
    round_number = rounds[0]
    verified = audit.model_verified(round_number)
    message = f"model {digest.hex()} is the model round {round_number} of job {job} produced, " + (
        "verified against the chain"
        if verified
        else f"but the audit of rounds 1 to {round_number} does not hold"
    )
    return ModelProvenance(digest, round_number, verified, initial, message), problems
