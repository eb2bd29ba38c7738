"""What an audit produces: one :class:`CheckResult` per check and subject, and a :class:`Verdict`.

Results are plain values streamed as the audit goes, so that a caller can print, count or
store them without the verifier holding every round in memory. :class:`CheckResult` and
:class:`Scope` are defined with the protocols' audit interface
(:mod:`consortium.protocol.audit`), since a protocol's own checks build them too, and are
named here as well. An audit that could not decide something does not pass: a regulator must
not read "could not check" as "checked".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from consortium.protocol.audit import FAIL, PASS, UNVERIFIABLE, CheckResult, Scope

__all__ = ["FAIL", "INCOMPLETE", "PASS", "UNVERIFIABLE", "CheckResult", "Scope", "Tally", "Verdict"]

INCOMPLETE = "incomplete"


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
