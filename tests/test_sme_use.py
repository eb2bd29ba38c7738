"""Using the SME-credit model: an applicant scored by the bank and the platform together, the
referral list of the businesses both share, each use anchored with commitments that open to what
the bank kept; the embedded chain for the API, the session's anvil node for ``consortium
predict``."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner, Result
from conftest import ANVIL_CHAIN_ID

from consortium.audit import open_bundle, verify_bundle
from consortium.audit.checks import JobFacts, check_model_uses
from consortium.audit.results import Scope
from consortium.chain.anvil import AnvilNode
from consortium.chain.base import Chain
from consortium.chain.embedded import EmbeddedChain
from consortium.chain.rpc import RpcChain
from consortium.cli.main import cli
from consortium.crypto.eip712 import Domain
from consortium.errors import ChainRevert
from consortium.fl.model import sigmoid
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import REFERRAL, SCORE
from consortium.protocol.messages import MalformedMessage
from consortium.protocol.vertical.party import committed_weights
from consortium.protocol.vertical.scoring import (
    MAX_QUERY_BYTES,
    DisclosureMismatch,
    PartialScores,
    ScoreQuery,
    ScoringRefused,
    UseDisclosure,
)
from consortium.scenarios import sme_credit, sme_training, sme_use
from consortium.scenarios.sme_inputs import consenting_rows, read_inputs

SETTINGS = sme_credit.SmeSettings(businesses=1_000, seed=5, key_bits=512, max_rounds=2)
RATE = 0.45  # two epochs from zero weights leave every probability near 0.5


@dataclass(frozen=True)
class Used:
    chain: EmbeddedChain
    run: sme_credit.SmeRun
    job: sme_credit.VerticalJob
    scoring: sme_use.Scoring
    referral: sme_use.Referral


@pytest.fixture(scope="module")
def used(tmp_path_factory: pytest.TempPathFactory) -> Used:
    """A trained job whose model was used twice: one applicant scored, then a referral."""
    chain = EmbeddedChain()
    run = sme_credit.set_up(chain, tmp_path_factory.mktemp("sme-use"), SETTINGS, lambda _: None)
    sme_training.run_rounds(chain, run, lambda _: None)
    job = sme_credit.roles_for(run)
    scoring = sme_use.score(chain, run, job.guest_train.ids[0])
    referral = sme_use.refer(chain, run, max_default_rate=RATE)
    return Used(chain, run, job, scoring, referral)


def opened_weights(run: sme_credit.SmeRun, chain: Chain) -> dict[str, dict[str, np.ndarray]]:
    """Each data party's weights under the head model, opened from its own commitment."""
    head = Ledger(chain, run.deployment).jobs.get(run.job_id).head_model_digest
    model = run.institute.store.get_json(head)
    return {
        party.name: committed_weights(
            party.name,
            party.store,
            party.journal_reader(),
            bytes.fromhex(model["weights"][party.account.address]),
        )
        for party in (run.bank, run.platform)
    }


def plaintext_probabilities(used: Used) -> dict[str, float]:
    """The joint model in the clear on the job's training rows, by business."""
    weights = opened_weights(used.run, used.chain)
    job = used.job
    bank, platform = weights["bank"], weights["platform"]
    logits = (
        job.guest_train.X @ bank["weights"] + float(bank["bias"])
        + job.host_train.X @ platform["weights"]
    )  # fmt: skip
    return dict(zip(job.guest_train.ids, sigmoid(logits).tolist(), strict=True))


def consenting_ids(run: sme_credit.SmeRun) -> tuple[set[str], set[str], set[str], set[str]]:
    """The bank's and the platform's businesses, and those of each that consented."""
    data, _ = read_inputs(SETTINGS.businesses, SETTINGS.seed, None)
    tables = (data.bank, data.platform)
    consented = [
        {t.ids[i] for i in consenting_rows(t, SETTINGS.consent_share, SETTINGS.seed).tolist()}
        for t in tables
    ]
    return set(data.bank.ids), set(data.platform.ids), consented[0], consented[1]


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert message and "\n" not in message
    return message


