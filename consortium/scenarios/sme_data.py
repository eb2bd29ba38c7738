"""Synthetic SME-credit data for the vertical scenario: a bank's table of small and medium
enterprises with loan outcomes, and a logistics platform's table of alternative data on many
of the same businesses.

The point of the vertical job is that the platform's data carries signal exactly where the
bank's is weak, so the ground truth is built that way. A business has a latent financial
strength (which the bank's features reflect) and a latent operational reliability (which the
platform's reflect; the two are correlated). Its default logit mixes the bank-side risk score
and the platform-side one by how thin its credit file is: for a business with a long credit
history mostly the bank's features decide, for a thin-file business (a few months of
history, ``credit_history_months`` below :data:`THIN_FILE_MONTHS`) mostly the platform's
on-time rate, order growth, cancellations, tenure and so on. A short history also tells the
bank less (its features of a thin-file business spread less around the typical values), and
thin files default more often.

Each side has a few realistically named features (raw quantities: months, rates, log amounts)
and generic ones (``bank_f12``, ``platform_f23``) up to the requested counts; generic columns
load on the side's latent factor with fixed loadings but add no risk of their own, so the
ground truth is the same whatever the counts.
The features are raw, not scaled: each party standardises its own columns
(:class:`~consortium.fl.standardize.Standardizer`), as it would with its real data.

Ids are ``SME-`` and six digits, drawn at random; each table lists its businesses in its own
random order, so the sides line up only through their ids. The held-out evaluation split is
a seeded share of the bank's businesses, given by id so that it applies to either side.
Everything is reproducible from the seed; the ground truth's coefficients are constants of
this module, the same for every seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from consortium.fl.model import sigmoid
from consortium.fl.party_table import PartyTable

THIN_FILE_MONTHS = 12
ID_DIGITS = 6
MAX_BUSINESSES = 10**ID_DIGITS
# Latent structure: operational reliability correlates with financial strength.
_STRENGTH_RELIABILITY_CORRELATION = 0.35
_NAMED_LOADING = 0.55  # how strongly a named feature reflects its side's latent factor
# Default logit = intercept + thin-file uplift * t + weights(t) . (bank score, platform score),
# with t the thin-file weight in [0, 1]. Tuned for about 8% defaults at the default sizes.
_INTERCEPT = -3.25
_THIN_FILE_UPLIFT = 0.6
_BANK_WEIGHT = (1.0, 0.3)  # (long history, thin file)
_PLATFORM_WEIGHT = (0.5, 1.5)
_THIN_FILE_SOFTNESS_MONTHS = 2.0
_THIN_FILE_SHRINK = 0.4  # share by which a thin file's bank-side drivers shrink towards 0
_GENERIC_SEED = 20240611  # fixes the generic columns' loadings and units for every seed
# One stream per concern, so that, e.g., the number of generic columns changes nothing else.
_STREAMS = (
    "ids",
    "latent",
    "bank",
    "platform",
    "bank_generic",
    "platform_generic",
    "labels",
    "split",
)


@dataclass(frozen=True)
class FeatureSpec:
    """A named feature: raw = link(location + slope * driver), where the driver is a standard
    normal loading on the side's latent factor; ``risk`` is the driver's slope in its side's
    risk score (positive: more of it, more defaults)."""

    name: str
    link: Literal["identity", "logistic", "softplus"]
    location: float
    slope: float
    risk: float
    scale: float = 1.0  # raw is multiplied by it (a count out of 12, a rating 1..5 below)
    offset: float = 0.0
    integer: bool = False  # counts and months are whole numbers


BANK_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("log_annual_revenue", "identity", 13.5, 1.2, -0.3),
    FeatureSpec("debt_to_revenue", "softplus", 0.0, 0.5, 0.6),
    FeatureSpec("current_ratio", "softplus", 1.0, 0.5, -0.4),
    FeatureSpec("profit_margin", "identity", 0.06, 0.08, -0.5),
    FeatureSpec("late_payments_12m", "softplus", 0.5, 0.6, 0.7, scale=2.0, integer=True),
    FeatureSpec("credit_utilisation", "logistic", -0.3, 0.6, 0.5),
    FeatureSpec("overdraft_days_12m", "softplus", 1.0, 0.6, 0.4, scale=10.0, integer=True),
    FeatureSpec("business_age_years", "softplus", 1.5, 0.5, -0.3),
    FeatureSpec("collateral_coverage", "softplus", 0.5, 0.5, -0.3),
)
PLATFORM_FEATURES: tuple[FeatureSpec, ...] = (
    FeatureSpec("on_time_rate", "logistic", 2.0, 0.5, -0.7),
    FeatureSpec("order_growth_yoy", "identity", 0.08, 0.25, -0.5),
    FeatureSpec("cancellation_rate", "logistic", -2.5, 0.5, 0.6),
    FeatureSpec("log_platform_tenure_months", "identity", 3.0, 0.6, -0.3),
    FeatureSpec("log_deliveries_12m", "identity", 5.0, 1.0, -0.2),
    FeatureSpec("dispute_rate", "logistic", -3.0, 0.5, 0.5),
    FeatureSpec("payment_delay_days", "softplus", 1.5, 0.6, 0.6, scale=3.0),
    FeatureSpec("active_months_12m", "logistic", 2.0, 0.6, -0.4, scale=12.0, integer=True),
    FeatureSpec("customer_rating", "logistic", 1.0, 0.5, -0.4, scale=4.0, offset=1.0),
    FeatureSpec("log_avg_order_value", "identity", 5.5, 0.9, -0.1),
)
# The bank's first column; it decides how thin a file is rather than adding risk linearly.
CREDIT_HISTORY = "credit_history_months"
DEFAULT_BUSINESSES = 20_000
DEFAULT_OVERLAP = 0.7
DEFAULT_PLATFORM_ONLY = 10_000


@dataclass(frozen=True, eq=False)
class SmeData:
    """The bank's table (the guest: labels, 1 = defaulted), the platform's (a host), and the
    ids of the bank's businesses held out for evaluation."""

    bank: PartyTable
    platform: PartyTable
    evaluation_ids: frozenset[str]


