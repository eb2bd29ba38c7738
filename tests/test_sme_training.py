"""The SME-credit job trained end to end on an embedded chain: its epochs anchored as rounds,
and its model scored on the held-out businesses beside the baselines of the same run."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from consortium.chain.embedded import EmbeddedChain
from consortium.fl.block_lr import TAYLOR, fit
from consortium.fl.metrics import roc_auc
from consortium.ledger.client import Ledger
from consortium.scenarios import sme_credit, sme_training

SETTINGS = sme_credit.SmeSettings(businesses=1_500, seed=3, key_bits=512, max_rounds=4)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple:
    chain = EmbeddedChain()
    out = tmp_path_factory.mktemp("sme")
    run = sme_credit.set_up(chain, out, SETTINGS, report=lambda _: None)
    seen: list[int] = []
    results, quality = sme_training.run_rounds(
        chain, run, lambda result: seen.append(result.round), depth=2
    )
    return chain, run, results, quality, seen


def test_every_epoch_is_an_anchored_round(trained: tuple) -> None:
    chain, run, results, _, seen = trained
    assert seen == [r.round for r in results] == list(range(1, len(results) + 1))
    assert len(results) <= SETTINGS.max_rounds
    ledger = Ledger(chain, run.deployment)
    assert ledger.jobs.get(run.job_id).last_round == len(results)
    assert all(ledger.jobs.verify(r.anchor) for r in results)
    assert all(r.anchor.participant_count == 2 for r in results)


def test_the_model_scores_as_the_plaintext_taylor_descent_it_computes(trained: tuple) -> None:
    """The federated AUC is the AUC of the very descent run in the clear: the encrypted
    arithmetic changes nothing but fixed-point rounding."""
    _, run, results, quality, _ = trained
    job = sme_credit.roles_for(run)
    config = job.terms.config
    blocks = [job.guest_train.X, job.host_train.X]
    clear = fit(blocks, job.guest_train.labels, TAYLOR, replace(config, max_epochs=len(results)))
    expected = roc_auc(
        job.guest_evaluation.labels,
        clear.model.scores([job.guest_evaluation.X, job.host_evaluation.X]),
    )
    assert quality.federated == pytest.approx(expected, abs=1e-6)
    assert quality.evaluated == job.guest_evaluation.num_rows > 0
    for value in (quality.federated, quality.bank_only, quality.centralized):
        assert 0.5 < value < 1.0
    assert np.isclose(quality.lift, quality.federated - quality.bank_only)
