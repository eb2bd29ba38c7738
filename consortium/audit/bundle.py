"""Reading an audit bundle (``consortium.audit-bundle/4``, docs/audit-bundle.md) as evidence.

The reader is written apart from the exporter on purpose: it shares the protocol's formats
(crypto, ledger types) but none of the coordinator's code, so a bug in how a coordinator writes
bundles cannot be mirrored by the same bug in how the auditor reads them.

The reader streams: ``manifest.json`` is a small header (read whole, up to
:data:`MAX_MANIFEST_BYTES`), and the rounds are the lines of ``rounds.jsonl``, handed out one
at a time by :meth:`AuditBundle.rounds` as the audit reaches them, none longer than
:data:`MAX_ROUND_LINE_BYTES`. So the memory an audit needs does not grow with the number of
rounds, and no line of a hostile bundle can make it grow either.

Every file of a bundle is opened so that it cannot block (a FIFO) or lead elsewhere (a
symbolic link, which a bundle never holds), and read within the bound its place in the format
allows; an archive is unpacked within bounds of its own (:func:`unpack_archive`).

A version 3 header names the job's round protocol (``protocol``); a version 2 bundle, written
before headers named one, is still read, as FedAvg's (``fedavg/1``, the only protocol then).
A protocol this auditor has no checks for (:mod:`consortium.audit.protocols`) is refused like
an unknown format.

Two kinds of damage are told apart. A bundle whose header cannot be read (no manifest, not
JSON, another format, no job or deployment, no ``rounds.jsonl``) is not evidence of anything
and is refused with :class:`BundleError` (exit 2). A line of ``rounds.jsonl`` that is not a
well-formed round entry (blank, not JSON, too long, a field missing or out of range) is
evidence of a bad bundle and becomes a failed ``manifest`` check of that round (exit 1), so
one damaged round does not hide the verdict on the others.
"""

from __future__ import annotations

import contextlib
import gzip
import itertools
import re
import tarfile
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, BinaryIO

from eth_typing import ChecksumAddress
from eth_utils import is_checksum_address

from consortium.audit.protocols import UnknownProtocol, protocol_audit
from consortium.crypto.digests import from_hex32
from consortium.errors import UsageError
from consortium.jsonio import parse_json
from consortium.ledger.deployment import Deployment
from consortium.ledger.jobs import RoundAnchor
from consortium.protocol.messages import mask_from_json
from consortium.protocol.spec import IMPLIED_PROTOCOL
from consortium.store.artifacts import ArtifactStore, NotRegularFile, open_regular

BUNDLE_FORMAT = "consortium.audit-bundle/4"
PREVIOUS_FORMAT = "consortium.audit-bundle/3"
"""The format before anchors named their round's participants: still read, but its anchors,
which name no participant set, are not the commitments this version's contracts make."""
LEGACY_FORMAT = "consortium.audit-bundle/2"
"""The format before headers named the protocol: still read, its protocol implied."""
READABLE_FORMATS = (BUNDLE_FORMAT, PREVIOUS_FORMAT, LEGACY_FORMAT)
MANIFEST = "manifest.json"
ROUNDS = "rounds.jsonl"

