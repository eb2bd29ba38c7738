"""The in-process transport: every message crosses as JSON, as it would between machines.

Serialising even in one process keeps the parties honest: nothing but the protocol's messages
can pass between them, so a simulation proves the same code that runs distributed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from consortium.errors import UsageError
from consortium.orchestration.messages import RoundOpen, RoundReceipt, UpdateSubmission
from consortium.orchestration.participant import Participant


def _wire(message: RoundOpen | RoundReceipt | UpdateSubmission) -> dict:
    return json.loads(json.dumps(message.to_json()))


class LocalTransport:
    """Delivers messages to participants living in this process, by address."""

    def __init__(self, participants: Mapping[str, Participant]) -> None:
        self.participants = dict(participants)

    def _participant(self, address: str) -> Participant:
        try:
            return self.participants[address]
        except KeyError:
            raise UsageError(f"no participant {address} on this transport") from None

    def open_round(self, participant: str, message: RoundOpen) -> UpdateSubmission:
        received = RoundOpen.from_json(_wire(message))
        reply = self._participant(participant).train(received)
        return UpdateSubmission.from_json(_wire(reply))

    def deliver(self, participant: str, receipt: RoundReceipt) -> None:
        self._participant(participant).check_receipt(RoundReceipt.from_json(_wire(receipt)))