# ------------------------------------------------------------------------------ scoring


def test_a_score_is_the_sigmoid_of_the_plaintext_models_score(used: Used) -> None:
    business = used.scoring.business
    expected = plaintext_probabilities(used)[business]
    assert used.scoring.default_probability == pytest.approx(expected, rel=1e-12)
    assert 0 < used.scoring.default_probability < 1


def test_the_use_is_on_chain_and_its_commitments_open_to_what_the_bank_kept(used: Used) -> None:
    run, recorded = used.run, used.scoring.recorded
    jobs = Ledger(used.chain, run.deployment).jobs
    head = jobs.get(run.job_id).head_model_digest
    on_chain = jobs.model_uses(run.job_id)[0]
    assert on_chain == recorded.use
    assert (on_chain.kind, on_chain.subjects, on_chain.model_digest) == (SCORE, 1, head)
    assert on_chain.caller == run.bank.account.address
    kept = UseDisclosure.from_json(run.bank.store.get_json(recorded.disclosure_digest))
    kept.check(on_chain)
    assert kept.query == {"business": used.scoring.business}
    assert kept.result["defaultProbability"] == used.scoring.default_probability
    entry = run.bank.journal_reader().last("model-use", useIndex=1)
    assert entry is not None and entry["disclosure"] == recorded.disclosure_digest.hex()
    assert entry["transaction"] == on_chain.transaction


def test_a_disclosure_that_does_not_open_the_use_is_refused(used: Used) -> None:
    recorded = used.scoring.recorded
    forged = UseDisclosure(
        recorded.use.job_id, recorded.use.model_digest, SCORE, {"business": "SME-000000"},
        recorded.disclosure.result, recorded.disclosure.query_salt,
        recorded.disclosure.result_salt,
    )  # fmt: skip
    with pytest.raises(DisclosureMismatch, match="query commitment") as exc:
        forged.check(recorded.use)
    one_line(exc)


def test_a_business_that_did_not_consent_on_the_platforms_side_is_refused(used: Used) -> None:
    bank, platform, _, platform_consented = consenting_ids(used.run)
    refused = sorted((bank & platform) - platform_consented)[0]
    with pytest.raises(ScoringRefused, match="not in platform's consent tree") as exc:
        sme_use.score(used.chain, used.run, refused)
    assert refused in one_line(exc)


def test_a_business_the_platform_does_not_have_is_refused(used: Used) -> None:
    bank, platform, _, _ = consenting_ids(used.run)
    with pytest.raises(ScoringRefused, match="platform holds no business") as exc:
        sme_use.score(used.chain, used.run, sorted(bank - platform)[0])
    one_line(exc)


def test_an_applicant_unknown_to_the_bank_is_refused(used: Used) -> None:
    with pytest.raises(ScoringRefused, match="bank knows no business SME-999999x") as exc:
        sme_use.score(used.chain, used.run, "SME-999999x")
    one_line(exc)


# ------------------------------------------------------------------------------ referral


def test_the_referral_lists_shared_consented_businesses_under_the_rate_sorted(used: Used) -> None:
    referral = used.referral
    _, _, bank_consented, platform_consented = consenting_ids(used.run)
    shared = bank_consented & platform_consented
    assert (
        referral.scored == len(shared) == used.job.terms.rows + used.job.guest_evaluation.num_rows
    )
    assert 0 < len(referral.suitable) < referral.scored
    assert {b for b, _ in referral.suitable} <= shared
    probabilities = [p for _, p in referral.suitable]
    assert probabilities == sorted(probabilities) and max(probabilities) < RATE
    clear = plaintext_probabilities(used)
    for business, p in referral.suitable:
        if business in clear:
            assert p == pytest.approx(clear[business], rel=1e-12)
    lines = referral.path.read_text().splitlines()
    assert lines[0] == sme_use.CSV_HEADER and len(lines) == len(referral.suitable) + 1
    assert [line.split(",")[0] for line in lines[1:]] == [b for b, _ in referral.suitable]
    assert referral.path.parent.parent == used.run.bank.directory


