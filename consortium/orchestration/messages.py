"""The round protocol's messages between the coordinator and each participant.

Parties exchange nothing else: in one process the transport still turns every message into
JSON and back (see :class:`~consortium.orchestration.transport.LocalTransport`), so the same
parties run unchanged across processes and machines. Artifacts travel as content-addressed
objects: the receiver stores them in its own store, which checks each against its address.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from consortium.crypto.digests import from_hex32, hex32
from consortium.crypto.update_record import SignedUpdateRecord
from consortium.errors import UsageError
from consortium.ledger.jobs import RoundAnchor
from consortium.store.artifacts import ArtifactStore

Objects = dict[bytes, bytes]


def pack_objects(store: ArtifactStore, digests: list[bytes]) -> Objects:
    """The objects ``digests`` read (and verified) from ``store``, to send along."""
    return {digest: store.get(digest) for digest in digests}


def unpack_objects(store: ArtifactStore, objects: Mapping[bytes, bytes]) -> None:
    """Stores received objects; one whose bytes do not match its address is refused."""
    for digest, data in objects.items():
        if store.put(data) != digest:
            raise UsageError(f"received object {digest.hex()} does not match its digest")


def _objects_json(objects: Mapping[bytes, bytes]) -> dict[str, str]:
    return {hex32(d): base64.b64encode(data).decode() for d, data in sorted(objects.items())}


def _objects_from_json(obj: Mapping[str, str]) -> Objects:
    return {from_hex32(d): base64.b64decode(data, validate=True) for d, data in obj.items()}


@dataclass(frozen=True)
class RoundOpen:
    """Coordinator -> participant: train round ``round`` of job ``job_id`` from the base model
    ``base_model_digest``, whose objects come along."""

    job_id: int
    round: int
    base_model_digest: bytes
    objects: Objects

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "round-open",
            "jobId": self.job_id,
            "round": self.round,
            "baseModelDigest": hex32(self.base_model_digest),
            "objects": _objects_json(self.objects),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RoundOpen:
        return cls(
            obj["jobId"], obj["round"], from_hex32(obj["baseModelDigest"]),
            _objects_from_json(obj["objects"]),
        )  # fmt: skip


@dataclass(frozen=True)
class UpdateSubmission:
    """Participant -> coordinator: the signed record and the objects it commits to (the
    update's manifest and tensors, and the local metrics)."""

    record: SignedUpdateRecord
    objects: Objects

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "update",
            "record": self.record.to_json(),
            "objects": _objects_json(self.objects),
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> UpdateSubmission:
        return cls(SignedUpdateRecord.from_json(obj["record"]), _objects_from_json(obj["objects"]))


@dataclass(frozen=True)
class RoundReceipt:
    """Coordinator -> participant, once the round is anchored: the anchor as the chain recorded
    it, and the inclusion proof of the participant's record (or why it was left out)."""

    anchor: RoundAnchor
    leaf_index: int | None
    proof: list[bytes]
    refusal: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "receipt",
            "anchor": anchor_to_json(self.anchor),
            "leafIndex": self.leaf_index,
            "proof": [hex32(p) for p in self.proof],
            "refusal": self.refusal,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> RoundReceipt:
        return cls(
            anchor_from_json(obj["anchor"]),
            obj["leafIndex"],
            [from_hex32(p) for p in obj["proof"]],
            obj["refusal"],
        )


def anchor_to_json(a: RoundAnchor) -> dict[str, Any]:
    """The JSON form of a round anchor in receipts, journals and bundles."""
    return {
        "jobId": a.job_id,
        "round": a.round,
        "merkleRoot": hex32(a.merkle_root),
        "participantCount": a.participant_count,
        "modelDigest": hex32(a.model_digest),
        "metricsDigest": hex32(a.metrics_digest),
        "previousModelDigest": hex32(a.previous_model_digest),
        "blockNumber": a.block_number,
        "timestamp": a.timestamp,
    }


def anchor_from_json(a: Mapping[str, Any]) -> RoundAnchor:
    """A round anchor from the JSON form receipts and bundles use."""
    return RoundAnchor(
        job_id=a["jobId"],
        round=a["round"],
        merkle_root=from_hex32(a["merkleRoot"]),
        participant_count=a["participantCount"],
        model_digest=from_hex32(a["modelDigest"]),
        metrics_digest=from_hex32(a["metricsDigest"]),
        previous_model_digest=from_hex32(a["previousModelDigest"]),
        block_number=a["blockNumber"],
        timestamp=a["timestamp"],
    )
