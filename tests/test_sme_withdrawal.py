"""A business withdraws its consent in the SME-credit scenario: the data party publishes a new
subjects version (a rerun sends nothing, a rerun after a crash between the record and the
transaction publishes it), a later job on the same datasets leaves the business out and names
the new version, and each job's disclosures pass the auditor's consented-subjects check at the
version it used. The embedded chain for the API; the session's anvil node for the commands.

The tests look at both sides' ids through the generator, which no party can: that is how they
pick businesses of job 1's intersection."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import ANVIL_CHAIN_ID

from consortium.audit.chainview import ChainView
from consortium.audit.consented import check_consented_subjects
from consortium.audit.results import Scope
from consortium.chain.anvil import AnvilNode
from consortium.chain.embedded import EmbeddedChain
from consortium.chain.rpc import RpcChain
from consortium.cli.main import cli
from consortium.errors import UsageError
from consortium.fl.vertical.terms import MIN_KEY_BITS
from consortium.ledger.client import Ledger
from consortium.scenarios import sme_credit, sme_disclosure, sme_withdrawal
from consortium.scenarios.party_secrets import read_psi_key, read_subject_secret
from consortium.scenarios.sme_credit import Alignment, SmeRun
from consortium.scenarios.sme_data import SmeData
from consortium.scenarios.sme_inputs import (
    WITHDRAWALS_FILE,
    Withdrawals,
    consent_tree,
    consenting_rows,
    read_inputs,
)

SETTINGS = sme_credit.SmeSettings(businesses=300, seed=3, key_bits=MIN_KEY_BITS, max_rounds=1)


@dataclass(frozen=True)
class Withdrawn:
    chain: EmbeddedChain
    data: SmeData
    first: SmeRun
    later: SmeRun
    bank_ids: tuple[str, str]  # one of job 1's intersection, one consented but not shared
    platform_id: str  # of job 1's intersection, withdrawn by a rerun after a crash
    sent: list[str]  # the bank's withdrawal
    rerun_sent: list[str]  # its rerun
    before_crash: tuple[int, int]  # the platform's dataset's version then, and the record's
    crash_sent: list[str]  # the platform's rerun after the crash


def shared_ids(run: SmeRun, data: SmeData) -> list[str]:
    """The businesses of the run's intersection, in its shared order."""
    alignment = Alignment.load(run.bank.store, run.alignments[0], data.bank.num_rows, "bank")
    return [data.bank.ids[row] for row in alignment.rows]


def spec_of(run: SmeRun) -> dict[str, Any]:
    spec: dict[str, Any] = run.institute.store.get_json(run.model_spec)
    return spec


@pytest.fixture(scope="module")
def withdrawn(tmp_path_factory: pytest.TempPathFactory) -> Withdrawn:
    """Job 1; the bank's withdrawal of two businesses and its rerun; the platform's withdrawal
    of a third, recorded and cut short before its transaction, then run again; job 2."""
    chain = EmbeddedChain()
    out = tmp_path_factory.mktemp("withdrawal")
    first = sme_credit.set_up(chain, out / "one", SETTINGS, lambda _: None)
    data, _ = read_inputs(SETTINGS.businesses, SETTINGS.seed, None)
    shared = shared_ids(first, data)
    consented = [
        data.bank.ids[i]
        for i in consenting_rows(data.bank, SETTINGS.consent_share, SETTINGS.seed).tolist()
    ]
    bank_ids = (shared[0], next(b for b in consented if b not in shared))
    sent: list[str] = []
    assert sme_withdrawal.withdraw(chain, first, "bank", bank_ids, sent=sent.append) == 2
    rerun_sent: list[str] = []
    reversed_ids = bank_ids[::-1]
    assert sme_withdrawal.withdraw(chain, first, "bank", reversed_ids, sent=rerun_sent.append) == 2

    # The platform's withdrawal as a crash leaves it: recorded, never sent.
    platform_id = shared[1]
    directory, dataset = first.platform.directory, first.datasets[1]
    Withdrawals.read(directory, dataset).then((platform_id,)).write(directory)
    on_chain = Ledger(chain, first.deployment).consents.dataset(dataset).subjects_version
    before_crash = (on_chain, Withdrawals.read(directory, dataset).latest)
    crash_sent: list[str] = []
    version = sme_withdrawal.withdraw(
        chain, first, "platform", [platform_id], sent=crash_sent.append
    )
    assert version == 2

    later = sme_credit.set_up(chain, out / "two", SETTINGS, lambda _: None, after=first)
    return Withdrawn(
        chain, data, first, later, bank_ids, platform_id, sent, rerun_sent, before_crash,
        crash_sent,
    )  # fmt: skip


