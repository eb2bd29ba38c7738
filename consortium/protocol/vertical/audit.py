"""hetero-lr/1's audit checks: what an auditor can establish of a vertical round beyond the
checks every protocol's rounds get (anchors, records, signatures, Merkle tree, standing).

The weights are private to each party, so the round's model cannot be re-computed as FedAvg's
is. What stands in for it is checked instead: each data party's signed contribution commits to
the weights the round's model names for it, the transcripts of message digests that the guest,
the host and the arbiter keep fit together, and the arbiter's anchored loss and verdict are
well formed and end the job where they say. The ``aggregation`` result says so in words, and
passes only when those checks of its round did.

=================  ===============================================================
``base-model``     each record names the previous round's model (round 1: the job's initial)
``contribution``   each record's contribution is readable, of this protocol, this round and
                   the party's part (the job's consumer is the guest, the other party the
                   host), commits to the weights the round's model names for that party, and
                   ``numExamples`` is the intersection's size where the model spec states one
                   (``intersection.size``, or ``rows``); the party's metrics agree
``transcript``     every digest a party (guest, host, arbiter) received, another party sent,
                   and every one sent, another party received (the arbiter's verdict: both data
                   parties), in the order sent; no party received its own message
``aggregation``    not re-computed; passes, saying what stands in for it, when the round's
                   contribution and transcript checks did
``round-metrics``  the metrics name the round, a finite loss (the model's) and a boolean
                   ``converged``, which only the job's last anchored round may be; the
                   round's model names the round and commits for the job's parties only
=================  ===============================================================

A party that discloses a round's weights and salt opens its commitment; that check is the
verifier's ``disclosed-weights`` (:mod:`consortium.audit.disclosed_weights`), as it needs the
disclosure, not just the bundle.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from consortium.crypto.update_record import SignedUpdateRecord
from consortium.fl.vertical.terms import PROTOCOL
from consortium.protocol.audit import (
    AuditedRound,
    CheckResult,
    ObjectReader,
    Scope,
    check_base_model,
)

CHECK_NAMES = ("base-model", "contribution", "transcript", "aggregation", "round-metrics")
GUEST, HOST, ARBITER = "guest", "host", "arbiter"
NOT_RECOMPUTED = (
    "not re-computed: the weights are private to each party; what stands in for it: both "
    "parties' signatures over the same transcript, the commitments chaining from round to "
    "round, and the arbiter's anchored loss"
)
_SHOWN = 3  # problems a transcript result spells out before counting the rest


def stated_size(spec: Any) -> Any | None:
    """The training rows the model spec states, if any: ``terms.rows`` (the scenario's specs:
    the intersection less the rows the bank holds out) or ``rows`` (a spec that states them
    alone)."""
    if not isinstance(spec, dict):
        return None
    terms = spec.get("terms")
    if isinstance(terms, dict) and "rows" in terms:
        return terms["rows"]
    return spec.get("rows")


def _digests(value: Any) -> list[str] | None:
    """A transcript list as a contribution holds it (hex strings), or None."""
    if isinstance(value, list) and all(isinstance(d, str) for d in value):
        return value
    return None


def _commitments(model: Any) -> Mapping[str, Any] | None:
    weights = model.get("weights") if isinstance(model, dict) else None
    return weights if isinstance(weights, dict) else None


def check_contribution(
    scope: Scope,
    signed: SignedUpdateRecord,
    part: str,
    contribution: Any | None,
    metrics: Any | None,
    model: Any | None,
    size: Any | None,
) -> CheckResult:
    """The record's contribution is of this protocol, round and party's ``part``, and commits
    to the weights the round's ``model`` names for the party; its example count is the
    spec's intersection ``size`` (if stated) and its metrics' ``rows``."""
    record = signed.record
    digest = record.update_digest.hex()
    if not isinstance(contribution, dict):
        return scope.failed("contribution", f"the contribution {digest} is not readable")
    problems = []
    if contribution.get("protocol") != PROTOCOL:
        problems.append(f"it is of protocol {contribution.get('protocol')!r}")
    if contribution.get("round") != record.round:
        problems.append(f"it is for round {contribution.get('round')!r}")
    if contribution.get("party") != part:
        problems.append(f"it is the {contribution.get('party')!r}'s, the party is the {part}")
    if _digests(contribution.get("sent")) is None or _digests(contribution.get("received")) is None:
        problems.append("its transcript is not two lists of digests")
    committed = contribution.get("weights")
    named = _commitments(model)
    if named is None:
        problems.append("the round's model names no commitments")
    elif named.get(record.participant) != committed:
        problems.append(
            f"its weight commitment {committed!r} is not the one the round's model names for "
            f"it ({named.get(record.participant)!r})"
        )
    if size is not None and record.num_examples != size:
        problems.append(
            f"numExamples {record.num_examples} is not the job's {size!r} training rows"
        )
    if not isinstance(metrics, dict) or (metrics.get("round"), metrics.get("rows")) != (
        record.round,
        record.num_examples,
    ):
        problems.append(f"its metrics {metrics!r} do not name round {record.round} and its rows")
    stated = "" if size is not None else " (the model spec states no training rows)"
    return scope.outcome(
        "contribution",
        not problems,
        f"the {part}'s contribution {digest} commits to weights {committed} as the round's "
        f"model does, over {record.num_examples} examples{stated}",
        f"the {part}'s contribution {digest} is not this round's: " + "; ".join(problems),
    )


def transcript_problems(transcripts: Mapping[str, tuple[list[str], list[str]]]) -> list[str]:
    """What is wrong with the parties' transcripts (party -> its sent and received digests):
    a message received that no other party sent, one sent that no other party received, a
    party receiving its own, or one party's messages received in another order than sent."""
    problems = []
    sent = {party: set(lists[0]) for party, lists in transcripts.items()}
    received = {party: set(lists[1]) for party, lists in transcripts.items()}
    for party, (sent_list, received_list) in transcripts.items():
        for digest in received_list:
            if digest in sent[party]:
                problems.append(f"the {party} received its own message {digest}")
            elif not any(digest in sent[o] for o in transcripts if o != party):
                problems.append(f"the {party} received {digest}, which no other party sent")
        for digest in sent_list:
            if not any(digest in received[o] for o in transcripts if o != party):
                problems.append(f"the {party} sent {digest}, which no other party received")
        for other, (_, other_received) in transcripts.items():
            if other != party and [d for d in sent_list if d in received[other]] != [
                d for d in other_received if d in sent[party]
            ]:
                problems.append(f"the {other} received the {party}'s messages out of order")
    return problems


