"""The terms of a ``hetero-lr/1`` job, fixed before its first round, and what follows from them.

The guest, the host and the arbiter each hold the same :class:`Terms` (the job's model spec
names them): the descent's hyperparameters, the size of the intersection and each party's
number of features, the key size, the fixed-point exponents and the bounds the masks are sized
for. From them each party derives the same batches of every epoch and the same slot width, so
no message needs to carry either and a message that disagrees with them is refused.

Exponents are phe's (powers of 16). Residuals and quarter-scores use :data:`SCORE_EXPONENT`
(steps of ``2**-32``); features enter the gradient's multi-exponentiation at
:data:`FEATURE_EXPONENT` (steps of ``2**-20``), the coarsest that keeps a few epochs' weights
within 1e-8 of the plaintext Taylor descent on standardized data (``tests/test_hetero_lr.py``
holds them to 1e-6): the multi-exponentiation's cost grows with the bits of the features'
integers, and ``scripts/bench/vertical.py``'s epoch (20,000 x 60, batches of 500, 2048 bits)
takes 48 CPU seconds at -5, 54 at -6 and 59 at phe's customary -8.
The loss's coefficients are encoded at the score exponent: they are one column only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from consortium.errors import ConsortiumError
from consortium.fl.block_lr import DescentConfig, batch_order
from consortium.fl.vertical.paillier import MASK_BITS, bits_for

PROTOCOL = "hetero-lr/1"
GUEST: Literal["guest"] = "guest"
HOST: Literal["host"] = "host"
Party = Literal["guest", "host"]

MIN_BATCH = 32
SCORE_EXPONENT = -8
FEATURE_EXPONENT = -5
FEATURE_BOUND = 64.0
SCORE_BOUND = 64.0
MIN_KEY_BITS = 512  # tests only; jobs use 2048


class HeteroLRError(ConsortiumError):
    """The vertical protocol cannot go on: bad terms, data or a refused message; one line."""


@dataclass(frozen=True)
class Terms:
    """What the three parties agree on before the first round.

    ``rows`` is the intersection's size (both data parties hold its rows in one order);
    ``guest_features`` and ``host_features`` count each data party's columns, the guest's bias
    not included.

    **Bounds.** A gradient value reaches the arbiter masked by an offset sized for a bound on
    its magnitude (:meth:`~consortium.fl.vertical.paillier.Encryptor.mask`), and the bound
    must hold before anything is sent: a value beyond it would spill into its neighbour's slot.
    Each data party refuses features beyond ``feature_bound`` in magnitude (at set-up) and its
    own partial scores beyond ``score_bound`` (each batch), so with rounded values ``x~`` and
    ``d~`` (each off by at most half a fixed-point step)

        |x~| <= F + 1,   |d~_i| = |u_h,i / 4 + (u_g,i / 4 - y_i / 2)|~ <= S / 2 + 1,

    and the exact integer sum over at most ``B`` rows has ``|sum_i x~_ij d~_i| <= B (F + 1)
    (S / 2 + 1)``, which :attr:`value_bits` encodes. Standardized columns meet ``F = 64``:
    a column standardized over ``n`` rows lies within ``sqrt(n - 1)`` of zero (Samuelson's
    inequality), so no standardized column of up to 4,097 rows can break it, and on the
    synthetic SME data (20,000 and 24,000 rows) the largest is about 27, on a heavy-tailed
    platform column. A party's score beyond 64 means a diverged model (``|d| > 16``).

    **Batches.** Every batch has at least :data:`MIN_BATCH` rows and more rows than either
    party has gradient values. A party learns ``X^T d`` over its batch, so over one row it
    learns ``d_i = u_i / 4 - y_i / 2``, whose sign is the label when the scores are small;
    over ``B`` rows and ``p >= B`` features of full rank it solves for every ``d_i`` (the host
    gets the labels, the guest the host's scores). With more rows than features a party only
    learns ``p`` linear combinations of the batch's residuals, as in FATE's hetero LR.
    """

    rows: int
    guest_features: int
    host_features: int
    config: DescentConfig = field(default_factory=DescentConfig)
    key_bits: int = 2048
    score_exponent: int = SCORE_EXPONENT
    feature_exponent: int = FEATURE_EXPONENT
    feature_bound: float = FEATURE_BOUND
    score_bound: float = SCORE_BOUND

    def __post_init__(self) -> None:
        if self.rows < 1 or self.guest_features < 1 or self.host_features < 1:
            raise HeteroLRError(
                f"need at least one row and one feature per party, not {self.rows} rows and "
                f"{self.guest_features} + {self.host_features} features"
            )
        if not (self.score_exponent < 0 and self.feature_exponent < 0):
            raise HeteroLRError("the fixed-point exponents must be negative")
        if not all(math.isfinite(b) and b > 0 for b in (self.feature_bound, self.score_bound)):
            raise HeteroLRError("the feature and score bounds must be positive and finite")
        if self.key_bits < MIN_KEY_BITS or self.key_bits - 3 < self.slot_bits:
            raise HeteroLRError(
                f"a {self.key_bits}-bit key cannot hold one {self.slot_bits}-bit gradient slot"
            )
        smallest = self.smallest_batch
        needed = max(MIN_BATCH, self.values(GUEST) + 1, self.values(HOST) + 1)
        if smallest < needed:
            raise HeteroLRError(
                f"a batch of {smallest} rows would give its residuals away: batches need at "
                f"least {needed} rows (at least {MIN_BATCH}, and more than either party's "
                f"gradient values); change the batch size"
            )

    @property
    def smallest_batch(self) -> int:
        """The rows of the shortest batch :func:`batch_order` cuts (the last, when short)."""
        size = self.config.batch_size
        return self.rows if self.rows <= size else (self.rows % size or size)

    def batches(self, epoch: int) -> tuple[NDArray[np.intp], ...]:
        """The row indices of every batch of ``epoch``, the same for both data parties."""
        return batch_order(self.config.seed, self.rows, self.config.batch_size, epoch)

    def values(self, party: Party) -> int:
        """How many gradient values ``party`` sends a batch: the guest's bias is the last."""
        return self.guest_features + 1 if party == GUEST else self.host_features

    @property
    def gradient_exponent(self) -> int:
        """The exponent of ``X^T d``: the residuals' plus the features'."""
        return self.score_exponent + self.feature_exponent

    @property
    def loss_exponent(self) -> int:
        """The exponent of the encrypted loss: its coefficients are encoded like the scores."""
        return 2 * self.score_exponent

    @property
    def value_bits(self) -> int:
        """Bits of the proven bound on ``|X^T d|`` over a batch (see the class docstring)."""
        rows = min(self.rows, self.config.batch_size)
        bound = rows * (self.feature_bound + 1) * (self.score_bound / 2 + 1)
        return bits_for(bound, self.gradient_exponent)

    @property
    def slot_bits(self) -> int:
        """The width of one masked gradient value in a packed plaintext."""
        return self.value_bits + MASK_BITS + 1
