"""The job's export bundle: everything an auditor needs besides a chain endpoint.

``bundle/manifest.json`` (format ``consortium.audit-bundle/1``, documented in
docs/audit-bundle.md) lists, per anchored round, the anchor, its transaction, the signed
records in leaf order with their inclusion proofs, the refused updates and why, and the
digests of the global model and the round metrics. ``bundle/objects/`` is an artifact store
holding every object those digests name: records, updates, models, metrics, the initial model
and the model spec. ``bundle.tar.gz`` packs the directory reproducibly.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import tarfile
from pathlib import Path

from consortium.crypto.digests import from_hex32, hex32
from consortium.crypto.merkle import MerkleTree
from consortium.crypto.update_record import SignedUpdateRecord
from consortium.errors import ConsortiumError
from consortium.ledger.client import Ledger
from consortium.orchestration.journal import Journal
from consortium.orchestration.messages import anchor_from_json
from consortium.store.artifacts import ArtifactStore
from consortium.store.models import model_objects

BUNDLE_FORMAT = "consortium.audit-bundle/1"


def export_bundle(
    ledger: Ledger, job_id: int, store: ArtifactStore, journal: Journal, out: Path
) -> Path:
    """Writes ``out/bundle/`` and ``out/bundle.tar.gz``; returns the bundle directory.

    The directory is built beside its final place and renamed into it, so an interrupted
    export never leaves a half bundle under the final name.
    """
    job = ledger.jobs.get(job_id)
    objects = [
        *model_objects(store, job.initial_model_digest),
        job.model_spec_digest,
    ]
    rounds = []
    for anchored in sorted(journal.find("anchored"), key=lambda e: e["round"]):
        intent = journal.last("intent", round=anchored["round"])
        if intent is None:
            raise ConsortiumError(f"round {anchored['round']} is anchored without an intent")
        anchor = anchor_from_json(anchored["anchor"])
        records = [from_hex32(d) for d in intent["records"]]
        tree = MerkleTree(store.get(d) for d in records)
        for digest in records:
            record = SignedUpdateRecord.from_json(store.get_json(digest)).record
            objects += [digest, *model_objects(store, record.update_digest), record.metrics_digest]
        objects += [*model_objects(store, anchor.model_digest), anchor.metrics_digest]
        rounds.append(
            {
                "round": anchor.round,
                "anchor": anchored["anchor"],
                "transaction": anchored["txHash"],
                "records": [
                    {
                        "digest": hex32(d),
                        "leafIndex": i,
                        "proof": [hex32(p) for p in tree.inclusion_proof(i)],
                    }
                    for i, d in enumerate(records)
                ],
                "refused": intent["refused"],
                "model": hex32(anchor.model_digest),
                "metrics": hex32(anchor.metrics_digest),
            }
        )
    manifest = {
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
        "rounds": rounds,
    }
    final = out / "bundle"
    staging = out / ".bundle.partial"
    shutil.rmtree(staging, ignore_errors=True)
    store.export(dict.fromkeys(objects), staging)  # the store keeps them in objects/
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    os.replace(staging, final)
    _pack(final, out / "bundle.tar.gz")
    return final


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