def consented_checks(chain: EmbeddedChain, run: SmeRun) -> list[tuple[bool, str]]:
    """The consented-subjects check of the run's job from both parties' disclosures."""
    disclosures = [sme_disclosure.disclosure_of(run, party) for party in ("bank", "platform")]
    view = ChainView(chain, run.deployment.ledger, run.deployment)
    results = check_consented_subjects(
        Scope(run.job_id), disclosures, spec_of(run), run.bank.account.address, run.datasets, view
    )
    return [(r.ok, r.message) for r in results]


# ------------------------------------------------------------------------ the withdrawal


def test_a_withdrawal_publishes_the_tree_without_the_businesses_as_version_2(
    withdrawn: Withdrawn,
) -> None:
    run, data = withdrawn.first, withdrawn.data
    consents = Ledger(withdrawn.chain, run.deployment).consents
    bank = consents.dataset(run.datasets[0])
    assert bank.subjects_version == 2 and len(withdrawn.sent) == 1
    assert withdrawn.sent[0].startswith("0x") and len(withdrawn.sent[0]) == 66
    rows = consenting_rows(data.bank, SETTINGS.consent_share, SETTINGS.seed)
    secret = read_subject_secret(run.bank)
    without = consenting_rows(
        data.bank, SETTINGS.consent_share, SETTINGS.seed, frozenset(withdrawn.bank_ids)
    )
    assert len(without) == len(rows) - 2
    assert bank.subjects_root == consent_tree(data.bank, without, secret).root
    assert (
        consents.subjects_root_at(run.datasets[0], 1) == consent_tree(data.bank, rows, secret).root
    )

    path = run.bank.directory / WITHDRAWALS_FILE
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "format": "consortium.sme-credit.withdrawals/1",
        "dataset": run.datasets[0],
        "withdrawals": [{"version": 2, "ids": sorted(withdrawn.bank_ids)}],
    }


def test_a_rerun_of_a_completed_withdrawal_sends_nothing(withdrawn: Withdrawn) -> None:
    assert withdrawn.rerun_sent == []
    record = Withdrawals.read(withdrawn.first.bank.directory, withdrawn.first.datasets[0])
    assert [v for v, _ in record.versions] == [2]


def test_a_rerun_after_a_crash_before_the_transaction_publishes_it(withdrawn: Withdrawn) -> None:
    assert withdrawn.before_crash == (1, 2)  # recorded at version 2, the chain still at 1
    assert len(withdrawn.crash_sent) == 1
    run = withdrawn.first
    platform = Ledger(withdrawn.chain, run.deployment).consents.dataset(run.datasets[1])
    assert platform.subjects_version == 2
    assert withdrawn.platform_id not in consent_tree(
        withdrawn.data.platform,
        consenting_rows(
            withdrawn.data.platform, SETTINGS.consent_share, SETTINGS.seed,
            frozenset([withdrawn.platform_id]),
        ),
        read_subject_secret(run.platform),
    )  # fmt: skip


@pytest.mark.parametrize(
    ("party", "ids", "message"),
    [
        ("institute", ["SME-000001"], "only the data parties (bank, platform) hold consents"),
        ("bank", [], "name at least one business"),
        ("bank", ["SME-nobody"], "the bank holds no business 'SME-nobody'"),
        ("bank", ["<withdrawn>"], "already withdrew from the bank (subjects version 2)"),
        ("platform", ["<never consented>"], "never consented to the platform"),
    ],
)
def test_a_bad_withdrawal_is_one_line_and_sends_nothing(
    withdrawn: Withdrawn, party: str, ids: list[str], message: str
) -> None:
    run, data = withdrawn.first, withdrawn.data
    consenting = consenting_rows(data.platform, SETTINGS.consent_share, SETTINGS.seed)
    never = next(b for i, b in enumerate(data.platform.ids) if i not in set(consenting.tolist()))
    stand_in = {"<withdrawn>": withdrawn.bank_ids[0], "<never consented>": never}
    consents = Ledger(withdrawn.chain, run.deployment).consents
    before = [consents.dataset(d).subjects_version for d in run.datasets]
    with pytest.raises(UsageError) as raised:
        sme_withdrawal.withdraw(withdrawn.chain, run, party, [stand_in.get(i, i) for i in ids])
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert [consents.dataset(d).subjects_version for d in run.datasets] == before


