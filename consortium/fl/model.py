"""Logistic regression in numpy: the model of the horizontal AML rounds, how a participant
trains it locally, and the check the coordinator applies to every update it receives.

A model, and an update, is a plain mapping tensor name -> float64 array
(``{"weights": (d,), "bias": (1,)}``) so that the project's canonical tensor digest applies to
it unchanged and an auditor can recompute it from the stored bytes. Everything is float64:
the digest commits to the dtype, and a single precision everywhere keeps aggregation
reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeAlias

import numpy as np
from numpy.typing import ArrayLike, NDArray

from consortium.errors import ConsortiumError
from consortium.fl.metrics import binary_labels, log_loss

Model: TypeAlias = dict[str, NDArray[np.float64]]

WEIGHTS = "weights"
BIAS = "bias"
# Little-endian float64, the dtype the tensor digest declares ("<f8").
FLOAT64 = np.dtype("<f8")
# The largest magnitude an update may hold: the example-weighted sum of any number of such
# updates, each with up to 2**64 examples, stays far inside float64's range (about 1.8e308).
MAX_ABS_VALUE = 1e150

DEFAULT_EPOCHS = 1
DEFAULT_LEARNING_RATE = 0.1
DEFAULT_BATCH_SIZE = 32
DEFAULT_L2 = 1e-4
_INIT_STD = 0.01


class InvalidUpdate(ConsortiumError):
    """An update does not fit the round's model: tensor names, shapes, dtype or values."""


def sigmoid(z: ArrayLike) -> NDArray[np.float64]:
    """The logistic function in float64, without overflow for arguments of any sign."""
    return np.exp(-np.logaddexp(0.0, -np.asarray(z, dtype=np.float64)))


def init_model(num_features: int, seed: int) -> Model:
    """The job's initial model: small Gaussian weights, zero bias.

    Seeded so that anyone can rebuild the initial model, whose digest opens the job on chain,
    from ``(num_features, seed)``.
    """
    if num_features < 1:
        raise ValueError(f"num_features must be at least 1, got {num_features}")
    rng = np.random.Generator(np.random.PCG64(seed))
    return {
        WEIGHTS: rng.normal(0.0, _INIT_STD, size=num_features).astype(FLOAT64),
        BIAS: np.zeros(1, dtype=FLOAT64),
    }


def predict_proba(model: Model, X: ArrayLike) -> NDArray[np.float64]:
    """Probability of the positive class (suspicious) for each row of ``X``."""
    return sigmoid(_features(model, X) @ model[WEIGHTS] + model[BIAS][0])


def local_train(
    model: Model,
    X: ArrayLike,
    y: ArrayLike,
    *,
    seed: int,
    epochs: int = DEFAULT_EPOCHS,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    batch_size: int = DEFAULT_BATCH_SIZE,
    l2: float = DEFAULT_L2,
) -> tuple[Model, int, float]:
    """Mini-batch SGD on the mean log loss plus ``l2 / 2 * |weights|^2``, from ``model``.

    Returns ``(new_model, num_examples, train_loss)``: the full local model (the coordinator
    averages models, not deltas), the example count FedAvg weighs it by, and the log loss of
    the new model on the local data (without the L2 term). ``model`` is not modified.

    Batches are drawn from a PCG64 stream seeded with ``seed`` (a fresh permutation per
    epoch), so a run is repeatable on the same numpy build; across builds, BLAS summation
    order may differ in the last bits. Aggregation does not depend on that: it is exact
    wherever it runs.
    """
    features = _features(model, X)
    targets = binary_labels(y)
    if targets.shape != (len(features),):
        raise ValueError(f"y has shape {targets.shape}, expected ({len(features)},)")
    if epochs < 1 or batch_size < 1 or learning_rate <= 0 or l2 < 0:
        raise ValueError(
            f"need epochs >= 1, batch_size >= 1, learning_rate > 0, l2 >= 0; got {epochs}, "
            f"{batch_size}, {learning_rate}, {l2}"
        )
    weights = model[WEIGHTS].astype(FLOAT64, copy=True)
    bias = model[BIAS].astype(FLOAT64, copy=True)
    rng = np.random.Generator(np.random.PCG64(seed))
    for _ in range(epochs):
        order = rng.permutation(len(features))
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            residual = sigmoid(features[batch] @ weights + bias[0]) - targets[batch]
            weights -= learning_rate * (features[batch].T @ residual / len(batch) + l2 * weights)
            bias -= learning_rate * residual.mean()
    trained = {WEIGHTS: weights, BIAS: bias}
    return trained, len(features), log_loss(targets, predict_proba(trained, features))


def validate_update(update: Mapping[str, object], reference_model: Model) -> None:
    """Raise :class:`InvalidUpdate` unless ``update`` has exactly the reference model's tensor
    names and shapes, dtype little-endian float64, and only finite values no larger in
    magnitude than :data:`MAX_ABS_VALUE`.

    The coordinator runs this before aggregating: one malformed or poisoned-by-NaN update
    would otherwise silently corrupt or break the global model of every member, and one
    finite but huge update (1e308) would overflow the average to infinity.
    """
    missing = sorted(set(reference_model) - set(update))
    extra = sorted(set(update) - set(reference_model))
    if missing or extra:
        raise InvalidUpdate(
            f"update tensors do not match the model: missing {missing}, extra {extra}"
        )
    for name in sorted(reference_model):
        tensor = update[name]
        if not isinstance(tensor, np.ndarray):
            raise InvalidUpdate(f"tensor {name!r} is a {type(tensor).__name__}, not an array")
        if tensor.dtype != FLOAT64:
            raise InvalidUpdate(f"tensor {name!r} has dtype {tensor.dtype.str}, expected <f8")
        expected = reference_model[name].shape
        if tensor.shape != expected:
            raise InvalidUpdate(f"tensor {name!r} has shape {tensor.shape}, expected {expected}")
        bad = int(np.count_nonzero(~np.isfinite(tensor)))
        if bad:
            raise InvalidUpdate(f"tensor {name!r} has {bad} non-finite value(s) (NaN or inf)")
        huge = int(np.count_nonzero(np.abs(tensor) > MAX_ABS_VALUE))
        if huge:
            raise InvalidUpdate(
                f"tensor {name!r} has {huge} value(s) beyond +-{MAX_ABS_VALUE:g}, where "
                "averaging could overflow"
            )


def _features(model: Model, X: ArrayLike) -> NDArray[np.float64]:
    """``X`` as a float64 matrix with as many columns as the model has weights."""
    features = np.asarray(X, dtype=FLOAT64)
    if features.ndim != 2 or features.shape[1] != model[WEIGHTS].shape[0]:
        raise ValueError(f"X has shape {features.shape}, expected (n, {model[WEIGHTS].shape[0]})")
    return features
