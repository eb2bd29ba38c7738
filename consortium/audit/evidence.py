"""The objects a round names, read from the bundle and verified once each.

The checks never read the bundle's objects themselves: they get them from :class:`Evidence`,
which keeps every refusal (missing, damaged, not canonical, not a model) as a problem for
:func:`consortium.audit.checks.check_objects` to report with the scope that needed it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from consortium.audit.bundle import MAX_JSON_OBJECT_BYTES, parse_json
from consortium.audit.results import Scope
from consortium.crypto.canonical import jcs
from consortium.crypto.digests import from_hex32
from consortium.errors import ConsortiumError
from consortium.store.artifacts import ArtifactStore
from consortium.store.models import parse_tensor_blob

Model = dict[str, np.ndarray]  # as read from a bundle: any dtype, which check_update judges
READ_THREADS = min(4, os.cpu_count() or 1)
"""Threads that read and verify tensors side by side (hashing releases the GIL)."""
_READERS = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="audit-read")


@dataclass
class Evidence:
    """The objects one round (or the job header) names, each read and verified once.

    :meth:`ArtifactStore.get` refuses bytes that do not hash to their name, and JSON objects
    are read up to :data:`MAX_JSON_OBJECT_BYTES` (tensors up to the store's bound); every
    refusal is kept as a problem (with the scope that needed the object) for :func:`check_objects`,
    and the caller gets None instead of bytes. Dropped after its round, so memory stays flat
    in the number of rounds. Tensors are read as views (:meth:`ArtifactStore.get_view`),
    which parse into arrays without a copy.
    """

    store: ArtifactStore
    problems: list[tuple[Scope, str]] = field(default_factory=list)
    _cache: dict[bytes, bytes | memoryview | None] = field(default_factory=dict)
    _prefetched: dict[bytes, Future[memoryview]] = field(default_factory=dict)

    def prefetch_models(self, digests: Iterable[bytes]) -> None:
        """Starts reading and verifying the tensors of the models ``digests`` name on
        background threads, and returns at once: a round's updates are most of what an audit
        reads, and they hash in parallel with each other and with the round's chain reads.
        :meth:`model` waits for them. Whatever is amiss (a missing or damaged manifest or
        tensor) is left for :meth:`model` to report, in order, with its scope."""
        tensors = [t for digest in digests for t in self._tensors_of(digest)]
        for tensor in dict.fromkeys(tensors):
            if tensor not in self._cache and tensor not in self._prefetched:
                self._prefetched[tensor] = _READERS.submit(self.store.get_view, tensor)

    def _tensors_of(self, manifest: bytes) -> list[bytes]:
        """The tensor digests a model manifest names; none when it cannot be read as one. A
        manifest read intact is kept for :meth:`model`, which so reads it once."""
        if manifest in self._cache:
            data = self._cache[manifest]
        else:
            try:
                data = self._cache[manifest] = self._get_json_object(manifest)
            except ConsortiumError:
                return []  # for model() to read again and report
        try:
            value = parse_json(bytes(data or b""))
            return [from_hex32(text) for text in value.values()]
        except (ConsortiumError, AttributeError, TypeError):
            return []

    @property
    def count(self) -> int:
        return len(self._cache)

    def get(self, digest: bytes, scope: Scope, what: str) -> bytes | None:
        """The JSON object ``digest`` names, as bytes, or None (a problem is recorded)."""
        data = self._read(digest, scope, what, self._get_json_object)
        return bytes(data) if isinstance(data, memoryview) else data

    def _get_json_object(self, digest: bytes) -> bytes:
        """A JSON object's bytes, refused unread if it is larger than JSON objects are."""
        return self.store.get(digest, max_bytes=MAX_JSON_OBJECT_BYTES)

    def _read(
        self,
        digest: bytes,
        scope: Scope,
        what: str,
        read: Callable[[bytes], bytes | memoryview],
    ) -> bytes | memoryview | None:
        if digest in self._cache:
            return self._cache[digest]
        prefetched = self._prefetched.pop(digest, None)
        try:
            data: bytes | memoryview | None = (
                read(digest) if prefetched is None else prefetched.result()
            )
        except ConsortiumError as exc:
            self.problems.append((scope, f"{what} {digest.hex()}: {exc}"))
            data = None
        self._cache[digest] = data
        return data

    def json(self, digest: bytes, scope: Scope, what: str) -> Any | None:
        """The canonical JSON object ``digest`` names, or None (a problem is recorded)."""
        data = self.get(digest, scope, what)
        if data is None:
            return None
        try:
            value = _canonical_json(data)
        except ValueError as exc:
            self.problems.append((scope, f"{what} {digest.hex()}: {exc}"))
            return None
        return value

    def model(self, digest: bytes, scope: Scope, what: str) -> Model | None:
        """The model whose manifest object is ``digest``, every tensor verified, or None."""
        manifest = self.json(digest, scope, f"{what} manifest")
        if manifest is None:
            return None
        if not isinstance(manifest, dict) or not manifest:
            self.problems.append((scope, f"{what} {digest.hex()} is not a model manifest"))
            return None
        model: Model = {}
        for name, text in manifest.items():
            try:
                tensor = from_hex32(text, what=f"tensor {name!r}")
            except ConsortiumError as exc:
                self.problems.append((scope, f"{what} {digest.hex()}: {exc}"))
                return None
            blob = self._read(tensor, scope, f"{what} tensor {name!r}", self.store.get_view)
            if blob is None:
                return None
            try:
                model[name] = parse_tensor_blob(blob)
            except ConsortiumError as exc:
                self.problems.append((scope, f"{what} tensor {name!r} {tensor.hex()}: {exc}"))
                return None
        return model


def _canonical_json(data: bytes) -> Any:
    try:
        value = parse_json(data)
        canonical = jcs(value)
    except ConsortiumError:
        raise ValueError("is not JSON") from None
    if canonical != data:
        raise ValueError("is JSON but not RFC 8785 canonical")
    return value
