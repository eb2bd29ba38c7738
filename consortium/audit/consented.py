"""The ``consented-subjects`` check of a hetero-lr/1 job: from the data parties' disclosures
(:mod:`consortium.protocol.vertical.disclosure`), every business the job trained on consented on
both sides.

The model spec, whose digest the chain holds, commits to the intersection by its size and a
root over double-blinded PSI tokens, and names the subjects version of each dataset the job
used. With both parties' disclosures the auditor checks that

1. each disclosed business is under its dataset's subjects root of that version, read from the
   chain (``ConsentRegistry.subjectsRootAt``), and each party discloses as many as the
   intersection holds;
2. both parties disclose the same businesses;
3. their tokens, recomputed from the ids with both parties' PSI keys under the job's PSI
   context (rebuilt from the chain id, the trusted ledger and the job's datasets), give the
   spec's commitment.

Then the intersection, which the job trained on, is exactly those businesses, and each is in
both consent trees. With one disclosure only that party's part (1) is checked, and the job's
result says what was not, undecided. With none the check is not run at all, and the audit's
output says so (:func:`not_checked`): it is never a pass.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from eth_typing import ChecksumAddress

from consortium.audit.chainview import ChainView
from consortium.audit.checks import CONSENTED_SUBJECTS
from consortium.audit.results import CheckResult, Scope
from consortium.audit.timeline import CHAIN_ERRORS, first_line
from consortium.crypto.merkle import MerkleTree
from consortium.crypto.subjects import SubjectError, verify_disclosure
from consortium.errors import UsageError
from consortium.fl.vertical.psi import PsiError, double_blinded
from consortium.fl.vertical.terms import GUEST, HOST, PROTOCOL
from consortium.protocol.vertical.disclosure import PartyDisclosure, psi_context

_SHOWN = 3  # businesses a failure names before counting the rest


def require_disclosures_fit(
    protocol: str, job_id: int, datasets: Sequence[int], disclosures: Sequence[PartyDisclosure]
) -> None:
    """Refuses, before the audit, disclosures that cannot be about the bundle's job: for
    another protocol, another job, a dataset not the job's, or one dataset twice.

    Raises:
        UsageError: naming the first that does not fit.
    """
    if disclosures and protocol != PROTOCOL:
        raise UsageError(f"subject disclosures are of {PROTOCOL} jobs; this job is {protocol}")
    seen: set[int] = set()
    for disclosure in disclosures:
        if disclosure.job_id != job_id:
            raise UsageError(f"a disclosure is for job {disclosure.job_id}, not job {job_id}")
        if disclosure.dataset not in datasets:
            raise UsageError(f"a disclosure is of dataset {disclosure.dataset}, not the job's")
        if disclosure.dataset in seen:
            raise UsageError(f"two disclosures are of dataset {disclosure.dataset}")
        seen.add(disclosure.dataset)


def check_consented_subjects(
    scope: Scope,
    disclosures: Sequence[PartyDisclosure],
    spec: Any,
    consumer: ChecksumAddress,
    datasets: Sequence[int],
    view: ChainView,
) -> Iterator[CheckResult]:
    """One result per disclosing party (its businesses under its consent tree), then one for
    the job (the same businesses on both sides, giving the spec's intersection).
    ``disclosures`` are one or two that :func:`require_disclosures_fit` let through."""
    intersection = _intersection(spec)
    if intersection is None:
        yield scope.failed(
            CONSENTED_SUBJECTS,
            "the model spec names no intersection (size and commitment) or no subjects versions",
        )
        return
    size, commitment, versions = intersection
    try:
        owners = {d: view.ledger.consents.dataset(d).owner for d in datasets}
    except CHAIN_ERRORS as exc:
        yield scope.undecided(
            CONSENTED_SUBJECTS, f"cannot read the job's datasets: {first_line(exc)}"
        )
        return
    parts = {d: GUEST if owners[d] == consumer else HOST for d in datasets}
    if sorted(parts.values()) != [GUEST, HOST]:
        yield scope.failed(
            CONSENTED_SUBJECTS,
            f"the job's datasets {list(datasets)} are not one of its consumer's (the guest) and "
            "one of the other party's (the host)",
        )
        return
    given = {d.dataset: d for d in disclosures}
    for dataset, disclosure in given.items():
        at = scope.at(owners[dataset])
        yield _under_root(at, parts[dataset], disclosure, versions.get(str(dataset)), size, view)
    by_part = {parts[d]: d for d in datasets}
    guest, host = given.get(by_part[GUEST]), given.get(by_part[HOST])
    if guest is None or host is None:
        part, other = (GUEST, HOST) if guest is not None else (HOST, GUEST)
        yield scope.undecided(
            CONSENTED_SUBJECTS,
            f"only the {part}'s disclosure was given: its businesses were checked against its "
            f"consent tree and the intersection's size; not that the {other} consented to the "
            "same businesses, nor that they are the intersection the job trained on (the "
            "commitment needs both parties' PSI keys)",
        )
        return
    context = psi_context(view.chain.chain_id, view.ledger_address, by_part[GUEST], by_part[HOST])
    yield _same_intersection(scope, guest, host, size, commitment, context)


def _intersection(spec: Any) -> tuple[int, bytes, Mapping[str, Any]] | None:
    """The spec's intersection size and commitment and its subjects versions, or None."""
    if not isinstance(spec, dict):
        return None
    intersection, versions = spec.get("intersection"), spec.get("subjects")
    if not isinstance(intersection, dict) or not isinstance(versions, dict):
        return None
    size, commitment = intersection.get("size"), intersection.get("commitment")
    if type(size) is not int or not isinstance(commitment, str):
        return None
    try:
        return size, bytes.fromhex(commitment), versions
    except ValueError:
        return None


def _under_root(
    scope: Scope,
    part: str,
    disclosure: PartyDisclosure,
    version: Any,
    size: int,
    view: ChainView,
) -> CheckResult:
    """Every business the party discloses is under its dataset's subjects root of the version
    the spec names, read from the chain, and they are as many as the intersection holds."""
    dataset = disclosure.dataset
    where = f"the {part}'s dataset {dataset}"
    if type(version) is not int or disclosure.subjects_version != version:
        return scope.failed(
            CONSENTED_SUBJECTS,
            f"the disclosure is of {where}'s subjects version {disclosure.subjects_version}; "
            f"the model spec names version {version!r}",
        )
    try:
        root = view.ledger.consents.subjects_root_at(dataset, version)
    except CHAIN_ERRORS as exc:
        return scope.undecided(
            CONSENTED_SUBJECTS,
            f"cannot read {where}'s subjects root version {version}: {first_line(exc)}",
        )
    outside = []
    for position, subject in enumerate(disclosure.subjects):
        try:
            verify_disclosure(subject, root)
        except SubjectError:
            outside.append(f"{position} ({subject.subject_id!r})")
    count = len(disclosure.subjects)
    problems = []
    if outside:
        named = ", ".join(outside[:_SHOWN]) + (
            f" and {len(outside) - _SHOWN:,} more" if len(outside) > _SHOWN else ""
        )
        problems.append(f"{len(outside):,} of its {count:,} businesses are not under it: {named}")
    if count != size:
        problems.append(f"it discloses {count:,} businesses, the intersection holds {size:,}")
    return scope.outcome(
        CONSENTED_SUBJECTS,
        not problems,
        f"each of the {count:,} businesses the {part} discloses, as many as the intersection "
        f"holds, is under {where}'s subjects root {root.hex()} (version {version}) on chain",
        f"{where}'s subjects root {root.hex()} (version {version}) on chain: "
        + "; ".join(problems),
    )


def _same_intersection(
    scope: Scope,
    guest: PartyDisclosure,
    host: PartyDisclosure,
    size: int,
    commitment: bytes,
    context: str,
) -> CheckResult:
    """Both parties disclose the same businesses, whose tokens under both PSI keys are the
    spec's intersection: its size and its commitment."""
    guest_ids, host_ids = set(guest.ids), set(host.ids)
    if guest_ids != host_ids:
        only_guest, only_host = len(guest_ids - host_ids), len(host_ids - guest_ids)
        return scope.failed(
            CONSENTED_SUBJECTS,
            f"the parties disclose different businesses: {only_guest:,} only the guest does, "
            f"{only_host:,} only the host does",
        )
    try:
        tokens = double_blinded(guest.ids, context, (guest.psi_key, host.psi_key))
    except PsiError as exc:
        return scope.failed(CONSENTED_SUBJECTS, f"cannot recompute the PSI tokens: {exc}")
    root = MerkleTree(sorted(tokens)).root
    return scope.outcome(
        CONSENTED_SUBJECTS,
        root == commitment and len(tokens) == size,
        f"both parties disclose the same {len(tokens):,} businesses, whose tokens under both "
        f"PSI keys give the model spec's intersection commitment {commitment.hex()}: every "
        "business the job trained on consented on both sides",
        f"the {len(tokens):,} businesses both parties disclose give the commitment "
        f"{root.hex()} under their PSI keys, not the model spec's {commitment.hex()} over "
        f"{size:,}",
    )
