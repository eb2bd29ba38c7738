"""What an audit produces: one :class:`CheckResult` per check and subject, and a :class:`Verdict`.

Results are plain values streamed as the audit goes, so that a caller can print, count or
store them without the verifier holding every round in memory. A result is one of three
things: the check held, it did not (evidence of a fault), or it could not be decided (the node
cannot serve the state it needs). An audit that could not decide something does not pass:
a regulator must not read "could not check" as "checked".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

PASS = "pass"
FAIL = "fail"
UNVERIFIABLE = "unverifiable"
INCOMPLETE = "incomplete"


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one named check for one subject.

    ``round`` is None for checks of the job as a whole (deployment, code, job record,
    completeness); ``participant`` names the member (or, for code checks, the contract
    address) the result is about, or is None. ``message`` is a full sentence naming the job,
    the round and the participant, so that it can be read on its own in a log.
    """

    name: str
    round: int | None
    participant: str | None
    ok: bool
    message: str
    unverifiable: bool = False

    @property
    def status(self) -> str:
        """``pass``, ``fail`` or ``unverifiable``."""
        if self.ok:
            return PASS
        return UNVERIFIABLE if self.unverifiable else FAIL

    def to_json(self) -> dict[str, Any]:
        """The JSON form ``consortium audit --json`` prints for each result."""
        return {
            "check": self.name,
            "round": self.round,
            "participant": self.participant,
            "ok": self.ok,
            "status": self.status,
            "message": self.message,
        }


@dataclass(frozen=True)
class Scope:
    """Who a result is about; builds results whose messages name job, round and participant.

    Check functions receive a scope rather than formatting the prefix themselves, so every
    message across the verifier is worded the same way and always says where it belongs.
    """

    job_id: int
    round: int | None = None
    participant: str | None = None

    def at(self, participant: str | None) -> Scope:
        """The same job and round, about ``participant``."""
        return Scope(self.job_id, self.round, participant)

    def describe(self) -> str:
        parts = [f"job {self.job_id}"]
        if self.round is not None:
            parts.append(f"round {self.round}")
        if self.participant is not None:
            parts.append(f"participant {self.participant}")
        return ", ".join(parts)

    def passed(self, name: str, text: str) -> CheckResult:
        return CheckResult(name, self.round, self.participant, True, f"{self.describe()}: {text}")

    def failed(self, name: str, text: str) -> CheckResult:
        return CheckResult(name, self.round, self.participant, False, f"{self.describe()}: {text}")

    def undecided(self, name: str, text: str) -> CheckResult:
        """A result for a check the chain cannot answer (e.g. pruned historical state)."""
        return CheckResult(
            name, self.round, self.participant, False, f"{self.describe()}: {text}", True
        )

    def outcome(self, name: str, ok: bool, good: str, bad: str) -> CheckResult:
        """``passed(name, good)`` if ``ok`` else ``failed(name, bad)``."""
        return self.passed(name, good) if ok else self.failed(name, bad)


@dataclass
class Tally:
    """Counts of passed, failed and undecided results."""

    passed: int = 0
    failed: int = 0
    unverifiable: int = 0

    def count(self, result: CheckResult) -> None:
        if result.ok:
            self.passed += 1
        elif result.unverifiable:
            self.unverifiable += 1
        else:
            self.failed += 1

    @property
    def total(self) -> int:
        return self.passed + self.failed + self.unverifiable


@dataclass
class Verdict(Tally):
    """Running totals of an audit; the audit holds when nothing failed or stayed undecided,
    and it ran to its end."""

    rounds: int = 0
    stopped: str | None = None  # why the audit ended before its last check, if it did

    def add(self, result: CheckResult) -> CheckResult:
        """Counts ``result`` and returns it, so a stream can be counted as it passes by."""
        self.count(result)
        if result.round is not None:
            self.rounds = max(self.rounds, result.round)
        return result

    def stop(self, reason: str) -> None:
        """Records that the audit ended early (the chain went away, say): whatever the
        results so far, it does not hold."""
        self.stopped = reason

    @property
    def ok(self) -> bool:
        """Every check held (and at least one ran), and the audit ran to its end."""
        return self.passed > 0 and not self.failed and not self.unverifiable and not self.stopped

    @property
    def status(self) -> str:
        if self.stopped:
            return INCOMPLETE
        if self.ok:
            return PASS
        return FAIL if self.failed else UNVERIFIABLE

    @property
    def exit_code(self) -> int:
        """0 when the audit holds, 1 otherwise (failures or checks that could not be made)."""
        return 0 if self.ok else 1

    def describe(self) -> str:
        """One line for people: the verdict and the counts behind it."""
        counts = f"{self.passed} passed, {self.failed} failed, {self.unverifiable} unverifiable"
        if self.stopped:
            return f"NOT VERIFIED: the audit stopped before its end ({counts} so far)"
        if self.ok:
            return f"VERIFIED: every check holds ({counts})"
        if self.failed:
            return f"NOT VERIFIED: {self.failed} check(s) failed ({counts})"
        return f"NOT VERIFIED: {self.unverifiable} check(s) could not be made ({counts})"

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "status": self.status,
            "passed": self.passed,
            "failed": self.failed,
            "unverifiable": self.unverifiable,
            "stopped": self.stopped,
        }