# ------------------------------------------------------------------------ the later job


def test_the_later_job_leaves_the_withdrawn_businesses_out_and_names_version_2(
    withdrawn: Withdrawn,
) -> None:
    first, later, data = withdrawn.first, withdrawn.later, withdrawn.data
    assert (later.job_id, later.deployment, later.datasets) == (2, first.deployment, first.datasets)
    assert spec_of(first)["subjects"] == {str(d): 1 for d in first.datasets}
    assert spec_of(later)["subjects"] == {str(d): 2 for d in first.datasets}
    before, after = shared_ids(first, data), shared_ids(later, data)
    # The bank's shared business and the platform's; the bank's other one was never shared.
    assert set(after) == set(before) - {withdrawn.bank_ids[0], withdrawn.platform_id}
    assert spec_of(later)["intersection"]["size"] == len(before) - 2 == len(after)
    assert sme_credit.load(withdrawn.chain, later.institute.directory.parent.parent).to_json() == (
        later.to_json()
    )
    sme_credit.roles_for(later)  # the tables match the model spec


def test_each_job_has_its_own_psi_keys(withdrawn: Withdrawn) -> None:
    first, later = withdrawn.first, withdrawn.later
    for party in ("bank", "platform"):
        keys = [read_psi_key(getattr(run, party)).private_bytes_raw() for run in (first, later)]
        assert keys[0] != keys[1]
    commitments = [spec_of(run)["intersection"]["commitment"] for run in (first, later)]
    assert commitments[0] != commitments[1]


def test_each_jobs_disclosures_pass_at_the_version_it_used(withdrawn: Withdrawn) -> None:
    withdrawn_ids = {withdrawn.bank_ids[0], withdrawn.platform_id}
    for run, version in ((withdrawn.first, 1), (withdrawn.later, 2)):
        checks = consented_checks(withdrawn.chain, run)
        assert [ok for ok, _ in checks] == [True, True, True], checks
        assert all(f"(version {version})" in message for _, message in checks[:2])
        for party in ("bank", "platform"):
            disclosure = sme_disclosure.disclosure_of(run, party)
            assert disclosure.subjects_version == version
            named = withdrawn_ids & set(disclosure.ids)
            assert named == (withdrawn_ids if version == 1 else set())


def test_a_later_job_is_on_the_earlier_runs_data(withdrawn: Withdrawn, tmp_path: Path) -> None:
    other = replace(SETTINGS, businesses=400)
    with pytest.raises(UsageError, match="on the earlier run's data: its businesses differ"):
        sme_credit.set_up(withdrawn.chain, tmp_path, other, lambda _: None, after=withdrawn.first)
    files = (sme_credit.PartyFile(tmp_path / "b.csv", "id"),) * 2
    with pytest.raises(UsageError, match="its files are the earlier run's"):
        sme_credit.set_up(
            withdrawn.chain, tmp_path, SETTINGS, lambda _: None, files=files, after=withdrawn.first
        )


def test_a_later_job_waits_for_a_withdrawal_cut_short(tmp_path: Path) -> None:
    chain = EmbeddedChain()
    try:
        first = sme_credit.set_up(chain, tmp_path / "one", SETTINGS, lambda _: None)
        data, _ = read_inputs(SETTINGS.businesses, SETTINGS.seed, None)
        business = shared_ids(first, data)[0]
        directory = first.bank.directory
        Withdrawals.read(directory, first.datasets[0]).then((business,)).write(directory)
        with pytest.raises(UsageError, match=r"withdrawal at subjects version 2 .* not on chain"):
            sme_credit.set_up(chain, tmp_path / "two", SETTINGS, lambda _: None, after=first)
        assert sme_withdrawal.withdraw(chain, first, "bank", [business]) == 2
        later = sme_credit.set_up(chain, tmp_path / "two", SETTINGS, lambda _: None, after=first)
        assert business not in shared_ids(later, data)
    finally:
        chain.close()