MAX_MANIFEST_BYTES = 2**20
"""The largest ``manifest.json`` read. The header takes a few hundred bytes plus about 45 per
participant and dataset, so this is room for some 20,000 of them; anything larger is not a
header (a format-1 manifest holding its rounds, or an attempt to exhaust memory)."""
MAX_ROUND_LINE_BYTES = 8 * 2**20
"""The longest line of ``rounds.jsonl`` read as a round entry. A round of 1,000 participants
takes about 0.8 MB (each record's entry, with its 10-hash inclusion proof, 773 bytes), so
this is ten times that. A longer line is skipped unread and fails its round's ``manifest``
check, so that no line can make the audit hold more than this much of the file at once."""
_SKIP_CHUNK = 2**20  # how much of an over-long line is read at a time while skipping it
MAX_JSON_OBJECT_BYTES = 8 * 2**20
"""The largest JSON object read (a signed record, metrics, a model manifest, the model spec).
The largest of them, a round's metrics, takes about 100 bytes per participant: this is room
for a round of 80,000, like a round line's bound for the round's records."""
MAX_OBJECT_BYTES = 2**28
"""The largest object read at all: a tensor. The largest model the benchmarks train, 1,000,000
float64 weights, takes 8 MB; this is 32 times that, and keeps a bundle's objects from filling
the auditor's memory (a sparse file of any size takes no room on disk)."""
MAX_ARCHIVE_BYTES = 2**34
"""The most a ``.tar.gz`` bundle may expand to (its tar stream: headers and contents), 16 GiB:
some 2,000 rounds of ten 8 MB updates. A larger bundle is audited as a directory."""
MAX_ARCHIVE_MEMBERS = 2**20
"""The most files and directories a ``.tar.gz`` bundle may hold: some 20,000 rounds of ten
participants, at about fifty objects a round."""
MAX_COMPRESSION_RATIO = 100
"""How many times its compressed size an archive may expand, once past
:data:`RATIO_CHECKED_FROM` bytes. Bundles hold mostly trained weights, which gzip barely
shrinks, and some JSON (a few times); deflate reaches about 1,000 on runs of one byte."""
RATIO_CHECKED_FROM = 64 * 2**20
"""Expanded bytes before the ratio is enforced: a small bundle whose models are still zeros
compresses far better than a large one, and may."""
MAX_TAR_HEADER_BYTES = 2**16
"""The longest pax or GNU extended header of an archive member (tarfile holds one whole in
memory); one that names a path of the longest a file system takes, 4,096 bytes, is far
shorter."""
_EXTENDED_HEADERS = frozenset(
    {
        tarfile.XHDTYPE,
        tarfile.XGLTYPE,
        tarfile.SOLARIS_XHDTYPE,
        tarfile.GNUTYPE_LONGNAME,
        tarfile.GNUTYPE_LONGLINK,
    }
)
_TX_HASH = re.compile(r"0x[0-9a-f]{64}")
UINT32_MAX = 2**32 - 1
UINT256_MAX = 2**256 - 1
"""Numbers the contracts take as ``uint32`` (rounds, counts) and ``uint256`` (ids, blocks): a
manifest value outside its range is malformed, not something to send to the chain."""


class BundleError(UsageError):
    """The bundle cannot be read at all; nothing about the job was checked."""


@dataclass(frozen=True)
class ManifestJob:
    """The job as the manifest states it (to be compared with ``getJob`` on chain)."""

    id: int
    purpose: str
    coordinator: ChecksumAddress
    consumer: ChecksumAddress
    participants: tuple[ChecksumAddress, ...]
    datasets: tuple[int, ...]
    model_spec: bytes
    initial_model: bytes


@dataclass(frozen=True)
class RecordEntry:
    """One ``records[]`` item of a round: a record object, its leaf index and proof."""

    digest: bytes
    leaf_index: int
    proof: tuple[bytes, ...]


@dataclass(frozen=True)
class RoundEntry:
    """One parsed round entry (a line of ``rounds.jsonl``)."""

    round: int
    anchor: RoundAnchor
    transaction: str
    records: tuple[RecordEntry, ...]
    refused: dict[str, str]
    model: bytes
    metrics: bytes


@dataclass(frozen=True)
class RoundLine:
    """One line of ``rounds.jsonl``: its position (1-based: the entry's place in the bundle)
    and the JSON value it holds, or why it holds none (``error``)."""

    position: int
    value: Any = None
    error: str = ""

    def entry(self) -> RoundEntry:
        """The round entry on this line; any defect is a UsageError saying what is wrong."""
        if self.error:
            raise UsageError(self.error)
        return parse_round(self.value)

    @property
    def claimed_round(self) -> int:
        """The round number the line claims, or its position if it claims none: where the
        results about a malformed entry are filed."""
        claimed = self.value.get("round") if isinstance(self.value, dict) else None
        if isinstance(claimed, int) and not isinstance(claimed, bool):
            return claimed
        return self.position


