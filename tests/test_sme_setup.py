"""The SME-credit scenario's set-up: consortium, consent trees, consent, PSI and job on an
embedded chain, with small keys and about 2,000 businesses; then what a resumed run reloads.

The tests may look at both sides' ids through the generator, which no party of the scenario
can: that is how they check that the PSI aligned the right businesses.
"""

from __future__ import annotations

import json
import shutil
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from consortium.chain.embedded import EmbeddedChain
from consortium.crypto.canonical import json_digest
from consortium.crypto.digests import model_digest
from consortium.crypto.subjects import SubjectTree
from consortium.errors import UsageError
from consortium.fl.party_csv import write_party_csv
from consortium.fl.standardize import Standardizer
from consortium.fl.vertical import hetero_lr
from consortium.fl.vertical.psi import PROTOCOL as PSI_PROTOCOL
from consortium.fl.vertical.terms import PROTOCOL
from consortium.ledger.client import Ledger
from consortium.protocol.vertical.round import joint_model
from consortium.scenarios import sme_credit
from consortium.scenarios.party_secrets import (
    ARBITER_KEY_FILE,
    SUBJECT_SECRET_FILE,
    arbiter_key_digest,
    read_subject_secret,
    simulation_subject_secret,
)
from consortium.scenarios.sme_credit import PURPOSE, SmeRun, SmeSettings, VerticalJob
from consortium.scenarios.sme_data import SmeData, generate_sme
from consortium.scenarios.sme_inputs import PartyFile, consenting_rows
from consortium.store.models import get_model

SETTINGS = SmeSettings(businesses=2_000, key_bits=512)


@pytest.fixture(scope="module")
def chain() -> Iterator[EmbeddedChain]:
    chain = EmbeddedChain()
    yield chain
    chain.close()


@pytest.fixture(scope="module")
def run(chain: EmbeddedChain, tmp_path_factory: pytest.TempPathFactory) -> SmeRun:
    return sme_credit.set_up(
        chain, tmp_path_factory.mktemp("sme") / "run", SETTINGS, report=lambda _: None
    )


@pytest.fixture(scope="module")
def job(run: SmeRun) -> VerticalJob:
    return sme_credit.roles_for(run)


@pytest.fixture(scope="module")
def data() -> SmeData:
    return generate_sme(SETTINGS.seed, businesses=SETTINGS.businesses)


def out_of(run: SmeRun) -> Path:
    return run.institute.directory.parent.parent


def spec_of(run: SmeRun) -> dict[str, Any]:
    spec: dict[str, Any] = run.institute.store.get_json(run.model_spec)
    return spec


def consented(data: SmeData) -> tuple[set[str], set[str]]:
    """The ids of the businesses that consented, on the bank's side and on the platform's."""
    bank, platform = (
        {table.ids[i] for i in consenting_rows(table, SETTINGS.consent_share, SETTINGS.seed)}
        for table in (data.bank, data.platform)
    )
    return bank, platform


# ------------------------------------------------------------------------ the set-up


def test_set_up_then_load_gives_the_same_run(chain: EmbeddedChain, run: SmeRun) -> None:
    loaded = sme_credit.load(chain, out_of(run))
    assert loaded.to_json() == run.to_json()
    assert [p.account.address for p in (loaded.bank, loaded.platform)] == [
        run.bank.account.address,
        run.platform.account.address,
    ]
    recorded = json.loads((out_of(run) / sme_credit.SCENARIO_FILE).read_text())
    assert recorded["format"] == "consortium.simulation.sme-credit/1"
    assert recorded == run.to_json()


def test_the_chain_holds_the_datasets_the_consent_and_the_job(
    chain: EmbeddedChain, run: SmeRun, data: SmeData
) -> None:
    ledger = Ledger(chain, run.deployment)
    bank, platform = run.bank.account.address, run.platform.account.address
    for owner, dataset_id, ids in zip(
        (run.bank, run.platform), run.datasets, consented(data), strict=True
    ):
        dataset = ledger.consents.dataset(dataset_id)
        assert dataset.owner == owner.account.address
        assert dataset.subjects_version == 1
        assert dataset.subjects_root == SubjectTree(ids, read_subject_secret(owner)).root
    assert ledger.consents.is_valid(run.datasets[1], bank, PURPOSE)
    consent = ledger.consents.get(run.datasets[1], bank, PURPOSE)
    assert consent.valid_until - consent.valid_from == 365 * 86_400

    on_chain = ledger.jobs.get(run.job_id)
    assert on_chain.consumer == bank and on_chain.purpose == PURPOSE
    assert on_chain.participants == tuple(sorted((bank, platform), key=lambda a: int(a, 16)))
    assert on_chain.dataset_ids == run.datasets
    assert on_chain.initial_model_digest == run.initial_model
    spec = spec_of(run)
    assert on_chain.model_spec_digest == json_digest(spec) == run.model_spec
    assert spec["protocol"] == PROTOCOL and spec["purpose"] == PURPOSE
    assert spec["subjects"] == {str(d): 1 for d in run.datasets}
    assert spec["features"] == {
        "guest": list(data.bank.feature_names),
        "host": list(data.platform.feature_names),
    }
    # Both sides of the PSI computed the commitment the job names.
    commitments = {
        party.store.get_json(digest)["commitment"]
        for party, digest in zip((run.bank, run.platform), run.alignments, strict=True)
    }
    assert commitments == {spec["intersection"]["commitment"]}
    assert spec["intersection"]["psi"] == PSI_PROTOCOL


