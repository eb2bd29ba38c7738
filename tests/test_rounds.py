"""Rounds of the horizontal AML job end to end: the coordinator, its checks, the participants.

Every test runs the real scenario (three banks, a research institute coordinating, a
regulator) on the embedded chain. The scenario is set up once per module and each test starts
from a chain snapshot and a copy of the scenario's directory, so each sees a fresh job.

A misbehaving participant is a :class:`Participant` subclass put in place of an honest one on
the coordinator's transport; it misbehaves in round 1 only, in exactly one way, so each test
shows that the bad update is refused with its reason, anchored as refused, that its sender is
told so by a receipt, and that the job goes on.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bundle_files import read_manifest, read_rounds
from eth_account import Account
from ledger_fixtures import reverts

from consortium.audit import Verdict, open_bundle, verify_bundle
from consortium.chain.embedded import EmbeddedChain
from consortium.crypto.canonical import jcs
from consortium.crypto.digests import model_digest
from consortium.crypto.eip712 import UPDATE_RECORD_TYPES, Domain, sign_typed
from consortium.crypto.merkle import MerkleTree
from consortium.crypto.update_record import (
    SignedUpdateRecord,
    UpdateRecord,
    sign_update_record,
    sort_key,
)
from consortium.errors import ConsortiumError, UsageError
from consortium.fl.aggregation import fedavg
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import RoundAnchor, mask_participants, participant_mask
from consortium.ledger.members import Members, ProposalOutcome
from consortium.ledger.roles import Role
from consortium.orchestration.anchorer import JournalMismatch
from consortium.orchestration.bundle import export_bundle
from consortium.orchestration.coordinator import Coordinator
from consortium.orchestration.engine import ReceiptsFailed, RoundResult
from consortium.orchestration.transport import LocalTransport, ParticipantFailed
from consortium.protocol.fedavg.checks import (
    RoundContext,
    Standing,
    UpdateRefused,
    check_submission,
    update_allowance,
)
from consortium.protocol.fedavg.participant import Participant
from consortium.protocol.messages import (
    MalformedMessage,
    RoundOpen,
    RoundReceipt,
    UpdateSubmission,
    pack_objects,
    unpack_objects,
)
from consortium.protocol.receipts import ReceiptAlarm
from consortium.scenarios import aml
from consortium.scenarios.aml_data import generate_validation
from consortium.scenarios.parties import Party
from consortium.store.artifacts import ArtifactStore
from consortium.store.models import get_model, model_objects, put_model

BANKS = 3


# ---------------------------------------------------------------------------------- fixtures


class RecordingTransport(LocalTransport):
    """The local transport, keeping every receipt a participant accepted (checked on chain)."""

    def __init__(self, participants: dict[str, Participant]) -> None:
        super().__init__(participants)
        self.receipts: dict[str, list[RoundReceipt]] = {a: [] for a in participants}

    def deliver(self, participant: str, receipt: RoundReceipt) -> None:
        super().deliver(participant, receipt)  # the participant's check_receipt raises on alarm
        self.receipts[participant].append(receipt)


@dataclass
class Scenario:
    chain: EmbeddedChain
    run: aml.AmlRun
    coordinator: Coordinator
    transport: RecordingTransport

    @property
    def ledger(self) -> Ledger:
        """The coordinator's (the institute's) ledger."""
        return self.coordinator.ledger

    @property
    def job_id(self) -> int:
        return self.run.job_id

    def address(self, bank: int) -> str:
        return self.run.banks[bank].account.address

    def participant(self, bank: int) -> Participant:
        return self.transport.participants[self.address(bank)]

    def ledger_of(self, party: Party) -> Ledger:
        return Ledger(self.chain, self.run.deployment, party.account)

    def round_open(self, round_number: int) -> RoundOpen:
        """The RoundOpen the coordinator sends for the next round, built from the chain."""
        head = self.ledger.jobs.get(self.job_id).head_model_digest
        store = self.coordinator.store
        return RoundOpen(
            self.job_id, round_number, head, pack_objects(store, model_objects(store, head))
        )

    def context(self, round_number: int) -> RoundContext:
        """What the coordinator checks round ``round_number``'s updates against."""
        job = self.ledger.jobs.get(self.job_id)
        owners = {d: self.ledger.consents.dataset(d).owner for d in job.dataset_ids}
        base = get_model(self.coordinator.store, job.head_model_digest)
        return RoundContext(
            job, round_number, job.head_model_digest, base, self.coordinator.domain, owners,
            Standing.read(self.ledger, job, owners),
            update_allowance(self.round_open(round_number).objects),
        )  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EmbeddedChain, Path]]:
    """The scenario set up once: a chain with the consortium and the job, and its directory."""
    chain = EmbeddedChain()
    out = tmp_path_factory.mktemp("aml-template")
    aml.set_up(chain, out, aml.AmlSettings(banks=BANKS, rounds=2), lambda _: None)
    yield chain, out
    chain.close()


@contextmanager
def _scenario(chain: EmbeddedChain, out: Path) -> Iterator[Scenario]:
    """The scenario recorded in ``out``, with its coordinator on a recording transport."""
    run = aml.load(chain, out)
    transport = RecordingTransport(aml.participants_for(chain, run))
    coordinator = aml.coordinator_for(chain, run, transport)
    try:
        yield Scenario(chain, run, coordinator, transport)
    finally:
        coordinator.journal.close()
        for participant in transport.participants.values():
            participant.journal.close()