def check_transcript(
    scope: Scope, transcripts: Mapping[str, tuple[list[str], list[str]]], missing: list[str]
) -> CheckResult:
    """The guest's, the host's and the arbiter's transcripts fit together (see
    :func:`transcript_problems`); ``missing`` names the transcripts that could not be read."""
    if missing:
        return scope.failed("transcript", "cannot check: " + "; ".join(missing))
    problems = transcript_problems(transcripts)
    shown = problems[:_SHOWN]
    if len(problems) > _SHOWN:
        shown.append(f"and {len(problems) - _SHOWN} more")
    sent = sum(len(lists[0]) for lists in transcripts.values())
    receipts = sum(len(lists[1]) for lists in transcripts.values())
    return scope.outcome(
        "transcript",
        not problems,
        f"each of the {sent} messages the guest, the host and the arbiter sent was received by "
        f"another party, in the order sent ({receipts} receipts), and none received its own",
        "the transcripts do not fit together: " + "; ".join(shown),
    )


def check_aggregation(scope: Scope, upheld: bool) -> CheckResult:
    """Says, passed or failed, that the model was not re-computed and what stands in for it:
    passed when the round's contribution and transcript checks held."""
    return scope.outcome(
        "aggregation",
        upheld,
        NOT_RECOMPUTED,
        f"{NOT_RECOMPUTED}; and in this round those do not hold (see the contribution and "
        "transcript checks)",
    )


