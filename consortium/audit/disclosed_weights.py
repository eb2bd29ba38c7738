"""The ``disclosed-weights`` check of a hetero-lr/1 job: a data party that discloses the salt and
the weights of one round (:mod:`consortium.protocol.vertical.weights_disclosure`) shows the
auditor the weights it trained, and the auditor checks that they open the commitment the
round's anchored model names for that party, and have the shape the model spec's terms give
the party's part (the guest's features and a bias, the host's features).

The aggregation of a vertical round cannot be re-run (:mod:`consortium.protocol.vertical.audit`
says what stands in for it); this check is what a disclosure adds: the numbers themselves,
bound to the chain. It passes only when the round's model verified as well, since only then are
the opened weights the ones the job produced; otherwise it is unverifiable, not failed, as the
failure is already the round's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from consortium.audit.checks import DISCLOSED_WEIGHTS
from consortium.audit.results import CheckResult, Scope
from consortium.errors import UsageError
from consortium.fl.vertical.terms import PROTOCOL
from consortium.protocol.vertical.weights_disclosure import WeightsDisclosure

GUEST_TENSORS = {"weights": "guestFeatures", "bias": None}
HOST_TENSORS = {"weights": "hostFeatures"}


def require_weights_fit(
    protocol: str,
    job_id: int,
    participants: Sequence[str],
    disclosures: Sequence[WeightsDisclosure],
) -> None:
    """Refuses, before the audit, weights disclosures that cannot be about the bundle's job:
    of another protocol or job, of an address not the job's, or two of one party's round."""
    if disclosures and protocol != PROTOCOL:
        raise UsageError(f"weights disclosures are of {PROTOCOL} jobs; this job is {protocol}")
    seen = set()
    for disclosure in disclosures:
        if disclosure.job_id != job_id:
            raise UsageError(f"a weights disclosure is for job {disclosure.job_id}, not {job_id}")
        if disclosure.participant not in participants:
            raise UsageError(
                f"a weights disclosure is of {disclosure.participant}, not a party of the job"
            )
        key = (disclosure.participant, disclosure.round)
        if key in seen:
            raise UsageError(f"two weights disclosures are of {key[0]}'s round {key[1]}")
        seen.add(key)


def check_disclosed_weights(
    scope: Scope,
    disclosure: WeightsDisclosure,
    model: Any,
    spec: Any,
    consumer: str,
    model_verified: bool,
) -> CheckResult:
    """The disclosed weights open the commitment ``model`` (the disclosed round's, from the
    bundle; None if it has no such round) names for the party, with the shape ``spec`` gives
    its part; ``model_verified`` says whether every check up to that round held."""
    at = scope.at(disclosure.participant)
    part = "guest" if disclosure.participant == consumer else "host"
    what = f"the {part}'s weights of round {disclosure.round}"
    if model is None:
        return at.failed(DISCLOSED_WEIGHTS, f"{what}: the bundle has no round {disclosure.round}")
    problems = _shape_problems(disclosure.weights, spec, part)
    named = model.get("weights") if isinstance(model, dict) else None
    committed = named.get(disclosure.participant) if isinstance(named, dict) else None
    opened = disclosure.commitment().hex()
    if committed != opened:
        problems.append(
            f"they open commitment {opened}, the round's model names {committed!r} for the {part}"
        )
    if problems:
        return at.failed(
            DISCLOSED_WEIGHTS, f"{what} are not the committed ones: " + "; ".join(problems)
        )
    opens = (
        f"{what} ({disclosure.size} numbers) open the commitment {opened} the round's model "
        "names for it"
    )
    if not model_verified:
        return at.undecided(
            DISCLOSED_WEIGHTS,
            f"{opens}, but round {disclosure.round}'s model did not verify, so they are not "
            "shown to be the weights the job trained",
        )
    return at.passed(DISCLOSED_WEIGHTS, f"{opens}: they are the weights the job trained")


def _shape_problems(weights: Mapping[str, Any], spec: Any, part: str) -> list[str]:
    """What is wrong with the tensors' names and shapes for ``part``, by the spec's terms."""
    expected = GUEST_TENSORS if part == "guest" else HOST_TENSORS
    if sorted(weights) != sorted(expected):
        return [f"they name tensors {sorted(weights)}, the {part}'s are {sorted(expected)}"]
    terms = spec.get("terms") if isinstance(spec, dict) else None
    problems = []
    for name, features in expected.items():
        size = None if features is None else (terms or {}).get(features)
        shape = () if features is None else (size,)
        if features is not None and type(size) is not int:
            problems.append(f"the model spec states no {features}")
        elif weights[name].shape != shape:
            problems.append(f"{name} has shape {list(weights[name].shape)}, not {list(shape)}")
    return problems
