"""What a hetero-lr/1 round names in its bundle: no tensor at all. Its model (the initial
model too) is one JSON object naming each data party's weight commitment and the loss, each
record's update digest names the party's JSON contribution (commitment and transcript), and
its metrics digest the party's round metrics. The weights stay with the parties."""

from __future__ import annotations

from consortium.crypto.update_record import UpdateRecord
from consortium.errors import UsageError
from consortium.fl.vertical.terms import PROTOCOL
from consortium.store.artifacts import ArtifactStore


class HeteroLRLayout:
    """hetero-lr/1's bundle layout, as the protocol registry of the bundle writer holds it."""

    protocol_id = PROTOCOL

    def model_objects(self, store: ArtifactStore, digest: bytes) -> list[bytes]:
        """The model object alone; refused if it is not a model of this protocol."""
        model = store.get_json(digest)
        if not isinstance(model, dict) or model.get("protocol") != PROTOCOL:
            raise UsageError(f"object {digest.hex()} is not a {PROTOCOL} model")
        return [digest]

    def record_objects(self, store: ArtifactStore, record: UpdateRecord) -> list[bytes]:
        return [record.update_digest, record.metrics_digest]


LAYOUT = HeteroLRLayout()
