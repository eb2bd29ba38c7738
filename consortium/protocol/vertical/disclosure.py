"""What a hetero-lr/1 data party hands an auditor so that the auditor can check that every
business the job trained on consented on both sides (``consortium.subject-disclosure/1``).

The job's model spec commits to the intersection only through a root over double-blinded PSI
tokens (:mod:`consortium.fl.vertical.psi`), and each dataset's consent only through a salted
subjects root (:mod:`consortium.crypto.subjects`). A disclosure bridges the two for one party:
for every business of the intersection its :class:`~consortium.crypto.subjects.SubjectDisclosure`
(id, salt, index, tree size, proof) under the dataset's subjects root of the version the job
used, and the party's PSI scalar for the job. That scalar is ephemeral, made for this one PSI and
used for nothing else, so handing it over reveals nothing beyond the job: with both parties'
scalars and the job's PSI context (:func:`psi_context`) the auditor recomputes each disclosed
id's token and the intersection's commitment.

The file comes from another party and is parsed as hostile: bounded in size and in the number of
subjects, exact fields, distinct ids, every error one line naming the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from consortium.crypto.canonical import jcs
from consortium.crypto.digests import from_hex32, hex32
from consortium.crypto.subjects import SubjectDisclosure
from consortium.errors import ConsortiumError, UsageError
from consortium.fl.vertical.terms import GUEST, HOST
from consortium.jsonio import read_json_file, require_format
from consortium.protocol.vertical.weights_disclosure import FORMAT as WEIGHTS_FORMAT
from consortium.protocol.vertical.weights_disclosure import WeightsDisclosure

FORMAT = "consortium.subject-disclosure/1"
MAX_SUBJECTS = 1_000_000
"""The most subjects one disclosure may hold: the PSI's scale (a million ids per side)."""
MAX_DISCLOSURE_BYTES = 2**30
"""About 1.2 kB a subject under a tree of a million leaves (20 proof hashes): a million fit."""
_FIELDS = ("dataset", "format", "jobId", "psiKey", "subjects", "subjectsVersion")
_UINT32 = 2**32


class DisclosureError(UsageError):
    """A subject disclosure file is not what it must be; the message names the file."""


def psi_context(chain_id: int, ledger: str, guest_dataset: int, host_dataset: int) -> str:
    """The job's PSI context: its chain, ledger and the guest's and the host's datasets, so that
    its tokens match no other job's (RFC 8785 JSON). The auditor rebuilds it from the chain."""
    return jcs(
        {
            "chainId": chain_id,
            "ledger": ledger,
            "datasets": {GUEST: guest_dataset, HOST: host_dataset},
        }
    ).decode()


@dataclass(frozen=True, eq=False)
class PartyDisclosure:
    """One data party's disclosure for one job: its dataset, the subjects version the job
    used, each business of the intersection's subject disclosure, and its PSI key."""

    job_id: int
    dataset: int
    subjects_version: int
    subjects: tuple[SubjectDisclosure, ...]
    psi_key: X25519PrivateKey

    @property
    def ids(self) -> list[str]:
        return [subject.subject_id for subject in self.subjects]

    def to_json(self) -> dict[str, Any]:
        raw = self.psi_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        return {
            "format": FORMAT,
            "jobId": self.job_id,
            "dataset": self.dataset,
            "subjectsVersion": self.subjects_version,
            "psiKey": hex32(raw),
            "subjects": [subject.to_json() for subject in self.subjects],
        }

    @classmethod
    def from_json(cls, value: object, source: str) -> PartyDisclosure:
        """The disclosure in ``value``, every field checked; ``source`` names it in errors.

        Raises:
            DisclosureError: if it is not exactly such a disclosure.
        """
        value = require_format(value, FORMAT, _FIELDS, source, DisclosureError)
        job_id, dataset, version = (
            _positive(value[name], f"{source}: {name}", bound)
            for name, bound in (("jobId", None), ("dataset", None), ("subjectsVersion", _UINT32))
        )
        subjects = value["subjects"]
        if not isinstance(subjects, list) or not 1 <= len(subjects) <= MAX_SUBJECTS:
            raise DisclosureError(
                f"{source}: subjects must be a list of 1 to {MAX_SUBJECTS:,} subject disclosures"
            )
        parsed = []
        for position, subject in enumerate(subjects):
            try:
                parsed.append(SubjectDisclosure.from_json(subject))
            except ConsortiumError as exc:
                raise DisclosureError(f"{source}: subject {position}: {exc}") from None
        if len({subject.subject_id for subject in parsed}) != len(parsed):
            raise DisclosureError(f"{source}: a subject is disclosed twice")
        try:
            key = from_hex32(value["psiKey"], what=f"{source}: psiKey")
        except ConsortiumError as exc:
            raise DisclosureError(str(exc)) from None
        return cls(
            job_id, dataset, version, tuple(parsed), X25519PrivateKey.from_private_bytes(key)
        )


Disclosure = PartyDisclosure | WeightsDisclosure
"""What a data party may hand an auditor: its businesses, or a round's weights."""


def read_disclosure(path: Path) -> Disclosure:
    """The disclosure in the file ``path``, read within :data:`MAX_DISCLOSURE_BYTES`: a subject
    disclosure or a weights disclosure (:mod:`.weights_disclosure`), as its format says."""
    source = f"disclosure {path}"
    try:
        value = read_json_file(path, what="disclosure file", max_bytes=MAX_DISCLOSURE_BYTES)
    except UsageError as exc:
        raise DisclosureError(str(exc)) from None
    if isinstance(value, Mapping) and value.get("format") == WEIGHTS_FORMAT:
        return WeightsDisclosure.from_json(value, source)
    if not isinstance(value, Mapping) or value.get("format") != FORMAT:
        raise DisclosureError(f"{source} is neither a {FORMAT} nor a {WEIGHTS_FORMAT} file")
    return PartyDisclosure.from_json(value, source)


def _positive(value: object, what: str, bound: int | None) -> int:
    if type(value) is not int or value < 1 or (bound is not None and value >= bound):
        limit = "" if bound is None else f" below {bound:,}"
        raise DisclosureError(f"{what} must be a positive integer{limit}, got {value!r}")
    return value