# ------------------------------------------------------------------------ the commands


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def one_line_error(result: Result) -> str:
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def test_the_commands_refuse_the_embedded_chain_and_after_with_resume(tmp_path: Path) -> None:
    out = str(tmp_path)
    embedded = invoke("withdraw", "--out", out, "--chain", "embedded", "--party", "bank",
                      "--business", "SME-000001")  # fmt: skip
    assert "not the embedded chain" in one_line_error(embedded)
    institute = invoke("withdraw", "--out", out, "--chain", "http://127.0.0.1:1",
                       "--party", "institute", "--business", "SME-000001")  # fmt: skip
    assert "'institute' is not one of 'bank', 'platform'" in one_line_error(institute)
    nobody = invoke("withdraw", "--out", out, "--chain", "embedded", "--party", "bank")
    assert "Missing option '--business'" in one_line_error(nobody)
    for extra in (("--resume", "--chain", "http://127.0.0.1:1"), ()):
        refused = invoke("simulate", "sme-credit", "--out", out, "--after", out, *extra)
        assert "--after sets up a new job on the node the earlier run used" in (
            one_line_error(refused)
        )


@pytest.mark.anvil
def test_withdraw_on_the_runs_node_then_a_later_job_refuses_other_data(
    anvil_node: AnvilNode, tmp_path: Path
) -> None:
    one, url = tmp_path / "one", anvil_node.url
    small = ("--businesses", "300", "--seed", "3", "--key-bits", "1024", "--max-rounds", "1")
    simulated = invoke("simulate", "sme-credit", "--chain", url, "--out", str(one), *small)
    assert simulated.exit_code == 0, simulated.output
    chain = RpcChain(url, ANVIL_CHAIN_ID)
    try:
        first = sme_credit.load(chain, one)
        business = shared_ids(first, read_inputs(300, 3, None)[0])[0]
        where = ("--out", str(one), "--chain", url, "--party", "platform")
        done = invoke("withdraw", *where, "--business", business, "--json")
        assert done.exit_code == 0, done.output
        report = json.loads(done.stdout)
        assert (report["party"], report["dataset"], report["subjectsVersion"]) == (
            "platform", first.datasets[1], 2,
        )  # fmt: skip
        assert len(report["transactions"]) == 1
        again = invoke("withdraw", *where, "--business", business)
        assert again.exit_code == 0, again.output
        assert f"dataset {first.datasets[1]} is at subjects version 2" in again.stdout
        assert "already on chain: nothing sent" in again.stdout
        twice = invoke("withdraw", *where, "--business", business, "--business", "SME-nobody")
        assert "already withdrew from the platform" in one_line_error(twice)

        later = ("simulate", "sme-credit", "--chain", url, "--after", str(one))
        other = invoke(*later, "--out", str(tmp_path / "two"), "--businesses", "400")
        assert "--businesses differ" in one_line_error(other)
        nothing = invoke(*later[:-1], str(tmp_path / "none"), "--out", str(tmp_path / "two"))
        assert "no SME-credit run in" in one_line_error(nothing)
    finally:
        chain.close()


@pytest.mark.anvil
def test_a_later_job_through_the_command_leaves_the_withdrawn_business_out(
    anvil_node: AnvilNode, tmp_path: Path
) -> None:
    one, two, url = tmp_path / "one", tmp_path / "two", anvil_node.url
    small = ("--businesses", "300", "--seed", "3", "--key-bits", "1024", "--max-rounds", "1")
    simulated = invoke("simulate", "sme-credit", "--chain", url, "--out", str(one), *small)
    assert simulated.exit_code == 0, simulated.output
    chain = RpcChain(url, ANVIL_CHAIN_ID)
    try:
        data = read_inputs(300, 3, None)[0]
        business = shared_ids(sme_credit.load(chain, one), data)[0]
        done = invoke("withdraw", "--out", str(one), "--chain", url, "--party", "bank",
                      "--business", business)  # fmt: skip
        assert done.exit_code == 0, done.output
        later = invoke("simulate", "sme-credit", "--chain", url, "--out", str(two),
                       "--after", str(one), "--json")  # fmt: skip
        assert later.exit_code == 0, later.output
        report = json.loads(later.stdout)
        assert (report["jobId"], report["audit"]["status"]) == (2, "pass")
        run = sme_credit.load(chain, two)
        assert business not in shared_ids(run, data)
        assert spec_of(run)["subjects"][str(run.datasets[0])] == 2
    finally:
        chain.close()