def test_the_spec_names_the_terms_the_protocol_runs(run: SmeRun, job: VerticalJob) -> None:
    terms, config = spec_of(run)["terms"], job.terms.config
    assert terms["rows"] == job.terms.rows == job.guest_train.num_rows
    assert (terms["guestFeatures"], terms["hostFeatures"]) == (20, 40)
    assert (terms["maxEpochs"], terms["seed"], terms["keyBits"]) == (60, 7, 512)
    assert (terms["batchSize"], terms["l2"]) == (config.batch_size, config.l2)
    assert spec_of(run)["intersection"]["size"] == terms["rows"] + job.guest_evaluation.num_rows


def test_only_consented_businesses_are_in_the_intersection(job: VerticalJob, data: SmeData) -> None:
    bank_consented, platform_consented = consented(data)
    intersection = {*job.guest_train.ids, *job.guest_evaluation.ids}
    assert intersection == bank_consented & platform_consented
    on_both_sides = set(data.bank.ids) & set(data.platform.ids)
    not_consented = on_both_sides - (bank_consented & platform_consented)
    assert not_consented and not_consented.isdisjoint(intersection)


def test_row_k_is_the_same_business_on_both_sides(job: VerticalJob, data: SmeData) -> None:
    assert job.guest_train.ids == job.host_train.ids
    assert job.guest_evaluation.ids == job.host_evaluation.ids
    assert set(job.guest_evaluation.ids) <= data.evaluation_ids
    assert set(job.guest_train.ids).isdisjoint(data.evaluation_ids)
    for table, mine, own in (
        (data.bank, job.guest_train, job.guest_evaluation),
        (data.platform, job.host_train, job.host_evaluation),
    ):
        where = {identifier: row for row, identifier in enumerate(table.ids)}
        raw = table.aligned([where[i] for i in mine.ids])
        scaler = Standardizer.fit(raw.X)
        np.testing.assert_allclose(mine.X, scaler.transform(raw.X))
        held_out = table.aligned([where[i] for i in own.ids])
        np.testing.assert_allclose(own.X, scaler.transform(held_out.X))
    where = {identifier: row for row, identifier in enumerate(data.bank.ids)}
    assert job.guest_train.labels.tolist() == [
        data.bank.labels[where[i]] for i in job.guest_train.ids
    ]
    assert job.host_train.y is None


def test_the_initial_model_commits_to_each_partys_zero_weights(
    run: SmeRun, job: VerticalJob
) -> None:
    """The joint model of round 0, whose commitments each party opens from its own journal
    and store as it will on resuming from it."""
    initial = run.institute.store.get_json(run.initial_model)
    assert initial == joint_model(
        0,
        {
            party.account.address: bytes.fromhex(initial["weights"][party.account.address])
            for party in (run.bank, run.platform)
        },
        None,
    )
    roles = hetero_lr.set_up(job.guest_train, job.host_train, job.terms, keys=job.keys)
    for party, role in ((run.bank, roles.guest), (run.platform, roles.host)):
        commitment = initial["weights"][party.account.address]
        entry = party.journal_reader().last("committed", commitment=commitment)
        assert entry is not None and entry["round"] == 0
        opening = party.store.get_json(bytes.fromhex(entry["opening"]))
        weights = get_model(party.store, bytes.fromhex(opening["weights"]))
        assert model_digest(weights) == model_digest(role.weights())
        assert role.commitment(bytes.fromhex(opening["salt"])).hex() == commitment
        assert all(not np.any(w) for w in weights.values())


def test_private_files_are_owner_only_and_a_resumed_run_reads_the_same_key(
    chain: EmbeddedChain, run: SmeRun, job: VerticalJob
) -> None:
    private = [
        run.institute.directory / ARBITER_KEY_FILE,
        run.bank.directory / SUBJECT_SECRET_FILE,
        run.platform.directory / SUBJECT_SECRET_FILE,
    ]
    assert [stat.S_IMODE(path.stat().st_mode) for path in private] == [0o600] * 3
    assert read_subject_secret(run.bank) == simulation_subject_secret(7, "bank")
    assert read_subject_secret(run.bank) != read_subject_secret(run.platform)
    resumed = sme_credit.roles_for(sme_credit.load(chain, out_of(run)))
    assert arbiter_key_digest(resumed.keys.public_key).hex() == spec_of(run)["arbiterKey"]
    assert (resumed.keys.private_key.p, resumed.keys.hs) == (job.keys.private_key.p, job.keys.hs)
    assert resumed.keys.private_key.decrypt(job.keys.public_key.encrypt(42)) == 42


