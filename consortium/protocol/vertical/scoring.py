"""Using a trained ``hetero-lr/1`` model: the guest (the bank) scoring one business or the job's
shared businesses with the host (the platform), and the opening of each use's commitments.

Nobody holds the whole model: each data party keeps its own weights, which the job's head model
names only by their salted commitments. Scoring is therefore a query. The guest names the head
model and the business (an applicant gives its id to both, by applying); the host answers its
partial score ``x_h . w_h`` with the weights its own commitment opens to, and the guest adds
``x_g . w_g + b`` and takes the sigmoid (FATE's hetero-LR prediction). For a referral the guest
asks for the host's partial scores of every business of the job's intersection in one message,
by position in the order the PSI gave both, so that no id crosses. Each party reads the job's
head model from the chain itself and answers only for businesses in its consent tree, which must
be its dataset's current subjects root: the contract judges the dataset consents when the use is
recorded.

Messages are RFC 8785 JSON read as hostile: bounded in bytes before parsing, exact fields, and a
one-line :class:`~consortium.protocol.messages.MalformedMessage` for anything else; a query a
party will not answer is a one-line :class:`ScoringRefused`.

A use goes on chain as two commitments, ``SHA-256(JCS({"salt": hex, "query": ...}))`` and
likewise ``"result"``, so the chain holds no id and no score. The guest keeps their opening, a
:class:`UseDisclosure`, in its store: handed to an auditor, it proves what was asked and what
the answer was.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import pairwise
from typing import Any, ClassVar, Self

import numpy as np
from numpy.typing import NDArray

from consortium.crypto.canonical import jcs, json_digest
from consortium.crypto.digests import from_hex32, hex32
from consortium.crypto.subjects import MAX_ID_BYTES, SubjectTree
from consortium.errors import ConsortiumError, UsageError
from consortium.fl.model import sigmoid
from consortium.fl.party_table import PartyTable
from consortium.jsonio import parse_json
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import REFERRAL, SCORE, ModelUse
from consortium.protocol.messages import MalformedMessage
from consortium.protocol.vertical.party import committed_weights
from consortium.store.artifacts import ArtifactStore
from consortium.store.journal import Journal

MAX_QUERY_BYTES = 16 * 1024  # a model object naming two commitments, and an id
MAX_ANSWER_BYTES = 4 * 1024
BYTES_PER_SCORE = 64  # a position and a float in JSON take at most about 35
SALT_BYTES = 32
DISCLOSURE_FORMAT = "consortium.model-use-disclosure/1"
Ask = Callable[[bytes], bytes]
"""How the guest reaches the host: query bytes in, answer bytes out."""


class ScoringRefused(UsageError):
    """A party will not answer a scoring query (or will not use the answer); nothing was used."""


class DisclosureMismatch(ConsortiumError):
    """A use's disclosure does not open the use the chain recorded."""


# ------------------------------------------------------------------------------ messages


