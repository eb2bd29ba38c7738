"""The guest, the host and the arbiter of ``hetero-lr/1``: each its own state, its own keys and
its own transcript, meeting only through the messages of :mod:`consortium.fl.vertical.messages`.

Per batch (DESIGN.md, "The vertical protocol"), with ``[[x]]`` encrypted under the arbiter's key:

1. :meth:`Host.scores`: ``[[u_h / 4]]`` per row, ``[[sum u_h^2]]`` and ``[[|w_h|^2]]``;
2. :meth:`Guest.residuals`: ``[[d]] = [[u_h / 4]] + [[u_g / 4 - y / 2]]``, the guest's part a
   fresh encryption, so that the host cannot divide its own ciphertexts out of ``[[d]]``;
   :meth:`Guest.loss`: the batch's Taylor loss, penalty included, ``sum_i taylor_loss(u_g,i)
   + [[u_h / 4]] . (u_g - 2 y) + [[sum u_h^2]] / 8 + [[|w_h|^2]] l2 B / 2 + l2 B |w_g|^2 / 2``
   as one multi-exponentiation and one fresh encryption (since ``u = u_g + u_h``);
3. :meth:`Guest.gradient`, :meth:`Host.gradient`: ``X^T [[d]]`` by multi-exponentiation (the
   guest's last column is all ones, for its bias), masked and packed for the arbiter;
4. :meth:`Arbiter.decrypt`: the masked plaintexts back; :meth:`Guest.step`, :meth:`Host.step`
   take the masks off and take a step of block_lr's descent, L2 included.

After the last batch :meth:`Arbiter.verdict` gives the epoch's loss and the convergence rule's
verdict (:meth:`~consortium.fl.block_lr.DescentConfig.converged`). Each role refuses a message
out of this order, and records the digest of every message it sends or receives; each data
party commits to its weights with a salt (:func:`weight_commitment`).

This is the semi-honest model, as in FATE: the arbiter cannot tell what a masked value is, so a
data party that sent another vector of ciphertexts in place of its gradient would get it
decrypted; the arbiter decrypts one vector of the party's gradient size per party and batch.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray
from phe import EncryptedNumber, PaillierPublicKey

from consortium.crypto.canonical import jcs
from consortium.crypto.digests import model_digest
from consortium.fl.block_lr import signed_labels, taylor_loss, taylor_residual
from consortium.fl.party_table import PartyTable
from consortium.fl.vertical.messages import (
    DecryptedGradient,
    EncryptedLoss,
    HostScores,
    KeyAnnouncement,
    Limits,
    MaskedGradient,
    Message,
    Residuals,
    Verdict,
)
from consortium.fl.vertical.paillier import (
    Decryptor,
    Encryptor,
    KeyPair,
    Masks,
    add_encrypted,
    generate_keypair,
    pack,
    unpack,
    weighted_sums,
)
from consortium.fl.vertical.terms import GUEST, HOST, HeteroLRError, Party, Terms
from consortium.timing import Timings

MIN_SALT_BYTES = 16

M = TypeVar("M", bound=Message)


@dataclass
class Transcript:
    """The SHA-256 digests of the messages a role sent and received, each list in order."""

    sent: list[bytes] = field(default_factory=list)
    received: list[bytes] = field(default_factory=list)

    def mark(self) -> tuple[int, int]:
        return len(self.sent), len(self.received)

    def since(self, mark: tuple[int, int]) -> Transcript:
        """What was sent and received after :meth:`mark` returned ``mark``."""
        return Transcript(self.sent[mark[0] :], self.received[mark[1] :])

    def to_json(self) -> dict[str, list[str]]:
        """The lists as a round contribution holds them: lowercase hex."""
        return {"sent": [d.hex() for d in self.sent], "received": [d.hex() for d in self.received]}


def weight_commitment(weights: Mapping[str, NDArray[np.float64]], salt: bytes) -> bytes:
    """``SHA-256(JCS({"salt": hex, "weights": model digest hex}))``: binds a party to weights it
    keeps private; disclosing the weights and the salt opens it."""
    if len(salt) < MIN_SALT_BYTES:
        raise HeteroLRError(f"a commitment's salt needs at least {MIN_SALT_BYTES} bytes")
    return hashlib.sha256(
        jcs({"salt": salt.hex(), "weights": model_digest(weights).hex()})
    ).digest()


class Role:
    """What every role has: the terms, what it accepts, its transcript and its step timings
    (CPU seconds of this process per step, as :mod:`consortium.timing` names phases)."""

    public_key: PaillierPublicKey

    def __init__(self, terms: Terms) -> None:
        self.terms = terms
        self.limits = Limits.for_terms(terms)
        self.transcript = Transcript()
        self.timings: Timings = {}

    def _sent(self, message: M) -> M:
        self.transcript.sent.append(message.digest())
        return message

    def _received(self, message: Message) -> None:
        self.transcript.received.append(message.digest())

    @contextmanager
    def _timed(self, step: str) -> Iterator[None]:
        start = time.process_time()
        try:
            yield
        finally:
            self.timings[step] = self.timings.get(step, 0.0) + time.process_time() - start


# ---------------------------------------------------------------------------- the arbiter


class Arbiter(Role):
    """Holds the private key: decrypts masked packed gradients and the loss, and decides
    convergence. It never sees a gradient, a score or a residual in the clear."""

    def __init__(self, terms: Terms, keys: KeyPair | None = None) -> None:
        super().__init__(terms)
        keys = keys or generate_keypair(terms.key_bits)
        if keys.public_key.n.bit_length() != terms.key_bits:
            raise HeteroLRError(f"the key pair is not of the job's {terms.key_bits} bits")
        self.public_key = keys.public_key
        self._hs = keys.hs
        self._decryptor = Decryptor(keys.private_key)
        self._epoch: int | None = None
        self._closed = False
        self._seen: set[tuple[str, int]] = set()
        self._loss_total = 0.0
        self._previous_loss: float | None = None

    def announce(self) -> KeyAnnouncement:
        """The public key and DJN base for the data parties, before the first round."""
        return self._sent(KeyAnnouncement(0, 0, self.public_key, self._hs))

    def decrypt(self, gradient: MaskedGradient) -> DecryptedGradient:
        """The masked plaintexts of a data party's gradient, once per party and batch."""
        self._received(gradient)
        party = gradient.party
        self._accept(gradient, party)
        terms = self.terms
        if (gradient.values, gradient.slot_bits, gradient.exponent) != (
            terms.values(party),
            terms.slot_bits,
            terms.gradient_exponent,
        ):
            raise HeteroLRError(f"the {party}'s gradient is not of the job's shape or slots")
        with self._timed("decrypt"):
            plaintexts = self._decryptor.decrypt_raw(gradient.packed)
        reply = DecryptedGradient(
            round=gradient.round,
            batch=gradient.batch,
            party=party,
            values=gradient.values,
            slot_bits=gradient.slot_bits,
            plaintexts=tuple(plaintexts),
            key_bytes=self.limits.key_bytes,
        )
        return self._sent(reply)

    def receive_loss(self, loss: EncryptedLoss) -> None:
        """Adds the guest's encrypted loss of one batch to the epoch's."""
        self._received(loss)
        self._accept(loss, "loss")
        if loss.loss.exponent != self.terms.loss_exponent:
            raise HeteroLRError("the loss is not at the job's exponent")
        with self._timed("decrypt"):
            self._loss_total += float(self._decryptor.decrypt([loss.loss])[0])

    def verdict(self, epoch: int) -> Verdict:
        """The epoch's mean loss and the convergence rule's verdict, once every batch's loss
        and both gradients are in."""
        batches = len(self.terms.batches(epoch))
        expected = {(kind, b) for kind in ("loss", GUEST, HOST) for b in range(batches)}
        if epoch != self._epoch or self._closed or self._seen != expected:
            raise HeteroLRError(f"round {epoch} is not complete: no verdict")
        loss = self._loss_total / self.terms.rows
        converged = self.terms.config.converged(self._previous_loss, loss)
        self._previous_loss, self._closed = loss, True
        return self._sent(Verdict(epoch, batches, loss, converged))

    def restore(self, previous_loss: float | None) -> None:
        """Starts afresh from a round whose loss was ``previous_loss`` (None before the first):
        what a resumed job's arbiter knows of the rounds before, for its convergence rule."""
        self._epoch, self._closed, self._seen = None, False, set()
        self._loss_total, self._previous_loss = 0.0, previous_loss

    def _accept(self, message: Message, kind: str) -> None:
        """Opens the next round on its first message; refuses a repeat or another round."""
        if self._epoch is None or (self._closed and message.round == self._epoch + 1):
            self._epoch, self._closed, self._seen = message.round, False, set()
            self._loss_total = 0.0
        if message.round != self._epoch or self._closed:
            raise HeteroLRError(f"the arbiter is not in round {message.round}")
        if message.batch >= len(self.terms.batches(message.round)):
            raise HeteroLRError(f"round {message.round} has no batch {message.batch}")
        if (kind, message.batch) in self._seen:
            raise HeteroLRError(f"the arbiter has had the {kind} of batch {message.batch} already")
        self._seen.add((kind, message.batch))