# ------------------------------------------------------------------------ CSV files


def test_csv_files_are_recorded_and_a_changed_one_is_refused(
    chain: EmbeddedChain, data: SmeData, tmp_path: Path
) -> None:
    write_party_csv(data.bank, tmp_path / "bank.csv")
    write_party_csv(data.platform, tmp_path / "platform.csv")
    files = (
        PartyFile(tmp_path / "bank.csv", "id", "label"),
        PartyFile(tmp_path / "platform.csv", "id"),
    )
    run = sme_credit.set_up(chain, tmp_path / "run", SETTINGS, lambda _: None, files=files)
    recorded = run.to_json()["dataFiles"]
    assert recorded["bank"]["path"] == str((tmp_path / "bank.csv").resolve())
    assert recorded["platform"]["labelColumn"] is None
    job = sme_credit.roles_for(sme_credit.load(chain, tmp_path / "run"))
    # Without the generator's split, a seeded quarter of the bank's businesses is held out.
    held_out = job.guest_evaluation.num_rows / (job.guest_evaluation.num_rows + job.terms.rows)
    assert 0.2 < held_out < 0.3
    assert job.guest_train.ids == job.host_train.ids

    text = (tmp_path / "platform.csv").read_text()
    (tmp_path / "platform.csv").write_text(text.replace(",", ",1", 1))  # a header changes
    with pytest.raises(UsageError, match="changed since this run was set up") as refused:
        sme_credit.roles_for(sme_credit.load(chain, tmp_path / "run"))
    assert "\n" not in str(refused.value)


# ------------------------------------------------------------------------ bad inputs


def test_a_chain_that_is_not_local_is_refused(tmp_path: Path) -> None:
    remote: Any = SimpleNamespace(chain_id=1, is_local_dev=False)
    with pytest.raises(UsageError, match="runs only on a local development chain"):
        sme_credit.set_up(remote, tmp_path, SETTINGS, report=lambda _: None)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError, match="runs only on a local development chain"):
        sme_credit.load(remote, tmp_path)


def test_an_existing_scenario_is_refused(chain: EmbeddedChain, run: SmeRun) -> None:
    with pytest.raises(UsageError, match="already holds a scenario"):
        sme_credit.set_up(chain, out_of(run), SETTINGS, report=lambda _: None)


Tamper = Callable[[dict[str, Any]], None]
TAMPERED: dict[str, Tamper] = {
    "format": lambda s: s.update(format="consortium.simulation/1"),
    "field missing": lambda s: s.pop("alignments"),
    "field added": lambda s: s.update(rounds=3),
    "settings": lambda s: s["settings"].update(seed="7"),
    "consent share": lambda s: s["settings"].update(consentShare=1.5),
    "job id": lambda s: s.update(jobId=0),
    "unknown job": lambda s: s.update(jobId=99),
    "model spec": lambda s: s.update(modelSpec=s["initialModel"]),
    "dataset": lambda s: s["datasets"].update(platform=1),
    "digest": lambda s: s["alignments"].update(bank="0x" + s["alignments"]["bank"][2:]),
    "chain": lambda s: s["deployment"].update(chain_id=1),
    "data files": lambda s: s.update(dataFiles={"bank": {}, "platform": {}}),
}


@pytest.mark.parametrize("tamper", TAMPERED.values(), ids=TAMPERED.keys())
def test_a_tampered_scenario_file_is_a_one_line_usage_error(
    chain: EmbeddedChain, run: SmeRun, tmp_path: Path, tamper: Tamper
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(out_of(run), out)
    scenario = json.loads((out / sme_credit.SCENARIO_FILE).read_text())
    tamper(scenario)
    (out / sme_credit.SCENARIO_FILE).write_text(json.dumps(scenario))
    with pytest.raises(UsageError) as refused:
        sme_credit.load(chain, out)
    assert "\n" not in str(refused.value)


def test_another_partys_record_or_a_bad_key_is_refused_on_resume(
    chain: EmbeddedChain, run: SmeRun, tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(out_of(run), out)
    path = out / sme_credit.SCENARIO_FILE
    scenario = json.loads(path.read_text())
    scenario["alignments"]["bank"] = scenario["alignments"]["platform"]
    path.write_text(json.dumps(scenario))
    with pytest.raises(UsageError, match="bank's alignment"):
        sme_credit.roles_for(sme_credit.load(chain, out))

    path.write_text(json.dumps(run.to_json()))
    key_file = out / "parties" / "institute" / ARBITER_KEY_FILE
    key = json.loads(key_file.read_text())
    key_file.write_text(json.dumps({**key, "q": key["p"]}))
    with pytest.raises(UsageError, match="not distinct primes") as refused:
        sme_credit.roles_for(sme_credit.load(chain, out))
    assert "\n" not in str(refused.value)
