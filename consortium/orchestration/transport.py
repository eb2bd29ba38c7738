"""The in-process transport: every message crosses as JSON, as it would between machines.

Serialising even in one process keeps the parties honest: nothing but the protocol's messages
can pass between them, so a simulation proves the same code that runs distributed. A
participant that fails while training is, to the coordinator, a party that sent no usable
answer: its error comes back as :class:`ParticipantFailed`, as it would across a network,
and the round goes on without it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

from consortium.errors import ConsortiumError, UsageError
from consortium.protocol.fedavg.participant import Participant
from consortium.protocol.messages import RoundOpen, RoundReceipt, UpdateSubmission


class ParticipantFailed(ConsortiumError):
    """A participant did not answer with a protocol message (it raised, or sent garbage)."""


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

    def open_rounds(
        self, participants: Sequence[str], message: RoundOpen
    ) -> dict[str, UpdateSubmission | ConsortiumError]:
        """Each participant's answer to ``message``, one after the other; a failure is a
        ParticipantFailed (or the UsageError of a participant not on this transport)."""
        answers: dict[str, UpdateSubmission | ConsortiumError] = {}
        for participant in participants:
            try:
                answers[participant] = self.open_round(participant, message)
            except ConsortiumError as exc:
                answers[participant] = exc
        return answers

    def open_round(self, participant: str, message: RoundOpen) -> UpdateSubmission:
        """The participant's answer to ``message``; its failure is a ParticipantFailed."""
        party = self._participant(participant)
        received = RoundOpen.from_json(_wire(message))
        try:
            reply = _wire(party.train(received))
        # The participant is another party's code: whatever it raises is its failure to
        # answer, not the coordinator's, exactly as a remote error would be.
        except Exception as exc:
            raise ParticipantFailed(
                f"participant {participant} failed: {type(exc).__name__}: {exc}"
            ) from exc
        return UpdateSubmission.from_json(reply)

    def deliver(self, participant: str, receipt: RoundReceipt) -> None:
        self._participant(participant).check_receipt(RoundReceipt.from_json(_wire(receipt)))