@dataclass(frozen=True)
class AuditBundle:
    """An opened bundle: its header parsed; its rounds read from ``rounds.jsonl`` a line at a
    time, afresh each time :meth:`rounds` is iterated, and never held together."""

    path: Path
    chain_id: int
    deployment: Deployment
    job: ManifestJob
    protocol: str  # the header's protocol id; IMPLIED_PROTOCOL for a version 2 bundle
    round_count: int
    objects: ArtifactStore

    def __len__(self) -> int:
        """The number of rounds the header announces (the audit holds the lines to it)."""
        return self.round_count

    def rounds(self) -> Iterator[RoundLine]:
        """The lines of ``rounds.jsonl`` in order, each read when the caller asks for it."""
        return read_round_lines(self.path / ROUNDS)


@contextlib.contextmanager
def open_bundle(path: Path) -> Iterator[AuditBundle]:
    """The bundle at ``path``: a bundle directory, a directory holding ``bundle/``, or a
    ``.tar.gz`` as ``consortium export`` and ``simulate --out`` write it.

    An archive is unpacked (:func:`unpack_archive`) into a temporary directory that is removed
    on exit, or as soon as the archive is refused.

    Raises:
        BundleError: if nothing is at ``path``, or there is no readable manifest of a known
            format, or no rounds file, or the archive is refused.
    """
    path = Path(path)
    if not path.exists():
        raise BundleError(f"no bundle at {path}: no such file or directory")
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory(prefix="consortium-audit-") as scratch:
            unpack_archive(path, Path(scratch))
            candidates = [p.parent for p in Path(scratch).glob(f"*/{MANIFEST}")]
            if len(candidates) != 1:
                raise BundleError(f"{path}: the archive holds no single bundle directory")
            yield read_bundle(candidates[0])
        return
    if path.is_dir() and not (path / MANIFEST).exists() and (path / "bundle" / MANIFEST).exists():
        path = path / "bundle"
    yield read_bundle(path)


def unpack_archive(path: Path, destination: Path) -> None:
    """Extracts the bundle archive ``path`` into ``destination``, refusing it on the way.

    Only regular files and directories at relative paths are extracted (and then through
    tarfile's ``data`` filter too), at most :data:`MAX_ARCHIVE_MEMBERS` of them. The tar stream
    is counted as it is inflated, so an archive that would expand past
    :data:`MAX_ARCHIVE_BYTES`, or more than :data:`MAX_COMPRESSION_RATIO` times its size, is
    refused before that much is written; what was extracted by then is the caller's to remove.

    Raises:
        BundleError: if the archive is refused or cannot be read.
    """
    try:
        compressed, _ = open_regular(path, buffering=-1)
        with (
            compressed,
            tarfile.open(fileobj=_Inflated(compressed), mode="r|", tarinfo=_Member) as archive,
        ):
            archive.extractall(destination, members=_checked(archive), filter="data")
    except _Refused as exc:
        raise BundleError(f"{path}: refused: {exc}") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error, RecursionError) as exc:
        # RecursionError: tarfile recurses once per extended header chained to a member.
        raise BundleError(f"{path}: not a readable bundle archive ({exc})") from None


class _Refused(Exception):
    """Why :func:`unpack_archive` refuses an archive (an Exception that tarfile lets through,
    and not an OSError, which its extraction would swallow)."""


class _Inflated:
    """The tar stream of a ``.tar.gz``, refused once it expands past the archive bounds."""

    def __init__(self, compressed: BinaryIO) -> None:
        self._compressed = compressed
        self._stream = gzip.GzipFile(fileobj=compressed, mode="rb")
        self._expanded = 0

    def read(self, size: int) -> bytes:
        """Up to ``size`` bytes of the tar stream (tarfile asks for a record at a time)."""
        data = self._stream.read(size)
        self._expanded += len(data)
        if self._expanded > MAX_ARCHIVE_BYTES:
            raise _Refused(f"it expands past {MAX_ARCHIVE_BYTES:,} bytes")
        ratio = self._expanded / max(self._compressed.tell(), 1)
        if self._expanded > RATIO_CHECKED_FROM and ratio > MAX_COMPRESSION_RATIO:
            raise _Refused(f"it expands more than {MAX_COMPRESSION_RATIO} times its size")
        return data