@pytest.fixture
def scenario(template: tuple[EmbeddedChain, Path], tmp_path: Path) -> Iterator[Scenario]:
    """A fresh copy of the set-up scenario: the chain as set_up left it, its own directory."""
    chain, template_out = template
    snapshot = chain.tester.take_snapshot()
    out = tmp_path / "aml"
    shutil.copytree(template_out, out)
    try:
        with _scenario(chain, out) as fresh:
            yield fresh
    finally:
        chain.tester.revert_to_snapshot(snapshot)


@pytest.fixture(scope="module")
def anchored_round(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    """A scenario of its own, on its own chain, with round 1 anchored; for read-only tests."""
    chain = EmbeddedChain()
    out = tmp_path_factory.mktemp("aml-anchored")
    aml.set_up(chain, out, aml.AmlSettings(banks=BANKS, rounds=1), lambda _: None)
    with _scenario(chain, out) as scenario:
        scenario.coordinator.run_round(1)
        yield scenario
    chain.close()


# ------------------------------------------------------------------ misbehaving participants


class Misbehaving(Participant):
    """An honest participant's key, data, store and journal, misbehaving in round 1 only.

    ``fault`` builds the round-1 submission and sets :attr:`expect`, the exact refusal text
    the coordinator must give (it knows the digests and addresses involved).
    """

    def __init__(
        self, honest: Participant, fault: Callable[[Misbehaving, RoundOpen], UpdateSubmission]
    ) -> None:
        super().__init__(
            honest.name, honest.account, honest.data, honest.store, honest.journal,
            honest.ledger, honest.plan,
        )  # fmt: skip
        self.fault = fault
        self.expect = ""

    def train(self, message: RoundOpen) -> UpdateSubmission:
        if message.round == 1:
            return self.fault(self, message)
        return super().train(message)

    def honest(self, message: RoundOpen) -> UpdateSubmission:
        return Participant.train(self, message)

    def update_of(self, submission: UpdateSubmission) -> dict[str, np.ndarray]:
        return {
            name: np.array(tensor)
            for name, tensor in get_model(
                self.store, submission.record.record.update_digest
            ).items()
        }

    def resubmit(
        self,
        submission: UpdateSubmission,
        *,
        update: dict[str, np.ndarray] | None = None,
        metrics: Any = None,
        signer: Any = None,
        domain: Domain | None = None,
        **fields: Any,
    ) -> UpdateSubmission:
        """``submission`` with another update, metrics or record fields, signed again (by
        ``signer``, default the participant itself, for ``domain``, default the job's)."""
        record = submission.record.record
        objects = dict(submission.objects)
        if update is not None:
            digest = put_model(self.store, update)
            record = replace(record, update_digest=digest)
            objects.update(pack_objects(self.store, model_objects(self.store, digest)))
        if metrics is not None:
            digest = self.store.put_json(metrics)
            record = replace(record, metrics_digest=digest)
            objects.update(pack_objects(self.store, [digest]))
        record = replace(record, **fields)
        domain = domain or self.domain
        signature = sign_typed(
            signer or self.account, domain, UPDATE_RECORD_TYPES, record.message()
        )
        return UpdateSubmission(SignedUpdateRecord(domain, record, signature), objects)


Fault = Callable[[Misbehaving, RoundOpen], UpdateSubmission]


def wrong_base(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    unpack_objects(p.store, message.objects)
    base = get_model(p.store, message.base_model_digest)
    other = put_model(p.store, {name: tensor + 0.5 for name, tensor in base.items()})
    p.expect = f"trained from base model {other.hex()}, not {message.base_model_digest.hex()}"
    return p.honest(RoundOpen(message.job_id, message.round, other, {}))


def tampered_signature(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    submission = p.honest(message)
    signature = bytearray(submission.record.signature)
    signature[31] ^= 0x01  # the last byte of r
    signed = replace(submission.record, signature=bytes(signature))
    try:
        p.expect = f"bad signature: update record of participant {p.address} is signed by "
        p.expect += signed.recover()
    except ConsortiumError as exc:
        p.expect = f"bad signature: {exc}"
    return UpdateSubmission(signed, submission.objects)


def tampered_field(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    """numExamples inflated after signing, to weigh more in the average."""
    submission = p.honest(message)
    record = replace(
        submission.record.record, num_examples=submission.record.record.num_examples * 10
    )
    signed = replace(submission.record, record=record)
    p.expect = (
        f"bad signature: update record of participant {p.address} is signed by "
        f"{signed.recover()}: altered after signing, or signed with another key"
    )
    return UpdateSubmission(signed, submission.objects)


def other_key(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    other = Account.create()
    p.expect = (
        f"bad signature: update record of participant {p.address} is signed by "
        f"{other.address}: altered after signing, or signed with another key"
    )
    return p.resubmit(p.honest(message), signer=other)


def other_deployment(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    """A record validly signed, but for another chain: worthless here."""
    domain = Domain(p.domain.chain_id + 1, p.domain.verifying_contract)
    p.expect = f"bad signature: update record is signed for chain {domain.chain_id} contract"
    return p.resubmit(p.honest(message), domain=domain)


def non_member_record(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    """The participant passes on a record of an outsider (not a member), signed by it."""
    outsider = Account.create()
    p.expect = f"sent a record of {outsider.address}"
    return p.resubmit(p.honest(message), signer=outsider, participant=outsider.address)


def wrong_round(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    job, r = message.job_id, message.round
    p.expect = f"record is for job {job} round {r + 1}, not job {job} round {r}"
    return p.resubmit(p.honest(message), round=r + 1)


def with_update(change: Callable[[dict[str, np.ndarray]], str]) -> Fault:
    """A fault that trains honestly, then alters the update in place; ``change`` returns the
    expected refusal after "unusable update: "."""

    def fault(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
        submission = p.honest(message)
        update = p.update_of(submission)
        p.expect = f"unusable update: {change(update)}"
        return p.resubmit(submission, update=update)

    fault.__name__ = change.__name__
    return fault


def nan_weight(update: dict[str, np.ndarray]) -> str:
    update["weights"][3] = np.nan
    return "tensor 'weights' has 1 non-finite value(s) (NaN or inf)"


def infinite_bias(update: dict[str, np.ndarray]) -> str:
    update["bias"][0] = -np.inf
    return "tensor 'bias' has 1 non-finite value(s) (NaN or inf)"


def huge_weights(update: dict[str, np.ndarray]) -> str:
    """Finite, but the example-weighted sum would overflow: refused, not the round."""
    update["weights"][:] = 1e308
    return f"tensor 'weights' has {update['weights'].size} value(s) beyond +-1e+150"


def wrong_shape(update: dict[str, np.ndarray]) -> str:
    n = len(update["weights"])
    update["weights"] = np.append(update["weights"], 0.0)
    return f"tensor 'weights' has shape ({n + 1},), expected ({n},)"


def extra_tensor(update: dict[str, np.ndarray]) -> str:
    update["backdoor"] = np.ones(2)
    return "update tensors do not match the model: missing [], extra ['backdoor']"


def float32(update: dict[str, np.ndarray]) -> str:
    update["weights"] = update["weights"].astype(np.float32)
    return "tensor 'weights' has dtype <f4, expected <f8"


def big_endian(update: dict[str, np.ndarray]) -> str:
    update["bias"] = update["bias"].astype(">f8")
    return "tensor 'bias' has dtype >f8, expected <f8"


def bytes_not_matching_digest(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    """The update's weights travel under their digest, but with other bytes."""
    submission = p.honest(message)
    manifest = p.store.get_json(submission.record.record.update_digest)
    weights = bytes.fromhex(manifest["weights"])
    objects = dict(submission.objects)
    objects[weights] = objects[weights][:-8] + np.float64(9.0).tobytes()
    p.expect = (
        f"update does not match its record: received object {weights.hex()} does not match "
        "its digest"
    )
    return UpdateSubmission(submission.record, objects)


def update_not_sent(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    """The record names an update whose objects never reach the coordinator."""
    submission = p.honest(message)
    update = p.update_of(submission)
    update["bias"] = update["bias"] + 1.0
    digest = put_model(p.store, update)
    p.expect = f"update does not match its record: artifact {digest.hex()} is not in the store"
    return p.resubmit(submission, update_digest=digest)


def non_canonical_tensor(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    """A tensor blob with its header keys out of order: its address is not its tensor digest."""
    submission = p.honest(message)
    update = p.update_of(submission)
    weights = update["weights"]
    header = json.dumps({"shape": list(weights.shape), "dtype": "<f8"}, separators=(",", ":"))
    blob = p.store.put(header.encode() + b"\x00" + weights.tobytes())
    bias_digest = put_model(p.store, {"bias": update["bias"]})
    (bias_blob,) = p.store.get_json(bias_digest).values()
    digest = p.store.put_json({"weights": blob.hex(), "bias": bias_blob})
    objects = {
        **submission.objects,
        **pack_objects(p.store, [digest, blob, bytes.fromhex(bias_blob)]),
    }
    p.expect = (
        "update does not match its record: malformed tensor blob: header is not the canonical "
        "JCS of its dtype and shape"
    )
    return p.resubmit(UpdateSubmission(submission.record, objects), update_digest=digest)


def oversized_update(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    """An honest update padded with a megabyte that no update of this model needs."""
    submission = p.honest(message)
    padding = bytes(1 << 20)
    objects = {**submission.objects, hashlib.sha256(padding).digest(): padding}
    size = sum(len(data) for data in objects.values())
    allowed = update_allowance(message.objects)
    p.expect = (
        f"sent {size} bytes of objects, more than the {allowed} an update of this model can need"
    )
    return UpdateSubmission(submission.record, objects)


def metrics_disagree(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    submission = p.honest(message)
    n = submission.record.record.num_examples
    p.expect = f"numExamples {n} is not positive or disagrees with the metrics"
    return p.resubmit(submission, metrics={"numExamples": n + 1, "trainLogLoss": 0.3})


def metrics_not_an_object(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    submission = p.honest(message)
    metrics = [submission.record.record.num_examples]
    p.expect = f"metrics {hashlib.sha256(jcs(metrics)).hexdigest()} are not a JSON object"
    return p.resubmit(submission, metrics=metrics)


def zero_examples(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    p.expect = "numExamples 0 is not positive or disagrees with the metrics"
    return p.resubmit(p.honest(message), metrics={"numExamples": 0}, num_examples=0)


def raises(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    p.expect = f"no update: participant {p.address} failed: RuntimeError: disk on fire"
    raise RuntimeError("disk on fire")


def refuses_politely(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    p.expect = f"no update: participant {p.address} failed: UsageError: not enough fresh data"
    raise UsageError("not enough fresh data this round")


class _Garbage(UpdateSubmission):
    def to_json(self) -> dict[str, Any]:
        return {"type": "update", "record": {"jobId": 1}, "objects": {}}


def malformed_reply(p: Misbehaving, message: RoundOpen) -> UpdateSubmission:
    submission = p.honest(message)
    p.expect = "no update: malformed 'update' message: update record lacks field(s) 'format'"
    return _Garbage(submission.record, submission.objects)


FAULTS: list[Fault] = [
    wrong_base,
    tampered_signature,
    tampered_field,
    other_key,
    other_deployment,
    non_member_record,
    wrong_round,
    with_update(nan_weight),
    with_update(infinite_bias),
    with_update(huge_weights),
    with_update(wrong_shape),
    with_update(extra_tensor),
    with_update(float32),
    with_update(big_endian),
    bytes_not_matching_digest,
    update_not_sent,
    non_canonical_tensor,
    oversized_update,
    metrics_disagree,
    metrics_not_an_object,
    zero_examples,
    raises,
    refuses_politely,
    malformed_reply,
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.__name__ for f in FAULTS])
def test_a_bad_update_is_refused_recorded_and_the_job_goes_on(
    scenario: Scenario, fault: Fault
) -> None:
    bad_address = scenario.address(1)
    bad = Misbehaving(scenario.participant(1), fault)
    scenario.transport.participants[bad_address] = bad
    honest = sorted((scenario.address(0), scenario.address(2)), key=str.lower)

    first = scenario.coordinator.run_round(1)

    assert bad.expect
    assert first.anchor.participant_count == 2
    assert list(first.refused) == [bad_address]
    assert bad.expect in first.refused[bad_address]
    # The refusal is anchored: the round's metrics, whose digest is on chain, list it.
    assert scenario.ledger.jobs.verify(first.anchor)
    metrics = scenario.coordinator.store.get_json(first.anchor.metrics_digest)
    assert metrics["refused"] == first.refused
    assert metrics["accepted"] == honest
    assert metrics["examples"] == sum(len(scenario.participant(i).data.y) for i in (0, 2))
    intent = scenario.coordinator.journal.last("intent", round=1)
    assert intent is not None and intent["refused"] == first.refused
    # Nothing of the bad update reached the model: it is the average of the honest two.
    records = [
        SignedUpdateRecord.from_json(scenario.coordinator.store.get_json(bytes.fromhex(d)))
        for d in intent["records"]
    ]
    assert [r.record.participant for r in records] == honest
    average = fedavg(
        [
            (r.record.participant, get_model(scenario.coordinator.store, r.record.update_digest),
             r.record.num_examples)
            for r in records
        ]
    )  # fmt: skip
    assert model_digest(average) == first.anchor.model_digest
    # The misbehaving party is told why, by a receipt it checked against the chain.
    (receipt,) = scenario.transport.receipts[bad_address]
    assert (receipt.anchor, receipt.leaf_index, receipt.refusal) == (
        first.anchor, None, first.refused[bad_address],
    )  # fmt: skip
    for index, address in enumerate(honest):
        (proof,) = scenario.transport.receipts[address]
        assert (proof.leaf_index, proof.refusal) == (index, None)

    # The job goes on: round 2 runs from round 1's model, the party back in.
    second = scenario.coordinator.run_round(2)
    assert (second.anchor.participant_count, second.refused) == (3, {})
    assert second.anchor.previous_model_digest == first.anchor.model_digest
    assert len(scenario.transport.receipts[bad_address]) == 2


def test_an_oversized_update_leaves_nothing_in_the_coordinators_store(scenario: Scenario) -> None:
    bad = Misbehaving(scenario.participant(1), oversized_update)
    scenario.transport.participants[scenario.address(1)] = bad
    result = scenario.coordinator.run_round(1)
    assert bad.expect in result.refused[scenario.address(1)]
    assert hashlib.sha256(bytes(1 << 20)).digest() not in scenario.coordinator.store


def test_a_journal_serves_one_job_only(scenario: Scenario) -> None:
    coordinator = scenario.coordinator
    coordinator.run_round(1)
    assert coordinator.journal.find("job") == [
        {
            "seq": 0,
            "kind": "job",
            "jobId": scenario.job_id,
            "ledger": scenario.run.deployment.ledger,
            "chainId": scenario.chain.chain_id,
            "deployment": scenario.run.deployment.to_json(),
        }
    ]
    entries = len(list(coordinator.journal))
    other_job = Coordinator(
        coordinator.ledger, scenario.job_id + 1, coordinator.store, coordinator.journal,
        scenario.transport, generate_validation(0),
    )  # fmt: skip  # the same journal, used for another job
    with pytest.raises(JournalMismatch, match=f"belongs to job {scenario.job_id} of ledger"):
        other_job.run(2)
    assert len(list(coordinator.journal)) == entries  # refused before writing anything


def test_the_coordinator_and_the_journal_name_the_refused_update_on_resume(
    scenario: Scenario,
) -> None:
    """A finished round read back from the journal still reports its refusals."""
    address = scenario.address(2)
    scenario.transport.participants[address] = Misbehaving(
        scenario.participant(2), with_update(nan_weight)
    )
    (first,) = scenario.coordinator.run(1)
    (again,) = scenario.coordinator.run(1)
    assert again.resumed and again.anchor == first.anchor
    assert again.refused == first.refused and address in again.refused


# ------------------------------------------------------------------------ the happy round


def test_a_round_follows_the_design(scenario: Scenario) -> None:
    """Steps 1-6: base M(r-1), signed records, aggregation in address order, RFC 6962 root
    over the records' JCS bytes, anchored; every participant's receipt proves its record."""
    job = scenario.ledger.jobs.get(scenario.job_id)
    results = scenario.coordinator.run(2)
    addresses = sorted(job.participants, key=str.lower)
    previous = job.initial_model_digest
    for result in results:
        anchor = result.anchor
        assert scenario.ledger.jobs.verify(anchor)
        assert anchor.previous_model_digest == previous
        intent = scenario.coordinator.journal.last("intent", round=result.round)
        assert intent is not None
        leaves = [scenario.coordinator.store.get(bytes.fromhex(d)) for d in intent["records"]]
        records = [SignedUpdateRecord.from_json(json.loads(leaf)) for leaf in leaves]
        assert all(leaf == r.leaf() for leaf, r in zip(leaves, records, strict=True))
        assert [r.record.participant for r in records] == addresses
        assert sorted(records, key=sort_key) == records
        for r in records:
            r.verify(scenario.coordinator.domain)
            assert (r.record.job_id, r.record.round) == (job.id, result.round)
            assert r.record.base_model_digest == previous
        assert (anchor.merkle_root, anchor.participant_count) == (MerkleTree(leaves).root, 3)
        store = scenario.coordinator.store
        updates = [
            (r.record.participant, get_model(store, r.record.update_digest), r.record.num_examples)
            for r in records
        ]
        assert model_digest(fedavg(updates)) == anchor.model_digest
        assert model_digest(get_model(store, anchor.model_digest)) == anchor.model_digest
        assert result.refused == {} and result.metrics["refused"] == {}
        for index, address in enumerate(addresses):
            receipt = scenario.transport.receipts[address][result.round - 1]
            assert (receipt.anchor, receipt.leaf_index) == (anchor, index)
            # The leaf proved is the very record the participant signed and kept.
            participant = scenario.transport.participants[address]
            sent = participant.journal.last("sent", jobId=job.id, round=result.round)
            assert sent is not None and sent["record"] == intent["records"][index]
        previous = anchor.model_digest
    assert scenario.ledger.jobs.get(scenario.job_id).last_round == 2


# -------------------------------------------------------------------------------- receipts


def _flip(digest: bytes) -> bytes:
    return bytes([digest[0] ^ 0x80]) + digest[1:]


def _anchor(**changes: Any) -> Callable[[RoundReceipt], RoundReceipt]:
    """A forgery changing anchor fields: to a value, or by a function of the genuine one."""

    def forge(receipt: RoundReceipt) -> RoundReceipt:
        values = {
            k: v(getattr(receipt.anchor, k)) if callable(v) else v for k, v in changes.items()
        }
        return replace(receipt, anchor=replace(receipt.anchor, **values))

    return forge


NOT_COMMITTED = "does not match the commitment on chain"
NOT_INCLUDED = "does not include our record"

FORGERIES: dict[str, tuple[Callable[[RoundReceipt], RoundReceipt], str]] = {
    "altered-root": (_anchor(merkle_root=_flip), NOT_COMMITTED),
    "altered-count": (_anchor(participant_count=lambda n: n - 1), NOT_COMMITTED),
    "altered-model": (_anchor(model_digest=_flip), NOT_COMMITTED),
    "altered-metrics": (_anchor(metrics_digest=_flip), NOT_COMMITTED),
    "altered-previous-model": (_anchor(previous_model_digest=_flip), NOT_COMMITTED),
    "altered-block": (_anchor(block_number=lambda b: b - 1), NOT_COMMITTED),
    "altered-timestamp": (_anchor(timestamp=lambda t: t + 1), NOT_COMMITTED),
    "unanchored-round": (_anchor(round=2), "which the chain has not anchored (UnknownRound)"),
    "unknown-job": (_anchor(job_id=99), "which the chain has not anchored (UnknownRound)"),
    "out-of-range-round": (_anchor(round=2**32), "anchor fields are out of range"),
    "altered-proof": (
        lambda r: replace(r, proof=[_flip(r.proof[0]), *r.proof[1:]]),
        NOT_INCLUDED,
    ),
    "truncated-proof": (lambda r: replace(r, proof=r.proof[:-1]), NOT_INCLUDED),
    "wrong-leaf-index": (lambda r: replace(r, leaf_index=(r.leaf_index or 0) + 1), NOT_INCLUDED),
    "leaf-index-out-of-range": (lambda r: replace(r, leaf_index=3), NOT_INCLUDED),
    "no-proof": (lambda r: replace(r, leaf_index=None, proof=[]), "lacks its proof"),
    "refusal-with-altered-root": (
        lambda r: replace(_anchor(merkle_root=_flip)(r), leaf_index=None, proof=[], refusal="x"),
        NOT_COMMITTED,
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES, ids=list(FORGERIES))
def test_a_receipt_that_does_not_match_the_chain_is_an_alarm(
    anchored_round: Scenario, forgery: str
) -> None:
    scenario = anchored_round
    forge, message = FORGERIES[forgery]
    address = scenario.address(0)
    participant = scenario.participant(0)
    (genuine,) = scenario.transport.receipts[address]
    participant.check_receipt(genuine)  # the genuine receipt passes, again
    forged = forge(genuine)
    assert forged != genuine
    with pytest.raises(ReceiptAlarm, match=rf"^{participant.name}: .*{re.escape(message)}"):
        participant.check_receipt(forged)
    # The same alarm across the wire: the transport does not swallow it.
    with pytest.raises(ReceiptAlarm, match=re.escape(message)):
        scenario.transport.deliver(address, forged)
    assert len(scenario.transport.receipts[address]) == 1


def test_another_participants_receipt_is_an_alarm(anchored_round: Scenario) -> None:
    scenario = anchored_round
    receipts = [scenario.transport.receipts[scenario.address(i)][0] for i in range(BANKS)]
    for i in range(BANKS):
        scenario.participant(i).check_receipt(receipts[i])
        with pytest.raises(ReceiptAlarm, match=NOT_INCLUDED):
            scenario.participant(i).check_receipt(receipts[(i + 1) % BANKS])


def test_a_refusal_receipt_for_a_round_that_names_the_party_is_an_alarm(
    anchored_round: Scenario,
) -> None:
    """The anchor's participant set must agree with the receipt: a party told it was left out
    of a round whose anchor counts it (its consent then checked on its behalf) raises its
    alarm. A genuine refusal passes (test_a_bad_update_is_refused_recorded_and_the_job_goes_on)."""
    scenario = anchored_round
    (genuine,) = scenario.transport.receipts[scenario.address(1)]
    refusal = RoundReceipt(genuine.anchor, None, [], "unusable update: whatever")
    with pytest.raises(ReceiptAlarm, match="names us among its participants, though the receipt"):
        scenario.participant(1).check_receipt(refusal)


# ------------------------------------------------------------- membership and consent change


def _pass_by_vote(scenario: Scenario, propose: Callable[[Members], ProposalOutcome]) -> None:
    """The institute proposes; bank-0 and bank-1 approve (5 active members at quorum 5000
    bps: approvals must exceed 2)."""
    voters = [scenario.run.institute, scenario.run.banks[0], scenario.run.banks[1]]
    outcome = propose(scenario.ledger_of(voters[0]).members)
    for voter in voters[1:]:
        if not outcome.executed:
            outcome = scenario.ledger_of(voter).members.approve(outcome.proposal_id)
    assert outcome.executed


def _vote_out(scenario: Scenario, leaving: str) -> None:
    _pass_by_vote(scenario, lambda members: members.propose_remove(leaving))
    assert not scenario.ledger.members.is_member(leaving)


def standing_both_ways(scenario: Scenario) -> tuple[Standing, Standing]:
    """The job's standing as ``Standing.read`` reads it in batches, and as the contracts'
    one-at-a-time views (``isMember``, ``isConsentValid``) judge it."""
    ledger = scenario.ledger
    job = ledger.jobs.get(scenario.job_id)
    owners = {d: ledger.consents.dataset(d).owner for d in job.dataset_ids}
    by_views = Standing(
        frozenset(p for p in job.participants if ledger.members.is_member(p)),
        frozenset(
            d
            for d, owner in owners.items()
            if owner == job.consumer or ledger.consents.is_valid(d, job.consumer, job.purpose)
        ),
    )
    return Standing.read(ledger, job, owners), by_views


def test_the_batched_standing_judges_as_the_contracts_views_do(scenario: Scenario) -> None:
    job = scenario.ledger.jobs.get(scenario.job_id)
    batched, by_views = standing_both_ways(scenario)
    owners = {d: scenario.ledger.consents.dataset(d).owner for d in job.dataset_ids}
    everyone = participant_mask(job.participants, job.participants)
    assert batched == by_views == Standing.unchanged(job, everyone, owners)

    # bank-2 stays a member but is no longer a provider: its dataset is no longer usable, and
    # the round goes on without its update.
    demoted = scenario.address(2)
    _pass_by_vote(scenario, lambda members: members.propose_roles(demoted, Role.CONSUMER))
    batched, by_views = standing_both_ways(scenario)
    assert batched == by_views
    assert demoted in batched.members and len(batched.usable_datasets) == len(job.dataset_ids) - 1
    first = scenario.coordinator.run_round(1)
    assert demoted in first.refused and "is no longer valid" in first.refused[demoted]

    # Every consent window closes: only the consumer's own dataset stays usable.
    scenario.chain.increase_time((aml.CONSENT_DAYS + 1) * 86_400)
    batched, by_views = standing_both_ways(scenario)
    assert batched == by_views
    assert batched.members == frozenset(job.participants)
    assert len(batched.usable_datasets) == 1


def test_a_participant_voted_out_mid_job_is_left_out_of_the_next_round(
    scenario: Scenario,
) -> None:
    first = scenario.coordinator.run_round(1)
    leaving = scenario.address(2)
    _vote_out(scenario, leaving)

    # Its update is refused by the per-update check, the others' pass.
    check_only_refused_in_round_2(scenario, 2, f"{leaving} is no longer an active member")
    # The contract rejects an anchor that still names it.
    with reverts("ParticipantNotMember", participant=leaving):
        anchor_round_2_anyway(scenario, first)

    second = scenario.coordinator.run_round(2)
    job = scenario.ledger.jobs.get(scenario.job_id)
    assert leaving in second.refused and job.last_round == 2
    assert mask_participants(job.participants, second.anchor.participant_mask) == tuple(
        p for p in job.participants if p != leaving
    )
    # The next round is on the contract's fast path again, for the participants who remain.
    third = scenario.coordinator.run_round(3)
    assert third.anchor.participant_mask == second.anchor.participant_mask


def check_only_refused_in_round_2(scenario: Scenario, refused_bank: int, reason: str) -> None:
    """The per-update check of round 2 refuses exactly ``refused_bank``'s update."""
    context = scenario.context(2)
    for bank in range(BANKS):
        submission = scenario.participant(bank).train(scenario.round_open(2))
        if bank == refused_bank:
            with pytest.raises(UpdateRefused, match=reason):
                check_submission(submission, context, scenario.coordinator.store)
        else:
            check_submission(submission, context, scenario.coordinator.store)


def anchor_round_2_anyway(scenario: Scenario, first: RoundResult) -> None:
    """Sends an anchor of round 2 straight to the contract, past the coordinator's checks."""
    scenario.ledger.jobs.anchor(
        scenario.job_id, 2, first.anchor.merkle_root, first.anchor.participant_mask,
        first.anchor.model_digest, first.anchor.metrics_digest,
    )  # fmt: skip


def test_an_outsider_record_is_refused_by_the_participant_check(scenario: Scenario) -> None:
    outsider = Account.create()
    submission = scenario.participant(0).train(scenario.round_open(1))
    record = replace(submission.record.record, participant=outsider.address)
    signed = sign_update_record(outsider, scenario.coordinator.domain, record)
    with pytest.raises(UpdateRefused, match=f"{outsider.address} is not a participant of job"):
        check_submission(
            UpdateSubmission(signed, submission.objects), scenario.context(1),
            scenario.coordinator.store,
        )  # fmt: skip


def test_consent_revoked_mid_job_leaves_its_owner_out_of_the_next_round(
    scenario: Scenario,
) -> None:
    first = scenario.coordinator.run_round(1)
    provider = scenario.run.banks[1]
    job = scenario.ledger.jobs.get(scenario.job_id)
    (dataset,) = [
        d for d in job.dataset_ids
        if scenario.ledger.consents.dataset(d).owner == provider.account.address
    ]  # fmt: skip
    scenario.ledger_of(provider).consents.revoke(dataset, job.consumer, aml.PURPOSE)

    # The per-update check refuses exactly the update built on the revoked dataset.
    check_only_refused_in_round_2(scenario, 1, f"consent for dataset {dataset} to ")
    with reverts("ConsentNotValid", datasetId=dataset, grantee=job.consumer):
        anchor_round_2_anyway(scenario, first)

    second = scenario.coordinator.run_round(2)
    owner = provider.account.address
    assert "is no longer valid" in second.refused[owner]
    assert owner not in mask_participants(job.participants, second.anchor.participant_mask)
    assert scenario.ledger.jobs.get(scenario.job_id).last_round == 2


# -------------------------------------------------------------------------------- messages


def _signed_record(domain: Domain) -> SignedUpdateRecord:
    account = Account.create()
    record = UpdateRecord(
        job_id=3, round=2, participant=account.address, update_digest=b"\x01" * 32,
        base_model_digest=b"\x02" * 32, num_examples=17, metrics_digest=b"\x03" * 32,
    )  # fmt: skip
    return sign_update_record(account, domain, record)


def _wire(message: Any) -> Any:
    return json.loads(json.dumps(message.to_json()))


ANCHOR = RoundAnchor(
    3, 2, b"\x04" * 32, 2, 0b11, b"\x05" * 32, b"\x06" * 32, b"\x07" * 32, 41, 1_700
)
DOMAIN = Domain(1337, "0x" + "ab" * 20)


@pytest.mark.parametrize(
    "message",
    [
        RoundOpen(
            3, 2, hashlib.sha256(b"model").digest(), {hashlib.sha256(b"model").digest(): b"model"}
        ),
        UpdateSubmission(
            _signed_record(Domain(1337, "0x5FbDB2315678afecb367f032d93F642f64180aa3")),
            {
                hashlib.sha256(b"a").digest(): b"a",
                hashlib.sha256(b"\x00\xff").digest(): b"\x00\xff",
            },
        ),
        RoundReceipt(ANCHOR, 1, [b"\x08" * 32, b"\x09" * 32]),
        RoundReceipt(ANCHOR, None, [], "unusable update: tensor 'weights' has 1 non-finite value"),
    ],
    ids=["round-open", "update", "receipt", "refusal-receipt"],
)
def test_messages_round_trip_through_json(message: Any) -> None:
    assert type(message).from_json(_wire(message)) == message


@pytest.mark.parametrize(
    ("kind", "change", "error"),
    [
        (RoundOpen, lambda m: m.update(type="update"), "not a 'round-open' message"),
        (RoundOpen, lambda m: m.pop("round"), "lacks field 'round'"),
        (RoundOpen, lambda m: m.update(round=True), "field 'round' must be a non-negative"),
        (RoundOpen, lambda m: m.update(baseModelDigest="0x" + "00" * 32), "64 lowercase hex"),
        (RoundOpen, lambda m: m["objects"].update({"00" * 32: "not base64!"}), "malformed"),
        (RoundReceipt, lambda m: m.update(leafIndex="1"), "'leafIndex' must be a non-negative"),
        (RoundReceipt, lambda m: m.update(refusal=7), "'refusal' must be a string or null"),
        (RoundReceipt, lambda m: m["anchor"].update(round=-1), "'round' must be a non-negative"),
        (RoundReceipt, lambda m: m.update(proof="ab"), "malformed 'receipt' message"),
    ],
)
def test_a_malformed_message_is_refused(
    kind: Any, change: Callable[[Any], Any], error: str
) -> None:
    sample = (
        RoundOpen(1, 1, b"\x00" * 32, {})
        if kind is RoundOpen
        else RoundReceipt(ANCHOR, 0, [b"\x01" * 32])
    )
    message = _wire(sample)
    change(message)
    with pytest.raises(MalformedMessage, match=error):
        kind.from_json(message)


def test_unpack_objects_refuses_an_object_that_does_not_match_its_digest(tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    good = b"a model tensor"
    objects = {hashlib.sha256(good).digest(): good, hashlib.sha256(b"claimed").digest(): b"sent"}
    with pytest.raises(UsageError, match=f"{hashlib.sha256(b'claimed').hexdigest()} does not"):
        unpack_objects(store, objects)
    assert list(store.digests()) == []  # checked before anything is stored
    unpack_objects(store, {hashlib.sha256(good).digest(): good})
    assert store.get(hashlib.sha256(good).digest()) == good


# ---------------------------------------------------------------------------------- bundle


def test_the_bundle_reproduces_every_anchored_root(scenario: Scenario, tmp_path: Path) -> None:
    refused = scenario.address(1)
    scenario.transport.participants[refused] = Misbehaving(
        scenario.participant(1), with_update(nan_weight)
    )
    scenario.coordinator.run(2)
    coordinator = scenario.coordinator

    def export(out: Path) -> Path:
        return export_bundle(scenario.ledger, scenario.job_id, coordinator.store,
                             coordinator.journal, out)  # fmt: skip

    bundle = export(tmp_path / "export")
    verdict = Verdict()
    with open_bundle(bundle) as opened:
        for result in verify_bundle(opened, scenario.chain):
            verdict.add(result)
    assert (verdict.ok, verdict.rounds) == (True, 2), verdict.describe()
    rounds = read_rounds(bundle)
    assert [len(r["records"]) for r in rounds] == [2, 3]
    assert list(rounds[0]["refused"]) == [refused]
    assert read_manifest(bundle)["roundCount"] == 2

    # The archive is reproducible: same bytes on a re-export, and elsewhere.
    archive = (tmp_path / "export" / "bundle.tar.gz").read_bytes()
    export(tmp_path / "export")
    assert (tmp_path / "export" / "bundle.tar.gz").read_bytes() == archive
    export(tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "bundle.tar.gz").read_bytes() == archive
    assert gzip.decompress(archive)  # a valid gzip, naming the archive, not a temp file
    assert archive[3] & 0x08 and archive[10:21] == b"bundle.tar\x00"


# ---------------------------------------------------------------------------- store/models


MODELS = {
    "aml": {"weights": np.linspace(-1, 1, 12), "bias": np.zeros(1)},
    "fortran-order": {"w": np.asfortranarray(np.arange(12.0).reshape(3, 4))},
    "big-endian": {"w": np.arange(5, dtype=">f8")},
    "mixed": {"i": np.arange(6, dtype=np.int32).reshape(2, 3), "s": np.array(2.5), "e": np.ones(0)},
    "strided-view": {"w": np.arange(20.0)[::3]},
}


@pytest.mark.parametrize("name", MODELS)
def test_a_stored_model_is_addressed_by_its_model_digest(name: str, tmp_path: Path) -> None:
    model = MODELS[name]
    store = ArtifactStore(tmp_path / "store")
    digest = put_model(store, model)
    assert digest == model_digest(model)
    loaded = get_model(store, digest)
    assert loaded.keys() == model.keys()
    for key, array in model.items():
        assert loaded[key].dtype == array.dtype and loaded[key].shape == array.shape
        np.testing.assert_array_equal(loaded[key], array)
    assert model_digest(loaded) == digest
    assert set(model_objects(store, digest)) == set(store.digests())


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ({}, "without tensors"),
        ({"": np.zeros(1)}, "non-empty strings"),
        ({"w": np.array([object()])}, "non-numeric dtype"),
        ({"w": [1.0, 2.0]}, "must be a numpy array"),
    ],
)
def test_put_model_refuses_what_has_no_model_digest(
    model: dict[str, Any], error: str, tmp_path: Path
) -> None:
    with pytest.raises(UsageError, match=error):
        put_model(ArtifactStore(tmp_path / "store"), model)


@pytest.mark.parametrize(
    "header",
    [
        b'{"shape":[2],"dtype":"<f8"}',  # keys out of JCS order
        b'{"dtype":"float64","shape":[2]}',  # another spelling of <f8
        b'{"dtype": "<f8", "shape": [2]}',  # spaces
        b'{"dtype":"<f8","shape":[-1]}',  # a shape numpy would infer
        b'{"dtype":"|O","shape":[2]}',  # pointers
    ],
)
def test_only_the_canonical_tensor_encoding_is_read(header: bytes, tmp_path: Path) -> None:
    store = ArtifactStore(tmp_path / "store")
    blob = store.put(header + b"\x00" + np.array([1.0, 2.0]).tobytes())
    digest = store.put_json({"w": blob.hex()})
    with pytest.raises(UsageError, match="malformed tensor blob"):
        get_model(store, digest)


class Alarmed(Participant):
    """A participant whose receipt check always raises its alarm."""

    def check_receipt(self, receipt: RoundReceipt) -> None:
        raise ReceiptAlarm(f"{self.name}: this receipt is not to be trusted")


class Unreachable(Participant):
    """A participant gone by the time its receipt is handed over."""

    def check_receipt(self, receipt: RoundReceipt) -> None:
        raise ParticipantFailed(f"participant {self.name} is unreachable")


def test_a_receipt_that_reaches_nobody_is_journaled_and_the_job_goes_on(
    scenario: Scenario,
) -> None:
    gone = scenario.address(1)
    scenario.transport.participants[gone] = Unreachable(
        "bank-1", scenario.run.banks[1].account, scenario.participant(1).data,
        scenario.run.banks[1].store, scenario.participant(1).journal,
        scenario.participant(0).ledger, scenario.participant(0).plan,
    )  # fmt: skip
    first = scenario.coordinator.run_round(1)
    delivered = scenario.coordinator.journal.last("delivered", round=1)
    assert delivered is not None and "is unreachable" in delivered["failures"][gone]
    assert scenario.coordinator.run_round(2).anchor.previous_model_digest == (
        first.anchor.model_digest
    )


def test_one_alarm_does_not_keep_receipts_from_the_others(scenario: Scenario) -> None:
    honest = scenario.participant(0)
    alarmed_address = scenario.address(1)
    scenario.transport.participants[alarmed_address] = Alarmed(
        honest.name.replace("0", "1"), scenario.run.banks[1].account,
        scenario.participant(1).data, scenario.run.banks[1].store,
        scenario.participant(1).journal, honest.ledger, honest.plan,
    )  # fmt: skip
    with pytest.raises(ReceiptsFailed, match=r"round 1 is anchored, but receipts failed: .*bank-1"):
        scenario.coordinator.run_round(1)
    assert [len(scenario.transport.receipts[scenario.address(b)]) for b in (0, 2)] == [1, 1]
    delivered = scenario.coordinator.journal.last("delivered", round=1)
    assert delivered is not None and list(delivered["failures"]) == [alarmed_address]