def test_the_referral_is_one_use_whose_result_holds_every_score(used: Used) -> None:
    referral, run = used.referral, used.run
    use = referral.recorded.use
    assert (use.kind, use.subjects) == (REFERRAL, referral.scored)
    kept = UseDisclosure.from_json(run.bank.store.get_json(referral.recorded.disclosure_digest))
    kept.check(use)
    scores = [tuple(pair) for pair in kept.result["scores"]]
    assert scores == sorted(scores) and len(scores) == referral.scored
    assert kept.query == {"businesses": [b for b, _ in scores], "maxDefaultRate": RATE}
    listed = sorted(((b, p) for b, p in scores if p < RATE), key=lambda item: (item[1], item[0]))
    assert listed == list(referral.suitable)


def test_use_indices_count_one_two(used: Used) -> None:
    uses = Ledger(used.chain, used.run.deployment).jobs.model_uses(used.run.job_id)
    assert [(u.use_index, u.kind) for u in uses] == [(1, SCORE), (2, REFERRAL)]
    assert used.referral.recorded.use.use_index == 2


def test_a_revoked_consent_is_the_contracts_refusal(used: Used) -> None:
    run = used.run
    platform = Ledger(used.chain, run.deployment, run.platform.account).consents
    bank = run.bank.account.address
    platform.revoke(run.datasets[1], bank, sme_credit.PURPOSE)
    try:
        with pytest.raises(ChainRevert, match="no valid consent") as exc:
            sme_use.score(used.chain, run, used.scoring.business)
        assert exc.value.name == "ConsentNotValid"
        one_line(exc)
    finally:
        start = Ledger(used.chain, run.deployment).now()
        platform.grant(run.datasets[1], bank, sme_credit.PURPOSE, start, start + 86_400)
    uses = Ledger(used.chain, run.deployment).jobs.model_uses(run.job_id)
    assert len(uses) == 2  # the refused use left nothing on chain


def test_a_job_with_no_anchored_round_has_no_model_to_use(tmp_path: Path) -> None:
    chain = EmbeddedChain()
    try:
        run = sme_credit.set_up(chain, tmp_path, SETTINGS, lambda _: None)
        with pytest.raises(ScoringRefused, match="job 1 has no anchored round") as exc:
            sme_use.refer(chain, run)
        one_line(exc)
    finally:
        chain.close()


# ------------------------------------------------------------------------------ messages


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"x" * (MAX_QUERY_BYTES + 1), "more than the"),
        (b"[1", "is not JSON"),
        (b'{"type": "score-query"}', "holds exactly"),
        (b'{"type": "nope"}', "not a score-query message"),
    ],
)
def test_a_hostile_message_is_one_line(data: bytes, message: str) -> None:
    with pytest.raises(MalformedMessage, match=message) as exc:
        ScoreQuery.from_bytes(data)
    one_line(exc)


def test_partial_scores_are_bounded_by_the_intersection() -> None:
    good = PartialScores(1, bytes(32), (0, 2), (0.5, -1.25)).to_bytes()
    assert PartialScores.from_bytes(good, rows=3).scores == (0.5, -1.25)
    with pytest.raises(MalformedMessage, match="positions must ascend within the 2 shared"):
        PartialScores.from_bytes(good, rows=2)
    with pytest.raises(MalformedMessage, match="more than the"):
        PartialScores.from_bytes(good + b" " * 10_000, rows=3)
    backwards = PartialScores(1, bytes(32), (2, 0), (0.5, 1.0)).to_bytes()
    with pytest.raises(MalformedMessage, match="positions must ascend"):
        PartialScores.from_bytes(backwards, rows=3)


