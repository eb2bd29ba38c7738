"""Federated averaging (FedAvg, McMahan et al. 2017) of the participants' local models.

The coordinator averages full local models, each trained from the round's base model
M(r-1), weighted by the number of examples it was trained on; with a common base this equals
adding the weighted mean of the deltas to the base, up to rounding, and needs no separate
delta format. The result must be bit-identical for anyone who re-runs it: the auditor
recomputes the global model's digest from the stored updates. Floating-point addition is not
associative, so the order is fixed (participant address, lowercase hex, ascending, the same
order as the round's Merkle leaves) and every sum is taken in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from consortium.errors import ConsortiumError
from consortium.fl.model import FLOAT64, Model, validate_update


class AggregationError(ConsortiumError):
    """A set of updates cannot be aggregated: none, duplicates, or no examples at all."""


def fedavg(updates: Sequence[tuple[str, Model, int]]) -> Model:
    """The example-weighted mean of ``(participant address, model, num_examples)`` updates.

    Every model must have the tensors, shapes and dtype of the first one in address order
    (:func:`validate_update`); a participant may appear once.
    """
    if not updates:
        raise AggregationError("no updates to aggregate")
    ordered = sorted(updates, key=lambda update: update[0].lower())
    addresses = [address.lower() for address, _, _ in ordered]
    duplicates = sorted({address for address in addresses if addresses.count(address) > 1})
    if duplicates:
        raise AggregationError(f"more than one update from {', '.join(duplicates)}")
    for address, _, num_examples in ordered:
        if isinstance(num_examples, bool) or not isinstance(num_examples, int | np.integer):
            raise AggregationError(f"{address}: num_examples must be an integer")
        if num_examples < 0:
            raise AggregationError(f"{address}: num_examples is negative ({num_examples})")
    total = sum(int(num_examples) for _, _, num_examples in ordered)
    if total == 0:
        raise AggregationError("the updates cover zero examples in total")
    reference = ordered[0][1]
    for _, model, _ in ordered:
        validate_update(model, reference)
    averaged = {}
    for name in sorted(reference):
        accumulator = np.zeros(reference[name].shape, dtype=FLOAT64)
        for _, model, num_examples in ordered:
            accumulator += FLOAT64.type(num_examples) * model[name]
        averaged[name] = accumulator / FLOAT64.type(total)
    return averaged
