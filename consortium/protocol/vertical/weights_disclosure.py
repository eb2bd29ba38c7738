"""What a hetero-lr/1 data party hands an auditor to open its weight commitment of one round
(``consortium.weights-disclosure/1``): the salt and the weights, so that the auditor can check
that the weights the party discloses are the ones the anchored model commits to.

Each round's model names, per data party, ``SHA-256(JCS({salt, model digest of its weights}))``
(:func:`~consortium.fl.vertical.roles.weight_commitment`); a party that discloses the salt and
the weights of a round opens its commitment of that round and nothing else. The weights are
written as numbers (float64, which JSON's shortest round-trip form carries exactly) with their
shapes, so a regulator can read them; the digest is computed from the float64 bytes they give.

The file comes from another party and is parsed as hostile: bounded in size and in the number
of values, exact fields, finite numbers, every error one line naming the file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from consortium.crypto.digests import from_hex32, hex32
from consortium.errors import ConsortiumError, UsageError
from consortium.fl.vertical.roles import weight_commitment
from consortium.jsonio import require_format
from consortium.ledger.values import address

FORMAT = "consortium.weights-disclosure/1"
MAX_VALUES = 1_000_000
"""The most numbers one disclosure may hold: far more than a party's features."""
MAX_TENSORS = 16
_FIELDS = ("format", "jobId", "participant", "round", "salt", "weights")


class WeightsDisclosureError(UsageError):
    """A weights disclosure is not what it must be; the message names the file."""


@dataclass(frozen=True, eq=False)
class WeightsDisclosure:
    """One data party's opening of its weight commitment of one round of one job."""

    job_id: int
    round: int
    participant: str
    salt: bytes
    weights: Mapping[str, NDArray[np.float64]]

    def commitment(self) -> bytes:
        """The commitment these weights and this salt open."""
        return weight_commitment(self.weights, self.salt)

    @property
    def size(self) -> int:
        """How many numbers are disclosed."""
        return sum(int(np.size(tensor)) for tensor in self.weights.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "jobId": self.job_id,
            "round": self.round,
            "participant": self.participant,
            "salt": hex32(self.salt),
            "weights": {
                name: {"shape": list(tensor.shape), "values": tensor.ravel().tolist()}
                for name, tensor in sorted(self.weights.items())
            },
        }

    @classmethod
    def from_json(cls, value: object, source: str) -> WeightsDisclosure:
        """The disclosure in ``value``, every field checked; ``source`` names it in errors.

        Raises:
            WeightsDisclosureError: if it is not exactly such a disclosure.
        """
        value = require_format(value, FORMAT, _FIELDS, source, WeightsDisclosureError)
        job_id, round_number = (
            _positive(value[name], f"{source}: {name}") for name in ("jobId", "round")
        )
        try:
            participant = address(value["participant"])
        except ConsortiumError as exc:
            raise WeightsDisclosureError(f"{source}: participant: {exc}") from None
        try:
            salt = from_hex32(value["salt"], what=f"{source}: salt")
        except ConsortiumError as exc:
            raise WeightsDisclosureError(str(exc)) from None
        return cls(job_id, round_number, participant, salt, _tensors(value["weights"], source))


def _tensors(value: object, source: str) -> dict[str, NDArray[np.float64]]:
    if not isinstance(value, Mapping) or not 1 <= len(value) <= MAX_TENSORS:
        raise WeightsDisclosureError(
            f"{source}: weights must be an object of 1 to {MAX_TENSORS} named tensors"
        )
    tensors, total = {}, 0
    for name, tensor in value.items():
        where = f"{source}: weights.{name}"
        if not isinstance(tensor, Mapping) or sorted(tensor) != ["shape", "values"]:
            raise WeightsDisclosureError(f"{where} must hold exactly shape and values")
        shape, values = tensor["shape"], tensor["values"]
        if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            raise WeightsDisclosureError(f"{where}: shape must be a list of sizes")
        count = math.prod(shape)
        total += count
        if total > MAX_VALUES:
            raise WeightsDisclosureError(f"{source}: more than {MAX_VALUES:,} values")
        if not isinstance(values, list) or len(values) != count:
            raise WeightsDisclosureError(f"{where}: values must be a list of {count} numbers")
        if not all(type(v) is float and math.isfinite(v) for v in values):
            raise WeightsDisclosureError(f"{where}: every value must be a finite float")
        tensors[name] = np.array(values, dtype="<f8").reshape(shape)
    return tensors


def _positive(value: object, what: str) -> int:
    if type(value) is not int or value < 1:
        raise WeightsDisclosureError(f"{what} must be a positive integer, got {value!r}")
    return value