class _Member(tarfile.TarInfo):
    """An archive member whose extended header, which tarfile holds whole, is bounded."""

    def _proc_member(self, archive: tarfile.TarFile) -> tarfile.TarInfo:
        # tarfile's hook for subclasses, called before the member's contents are read.
        if self.type in _EXTENDED_HEADERS and self.size > MAX_TAR_HEADER_BYTES:
            raise _Refused(
                f"it holds an extended header longer than {MAX_TAR_HEADER_BYTES:,} bytes"
            )
        return super()._proc_member(archive)


def _checked(archive: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
    """The archive's members as they are read, refused if one could not be a bundle's."""
    for count, member in enumerate(archive, 1):
        if count > MAX_ARCHIVE_MEMBERS:
            raise _Refused(f"it holds more than {MAX_ARCHIVE_MEMBERS:,} members")
        name = PurePosixPath(member.name)
        if name.is_absolute() or ".." in name.parts:
            raise _Refused(f"member {member.name!r} is not a path inside the bundle")
        kind = _member_kind(member)
        if kind is not None:
            raise _Refused(f"member {member.name!r} is a {kind}, not a regular file or a directory")
        yield member


def _member_kind(member: tarfile.TarInfo) -> str | None:
    """What the member is, unless it is a regular file or a directory."""
    if member.isdir() or (member.isreg() and not member.issparse()):
        return None
    kinds = (
        (member.issym, "symbolic link"),
        (member.islnk, "hard link"),
        (member.isfifo, "FIFO"),
        (member.ischr, "character device"),
        (member.isblk, "block device"),
        (member.issparse, "sparse file"),
    )
    return next(
        (kind for is_kind, kind in kinds if is_kind()), f"tar entry of type {member.type!r}"
    )


def read_bundle(directory: Path) -> AuditBundle:
    """Parses the manifest header of the bundle directory ``directory``; the rounds are read
    later, by :meth:`AuditBundle.rounds`.

    Raises:
        BundleError: no manifest, not JSON, an unknown ``format``, a malformed header, a
            protocol this auditor has no checks for, or no ``rounds.jsonl`` (as a regular
            file).
    """
    manifest_path = directory / MANIFEST
    manifest = _read_manifest(manifest_path, directory)
    if manifest.get("format") not in READABLE_FORMATS:
        raise BundleError(
            f"{manifest_path} has format {manifest.get('format')!r}; this auditor reads "
            f"{', '.join(map(repr, READABLE_FORMATS[:-1]))} and {READABLE_FORMATS[-1]!r} only"
        )
    try:
        chain_id = _integer(manifest, "chainId", minimum=1, maximum=UINT256_MAX)
        deployment = Deployment.from_json(manifest["deployment"], source="manifest deployment")
        job = parse_job(manifest["job"])
        protocol = _protocol(manifest)
        round_count = _integer(manifest, "roundCount", maximum=UINT32_MAX)
    except KeyError as exc:
        raise BundleError(f"{manifest_path} lacks field {exc.args[0]!r}") from None
    except UsageError as exc:
        raise BundleError(f"{manifest_path}: {exc}") from None
    try:
        protocol_audit(protocol)
    except UnknownProtocol as exc:
        raise BundleError(str(exc)) from None
    rounds_path = directory / ROUNDS
    try:
        _open_member(rounds_path)[0].close()
    except FileNotFoundError:
        raise BundleError(
            f"{directory} is not a complete audit bundle: it has no {ROUNDS}"
        ) from None
    store = ArtifactStore(directory, read_only=True, max_object_bytes=MAX_OBJECT_BYTES)
    return AuditBundle(directory, chain_id, deployment, job, protocol, round_count, store)


def _protocol(manifest: Mapping[str, Any]) -> str:
    """The header's protocol id: its ``protocol`` field, or FedAvg's for a version 2 bundle
    (written before headers named the protocol, when FedAvg was the only one)."""
    if manifest["format"] == LEGACY_FORMAT:
        return IMPLIED_PROTOCOL
    protocol = manifest["protocol"]
    if not isinstance(protocol, str) or not protocol:
        raise UsageError(f"field 'protocol' must be a protocol id, not {protocol!r}")
    return protocol


def _open_member(path: Path) -> tuple[BinaryIO, int]:
    """The bundle's file ``path``, opened buffered, and its size; anything but a regular file
    (a FIFO would block the audit, a device might never end, a link might lead out of the
    bundle) is a BundleError naming it.

    Raises:
        FileNotFoundError: if nothing is at ``path``, for the caller to word.
    """
    try:
        return open_regular(path, follow_symlinks=False, buffering=-1)
    except FileNotFoundError:
        raise
    except NotRegularFile as exc:
        raise BundleError(f"{path} is {exc}") from None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None


def _read_manifest(path: Path, directory: Path) -> dict[str, Any]:
    """The manifest's JSON object, read up to :data:`MAX_MANIFEST_BYTES`."""
    try:
        handle, _ = _open_member(path)
        with handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError:
        raise BundleError(f"{directory} is not an audit bundle: it has no {MANIFEST}") from None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_MANIFEST_BYTES:
        raise BundleError(
            f"{path} is larger than {MAX_MANIFEST_BYTES:,} bytes, so not the header of a "
            f"{BUNDLE_FORMAT!r} (or an earlier) bundle, the formats this auditor reads"
        )
    try:
        manifest = parse_json(data)
    except UsageError as exc:
        raise BundleError(f"{path} is {exc}") from None
    if not isinstance(manifest, dict):
        raise BundleError(f"{path} is not a JSON object")
    return manifest


def read_round_lines(path: Path, limit: int = MAX_ROUND_LINE_BYTES) -> Iterator[RoundLine]:
    """The lines of the rounds file ``path``, each parsed as JSON when the caller asks for it.

    A line longer than ``limit`` bytes (its newline aside) is skipped without being held. As
    JSON Lines allows, the last line may lack its newline; a blank line is a malformed entry.

    Raises:
        BundleError: if the file cannot be read, or is not a regular file.
    """
    try:
        handle, _ = _open_member(path)
        with handle:
            yield from _round_lines(handle, limit)
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc.strerror or exc}") from None