# ------------------------------------------------------------------------------ the CLI


def predict(*args: str) -> Result:
    return CliRunner().invoke(cli, ["predict", *args])


def one_line_error(result: Result) -> str:
    assert result.exit_code != 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.anvil
def test_predict_scores_and_refers_on_the_runs_node(anvil_node: AnvilNode, tmp_path: Path) -> None:
    out, url = tmp_path / "run", anvil_node.url
    simulated = CliRunner().invoke(
        cli,
        ["simulate", "sme-credit", "--chain", url, "--out", str(out), "--businesses", "400",
         "--key-bits", "1024", "--max-rounds", "1", "--json"],
    )  # fmt: skip
    assert simulated.exit_code == 0, simulated.output
    report = json.loads(simulated.stdout)
    assert report["referral"]["use"]["index"] == 1 and report["referral"]["scored"] > 0
    where = ("--out", str(out), "--chain", url)
    chain = RpcChain(url, ANVIL_CHAIN_ID)
    try:
        run = sme_credit.load(chain, out)
        business = sme_credit.roles_for(run).guest_train.ids[0]
        scored = predict("score", *where, "--business", business, "--json")
        assert scored.exit_code == 0, scored.output
        answer = json.loads(scored.stdout)
        assert 0 < answer["defaultProbability"] < 1
        assert (answer["use"]["index"], answer["use"]["kind"]) == (2, SCORE)
        referred = predict("referral", *where, "--max-default-rate", "0.5")
        assert referred.exit_code == 0, referred.output
        assert "use 3 of job 1 anchored in transaction 0x" in referred.stdout
        with open_bundle(out / "bundle") as bundle:
            results = [r for r in verify_bundle(bundle, chain) if r.name == "model-uses"]
        assert [r.ok for r in results] == [True] and "use 3 referral" in results[0].message

        empty = predict("score", "--out", str(tmp_path), "--chain", url, "--business", "x")
        assert "no SME-credit run in" in one_line_error(empty)
        unknown = predict("score", *where, "--business", "SME-nobody")
        assert "bank knows no business SME-nobody" in one_line_error(unknown)
        embedded = predict("referral", "--out", str(out), "--chain", "embedded")
        assert "embedded chain" in one_line_error(embedded)
        consents = Ledger(chain, run.deployment, run.platform.account).consents
        consents.revoke(run.datasets[1], run.bank.account.address, sme_credit.PURPOSE)
        revoked = predict("score", *where, "--business", business)
        assert revoked.exit_code == 1 and "no valid consent" in one_line_error(revoked)
    finally:
        chain.close()


def test_the_model_uses_check_lists_each_use_and_fails_a_stranger_or_an_unknown_model(
    used: Used,
) -> None:
    run = used.run
    ledger = Ledger(used.chain, run.deployment)
    job = ledger.jobs.get(run.job_id)
    facts = JobFacts(
        job.id, job.purpose, job.coordinator, job.consumer, job.participants, job.dataset_ids,
        job.initial_model_digest, job.head_model_digest, job.last_round, job.last_anchor_block,
        Domain(used.chain.chain_id, run.deployment.ledger),
    )  # fmt: skip
    uses = ledger.jobs.model_uses(run.job_id)[:2]
    scope = Scope(run.job_id)
    listed = check_model_uses(scope, uses, [job.head_model_digest], facts)
    assert listed.ok and listed.name == "model-uses"
    assert "use 1 score by" in listed.message and "use 2 referral by" in listed.message
    unknown = check_model_uses(scope, uses, [bytes(32)], facts)
    assert not unknown.ok and "use 1 names model" in unknown.message
    stranger = replace(facts, consumer=run.platform.account.address)
    refused = check_model_uses(scope, uses, [job.head_model_digest], stranger)
    assert not refused.ok and f"use 2 was recorded by {run.bank.account.address}" in refused.message
