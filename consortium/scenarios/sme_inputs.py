"""What the SME-credit scenario starts from: the bank's and the platform's tables, which of the
bank's businesses are held out for evaluation, and which businesses consented at each subjects
version of a dataset.

The tables come from the generator (:func:`~consortium.scenarios.sme_data.generate_sme`) or from
two CSV files (:class:`PartyFile`). A run records the files' paths and SHA-256, so that a
resumed run, which reads them again, refuses files changed since: its job's model spec commits
to the intersection of the rows they held. Every other choice here is drawn from the seed, one
stream per choice and party (:func:`seeded_rng`), so a resumed run makes the same ones.

Which businesses consent changes only by withdrawal: a data party records each one in its own
directory (:class:`Withdrawals`) before it publishes the new subjects root, so that the consent
tree of any version, the job's that used it included, can be rebuilt from the seed and that
record (:func:`consenting_rows`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Set
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from consortium.crypto.canonical import json_digest
from consortium.crypto.digests import from_hex32, hex32
from consortium.crypto.subjects import SubjectTree
from consortium.errors import UsageError
from consortium.files import write_text_atomically
from consortium.fl.party_csv import MAX_DATA_FILE_BYTES, load_party_csv
from consortium.fl.party_table import PartyTable
from consortium.jsonio import read_json_file, read_regular_file
from consortium.scenarios.parties import PRIVATE_FILE
from consortium.scenarios.sme_data import SmeData, generate_sme

EVALUATION_SHARE = 0.25
"""The share of the bank's businesses held out when its table comes from a file (the
generator holds out the same share of its own)."""
RNG_DOMAIN = "consortium simulation sme-credit"
WITHDRAWALS_FILE = "withdrawals.json"
WITHDRAWALS_FORMAT = "consortium.sme-credit.withdrawals/1"
MAX_WITHDRAWALS_BYTES = 256 * 2**20  # a million ids of up to 200 bytes, with the JSON around


@dataclass(frozen=True)
class PartyFile:
    """A party's table as a CSV file (:func:`~consortium.fl.party_csv.load_party_csv`'s
    columns), and once read, the SHA-256 of the bytes it held."""

    path: Path
    id_column: str
    label_column: str | None = None
    sha256: bytes | None = None

    def read(self, name: str) -> tuple[PartyFile, PartyTable]:
        """This file (its path made absolute, its SHA-256 filled in) and the table it holds,
        named ``name``; a file whose SHA-256 differs from the one recorded is refused."""
        path = self.path.resolve()
        digest = hashlib.sha256(
            read_regular_file(path, what="data file", max_bytes=MAX_DATA_FILE_BYTES)
        ).digest()
        if self.sha256 is not None and digest != self.sha256:
            raise UsageError(
                f"data file {path} changed since this run was set up (SHA-256 {digest.hex()}, "
                f"recorded {self.sha256.hex()}): its job is over the rows it held then"
            )
        table = load_party_csv(path, self.id_column, self.label_column, name=name)
        return replace(self, path=path, sha256=digest), table

    def to_json(self) -> dict[str, Any]:
        if self.sha256 is None:
            raise ValueError("a data file is recorded once read")
        return {
            "path": str(self.path),
            "idColumn": self.id_column,
            "labelColumn": self.label_column,
            "sha256": hex32(self.sha256),
        }

    @classmethod
    def from_json(cls, value: object, source: str) -> PartyFile:
        fields = ("idColumn", "labelColumn", "path", "sha256")
        if not isinstance(value, Mapping) or sorted(value) != list(fields):
            raise UsageError(f"{source} must hold exactly {', '.join(fields)}")
        path, id_column, label = value["path"], value["idColumn"], value["labelColumn"]
        if not all(isinstance(v, str) and v for v in (path, id_column)) or not (
            label is None or (isinstance(label, str) and label)
        ):
            raise UsageError(f"{source}: path and idColumn are text, labelColumn text or null")
        return cls(
            Path(path), id_column, label, from_hex32(value["sha256"], what=f"{source}.sha256")
        )


def read_inputs(
    businesses: int, seed: int, files: tuple[PartyFile, PartyFile] | None
) -> tuple[SmeData, tuple[PartyFile, PartyFile] | None]:
    """The bank's and the platform's tables and the held-out ids: generated from ``seed``, or
    read from ``files`` (the bank's, with its label column, then the platform's, without), each
    file returned with its SHA-256."""
    if files is None:
        return generate_sme(seed, businesses=businesses), None
    (bank_file, bank), (platform_file, platform) = files[0].read("bank"), files[1].read("platform")
    if bank.y is None or platform.y is not None:
        raise UsageError(
            "the bank's data file needs a label column and the platform's must have none"
        )
    rows = seeded_rng(seed, "evaluation", "bank").choice(
        bank.num_rows, size=round(EVALUATION_SHARE * bank.num_rows), replace=False
    )
    held_out = frozenset(bank.ids[i] for i in rows.tolist())
    return SmeData(bank, platform, held_out), (bank_file, platform_file)


def consenting_rows(
    table: PartyTable, share: float, seed: int, withdrawn: Set[str] = frozenset()
) -> NDArray[np.intp]:
    """The rows of ``table`` whose businesses consent, ascending: a seeded ``share`` of them,
    drawn for the table's owner, less those ``withdrawn``. At subjects version ``v`` of the
    owner's dataset that is ``withdrawn=record.through(v)`` (its :class:`Withdrawals`)."""
    rng = seeded_rng(seed, "consent", table.name)
    chosen = rng.choice(table.num_rows, size=round(share * table.num_rows), replace=False)
    rows = np.sort(chosen).astype(np.intp)
    if not withdrawn:
        return rows
    return rows[[table.ids[i] not in withdrawn for i in rows.tolist()]]