def generate_sme(
    seed: int,
    *,
    businesses: int = DEFAULT_BUSINESSES,
    overlap: float = DEFAULT_OVERLAP,
    platform_only: int = DEFAULT_PLATFORM_ONLY,
    bank_features: int = 20,
    platform_features: int = 40,
    thin_file_share: float = 0.3,
    evaluation_share: float = 0.25,
) -> SmeData:
    """The two tables, reproducible from ``seed``.

    The bank has ``businesses`` rows, ``round(overlap * businesses)`` of which the platform
    also has, besides ``platform_only`` businesses the bank has not. ``thin_file_share`` of
    all businesses have less than :data:`THIN_FILE_MONTHS` of credit history;
    ``evaluation_share`` of the bank's businesses are held out.
    """
    shared = round(overlap * businesses)
    total = businesses + platform_only
    if seed < 0 or businesses < 1 or platform_only < 0 or total > MAX_BUSINESSES:
        raise ValueError(
            f"need seed >= 0, businesses >= 1, platform_only >= 0 and at most {MAX_BUSINESSES:,}"
            f" businesses in all; got {seed}, {businesses}, {platform_only}"
        )
    if not 0.0 <= overlap <= 1.0 or not 0.0 <= thin_file_share <= 1.0:
        raise ValueError(
            f"overlap and thin_file_share must be in [0, 1]: {overlap}, {thin_file_share}"
        )
    if not 0.0 < evaluation_share < 1.0 or bank_features < 1 or platform_features < 1:
        raise ValueError(
            f"need 0 < evaluation_share < 1 and at least one feature per side; got "
            f"{evaluation_share}, {bank_features}, {platform_features}"
        )
    rng = {
        name: np.random.Generator(np.random.PCG64(stream))
        for name, stream in zip(
            _STREAMS, np.random.SeedSequence(seed).spawn(len(_STREAMS)), strict=True
        )
    }
    # Rows 0 .. businesses-1 of the universe are the bank's; the platform has the first
    # `shared` of them and the rest of the universe.
    numbers = rng["ids"].choice(MAX_BUSINESSES, size=total, replace=False)
    ids = np.array([f"SME-{number:0{ID_DIGITS}d}" for number in numbers.tolist()])
    bank_rows = rng["ids"].permutation(businesses)
    platform_rows = rng["ids"].permutation(np.r_[0:shared, businesses:total])

    strength = rng["latent"].standard_normal(total)
    reliability = _STRENGTH_RELIABILITY_CORRELATION * strength + np.sqrt(
        1.0 - _STRENGTH_RELIABILITY_CORRELATION**2
    ) * rng["latent"].standard_normal(total)
    months = _credit_history_months(rng["bank"], total, thin_file_share)
    thin = sigmoid((THIN_FILE_MONTHS - months) / _THIN_FILE_SOFTNESS_MONTHS)
    bank_named, bank_score = _named_side(
        rng["bank"], BANK_FEATURES, strength, 1.0 - _THIN_FILE_SHRINK * thin
    )
    platform_named, platform_score = _named_side(
        rng["platform"], PLATFORM_FEATURES, reliability, np.ones(total)
    )
    logit = (
        _INTERCEPT
        + _THIN_FILE_UPLIFT * thin
        + _mixed(_BANK_WEIGHT, thin) * bank_score
        + _mixed(_PLATFORM_WEIGHT, thin) * platform_score
    )
    defaulted = (rng["labels"].random(total) < sigmoid(logit)).astype(np.int8)

    bank_names, bank_matrix = _exported(
        "bank",
        (CREDIT_HISTORY, *(spec.name for spec in BANK_FEATURES)),
        np.column_stack([months, bank_named]),
        bank_features,
        rng["bank_generic"],
        strength,
    )
    platform_names, platform_matrix = _exported(
        "platform",
        tuple(spec.name for spec in PLATFORM_FEATURES),
        platform_named,
        platform_features,
        rng["platform_generic"],
        reliability,
    )
    held_out = rng["split"].random(businesses) < evaluation_share
    return SmeData(
        bank=PartyTable(
            name="bank",
            ids=tuple(ids[bank_rows].tolist()),
            feature_names=bank_names,
            X=bank_matrix[bank_rows],
            y=defaulted[bank_rows],
        ),
        platform=PartyTable(
            name="platform",
            ids=tuple(ids[platform_rows].tolist()),
            feature_names=platform_names,
            X=platform_matrix[platform_rows],
        ),
        evaluation_ids=frozenset(ids[:businesses][held_out].tolist()),
    )