# ---------------------------------------------------------------------------- the data parties


@dataclass
class _Batch:
    """The state of a data party's open batch."""

    epoch: int
    index: int
    rows: NDArray[np.intp]
    scores: HostScores | None = None
    u: NDArray[np.float64] | None = None
    residuals: Sequence[EncryptedNumber] = ()
    masks: Masks | None = None


class _DataParty(Role):
    """A guest or a host: its columns of the intersection and its weights, its encryptor under
    the arbiter's key (one fixed-base table for the whole job), and where it is in the job."""

    PARTY: ClassVar[Party]

    def __init__(
        self,
        table: PartyTable,
        terms: Terms,
        announcement: KeyAnnouncement,
        design: NDArray[np.float64],
        rng: random.Random | None,
    ) -> None:
        super().__init__(terms)
        self._received(announcement)
        name = self.PARTY
        features = terms.guest_features if name == GUEST else terms.host_features
        if table.X.shape != (terms.rows, features):
            raise HeteroLRError(
                f"the {name}'s table is {table.X.shape[0]} x {table.X.shape[1]}, the terms say "
                f"{terms.rows} x {features}"
            )
        beyond = np.flatnonzero(~np.all(np.abs(table.X) <= terms.feature_bound, axis=0))
        if beyond.size:
            raise HeteroLRError(
                f"the {name}'s feature {table.feature_names[beyond[0]]!r} is not finite or "
                f"beyond +-{terms.feature_bound:g}: standardize the features (the bound sizes "
                f"the masks; values are refused, not clipped)"
            )
        self.public_key = announcement.public_key
        self._encryptor = Encryptor(self.public_key, announcement.hs, rng)
        self._X = design
        self._w = np.zeros(design.shape[1])
        self._l2 = np.full(design.shape[1], terms.config.l2)
        self._epoch: int | None = None
        self._batches: tuple[NDArray[np.intp], ...] = ()
        self._done = 0
        self._closed = False
        self._open: _Batch | None = None

    def commitment(self, salt: bytes) -> bytes:
        """The salted commitment to :meth:`weights` (:func:`weight_commitment`)."""
        return weight_commitment(self.weights(), salt)

    def weights(self) -> dict[str, NDArray[np.float64]]:
        raise NotImplementedError

    def restore(self, weights: Mapping[str, NDArray[np.float64]]) -> None:
        """Starts afresh from ``weights`` (of :meth:`weights`'s shape), no round open: how a
        resumed party goes on from the weights its last anchored commitment opens to."""
        expected = self.weights()
        if sorted(weights) != sorted(expected) or any(
            np.shape(weights[name]) != np.shape(value) for name, value in expected.items()
        ):
            raise HeteroLRError(f"the {self.PARTY}'s weights to resume from are not its shape")
        self._w = np.concatenate([np.ravel(weights[name]) for name in expected]).astype(float)
        self._epoch, self._batches, self._done, self._closed = None, (), 0, False
        self._open = None

    def step(self, reply: DecryptedGradient) -> None:
        """Takes the masks off the arbiter's reply and steps the weights; closes the batch."""
        self._received(reply)
        batch = self._current(reply)
        masks = batch.masks
        if masks is None:
            raise HeteroLRError(f"the {self.PARTY} has sent no gradient of this batch")
        if (reply.party, reply.values, reply.slot_bits) != (
            self.PARTY,
            len(masks.offsets),
            masks.slot_bits,
        ):
            raise HeteroLRError(f"the reply is not the {self.PARTY}'s gradient")
        config = self.terms.config
        with self._timed("unmask and step"):
            masked = unpack(self.public_key, reply.plaintexts, masks.slot_bits, reply.values)
            gradient = masks.remove(masked) / len(batch.rows) + self._l2 * self._w
            self._w = self._w - config.learning_rate * gradient
        self._done, self._open = self._done + 1, None

    def receive_verdict(self, verdict: Verdict) -> None:
        """Closes the round; the next may open."""
        self._received(verdict)
        if (
            (verdict.round, verdict.batch) != (self._epoch, len(self._batches))
            or self._done != len(self._batches)
            or self._closed
        ):
            raise HeteroLRError(f"the {self.PARTY} has no round {verdict.round} to close")
        self._closed = True

    def _begin(self, epoch: int, index: int) -> _Batch:
        """Opens batch ``index`` of ``epoch``: the next of the round under way, or the first
        of the next round once the last is closed (of any round, for the first)."""
        if self._epoch is None or (self._closed and epoch == self._epoch + 1):
            self._epoch, self._batches, self._done, self._closed = (
                epoch,
                self.terms.batches(epoch),
                0,
                False,
            )
        if (
            (epoch, index) != (self._epoch, self._done)
            or self._closed
            or self._open is not None
            or index >= len(self._batches)
        ):
            raise HeteroLRError(f"the {self.PARTY} cannot open round {epoch} batch {index}")
        self._open = _Batch(epoch, index, self._batches[index])
        return self._open

    def _current(self, message: Message) -> _Batch:
        batch = self._open
        if batch is None or (message.round, message.batch) != (batch.epoch, batch.index):
            raise HeteroLRError(
                f"the {self.PARTY} has no open round {message.round} batch {message.batch}"
            )
        return batch

    def _scores(self, batch: _Batch) -> NDArray[np.float64]:
        """The party's partial scores over the batch, refused beyond the bound."""
        u = self._X[batch.rows] @ self._w
        if not np.all(np.abs(u) <= self.terms.score_bound):
            raise HeteroLRError(
                f"the {self.PARTY}'s scores left +-{self.terms.score_bound:g}: the model "
                f"diverged (lower the learning rate)"
            )
        return u

    def _masked_gradient(self, batch: _Batch) -> MaskedGradient:
        """``X^T [[d]]`` over the batch, masked and packed for the arbiter."""
        if batch.masks is not None:
            raise HeteroLRError(f"the {self.PARTY} has sent this batch's gradient already")
        terms = self.terms
        with self._timed("multi-exponentiation"):
            sums = weighted_sums(batch.residuals, self._X[batch.rows], terms.feature_exponent)
        with self._timed("mask and pack"):
            masked, batch.masks = self._encryptor.mask(sums, terms.value_bits)
            packed = pack(masked, batch.masks.slot_bits)
        return self._sent(
            MaskedGradient(
                round=batch.epoch,
                batch=batch.index,
                party=self.PARTY,
                values=len(sums),
                slot_bits=batch.masks.slot_bits,
                exponent=terms.gradient_exponent,
                packed=tuple(packed),
            )
        )

    def _check_residuals(self, batch: _Batch, ciphertexts: Sequence[EncryptedNumber]) -> None:
        if len(ciphertexts) != len(batch.rows):
            raise HeteroLRError(
                f"{len(ciphertexts)} ciphertexts for a batch of {len(batch.rows)} rows"
            )
        if ciphertexts[0].exponent != self.terms.score_exponent:
            raise HeteroLRError("the ciphertexts are not at the job's score exponent")


