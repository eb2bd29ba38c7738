"""The FedAvg protocol's transport over a Flower grid: the coordinator, as a ServerApp, reaches
the participants' SuperNodes through the SuperLink.

A round's messages go out together and their replies are collected as they come, until
``timeout``: a node that is gone, or a ClientApp that fails, is a participant that gave no
update, and the round goes on without it, as over any transport. Receipts are handed out one
participant at a time from the engine's threads, each waiting for its own reply; the grid is
used under a lock, since it was not written to be shared between threads.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence

from flwr.app import Message, RecordDict
from flwr.serverapp import Grid

from consortium.errors import ConsortiumError, UsageError
from consortium.integrations.flower import wire
from consortium.orchestration.transport import ParticipantFailed
from consortium.protocol.messages import RoundOpen, RoundReceipt, UpdateSubmission
from consortium.protocol.receipts import ReceiptAlarm

POLL_SECONDS = 0.25
"""Between two looks for replies: the SuperLink answers from memory, and the SuperNodes
themselves poll it every few seconds."""


HELLO_SECONDS = 15.0
"""How long one round of ``query.hello`` waits for the nodes asked: a node whose ClientApp
cannot start (or that is gone while still listed) must not hold up the others."""


class NodesMissing(ConsortiumError):
    """Fewer of the job's participants reached the SuperLink than a round needs."""


class GridTransport:
    """Delivers the protocol's messages to the SuperNode of each participant, by address."""

    def __init__(self, grid: Grid, nodes: Mapping[str, int], *, timeout: float) -> None:
        self.grid = grid
        self.nodes = dict(nodes)
        self.timeout = timeout
        self._lock = threading.Lock()

    @classmethod
    def discover(
        cls, grid: Grid, participants: Sequence[str], *, timeout: float, least: int
    ) -> GridTransport:
        """Asks every node online which participant it speaks for, until every one of
        ``participants`` answered or ``timeout`` passed; then at least ``least`` of them must
        have. A node that names no participant of the job is left alone; a participant with
        no node takes no part (its rounds say so)."""
        deadline = time.monotonic() + timeout
        transport = cls(grid, {}, timeout=timeout)
        known = {p.lower(): p for p in participants}
        while len(transport.nodes) < len(participants) and time.monotonic() < deadline:
            asked = [n for n in grid.get_node_ids() if n not in transport.nodes.values()]
            replies = transport._exchange(
                {node: (wire.HELLO, wire.content()) for node in asked},
                min(deadline, time.monotonic() + HELLO_SECONDS),
            )
            for node, reply in replies.items():
                address = wire.text(reply, "address").lower()
                if address in known:
                    transport.nodes[known[address]] = node
            if not asked:
                time.sleep(POLL_SECONDS)
        if len(transport.nodes) < least:
            raise NodesMissing(
                f"{len(transport.nodes)} of the job's {len(participants)} participants reached "
                f"the SuperLink within {timeout:g} s; a round needs {least}"
            )
        return transport

    def open_rounds(
        self, participants: Sequence[str], message: RoundOpen
    ) -> dict[str, UpdateSubmission | ConsortiumError]:
        """Every reachable participant's answer to ``message``; the others' reasons."""
        payload = wire.content(message=message.to_json())
        reachable = {self.nodes[p]: p for p in participants if p in self.nodes}
        replies = self._exchange(
            {node: (wire.OPEN, payload) for node in reachable}, time.monotonic() + self.timeout
        )
        answers: dict[str, UpdateSubmission | ConsortiumError] = {}
        for participant in participants:
            node = self.nodes.get(participant)
            reply = replies.get(node) if node is not None else None
            answers[participant] = self._submission(participant, node, reply)
        return answers

    def deliver(self, participant: str, receipt: RoundReceipt) -> None:
        """Hands ``participant`` its receipt and waits for its verdict; its alarm is raised."""
        node = self.nodes.get(participant)
        if node is None:
            raise ParticipantFailed(f"participant {participant} has no node on this SuperLink")
        replies = self._exchange(
            {node: (wire.RECEIPT, wire.content(receipt=receipt.to_json()))},
            time.monotonic() + self.timeout,
        )
        reply = replies.get(node)
        if reply is None:
            raise ParticipantFailed(f"participant {participant} did not answer its receipt")
        if reply.has_error():
            raise ParticipantFailed(f"participant {participant}: {reply.error.reason}")
        alarm = wire.text(reply, "alarm")
        if alarm:
            raise ReceiptAlarm(alarm)

    def _submission(
        self, participant: str, node: int | None, reply: Message | None
    ) -> UpdateSubmission | ConsortiumError:
        if node is None:
            return ParticipantFailed(f"participant {participant} has no node on this SuperLink")
        if reply is None:
            return ParticipantFailed(f"participant {participant} did not answer within the round")
        if reply.has_error():
            return ParticipantFailed(f"participant {participant} failed: {reply.error.reason}")
        try:
            return UpdateSubmission.from_json(wire.value(reply, "submission"))
        except (UsageError, KeyError, TypeError, ValueError) as exc:
            return ParticipantFailed(f"participant {participant} sent no submission: {exc}")

    def _exchange(
        self, outgoing: Mapping[int, tuple[str, RecordDict]], deadline: float
    ) -> dict[int, Message]:
        """Sends each node its message and collects the replies that arrive before
        ``deadline``, by node."""
        with self._lock:
            messages = [
                self.grid.create_message(content, kind, node, group_id="")
                for node, (kind, content) in outgoing.items()
            ]
            ids = list(self.grid.push_messages(messages))
        sent = {i: node for i, node in zip(ids, outgoing, strict=True) if i}
        replies: dict[int, Message] = {}
        while sent and time.monotonic() < deadline:
            with self._lock:
                pulled = list(self.grid.pull_messages(list(sent)))
            for reply in pulled:
                node = sent.pop(reply.metadata.reply_to_message_id, None)
                if node is not None:
                    replies[node] = reply
            if sent:
                time.sleep(POLL_SECONDS)
        return replies