def _round_lines(handle: IO[bytes], limit: int) -> Iterator[RoundLine]:
    for position in itertools.count(1):
        line = handle.readline(limit + 1)
        if not line:
            return
        if len(line) > limit and not line.endswith(b"\n"):
            while (rest := handle.readline(_SKIP_CHUNK)) and not rest.endswith(b"\n"):
                pass
            yield RoundLine(
                position,
                error=f"the line is longer than {limit:,} bytes, the most a round entry may take",
            )
        elif line.isspace():
            yield RoundLine(position, error="the line is blank")
        else:
            try:
                yield RoundLine(position, value=parse_json(line))
            except UsageError as exc:
                yield RoundLine(position, error=f"the line is {exc}")


def parse_job(obj: Any) -> ManifestJob:
    """The manifest's ``job`` object; a malformed one is a UsageError naming the field."""
    if not isinstance(obj, Mapping):
        raise UsageError("field 'job' must be an object")
    participants = obj["participants"]
    datasets = obj["datasets"]
    if not isinstance(participants, list) or not isinstance(datasets, list):
        raise UsageError("job participants and datasets must be lists")
    purpose = obj["purpose"]
    if not isinstance(purpose, str):
        raise UsageError("job field 'purpose' must be a string")
    return ManifestJob(
        id=_integer(obj, "id", minimum=1, maximum=UINT256_MAX),
        purpose=purpose,
        coordinator=_address(obj["coordinator"], "job coordinator"),
        consumer=_address(obj["consumer"], "job consumer"),
        participants=tuple(_address(p, "job participant") for p in participants),
        datasets=tuple(_integer({"dataset": d}, "dataset", maximum=UINT256_MAX) for d in datasets),
        model_spec=from_hex32(obj["modelSpec"], what="job modelSpec"),
        initial_model=from_hex32(obj["initialModel"], what="job initialModel"),
    )