def _credit_history_months(
    rng: np.random.Generator, total: int, thin_file_share: float
) -> NDArray[np.float64]:
    """Whole months of credit history: uniform below :data:`THIN_FILE_MONTHS` for a thin file,
    else that plus a gamma-distributed tail (mean about 7 years), at most 30 years."""
    thin = rng.random(total) < thin_file_share
    short = rng.integers(0, THIN_FILE_MONTHS, size=total)
    long = THIN_FILE_MONTHS + np.minimum(np.rint(rng.gamma(2.0, 36.0, size=total)), 348)
    return np.where(thin, short, long).astype(np.float64)


def _named_side(
    rng: np.random.Generator,
    specs: tuple[FeatureSpec, ...],
    latent: NDArray[np.float64],
    spread: NDArray[np.float64],
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Raw values of a side's named features, and the side's risk score (unit variance).

    Each driver loads on the side's latent factor with the sign that makes a strong business
    look safe, so the features are correlated the way real ones are.
    """
    risk = np.array([spec.risk for spec in specs])
    loadings = -_NAMED_LOADING * np.sign(risk)
    own = rng.standard_normal((len(latent), len(specs)))
    drivers = spread[:, None] * (loadings * latent[:, None] + np.sqrt(1.0 - loadings**2) * own)
    score_std = np.sqrt((loadings @ risk) ** 2 + ((1.0 - loadings**2) * risk**2).sum())
    raw = np.column_stack([_raw(spec, drivers[:, j]) for j, spec in enumerate(specs)])
    return raw, drivers @ risk / score_std


def _raw(spec: FeatureSpec, driver: NDArray[np.float64]) -> NDArray[np.float64]:
    z = spec.location + spec.slope * driver
    if spec.link == "logistic":
        z = sigmoid(z)
    elif spec.link == "softplus":
        z = np.logaddexp(0.0, z)
    value = spec.offset + spec.scale * z
    return np.rint(value) if spec.integer else value


def _exported(
    side: str,
    names: tuple[str, ...],
    named: NDArray[np.float64],
    count: int,
    rng: np.random.Generator,
    latent: NDArray[np.float64],
) -> tuple[tuple[str, ...], NDArray[np.float64]]:
    """The side's first ``count`` columns: its named ones, then generic ones named by their
    position (``bank_f12``) that load on the side's latent factor with fixed loadings and add
    no risk of their own (so the ground truth does not depend on ``count``)."""
    extra = max(0, count - len(names))
    fixed = np.random.Generator(np.random.PCG64([_GENERIC_SEED, *side.encode()]))
    loadings = fixed.uniform(-0.5, 0.5, size=extra)
    locations = fixed.normal(0.0, 3.0, size=extra)
    scales = np.exp(fixed.normal(0.0, 1.0, size=extra))
    own = rng.standard_normal((len(latent), extra))
    generic = locations + scales * (loadings * latent[:, None] + np.sqrt(1.0 - loadings**2) * own)
    generic_names = tuple(
        f"{side}_f{position:02d}" for position in range(len(names) + 1, count + 1)
    )
    matrix = np.column_stack([named, generic])[:, :count]
    return (*names, *generic_names)[:count], np.ascontiguousarray(matrix)


def _mixed(weights: tuple[float, float], thin: NDArray[np.float64]) -> NDArray[np.float64]:
    """``weights[0]`` for a long credit history, ``weights[1]`` for a thin file, in between
    by the thin-file weight."""
    return weights[0] + (weights[1] - weights[0]) * thin
