"""Encrypted hetero logistic regression (``hetero-lr/1``) between a guest, a host and an arbiter,
driven in one process: set-up, one epoch, and training to the convergence rule.

The roles (:mod:`~consortium.fl.vertical.roles`) run the very descent of
:func:`consortium.fl.block_lr.fit` on :data:`~consortium.fl.block_lr.TAYLOR`, the same batches
in the same order from the same zero weights, with the residuals and gradients encrypted; their
weights differ from the plaintext descent's by fixed-point rounding only (below 1e-7 in the
tests and the benchmark at the default exponents), and the arbiter's loss is the plaintext
Taylor loss up to the same rounding.

The driver passes every message through its bytes (``to_bytes`` then the receiver's
``from_bytes`` at the position the receiver expects), so what the roles get is what a wire
would carry, and each role's transcript holds the digests of those bytes. The round engine
runs the same sequence with the parties apart: one epoch is one round.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeVar

from consortium.fl.party_table import PartyTable
from consortium.fl.vertical.messages import KeyAnnouncement, Limits, Message
from consortium.fl.vertical.paillier import KeyPair
from consortium.fl.vertical.roles import Arbiter, Guest, Host, Role, Transcript
from consortium.fl.vertical.terms import HeteroLRError, Terms

M = TypeVar("M", bound=Message)


@dataclass(frozen=True)
class Parties:
    """The three roles of one job, as :func:`set_up` makes them."""

    guest: Guest
    host: Host
    arbiter: Arbiter


@dataclass(frozen=True)
class EpochOutcome:
    """One epoch (one round): the arbiter's loss and verdict, and what each role sent and
    received during it (``"guest"``, ``"host"``, ``"arbiter"``)."""

    epoch: int
    loss: float
    converged: bool
    transcripts: Mapping[str, Transcript]


@dataclass(frozen=True)
class TrainOutcome:
    """Every epoch :func:`train` ran, the last the one the rule or the limit stopped at."""

    epochs: tuple[EpochOutcome, ...]

    @property
    def losses(self) -> tuple[float, ...]:
        return tuple(e.loss for e in self.epochs)

    @property
    def converged(self) -> bool:
        return self.epochs[-1].converged


def set_up(
    guest_table: PartyTable,
    host_table: PartyTable,
    terms: Terms,
    *,
    keys: KeyPair | None = None,
    rng: random.Random | None = None,
) -> Parties:
    """The three roles, the arbiter's key announced to both data parties over the wire.

    ``keys`` defaults to a fresh pair of ``terms.key_bits``; ``rng`` (the data parties'
    encryption randomness) to the operating system's source. Both tables must hold the
    intersection's rows in the one order the PSI gave.
    """
    arbiter = Arbiter(terms, keys)
    announced = arbiter.announce().to_bytes()
    received = [
        KeyAnnouncement.from_bytes(announced, None, Limits.for_terms(terms), round=0, batch=0)
        for _ in range(2)
    ]
    guest = Guest(guest_table, terms, received[0], rng=rng)
    host = Host(host_table, terms, received[1], rng=rng)
    return Parties(guest, host, arbiter)


def run_epoch(guest: Guest, host: Host, arbiter: Arbiter, epoch: int) -> EpochOutcome:
    """Every batch of ``epoch`` and the arbiter's verdict, each message over the wire."""
    if not guest.terms == host.terms == arbiter.terms:
        raise HeteroLRError("the guest, the host and the arbiter hold different terms")
    roles: dict[str, Role] = {"guest": guest, "host": host, "arbiter": arbiter}
    marks = {name: role.transcript.mark() for name, role in roles.items()}
    batches = len(arbiter.terms.batches(epoch))
    for b in range(batches):
        scores = _wire(host.scores(epoch, b), guest, epoch, b)
        residuals = _wire(guest.residuals(scores), host, epoch, b)
        arbiter.receive_loss(_wire(guest.loss(), arbiter, epoch, b))
        guest_gradient = _wire(guest.gradient(), arbiter, epoch, b)
        host_gradient = _wire(host.gradient(residuals), arbiter, epoch, b)
        guest.step(_wire(arbiter.decrypt(guest_gradient), guest, epoch, b))
        host.step(_wire(arbiter.decrypt(host_gradient), host, epoch, b))
    verdict = arbiter.verdict(epoch)
    guest.receive_verdict(_wire(verdict, guest, epoch, batches))
    host.receive_verdict(_wire(verdict, host, epoch, batches))
    return EpochOutcome(
        epoch=epoch,
        loss=verdict.loss,
        converged=verdict.converged,
        transcripts={name: role.transcript.since(marks[name]) for name, role in roles.items()},
    )


def train(guest: Guest, host: Host, arbiter: Arbiter, *, first_epoch: int = 0) -> TrainOutcome:
    """Epochs from ``first_epoch`` until the arbiter's verdict says converged, at most the
    terms' ``max_epochs``."""
    epochs: list[EpochOutcome] = []
    for epoch in range(first_epoch, first_epoch + arbiter.terms.config.max_epochs):
        epochs.append(run_epoch(guest, host, arbiter, epoch))
        if epochs[-1].converged:
            break
    return TrainOutcome(tuple(epochs))


def _wire(message: M, receiver: Role, epoch: int, batch: int) -> M:
    """``message`` as ``receiver`` reads it from its bytes, at the position it expects."""
    return type(message).from_bytes(
        message.to_bytes(), receiver.public_key, receiver.limits, round=epoch, batch=batch
    )
