"""What the SME-credit scenario starts from: the bank's and the platform's tables, which of the
bank's businesses are held out for evaluation, and which businesses consented.

The tables come from the generator (:func:`~consortium.scenarios.sme_data.generate_sme`) or from
two CSV files (:class:`PartyFile`). A run records the files' paths and SHA-256, so that a
resumed run, which reads them again, refuses files changed since: its job's model spec commits
to the intersection of the rows they held. Every other choice here is drawn from the seed, one
stream per choice and party (:func:`seeded_rng`), so a resumed run makes the same ones.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from consortium.crypto.canonical import json_digest
from consortium.crypto.digests import from_hex32, hex32
from consortium.errors import UsageError
from consortium.fl.party_csv import MAX_DATA_FILE_BYTES, load_party_csv
from consortium.fl.party_table import PartyTable
from consortium.jsonio import read_regular_file
from consortium.scenarios.sme_data import SmeData, generate_sme

EVALUATION_SHARE = 0.25
"""The share of the bank's businesses held out when its table comes from a file (the
generator holds out the same share of its own)."""
RNG_DOMAIN = "consortium simulation sme-credit"


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


def consenting_rows(table: PartyTable, share: float, seed: int) -> NDArray[np.intp]:
    """The rows of ``table`` whose businesses consented, ascending: a seeded ``share`` of them,
    drawn for the table's owner."""
    rng = seeded_rng(seed, "consent", table.name)
    chosen = rng.choice(table.num_rows, size=round(share * table.num_rows), replace=False)
    return np.sort(chosen).astype(np.intp)


def seeded_rng(seed: int, choice: str, party: str) -> np.random.Generator:
    """The random stream of one ``choice`` of one party, from the run's seed: SHA-256 of the
    RFC 8785 JSON ``{"choice", "domain", "party", "seed"}`` seeds numpy's PCG64."""
    digest = json_digest(
        {"domain": RNG_DOMAIN, "choice": choice, "party": party, "seed": str(seed)}
    )
    return np.random.Generator(np.random.PCG64(int.from_bytes(digest, "big")))