def parse_round(obj: Any) -> RoundEntry:
    """One round entry (the JSON of a line of ``rounds.jsonl``); any defect is a UsageError
    naming the field."""
    if not isinstance(obj, Mapping):
        raise UsageError("a round entry must be an object")
    try:
        records = obj["records"]
        refused = obj["refused"]
        if not isinstance(records, list):
            raise UsageError("field 'records' must be a list")
        if not isinstance(refused, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in refused.items()
        ):
            raise UsageError("field 'refused' must map addresses to reasons")
        transaction = obj["transaction"]
        if not isinstance(transaction, str) or not _TX_HASH.fullmatch(transaction):
            raise UsageError("field 'transaction' must be a 0x-prefixed lowercase hash")
        return RoundEntry(
            round=_integer(obj, "round", minimum=1, maximum=UINT32_MAX),
            anchor=parse_anchor(obj["anchor"]),
            transaction=transaction,
            records=tuple(_record_entry(r) for r in records),
            refused=dict(refused),
            model=from_hex32(obj["model"], what="field 'model'"),
            metrics=from_hex32(obj["metrics"], what="field 'metrics'"),
        )
    except KeyError as exc:
        raise UsageError(f"round entry lacks field {exc.args[0]!r}") from None


def parse_anchor(obj: Any) -> RoundAnchor:
    """A round anchor in the bundle's JSON form (digests as 64 hex digits)."""
    if not isinstance(obj, Mapping):
        raise UsageError("field 'anchor' must be an object")
    return RoundAnchor(
        job_id=_integer(obj, "jobId", maximum=UINT256_MAX),
        round=_integer(obj, "round", maximum=UINT32_MAX),
        merkle_root=from_hex32(obj["merkleRoot"], what="anchor merkleRoot"),
        participant_count=_integer(obj, "participantCount", maximum=UINT32_MAX),
        # A bundle before /4 names no participant set: none, which no anchor of these contracts is.
        participant_mask=mask_from_json(obj["participantMask"]) if "participantMask" in obj else 0,
        model_digest=from_hex32(obj["modelDigest"], what="anchor modelDigest"),
        metrics_digest=from_hex32(obj["metricsDigest"], what="anchor metricsDigest"),
        previous_model_digest=from_hex32(
            obj["previousModelDigest"], what="anchor previousModelDigest"
        ),
        block_number=_integer(obj, "blockNumber", maximum=UINT256_MAX),
        timestamp=_integer(obj, "timestamp", maximum=UINT256_MAX),
    )


def _record_entry(obj: Any) -> RecordEntry:
    if not isinstance(obj, Mapping):
        raise UsageError("a records[] item must be an object")
    proof = obj["proof"]
    if not isinstance(proof, list):
        raise UsageError("records[] field 'proof' must be a list")
    return RecordEntry(
        digest=from_hex32(obj["digest"], what="record digest"),
        leaf_index=_integer(obj, "leafIndex"),
        proof=tuple(from_hex32(p, what="proof hash") for p in proof),
    )


def _integer(
    obj: Mapping[str, Any], field: str, minimum: int = 0, maximum: int | None = None
) -> int:
    value = obj[field]
    # bool is an int subclass, but True is not a round number.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UsageError(f"field {field!r} must be an integer >= {minimum}, not {value!r}")
    if maximum is not None and value > maximum:
        raise UsageError(f"field {field!r} must be at most {maximum}, not {value}")
    return value


def _address(value: Any, what: str) -> ChecksumAddress:
    if not isinstance(value, str) or not is_checksum_address(value):
        raise UsageError(f"{what} must be an EIP-55 checksummed address, not {value!r}")
    return ChecksumAddress(value)