def check_round_metrics(
    scope: Scope, metrics: Any | None, model: Any | None, audited: AuditedRound
) -> CheckResult:
    """The round metrics name the round, a finite loss (the one the round's model holds) and a
    boolean verdict; a round that says converged must be the last one the chain anchored. The
    round's model names the round and a commitment for each of the job's parties, no other."""
    if not isinstance(metrics, dict):
        return scope.failed("round-metrics", "the round metrics object is not readable")
    loss, converged = metrics.get("loss"), metrics.get("converged")
    problems = []
    if metrics.get("round") != audited.round:
        problems.append(f"they are for round {metrics.get('round')!r}")
    # JCS writes an integral float as an integer; a huge one would overflow isfinite.
    if not (type(loss) is int or (type(loss) is float and math.isfinite(loss))):
        problems.append(f"their loss {loss!r} is not a finite number")
    elif not isinstance(model, dict) or (model.get("round"), model.get("loss")) != (
        audited.round,
        loss,
    ):
        problems.append("the round's model does not name this round and this loss")
    named = _commitments(model)
    if named is not None and sorted(named) != sorted(audited.participants):
        problems.append(f"the round's model commits for {sorted(named)}, not the job's parties")
    if not isinstance(converged, bool):
        problems.append(f"their verdict converged={converged!r} is not a boolean")
    elif converged and (audited.last_round is None or audited.round < audited.last_round):
        last = "unknown" if audited.last_round is None else audited.last_round
        problems.append(f"they say converged, yet the chain's last anchored round is {last}")
    verdict = "converged, the job's last round" if converged else "not converged"
    return scope.outcome(
        "round-metrics",
        not problems,
        f"the anchored metrics hold loss {loss!r} ({verdict})",
        "the anchored round metrics are wrong: " + "; ".join(problems),
    )


@dataclass(frozen=True)
class VerticalObjects:
    """What a hetero-lr/1 round's checks read from the bundle: the round's model, each
    readable record's contribution and party metrics (by leaf position), the round metrics."""

    model: Any | None
    contributions: dict[int, Any | None]
    party_metrics: dict[int, Any | None]
    round_metrics: Any | None


class HeteroLRAudit:
    """hetero-lr/1's checks, as the auditor's protocol registry holds them."""

    protocol_id = PROTOCOL
    check_names = CHECK_NAMES

    def read_model(self, objects: ObjectReader, digest: bytes, scope: Scope, what: str) -> Any:
        """A hetero-lr/1 model is one JSON object (commitments and loss), no tensor."""
        return objects.json(digest, scope, what)

    def prefetch(self, audited: AuditedRound) -> list[bytes]:
        """Nothing: a round's objects are a few small JSON objects."""
        return []

    def read(self, audited: AuditedRound, objects: ObjectReader) -> VerticalObjects:
        scope = audited.scope
        model = self.read_model(objects, audited.anchor.model_digest, scope, "global model")
        contributions, metrics = {}, {}
        for position, signed in audited.signed:
            at = scope.at(signed.record.participant)
            contributions[position] = objects.json(signed.record.update_digest, at, "contribution")
            metrics[position] = objects.json(signed.record.metrics_digest, at, "party metrics")
        round_metrics = objects.json(audited.anchor.metrics_digest, scope, "round metrics")
        return VerticalObjects(model, contributions, metrics, round_metrics)

    def check(self, audited: AuditedRound, read: VerticalObjects) -> Iterator[CheckResult]:
        scope = audited.scope
        size = stated_size(audited.spec)
        contributions_ok = bool(audited.signed)
        transcripts: dict[str, tuple[list[str], list[str]]] = {}
        missing, parts = [], set()
        for position, signed in audited.signed:
            participant = signed.record.participant
            at = scope.at(participant)
            part = GUEST if participant == audited.consumer else HOST
            parts.add(part)
            yield check_base_model(at, signed, audited.previous_model, audited.previous_source)
            contribution = read.contributions[position]
            result = check_contribution(
                at, signed, part, contribution, read.party_metrics[position], read.model, size
            )
            contributions_ok = contributions_ok and result.ok
            yield result
            lists = _lists(contribution)
            if lists is None or part in transcripts:
                missing.append(f"the {part} {participant}'s transcript is unreadable or repeated")
            else:
                transcripts[part] = lists
        arbiter = read.round_metrics.get(ARBITER) if isinstance(read.round_metrics, dict) else None
        lists = _lists(arbiter)
        if lists is None:
            missing.append("the round metrics hold no transcript of the arbiter")
        else:
            transcripts[ARBITER] = lists
        missing += [f"the {p} has no record" for p in (GUEST, HOST) if p not in parts]
        transcript = check_transcript(scope, transcripts, missing)
        yield transcript
        yield check_aggregation(scope, contributions_ok and transcript.ok)
        yield check_round_metrics(scope, read.round_metrics, read.model, audited)


def _lists(value: Any) -> tuple[list[str], list[str]] | None:
    """The sent and received digests of a transcript object, or None."""
    if not isinstance(value, dict):
        return None
    sent, received = _digests(value.get("sent")), _digests(value.get("received"))
    return None if sent is None or received is None else (sent, received)


AUDIT = HeteroLRAudit()
