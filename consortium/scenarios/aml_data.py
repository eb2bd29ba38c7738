"""Synthetic anti-money-laundering (AML) data for the horizontal scenario: one transaction
feature table per bank, and a shared validation set.

Real AML data cannot leave a bank, which is the point of the project, so the scenario needs
data that behaves like it: a handful of per-customer transaction features, a small and
bank-dependent share of suspicious cases, and banks whose customers look different. Every
bank's labels come from the same ground-truth logistic risk function (fixed slopes), so a
jointly trained model has something real to find; banks differ in three ways (non-IID):

- size: 600 to 4000 customers;
- base rate: 1% to 8% suspicious, through a bank-specific intercept of the risk function;
- covariate shift: each bank's customers are shifted along each latent feature driver.

Features are produced as raw quantities (a log amount, ratios, a log account age) and then
scaled with fixed, published constants (``FEATURES``), never with statistics of a bank's own
data: a model trained on them needs no private normalisation that would leak into the update,
and the schema that goes on chain says exactly how each column was scaled.

Reproducibility: bank ``i`` draws from its own PCG64 stream, the ``i``-th child of a
``SeedSequence`` spawned from the seed, so its data depends on ``(seed, i)`` (and on its size,
if given) but not on how many banks are generated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from consortium.fl.data import LabeledTable
from consortium.fl.model import sigmoid

SCHEMA_VERSION = 1
MIN_BANK_SIZE, MAX_BANK_SIZE = 600, 4000
MIN_BASE_RATE, MAX_BASE_RATE = 0.01, 0.08
VALIDATION_BASE_RATE = 0.04
# Latent drivers: a common "unusual activity" factor with these loadings, plus own noise.
_COMMON_FACTOR_LOADING = 0.4
_SHIFT_STD = 0.4  # per-bank covariate shift of each latent driver, in its standard deviations
_BANK_STREAMS, _VALIDATION_STREAM = 0, 1


@dataclass(frozen=True)
class FeatureSpec:
    """One feature: how its raw value arises from a latent driver, and its public scaling.

    raw = link(location + slope * driver); feature = (raw - center) / scale, where ``center``
    and ``scale`` approximate the raw value's mean and standard deviation in the reference
    population and are published in the dataset schema.
    """

    name: str
    description: str
    # "logistic" gives a ratio in (0, 1), "softplus" a log(1 + count or duration).
    link: Literal["identity", "logistic", "softplus"]
    location: float
    slope: float
    center: float
    scale: float
    risk_coefficient: float  # slope of the ground-truth logit on the scaled feature


FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec(
        name="log_amount",
        description="natural log of the mean transaction amount in EUR",
        link="identity",
        location=7.3,
        slope=1.1,
        center=7.3,
        scale=1.1,
        risk_coefficient=0.4,
    ),
    FeatureSpec(
        name="cross_border_ratio",
        description="share of transfers to or from foreign accounts",
        link="logistic",
        location=-1.7,
        slope=1.1,
        center=0.2,
        scale=0.16,
        risk_coefficient=0.45,
    ),
    FeatureSpec(
        name="cash_ratio",
        description="share of turnover deposited or withdrawn in cash",
        link="logistic",
        location=-1.1,
        slope=1.0,
        center=0.29,
        scale=0.18,
        risk_coefficient=0.35,
    ),
    FeatureSpec(
        name="log_tx_per_day",
        description="log(1 + transactions per day), the account's velocity",
        link="softplus",
        location=0.7,
        slope=0.9,
        center=1.19,
        scale=0.59,
        risk_coefficient=0.3,
    ),
    FeatureSpec(
        name="new_counterparty_ratio",
        description="share of transfers to first-time counterparties",
        link="logistic",
        location=-1.3,
        slope=0.9,
        center=0.25,
        scale=0.15,
        risk_coefficient=0.4,
    ),
    FeatureSpec(
        name="night_ratio",
        description="share of transactions between 00:00 and 05:00 local time",
        link="logistic",
        location=-2.3,
        slope=0.8,
        center=0.11,
        scale=0.08,
        risk_coefficient=0.25,
    ),
    FeatureSpec(
        name="structuring_score",
        description="share of cash deposits within 10% below the reporting threshold",
        link="logistic",
        location=-3.2,
        slope=1.2,
        center=0.067,
        scale=0.08,
        risk_coefficient=0.6,
    ),
    FeatureSpec(
        name="log_account_age_years",
        description="log(1 + account age in years)",
        link="softplus",
        location=1.3,
        slope=0.9,
        center=1.61,
        scale=0.68,
        risk_coefficient=-0.35,
    ),
)
FEATURE_NAMES: tuple[str, ...] = tuple(spec.name for spec in FEATURES)
_RISK_COEFFICIENTS = np.array([spec.risk_coefficient for spec in FEATURES], dtype=np.float64)
# The common factor pushes every driver towards risk, so account age loads negatively.
_LOADINGS = _COMMON_FACTOR_LOADING * np.sign(_RISK_COEFFICIENTS)


@dataclass(frozen=True, eq=False)
class BankData(LabeledTable):
    """One bank's training table (or the shared validation set).

    ``y`` is 1 for a customer the ground truth marks suspicious. Both arrays are read-only so
    that a generated dataset, whose schema and size may be committed on chain, cannot drift.
    """

    def schema(self) -> dict[str, Any]:
        """The dataset's schema as a JSON value, for registration; its RFC 8785 digest goes on
        chain. It describes columns and scaling, never the rows, so it is stable across seeds.
        """
        by_name = {spec.name: spec for spec in FEATURES}
        return {
            "dataset": f"aml-transactions/{self.name}",
            "version": SCHEMA_VERSION,
            "label": {"name": "suspicious", "dtype": "int8", "values": [0, 1]},
            "features": [
                {
                    "name": name,
                    "dtype": "float64",
                    "description": by_name[name].description,
                    "scaling": {"center": by_name[name].center, "scale": by_name[name].scale},
                }
                for name in self.feature_names
            ],
        }


def generate_banks(
    num_banks: int,
    seed: int,
    *,
    sizes: Sequence[int] | None = None,
    base_rates: Sequence[float] | None = None,
) -> list[BankData]:
    """Data for banks ``bank-0`` .. ``bank-{num_banks - 1}``, reproducible from ``seed``.

    Without ``sizes`` / ``base_rates`` each bank draws its own from its stream (uniform in
    600..4000 rows and 1%..8% suspicious); given ones replace the drawn values, one per bank.
    """
    _check_seed(seed)
    if num_banks < 1:
        raise ValueError(f"num_banks must be at least 1, got {num_banks}")
    for label, values in (("sizes", sizes), ("base_rates", base_rates)):
        if values is not None and len(values) != num_banks:
            raise ValueError(f"{label} has {len(values)} entries for {num_banks} banks")
    bank_streams = np.random.SeedSequence(seed).spawn(2)[_BANK_STREAMS].spawn(num_banks)
    banks = []
    for index, stream in enumerate(bank_streams):
        rng = np.random.Generator(np.random.PCG64(stream))
        # Draw the profile in a fixed order even when overridden, so that overriding one
        # value does not change the bank's other random choices.
        drawn_size = int(rng.integers(MIN_BANK_SIZE, MAX_BANK_SIZE, endpoint=True))
        drawn_rate = float(rng.uniform(MIN_BASE_RATE, MAX_BASE_RATE))
        shift = rng.normal(0.0, _SHIFT_STD, size=len(FEATURES))
        size = drawn_size if sizes is None else sizes[index]
        rate = drawn_rate if base_rates is None else base_rates[index]
        banks.append(_population(f"bank-{index}", rng, size, rate, shift))
    return banks


def generate_validation(seed: int, size: int = 5000) -> BankData:
    """The shared held-out set on which every round's global model is evaluated.

    It is the reference population (no covariate shift, 4% suspicious) from a stream of its
    own, so it does not change with the number or sizes of the banks.
    """
    _check_seed(seed)
    stream = np.random.SeedSequence(seed).spawn(2)[_VALIDATION_STREAM]
    rng = np.random.Generator(np.random.PCG64(stream))
    shift = np.zeros(len(FEATURES), dtype=np.float64)
    return _population("validation", rng, size, VALIDATION_BASE_RATE, shift)


def _check_seed(seed: int) -> None:
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")


def _population(
    name: str, rng: np.random.Generator, size: int, base_rate: float, shift: NDArray[np.float64]
) -> BankData:
    """Customers of one population: scaled features and labels from the ground truth."""
    if size < 1:
        raise ValueError(f"{name}: size must be at least 1, got {size}")
    if not 0.0 < base_rate < 1.0:
        raise ValueError(f"{name}: base rate must be in (0, 1), got {base_rate}")
    common = rng.standard_normal((size, 1))
    own = rng.standard_normal((size, len(FEATURES)))
    drivers = shift + _LOADINGS * common + np.sqrt(1.0 - _LOADINGS**2) * own
    X = np.column_stack([_scaled(spec, drivers[:, j]) for j, spec in enumerate(FEATURES)])
    slope_logit = X @ _RISK_COEFFICIENTS
    proba = sigmoid(_intercept_for_rate(slope_logit, base_rate) + slope_logit)
    y = (rng.random(size) < proba).astype(np.int8)
    X.flags.writeable = False
    y.flags.writeable = False
    return BankData(name=name, X=X, y=y, feature_names=FEATURE_NAMES)


def _scaled(spec: FeatureSpec, driver: NDArray[np.float64]) -> NDArray[np.float64]:
    """The feature column: raw value from the driver, then the public scaling."""
    z = spec.location + spec.slope * driver
    if spec.link == "identity":
        raw = z
    elif spec.link == "logistic":
        raw = sigmoid(z)
    else:
        raw = np.logaddexp(0.0, z)
    return (raw - spec.center) / spec.scale


def _intercept_for_rate(slope_logit: NDArray[np.float64], base_rate: float) -> float:
    """The intercept at which the population's expected share of suspicious cases is
    ``base_rate``; found by bisection, since the mean of a sigmoid is increasing in it.
    """
    low, high = -30.0, 30.0
    for _ in range(100):
        middle = 0.5 * (low + high)
        if float(np.mean(sigmoid(middle + slope_logit))) < base_rate:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)