def consent_tree(table: PartyTable, rows: NDArray[np.intp], secret: bytes) -> SubjectTree:
    """The owner's consent tree over the businesses of ``rows``, salted with its subject
    secret."""
    return SubjectTree((table.ids[i] for i in rows.tolist()), secret)


@dataclass(frozen=True)
class Withdrawals:
    """A data party's record of the businesses that withdrew their consent from its dataset:
    for each subjects version a withdrawal published, ascending, the ids it removed. It is
    written before the version is published, so its last version may not be on chain yet."""

    dataset: int
    versions: tuple[tuple[int, tuple[str, ...]], ...] = ()

    @property
    def latest(self) -> int:
        """The last version recorded (1, the registered root, if none)."""
        return self.versions[-1][0] if self.versions else 1

    def through(self, version: int) -> frozenset[str]:
        """Every business withdrawn at a version up to ``version``."""
        return frozenset(i for v, ids in self.versions if v <= version for i in ids)

    def then(self, ids: tuple[str, ...]) -> Withdrawals:
        """This record with the withdrawal of ``ids`` at the version after its last."""
        return replace(self, versions=(*self.versions, (self.latest + 1, ids)))

    def write(self, directory: Path) -> None:
        """Writes the record in the party's ``directory``, readable by the party only: it
        names businesses."""
        text = json.dumps(
            {
                "format": WITHDRAWALS_FORMAT,
                "dataset": self.dataset,
                "withdrawals": [{"version": v, "ids": list(ids)} for v, ids in self.versions],
            }
        )
        write_text_atomically(directory / WITHDRAWALS_FILE, text, mode=PRIVATE_FILE)

    @classmethod
    def read(cls, directory: Path, dataset: int) -> Withdrawals:
        """The record in the party's ``directory`` (none withdrew if there is no file),
        checked to be of ``dataset``: versions from 2 up, ascending, each id withdrawn once."""
        path = directory / WITHDRAWALS_FILE
        if not path.exists():
            return cls(dataset)
        value = read_json_file(path, what="withdrawal record", max_bytes=MAX_WITHDRAWALS_BYTES)
        fields = ("dataset", "format", "withdrawals")
        if not isinstance(value, dict) or sorted(value) != list(fields):
            raise UsageError(f"withdrawal record {path} must hold exactly {', '.join(fields)}")
        if value["format"] != WITHDRAWALS_FORMAT or value["dataset"] != dataset:
            raise UsageError(
                f"withdrawal record {path} is not a {WITHDRAWALS_FORMAT} record of dataset "
                f"{dataset}"
            )
        entries = value["withdrawals"]
        if not isinstance(entries, list):
            raise UsageError(f"withdrawal record {path}: withdrawals must be a list")
        versions: list[tuple[int, tuple[str, ...]]] = []
        for entry in entries:
            versions.append(_withdrawal(entry, versions[-1][0] if versions else 1, path))
        record = cls(dataset, tuple(versions))
        if len(record.through(record.latest)) != sum(len(ids) for _, ids in versions):
            raise UsageError(f"withdrawal record {path}: a business withdraws twice")
        return record


def _withdrawal(entry: object, after: int, path: Path) -> tuple[int, tuple[str, ...]]:
    """One withdrawal of a record: its version (above ``after``) and its ids."""
    if isinstance(entry, dict) and sorted(entry) == ["ids", "version"]:
        version, ids = entry["version"], entry["ids"]
        valid_ids = isinstance(ids, list) and ids and all(isinstance(i, str) and i for i in ids)
        if type(version) is int and version > after and valid_ids:
            return version, tuple(ids)
    raise UsageError(
        f"withdrawal record {path}: each withdrawal is a version above the one before (from 2) "
        "and a non-empty list of ids"
    )


def seeded_rng(seed: int, choice: str, party: str) -> np.random.Generator:
    """The random stream of one ``choice`` of one party, from the run's seed: SHA-256 of the
    RFC 8785 JSON ``{"choice", "domain", "party", "seed"}`` seeds numpy's PCG64."""
    digest = json_digest(
        {"domain": RNG_DOMAIN, "choice": choice, "party": party, "seed": str(seed)}
    )
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))