class Host(_DataParty):
    """The data party without labels: its features and weights (no bias)."""

    PARTY = HOST

    def __init__(
        self,
        table: PartyTable,
        terms: Terms,
        announcement: KeyAnnouncement,
        *,
        rng: random.Random | None = None,
    ) -> None:
        super().__init__(table, terms, announcement, np.asarray(table.X), rng)

    def weights(self) -> dict[str, NDArray[np.float64]]:
        return {"weights": self._w.copy()}

    def scores(self, epoch: int, index: int) -> HostScores:
        """Opens the batch: ``[[u_h / 4]]`` per row, ``[[sum u_h^2]]`` and ``[[|w_h|^2]]``."""
        batch = self._begin(epoch, index)
        u = self._scores(batch)
        with self._timed("encrypt scores"):
            values = np.concatenate([u / 4, [u @ u, self._w @ self._w]])
            encrypted = self._encryptor.encrypt(values, self.terms.score_exponent)
        return self._sent(
            HostScores(epoch, index, tuple(encrypted[:-2]), encrypted[-2], encrypted[-1])
        )

    def gradient(self, residuals: Residuals) -> MaskedGradient:
        """The host's masked packed ``X_h^T [[d]]`` from the guest's residuals."""
        self._received(residuals)
        batch = self._current(residuals)
        self._check_residuals(batch, residuals.residuals)
        batch.residuals = residuals.residuals
        return self._masked_gradient(batch)


