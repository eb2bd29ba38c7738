"""What a FedAvg round names in its bundle: models and updates are tensor manifests, each with
its tensors (:func:`consortium.store.models.model_objects`), and each record names its
participant's metrics."""

from __future__ import annotations

from consortium.crypto.update_record import UpdateRecord
from consortium.protocol.fedavg.round import PROTOCOL_ID
from consortium.store.artifacts import ArtifactStore
from consortium.store.models import model_objects


class FedAvgLayout:
    """FedAvg's bundle layout, as the protocol registry of the bundle writer holds it."""

    protocol_id = PROTOCOL_ID

    def model_objects(self, store: ArtifactStore, digest: bytes) -> list[bytes]:
        return model_objects(store, digest)

    def record_objects(self, store: ArtifactStore, record: UpdateRecord) -> list[bytes]:
        return [*model_objects(store, record.update_digest), record.metrics_digest]


LAYOUT = FedAvgLayout()
