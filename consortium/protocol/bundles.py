"""Which objects a round of each protocol names: protocol id -> that protocol's bundle layout.

The bundle writer (:mod:`consortium.orchestration.bundle`) is the same for every protocol: it
writes the records, the anchors and the proofs, and asks the job's protocol which objects its
models and records name, since those differ (a FedAvg model or update is a tensor manifest
and its tensors, a hetero-lr/1 model or contribution one JSON object). A protocol's layout
lives with the protocol, beside its audit checks, which read what it exported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from consortium.crypto.update_record import UpdateRecord
from consortium.errors import UsageError
from consortium.protocol.fedavg import bundle as fedavg
from consortium.protocol.registry import by_protocol, lookup
from consortium.protocol.vertical import bundle as vertical
from consortium.store.artifacts import ArtifactStore


class BundleLayout(Protocol):
    """The objects a protocol's models and records name, which its bundles must hold."""

    protocol_id: str

    def model_objects(self, store: ArtifactStore, digest: bytes) -> list[bytes]:
        """Every object of the model ``digest`` (a round's, or the job's initial model)."""
        ...

    def record_objects(self, store: ArtifactStore, record: UpdateRecord) -> list[bytes]:
        """Every object the record names besides itself: its update and its metrics."""
        ...


LAYOUTS: Mapping[str, BundleLayout] = by_protocol(fedavg.LAYOUT, vertical.LAYOUT)


class NoBundleLayout(UsageError):
    """The job's protocol is not one whose bundles this code can write."""


def bundle_layout(protocol_id: str) -> BundleLayout:
    """The bundle layout of ``protocol_id``.

    Raises:
        NoBundleLayout: if no protocol here has that id.
    """
    return lookup(
        LAYOUTS,
        protocol_id,
        lambda known: NoBundleLayout(
            f"job protocol {protocol_id!r} is not one a bundle can be written for (known: {known})"
        ),
    )