class Guest(_DataParty):
    """The data party with the labels: its features, weights and bias, and the loss."""

    PARTY = GUEST

    def __init__(
        self,
        table: PartyTable,
        terms: Terms,
        announcement: KeyAnnouncement,
        *,
        rng: random.Random | None = None,
    ) -> None:
        if table.y is None:
            raise HeteroLRError("the guest's table holds no labels")
        design = np.column_stack([table.X, np.ones(table.num_rows)])
        super().__init__(table, terms, announcement, design, rng)
        self._y = signed_labels(table.y)
        self._l2[-1] = 0.0  # the bias is not regularised

    def weights(self) -> dict[str, NDArray[np.float64]]:
        return {"weights": self._w[:-1].copy(), "bias": np.array(self._w[-1])}

    def residuals(self, scores: HostScores) -> Residuals:
        """Opens the batch the host's scores are for: ``[[d]]``, re-randomized."""
        self._received(scores)
        batch = self._begin(scores.round, scores.batch)
        self._check_residuals(batch, scores.quarter_scores)
        batch.scores, batch.u = scores, self._scores(batch)
        with self._timed("residuals"):
            own = self._encryptor.encrypt(
                taylor_residual(batch.u, self._y[batch.rows]), self.terms.score_exponent
            )
            batch.residuals = add_encrypted(scores.quarter_scores, own)
        return self._sent(Residuals(batch.epoch, batch.index, tuple(batch.residuals)))

    def loss(self) -> EncryptedLoss:
        """The batch's encrypted Taylor loss, penalty included, for the arbiter."""
        batch = self._open
        if batch is None or batch.scores is None or batch.u is None:
            raise HeteroLRError("the guest has no open batch to compute a loss of")
        scores, u, y = batch.scores, batch.u, self._y[batch.rows]
        terms, rows = self.terms, len(batch.rows)
        half_l2_rows = 0.5 * terms.config.l2 * rows
        with self._timed("loss"):
            coefficients = np.concatenate([u - 2 * y, [0.125, half_l2_rows]])
            ciphertexts = [*scores.quarter_scores, scores.sum_of_squares, scores.weight_norm]
            cross = weighted_sums(ciphertexts, coefficients[:, None], terms.score_exponent)
            weights = self._w[:-1]
            own = float(taylor_loss(u, y).sum()) + half_l2_rows * float(weights @ weights)
            total = add_encrypted(cross, self._encryptor.encrypt([own], terms.loss_exponent))
        return self._sent(EncryptedLoss(batch.epoch, batch.index, total[0]))

    def gradient(self) -> MaskedGradient:
        """The guest's masked packed ``[X_g 1]^T [[d]]`` (the bias's gradient last)."""
        batch = self._open
        if batch is None or not batch.residuals:
            raise HeteroLRError("the guest has no residuals to compute a gradient from")
        return self._masked_gradient(batch)