@dataclass(frozen=True)
class ScoreQuery:
    """Guest -> host: the host's partial score of ``business`` under ``model``, the job's head
    model object (which names each party's weight commitment)."""

    TYPE: ClassVar[str] = "score-query"
    job_id: int
    model: Mapping[str, Any]
    business: str

    def to_bytes(self) -> bytes:
        return jcs(
            {
                "type": self.TYPE,
                "jobId": self.job_id,
                "model": self.model,
                "business": self.business,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        value = _message(data, cls.TYPE, ("jobId", "model", "business"), MAX_QUERY_BYTES)
        return cls(
            _count(value["jobId"], "jobId"), _model(value["model"]), _business(value["business"])
        )


@dataclass(frozen=True)
class PartialScore:
    """Host -> guest: ``x_h . w_h`` of ``business`` under the model ``model_digest``."""

    TYPE: ClassVar[str] = "partial-score"
    job_id: int
    model_digest: bytes
    business: str
    score: float

    def to_bytes(self) -> bytes:
        return jcs(
            {
                "type": self.TYPE,
                "jobId": self.job_id,
                "modelDigest": hex32(self.model_digest),
                "business": self.business,
                "score": self.score,
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        fields = ("jobId", "modelDigest", "business", "score")
        value = _message(data, cls.TYPE, fields, MAX_ANSWER_BYTES)
        return cls(
            _count(value["jobId"], "jobId"),
            _digest(value["modelDigest"], "modelDigest"),
            _business(value["business"]),
            _score(value["score"]),
        )


@dataclass(frozen=True)
class ReferralQuery:
    """Guest -> host: the host's partial scores under ``model`` of every business of the job's
    intersection that still consents on its side."""

    TYPE: ClassVar[str] = "referral-query"
    job_id: int
    model: Mapping[str, Any]

    def to_bytes(self) -> bytes:
        return jcs({"type": self.TYPE, "jobId": self.job_id, "model": self.model})

    @classmethod
    def from_bytes(cls, data: bytes) -> Self:
        value = _message(data, cls.TYPE, ("jobId", "model"), MAX_QUERY_BYTES)
        return cls(_count(value["jobId"], "jobId"), _model(value["model"]))


@dataclass(frozen=True)
class PartialScores:
    """Host -> guest: ``x_h . w_h`` of the businesses at ``positions`` (ascending) of the
    intersection's shared order, under the model ``model_digest``."""

    TYPE: ClassVar[str] = "partial-scores"
    job_id: int
    model_digest: bytes
    positions: tuple[int, ...]
    scores: tuple[float, ...]

    def to_bytes(self) -> bytes:
        return jcs(
            {
                "type": self.TYPE,
                "jobId": self.job_id,
                "modelDigest": hex32(self.model_digest),
                "positions": list(self.positions),
                "scores": list(self.scores),
            }
        )

    @classmethod
    def from_bytes(cls, data: bytes, rows: int) -> Self:
        """The message in ``data``, about an intersection of ``rows`` businesses."""
        fields = ("jobId", "modelDigest", "positions", "scores")
        value = _message(data, cls.TYPE, fields, MAX_ANSWER_BYTES + rows * BYTES_PER_SCORE)
        positions, scores = value["positions"], value["scores"]
        what = f"a {cls.TYPE} message"
        if not isinstance(positions, list) or not isinstance(scores, list):
            raise MalformedMessage(f"{what}: positions and scores must be lists")
        if len(positions) != len(scores):
            raise MalformedMessage(f"{what}: {len(positions)} positions but {len(scores)} scores")
        if not all(type(k) is int and 0 <= k < rows for k in positions) or any(
            a >= b for a, b in pairwise(positions)
        ):
            raise MalformedMessage(f"{what}: positions must ascend within the {rows:,} shared")
        return cls(
            _count(value["jobId"], "jobId"),
            _digest(value["modelDigest"], "modelDigest"),
            tuple(positions),
            tuple(_score(s) for s in scores),
        )


def _message(data: bytes, kind: str, fields: tuple[str, ...], max_bytes: int) -> dict[str, Any]:
    """The JSON object of a ``kind`` message with exactly ``fields``, at most ``max_bytes``."""
    if not isinstance(data, bytes | bytearray):
        raise MalformedMessage(f"a {kind} message must be bytes, not {type(data).__name__}")
    if len(data) > max_bytes:
        raise MalformedMessage(
            f"a {kind} message of {len(data):,} bytes is more than the {max_bytes:,} allowed"
        )
    try:
        value = parse_json(bytes(data))
    except UsageError as exc:
        raise MalformedMessage(f"a {kind} message is {exc}") from None
    if not isinstance(value, dict) or value.get("type") != kind:
        raise MalformedMessage(f"not a {kind} message")
    if sorted(value) != sorted(("type", *fields)):
        raise MalformedMessage(f"a {kind} message holds exactly type, {', '.join(fields)}")
    return value


def _count(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise MalformedMessage(f"{what} must be a non-negative integer, not {value!r}")
    return value


def _digest(value: object, what: str) -> bytes:
    try:
        return from_hex32(value, what=what)
    except UsageError as exc:
        raise MalformedMessage(str(exc)) from None


def _business(value: object) -> str:
    if not isinstance(value, str) or not 0 < len(value.encode("utf-8")) <= MAX_ID_BYTES:
        raise MalformedMessage(f"a business id is 1 to {MAX_ID_BYTES} bytes of text")
    return value


def _score(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise MalformedMessage(f"a score must be a finite number, not {value!r}")
    return float(value)


def _model(value: object) -> dict[str, Any]:
    """A model object naming weight commitments by address; what they open to is for each
    party to find out, and the model's digest for it to compare with the chain's."""
    if not isinstance(value, dict) or not isinstance(value.get("weights"), dict):
        raise MalformedMessage("the model must be an object naming its weight commitments")
    return value


# ------------------------------------------------------------------------------ disclosures


def use_commitment(field: str, value: Any, salt: bytes) -> bytes:
    """``SHA-256(JCS({"salt": hex, field: value}))``: a use's query or result, hidden until its
    salt is disclosed."""
    return hashlib.sha256(jcs({"salt": salt.hex(), field: value})).digest()


@dataclass(frozen=True)
class UseDisclosure:
    """The opening of one use's commitments: what was asked of which model, what came out,
    and the salts. The guest stores it before the use is recorded."""

    job_id: int
    model_digest: bytes
    kind: str
    query: Mapping[str, Any]
    result: Mapping[str, Any]
    query_salt: bytes
    result_salt: bytes

    @classmethod
    def new(
        cls,
        job_id: int,
        model_digest: bytes,
        kind: str,
        query: Mapping[str, Any],
        result: Mapping[str, Any],
    ) -> UseDisclosure:
        """A disclosure with fresh salts."""
        salts = (secrets.token_bytes(SALT_BYTES) for _ in range(2))
        return cls(job_id, model_digest, kind, query, result, *salts)

    @property
    def query_commitment(self) -> bytes:
        return use_commitment("query", self.query, self.query_salt)

    @property
    def result_commitment(self) -> bytes:
        return use_commitment("result", self.result, self.result_salt)

    def to_json(self) -> dict[str, Any]:
        return {
            "format": DISCLOSURE_FORMAT,
            "jobId": self.job_id,
            "model": hex32(self.model_digest),
            "kind": self.kind,
            "query": {"salt": self.query_salt.hex(), "query": self.query},
            "result": {"salt": self.result_salt.hex(), "result": self.result},
        }

    @classmethod
    def from_json(cls, value: object) -> UseDisclosure:
        """A disclosure as its holder handed it over, every field checked."""
        fields = ("format", "jobId", "kind", "model", "query", "result")
        if not isinstance(value, dict) or sorted(value) != list(fields):
            raise UsageError(f"a model-use disclosure holds exactly {', '.join(fields)}")
        if value["format"] != DISCLOSURE_FORMAT:
            raise UsageError(f"a model-use disclosure is of format {DISCLOSURE_FORMAT}")
        if type(value["jobId"]) is not int or not isinstance(value["kind"], str):
            raise UsageError("a model-use disclosure's jobId is an integer and its kind text")
        opened = []
        for field in ("query", "result"):
            part = value[field]
            if not isinstance(part, dict) or sorted(part) != sorted(("salt", field)):
                raise UsageError(f"a model-use disclosure's {field} holds exactly salt, {field}")
            opened.append((part[field], _salt(part["salt"], field)))
        (query, query_salt), (result, result_salt) = opened
        model = from_hex32(value["model"], what="a model-use disclosure's model")
        return cls(value["jobId"], model, value["kind"], query, result, query_salt, result_salt)

    def check(self, use: ModelUse) -> None:
        """Raises DisclosureMismatch unless this opens ``use``: its job, model, kind and both
        commitments."""
        problems = [
            f"{name} is {ours}, the chain's {theirs}"
            for name, ours, theirs in (
                ("job", self.job_id, use.job_id),
                ("model", hex32(self.model_digest), hex32(use.model_digest)),
                ("kind", self.kind, use.kind),
                ("query commitment", hex32(self.query_commitment), hex32(use.query_commitment)),
                ("result commitment", hex32(self.result_commitment), hex32(use.result_commitment)),
            )
            if ours != theirs
        ]
        if problems:
            raise DisclosureMismatch(
                f"the disclosure does not open use {use.use_index} of job {use.job_id}: "
                + "; ".join(problems)
            )


def _salt(value: object, field: str) -> bytes:
    try:
        salt = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        salt = b""
    if len(salt) != SALT_BYTES:
        raise UsageError(f"a model-use disclosure's {field} salt is {SALT_BYTES} bytes in hex")
    return salt


# ------------------------------------------------------------------------------ the parties


@dataclass(frozen=True)
class ScoringSide:
    """What a data party scores with: its own rows, standardized as its job tables were, its
    rows of the intersection in the shared order, its current consent tree, and where it keeps
    its commitments' openings."""

    name: str
    address: str
    dataset_id: int
    table: PartyTable
    shared: tuple[int, ...]  # shared[k]: the table's row at position k of the shared order
    consents: SubjectTree
    store: ArtifactStore
    journal: Journal

    @cached_property
    def rows(self) -> dict[str, int]:
        """The table's row of each business it holds."""
        return {business: row for row, business in enumerate(self.table.ids)}

    def weights(self, ledger: Ledger, job_id: int, model: Mapping[str, Any]) -> NDArray[Any]:
        """This party's weights (and the guest's bias last) under ``model``, once the chain
        says ``model`` is the job's anchored head and this party's consent tree is current."""
        job = ledger.jobs.get(job_id)
        if job.last_round == 0:
            raise ScoringRefused(f"job {job_id} has no anchored round: it has no model to use")
        if json_digest(model) != job.head_model_digest:
            raise ScoringRefused(f"{self.name}: the model asked for is not job {job_id}'s head")
        dataset = ledger.consents.dataset(self.dataset_id)
        if dataset.subjects_root != self.consents.root:
            raise ScoringRefused(
                f"{self.name}'s consent tree is not dataset {self.dataset_id}'s current subjects "
                f"root (version {dataset.subjects_version}): its consents changed since"
            )
        commitment = model["weights"].get(self.address)
        if not isinstance(commitment, str):
            raise ScoringRefused(f"the model names no weights of {self.name}")
        weights = committed_weights(
            self.name, self.store, self.journal, from_hex32(commitment, what="a commitment")
        )
        return np.concatenate([weights["weights"], np.ravel(weights.get("bias", []))])

    def consenting_positions(self) -> list[int]:
        """The positions of the shared order whose business is in this party's consent tree."""
        ids = self.table.ids
        return [k for k, row in enumerate(self.shared) if ids[row] in self.consents]


class ScoringHost:
    """The host's side: answers the guest's queries with partial scores under the job's head
    model, for businesses it holds and whose consent it holds."""

    def __init__(self, side: ScoringSide, ledger: Ledger, job_id: int) -> None:
        self.side, self.ledger, self.job_id = side, ledger, job_id

    def answer_score(self, data: bytes) -> bytes:
        """The answer to a :class:`ScoreQuery`'s bytes: a :class:`PartialScore`'s."""
        return self._score(ScoreQuery.from_bytes(data)).to_bytes()

    def answer_referral(self, data: bytes) -> bytes:
        """The answer to a :class:`ReferralQuery`'s bytes: a :class:`PartialScores`'."""
        return self._referral(ReferralQuery.from_bytes(data)).to_bytes()

    def _weights(self, job_id: int, model: Mapping[str, Any]) -> NDArray[Any]:
        if job_id != self.job_id:
            raise ScoringRefused(f"{self.side.name} scores for job {self.job_id}, not {job_id}")
        return self.side.weights(self.ledger, job_id, model)

    def _score(self, query: ScoreQuery) -> PartialScore:
        side = self.side
        weights = self._weights(query.job_id, query.model)
        row = side.rows.get(query.business)
        if row is None:
            raise ScoringRefused(f"{side.name} holds no business {query.business}")
        if query.business not in side.consents:
            raise ScoringRefused(
                f"business {query.business} is not in {side.name}'s consent tree: it did not "
                f"consent to the use of dataset {side.dataset_id}"
            )
        score = float(side.table.X[row] @ weights)
        return PartialScore(query.job_id, json_digest(query.model), query.business, score)

    def _referral(self, query: ReferralQuery) -> PartialScores:
        side = self.side
        weights = self._weights(query.job_id, query.model)
        positions = side.consenting_positions()
        rows = np.asarray([side.shared[k] for k in positions], dtype=np.intp)
        scores = side.table.X[rows] @ weights
        return PartialScores(
            query.job_id, json_digest(query.model), tuple(positions), tuple(scores.tolist())
        )


@dataclass(frozen=True)
class Recorded:
    """A use as the guest recorded it: the chain's record and the disclosure that opens it."""

    use: ModelUse
    disclosure: UseDisclosure
    disclosure_digest: bytes  # in the guest's store


class ScoringGuest:
    """The guest's side: asks the host, adds its own part, and records each use on chain with
    its disclosure kept in its store and journal."""

    def __init__(
        self, side: ScoringSide, ledger: Ledger, job_id: int, models: ArtifactStore
    ) -> None:
        """``ledger`` signs as the guest (the job's consumer); ``models`` holds the job's model
        objects (the coordinator's store, or a bundle's)."""
        self.side, self.ledger, self.job_id, self.models = side, ledger, job_id, models

    def _head(self) -> tuple[bytes, dict[str, Any], NDArray[Any]]:
        """The job's head model: its digest, its object and this party's weights under it
        (refused while no round is anchored)."""
        head = self.ledger.jobs.get(self.job_id).head_model_digest
        model = self.models.get_json(head)
        return head, model, self.side.weights(self.ledger, self.job_id, model)

    def score(self, business: str, ask: Ask) -> tuple[float, UseDisclosure]:
        """The default probability of ``business``, the host's part asked for over ``ask``."""
        row = self.side.rows.get(business)
        if row is None:
            raise ScoringRefused(
                f"{self.side.name} knows no business {business}: it cannot score that applicant"
            )
        digest, model, weights = self._head()
        answer = PartialScore.from_bytes(ask(ScoreQuery(self.job_id, model, business).to_bytes()))
        if (answer.job_id, answer.model_digest, answer.business) != (
            self.job_id,
            digest,
            business,
        ):
            raise ScoringRefused("the host's partial score is not for this query")
        probability = float(sigmoid(_own_score(self.side.table.X[row], weights) + answer.score))
        disclosure = UseDisclosure.new(
            self.job_id,
            digest,
            SCORE,
            {"business": business},
            {"business": business, "defaultProbability": probability},
        )
        return probability, disclosure

    def refer(
        self, max_default_rate: float, ask: Ask
    ) -> tuple[list[tuple[str, float]], int, UseDisclosure]:
        """The businesses both parties share and still hold consent for with a default
        probability below ``max_default_rate``, lowest first (ties by id), the number scored,
        and the disclosure: the query names the scored ids (ascending) and the rate, the result
        holds every (id, probability) by id, from which the list follows."""
        side = self.side
        digest, model, weights = self._head()
        answer = PartialScores.from_bytes(
            ask(ReferralQuery(self.job_id, model).to_bytes()), len(side.shared)
        )
        if (answer.job_id, answer.model_digest) != (self.job_id, digest):
            raise ScoringRefused("the host's partial scores are not for this query")
        ours = set(side.consenting_positions())
        kept = [(k, s) for k, s in zip(answer.positions, answer.scores, strict=True) if k in ours]
        rows = np.asarray([side.shared[k] for k, _ in kept], dtype=np.intp)
        host = np.asarray([s for _, s in kept], dtype=np.float64)
        probabilities = sigmoid(_own_score(side.table.X[rows], weights) + host).tolist()
        scores = sorted(
            (side.table.ids[row], p) for row, p in zip(rows.tolist(), probabilities, strict=True)
        )
        suitable = sorted(
            ((b, p) for b, p in scores if p < max_default_rate), key=lambda item: (item[1], item[0])
        )
        disclosure = UseDisclosure.new(
            self.job_id,
            digest,
            REFERRAL,
            {"businesses": [b for b, _ in scores], "maxDefaultRate": max_default_rate},
            {"scores": [[b, p] for b, p in scores]},
        )
        return suitable, len(scores), disclosure

    def record(self, disclosure: UseDisclosure, subjects: int) -> Recorded:
        """Stores the disclosure, records the use on chain (the contract refuses it unless the
        job's consents hold) and journals where its disclosure is."""
        stored = self.side.store.put_json(disclosure.to_json())
        use = self.ledger.jobs.record_model_use(
            disclosure.job_id,
            disclosure.model_digest,
            disclosure.kind,
            disclosure.query_commitment,
            disclosure.result_commitment,
            subjects,
        )
        self.side.journal.append(
            "model-use",
            jobId=use.job_id,
            useIndex=use.use_index,
            useKind=use.kind,
            disclosure=stored.hex(),
            transaction=use.transaction,
            block=use.block_number,
        )
        return Recorded(use, disclosure, stored)


def _own_score(X: NDArray[np.float64], weights: NDArray[Any]) -> NDArray[np.float64]:
    """The guest's part of the logit: ``x_g . w_g + b`` (its bias is its last weight)."""
    return X @ weights[:-1] + weights[-1]
