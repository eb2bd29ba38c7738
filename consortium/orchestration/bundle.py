"""The job's export bundle: everything an auditor needs besides a chain endpoint.

The format is ``consortium.audit-bundle/4`` (docs/audit-bundle.md). ``bundle/manifest.json``
is a small header: the chain, the deployment, the job, the job's round protocol (the one its
model spec names) and the number of rounds.
``bundle/rounds.jsonl`` holds one line per anchored round, in round order: the anchor, its
transaction, the signed records in leaf order with their inclusion proofs, the refused
updates and why, and the digests of the global model and the round metrics. Rounds are lines
of their own so that an auditor reads them one at a time, in memory that does not grow with
the job's length. ``bundle/objects/`` is an artifact store holding every object those digests
name: records, updates, models, metrics, the initial model and the model spec; which objects
a model or a record names is the job's protocol's to say (:mod:`consortium.protocol.bundles`).
``bundle.tar.gz`` packs the directory reproducibly.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any

from consortium.crypto.canonical import jcs
from consortium.crypto.digests import hex32
from consortium.crypto.merkle import MerkleTree
from consortium.crypto.update_record import SignedUpdateRecord
from consortium.errors import ConsortiumError
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import Job
from consortium.lockfile import ExclusiveLock
from consortium.orchestration import journal_entries
from consortium.orchestration.journal_entries import AnchorMined
from consortium.protocol.bundles import BundleLayout, bundle_layout
from consortium.protocol.messages import anchor_to_json
from consortium.protocol.spec import spec_protocol
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal

BUNDLE_FORMAT = "consortium.audit-bundle/4"
MANIFEST_FILE = "manifest.json"
ROUNDS_FILE = "rounds.jsonl"


def export_bundle(
    ledger: Ledger, job_id: int, store: ArtifactStore, journal: Journal, out: Path
) -> Path:
    """Writes ``out/bundle/`` and ``out/bundle.tar.gz``; returns the bundle directory.

    The directory is built beside its final place and renamed into it, so an interrupted
    export never leaves a half bundle under the final name; two exports into one ``out`` at
    once would share that staging directory, so the second is refused (``out/bundle.lock``).
    """
    out.mkdir(parents=True, exist_ok=True)
    with ExclusiveLock(out / "bundle", f"the bundle directory {out / 'bundle'}"):
        return _export(ledger, job_id, store, journal, out)


def _export(ledger: Ledger, job_id: int, store: ArtifactStore, journal: Journal, out: Path) -> Path:
    job = ledger.jobs.get(job_id)
    protocol = spec_protocol(store.get_json(job.model_spec_digest))
    layout = bundle_layout(protocol)
    objects = [*layout.model_objects(store, job.initial_model_digest), job.model_spec_digest]
    final = out / "bundle"
    staging = out / ".bundle.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    count = 0
    with (staging / ROUNDS_FILE).open("wb") as lines:
        for anchored in journal_entries.newest_anchored(journal):
            entry, named = _round_entry(store, journal, anchored, layout)
            lines.write(jcs(entry) + b"\n")
            objects += named
            count += 1
    store.export(dict.fromkeys(objects), staging)  # the store keeps them in objects/
    manifest = _header(ledger, job, protocol, count)
    (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    _pack(final, out / "bundle.tar.gz")
    return final


def _round_entry(
    store: ArtifactStore, journal: Journal, anchored: AnchorMined, layout: BundleLayout
) -> tuple[dict[str, Any], list[bytes]]:
    """The round's line of ``rounds.jsonl``, and the objects it names (which the bundle must
    hold): records, what each names (``layout`` says which), the global model's objects and
    the round metrics."""
    intent = journal_entries.last_intent(journal, anchored.round)
    if intent is None:
        raise ConsortiumError(f"round {anchored.round} is anchored without an intent")
    anchor = anchored.anchor
    records = intent.records
    tree = MerkleTree(store.get(d) for d in records)
    objects: list[bytes] = []
    for digest in records:
        record = SignedUpdateRecord.from_json(store.get_json(digest)).record
        objects += [digest, *layout.record_objects(store, record)]
    objects += [*layout.model_objects(store, anchor.model_digest), anchor.metrics_digest]
    entry = {
        "round": anchor.round,
        "anchor": anchor_to_json(anchor),
        "transaction": anchored.tx_hash,
        "records": [
            {
                "digest": hex32(d),
                "leafIndex": i,
                "proof": [hex32(p) for p in tree.inclusion_proof(i)],
            }
            for i, d in enumerate(records)
        ],
        "refused": dict(intent.refused),
        "model": hex32(anchor.model_digest),
        "metrics": hex32(anchor.metrics_digest),
    }
    return entry, objects


def _header(ledger: Ledger, job: Job, protocol: str, rounds: int) -> dict[str, Any]:
    """``manifest.json``: what the bundle is about, and how many lines ``rounds.jsonl`` has."""
    return {
        "format": BUNDLE_FORMAT,
        "chainId": ledger.chain.chain_id,
        "deployment": ledger.deployment.to_json(),
        "job": {
            "id": job.id,
            "purpose": job.purpose,
            "coordinator": job.coordinator,
            "consumer": job.consumer,
            "participants": list(job.participants),
            "datasets": list(job.dataset_ids),
            "modelSpec": hex32(job.model_spec_digest),
            "initialModel": hex32(job.initial_model_digest),
        },
        "protocol": protocol,
        "roundCount": rounds,
    }


def _pack(directory: Path, archive: Path) -> None:
    """A tar.gz whose bytes depend only on the bundle's content (sorted, no times or owners)."""

    def normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
        return info

    partial = archive.with_name(f".{archive.name}.partial")
    with (
        open(partial, "wb") as raw,
        # The gzip header names the archive, not the temporary file it is written to.
        gzip.GzipFile(archive.name, mode="wb", fileobj=raw, mtime=0) as zipped,
        tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for path in sorted(directory.rglob("*")):
            arcname = str(path.relative_to(directory.parent))
            tar.add(path, arcname=arcname, recursive=False, filter=normalise)
    os.replace(partial, archive)
