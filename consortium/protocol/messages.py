"""The round protocol's messages between the coordinator and each participant.

Parties exchange nothing else: in one process the transport still turns every message into
JSON and back (see :class:`~consortium.orchestration.transport.LocalTransport`), so the same
parties run unchanged across processes and machines. Artifacts travel as content-addressed
objects: the receiver stores them in its own store, which checks each against its address.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from consortium.crypto.digests import from_hex32, hex32
from consortium.crypto.update_record import SignedUpdateRecord
from consortium.errors import UsageError
from consortium.ledger.jobs import RoundAnchor
from consortium.store.artifacts import ArtifactStore

Objects = dict[bytes, bytes]

_T = TypeVar("_T")


class MalformedMessage(UsageError):
    """A received message does not have the protocol's form; nothing of it was used."""


def pack_objects(store: ArtifactStore, digests: list[bytes]) -> Objects:
    """The objects ``digests`` read (and verified) from ``store``, to send along."""
    return {digest: store.get(digest) for digest in digests}


def unpack_objects(store: ArtifactStore, objects: Mapping[bytes, bytes]) -> None:
    """Stores received objects; one whose bytes do not match its address is refused.

    Every object is checked before any is stored, so a refused batch leaves nothing behind.
    """
    for digest, data in objects.items():
        if hashlib.sha256(data).digest() != digest:
            raise UsageError(f"received object {digest.hex()} does not match its digest")
    for data in objects.values():
        store.put(data)


def _objects_json(objects: Mapping[bytes, bytes]) -> dict[str, str]:
    return {hex32(d): base64.b64encode(data).decode() for d, data in sorted(objects.items())}


def _objects_from_json(obj: Mapping[str, str]) -> Objects:
    return {from_hex32(d): base64.b64decode(data, validate=True) for d, data in obj.items()}


def _parse(kind: str, obj: Any, parse: Callable[[Mapping[str, Any]], _T]) -> _T:
    """``parse(obj)`` for a message of type ``kind``; any defect is a MalformedMessage."""
    if not isinstance(obj, Mapping) or obj.get("type") != kind:
        raise MalformedMessage(f"not a {kind!r} message")
    try:
        return parse(obj)
    except MalformedMessage:
        raise
    except UsageError as exc:
        raise MalformedMessage(f"malformed {kind!r} message: {exc}") from None
    except (KeyError, TypeError, ValueError, AttributeError) as exc:  # binascii.Error too
        detail = f"lacks field {exc}" if isinstance(exc, KeyError) else str(exc)
        raise MalformedMessage(f"malformed {kind!r} message: {detail}") from None


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
        return _parse(
            "round-open",
            obj,
            lambda o: cls(
                _integer(o, "jobId"), _integer(o, "round"), from_hex32(o["baseModelDigest"]),
                _objects_from_json(o["objects"]),
            ),
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
        return _parse(
            "update",
            obj,
            lambda o: cls(
                SignedUpdateRecord.from_json(o["record"]), _objects_from_json(o["objects"])
            ),
        )


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
        return _parse(
            "receipt",
            obj,
            lambda o: cls(
                anchor_from_json(o["anchor"]),
                None if o["leafIndex"] is None else _integer(o, "leafIndex"),
                [from_hex32(p) for p in o["proof"]],
                _optional_text(o, "refusal"),
            ),
        )


def mask_to_json(mask: int) -> str:
    """A participant mask (a ``uint256``) in file text form: its 32 bytes big-endian, as a
    digest is written (bit i, the job's participant i, is the lowest bit of the last digit)."""
    return hex32(mask.to_bytes(32, "big"))


def mask_from_json(text: object) -> int:
    """The participant mask that :func:`mask_to_json` wrote."""
    return int.from_bytes(from_hex32(text, what="participantMask"), "big")  # type: ignore[arg-type]


def anchor_to_json(a: RoundAnchor) -> dict[str, Any]:
    """The JSON form of a round anchor in receipts, journals and bundles."""
    return {
        "jobId": a.job_id,
        "round": a.round,
        "merkleRoot": hex32(a.merkle_root),
        "participantCount": a.participant_count,
        "participantMask": mask_to_json(a.participant_mask),
        "modelDigest": hex32(a.model_digest),
        "metricsDigest": hex32(a.metrics_digest),
        "previousModelDigest": hex32(a.previous_model_digest),
        "blockNumber": a.block_number,
        "timestamp": a.timestamp,
    }


def anchor_from_json(a: Mapping[str, Any]) -> RoundAnchor:
    """A round anchor from the JSON form receipts and bundles use."""
    return RoundAnchor(
        job_id=_integer(a, "jobId"),
        round=_integer(a, "round"),
        merkle_root=from_hex32(a["merkleRoot"], what="merkleRoot"),
        participant_count=_integer(a, "participantCount"),
        participant_mask=mask_from_json(a["participantMask"]),
        model_digest=from_hex32(a["modelDigest"], what="modelDigest"),
        metrics_digest=from_hex32(a["metricsDigest"], what="metricsDigest"),
        previous_model_digest=from_hex32(a["previousModelDigest"], what="previousModelDigest"),
        block_number=_integer(a, "blockNumber"),
        timestamp=_integer(a, "timestamp"),
    )


def _integer(obj: Mapping[str, Any], field: str) -> int:
    value = obj[field]
    # bool is an int subclass, but True is not a round number.
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"field {field!r} must be a non-negative integer, not {value!r}")
    return value


def _optional_text(obj: Mapping[str, Any], field: str) -> str | None:
    value = obj[field]
    if value is not None and not isinstance(value, str):
        raise UsageError(f"field {field!r} must be a string or null, not {value!r}")
    return value
