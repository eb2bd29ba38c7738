"""A member's ClientApp: the project's participant behind Flower's message handlers.

``participant_for(context)`` gives the participant this SuperNode speaks for (its key, data,
store, journal and own view of the chain, all named by the node's configuration), for the
length of one message: Flower runs every message in a new process, and the participant's
journal and store carry what it did from one message to the next. It trains and signs a round
(``train``), checks its receipt against the chain itself (``query.receipt``: an alarm is
answered, for the coordinator to journal), and tells which participant it is
(``query.hello``).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from consortium.errors import ConsortiumError
from consortium.integrations.flower import wire
from consortium.protocol.fedavg.participant import Participant
from consortium.protocol.messages import RoundOpen, RoundReceipt

ParticipantFor = Callable[[Context], AbstractContextManager[Participant]]


def ledger_client_app(participant_for: ParticipantFor) -> ClientApp:
    """A ClientApp answering the coordinator's messages as ``participant_for`` gives it."""
    app = ClientApp()

    @app.train()
    def train(message: Message, context: Context) -> Message:
        with participant_for(context) as participant:
            opened = RoundOpen.from_json(wire.value(message, "message"))
            submission = participant.train(opened)
        return Message(wire.content(submission=submission.to_json()), reply_to=message)

    @app.query("receipt")
    def receipt(message: Message, context: Context) -> Message:
        with participant_for(context) as participant:
            try:
                participant.check_receipt(RoundReceipt.from_json(wire.value(message, "receipt")))
            except ConsortiumError as exc:
                return Message(wire.content(alarm=str(exc)), reply_to=message)
        return Message(wire.content(alarm=""), reply_to=message)

    @app.query("hello")
    def hello(message: Message, context: Context) -> Message:
        with participant_for(context) as participant:
            return Message(wire.content(address=participant.address), reply_to=message)

    return app
