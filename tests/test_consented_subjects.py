"""The auditor checks, from the SME-credit job's data parties' disclosures, that every business
the job trained on was in both consent trees: both disclosures pass; a business outside the
consent tree, a wrong salt, a missing id or a wrong PSI key fails; one disclosure says what it
could not check; none is said to be not checked; hostile disclosure files are one line."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from sme_job import exported_job

from consortium.audit import CheckResult, Verdict, open_bundle, verify_bundle
from consortium.audit.checks import CONSENTED_SUBJECTS, DISCLOSED_WEIGHTS
from consortium.chain.embedded import EmbeddedChain
from consortium.cli import audit as cli_audit
from consortium.cli.main import cli
from consortium.crypto.subjects import subject_salt
from consortium.errors import UsageError
from consortium.protocol.vertical import disclosure
from consortium.protocol.vertical.disclosure import (
    FORMAT,
    DisclosureError,
    PartyDisclosure,
    read_disclosure,
)
from consortium.scenarios import sme_credit, sme_disclosure
from consortium.scenarios.party_secrets import PSI_KEY_FILE, read_subject_secret
from consortium.scenarios.sme_inputs import consenting_rows, read_inputs

SETTINGS = sme_credit.SmeSettings(businesses=1_000, seed=11, key_bits=512, max_rounds=1)


@dataclass(frozen=True)
class Disclosed:
    chain: EmbeddedChain
    run: sme_credit.SmeRun
    bundle: Path
    bank: PartyDisclosure
    platform: PartyDisclosure
    files: tuple[Path, Path]


@pytest.fixture(scope="module")
def disclosed(tmp_path_factory: pytest.TempPathFactory) -> Disclosed:
    """A one-epoch SME-credit job, its bundle, and both data parties' disclosures as files."""
    chain = EmbeddedChain()
    out = tmp_path_factory.mktemp("disclosed")
    run, bundle = exported_job(chain, out, SETTINGS)
    files = (sme_disclosure.disclose(run, "bank"), sme_disclosure.disclose(run, "platform"))
    bank, platform = (read_disclosure(path) for path in files)
    return Disclosed(chain, run, bundle, bank, platform, files)


def consented(disclosed: Disclosed, *disclosures: PartyDisclosure) -> list[CheckResult]:
    with open_bundle(disclosed.bundle) as bundle:
        results = list(verify_bundle(bundle, disclosed.chain, disclosures=disclosures))
    return [r for r in results if r.name == CONSENTED_SUBJECTS]


def failures(results: list[CheckResult]) -> list[str]:
    return [r.message for r in results if not r.ok]


def test_both_disclosures_show_every_trained_business_consented_on_both_sides(
    disclosed: Disclosed,
) -> None:
    run = disclosed.run
    spec = run.institute.store.get_json(run.model_spec)
    size = spec["intersection"]["size"]
    assert len(disclosed.bank.subjects) == len(disclosed.platform.subjects) == size
    assert set(disclosed.bank.ids) == set(disclosed.platform.ids)
    for path in disclosed.files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(run.bank.directory / PSI_KEY_FILE).st_mode) == 0o600

    with open_bundle(disclosed.bundle) as bundle:
        results = list(
            verify_bundle(bundle, disclosed.chain, disclosures=(disclosed.platform, disclosed.bank))
        )
    verdict = Verdict()
    for result in results:
        verdict.add(result)
    assert verdict.ok, [r.message for r in results if not r.ok]
    checked = [r for r in results if r.name == CONSENTED_SUBJECTS]
    assert [r.participant for r in checked] == [
        run.platform.account.address,
        run.bank.account.address,
        None,
    ]
    assert "consented on both sides" in checked[-1].message
    assert spec["intersection"]["commitment"] in checked[-1].message
    assert f"each of the {size:,} businesses the guest discloses" in checked[1].message


def test_a_business_outside_the_consent_tree_fails(disclosed: Disclosed) -> None:
    data, _ = read_inputs(SETTINGS.businesses, SETTINGS.seed, None)
    table = data.bank
    consenting = {
        table.ids[i] for i in consenting_rows(table, SETTINGS.consent_share, SETTINGS.seed)
    }
    outsider = next(b for b in table.ids if b not in consenting)
    secret = read_subject_secret(disclosed.run.bank)
    first = disclosed.bank.subjects[0]
    forged = replace(first, subject_id=outsider, salt=subject_salt(secret, outsider))
    bank = replace(disclosed.bank, subjects=(forged, *disclosed.bank.subjects[1:]))
    failed = failures(consented(disclosed, bank, disclosed.platform))
    assert len(failed) == 2  # the bank's subjects, then the two parties' sets
    assert (
        f"1 of its {len(bank.subjects):,} businesses are not under it: 0 ('{outsider}')"
        in (failed[0])
    )
    assert "the parties disclose different businesses: 1 only the guest does" in failed[1]


def test_a_wrong_salt_fails(disclosed: Disclosed) -> None:
    subjects = list(disclosed.platform.subjects)
    subjects[5] = replace(subjects[5], salt=bytes(32))
    platform = replace(disclosed.platform, subjects=tuple(subjects))
    results = consented(disclosed, disclosed.bank, platform)
    (failed,) = failures(results)
    assert "the host's dataset" in failed and f"not under it: 5 ('{subjects[5].subject_id}')" in (
        failed
    )
    assert results[-1].ok  # ids and keys unchanged: the intersection still recomputes


def test_a_platform_disclosure_missing_one_business_fails(disclosed: Disclosed) -> None:
    platform = replace(disclosed.platform, subjects=disclosed.platform.subjects[:-1])
    failed = failures(consented(disclosed, disclosed.bank, platform))
    size = len(disclosed.bank.subjects)
    assert f"it discloses {size - 1:,} businesses, the intersection holds {size:,}" in failed[0]
    assert "1 only the guest does, 0 only the host does" in failed[1]


def test_a_wrong_psi_key_fails_the_commitment(disclosed: Disclosed) -> None:
    platform = replace(disclosed.platform, psi_key=X25519PrivateKey.generate())
    results = consented(disclosed, disclosed.bank, platform)
    assert [r.ok for r in results] == [True, True, False]
    assert "not the model spec's" in results[-1].message


def test_one_disclosure_says_what_it_could_not_check(disclosed: Disclosed) -> None:
    results = consented(disclosed, disclosed.platform)
    assert [(r.ok, r.unverifiable) for r in results] == [(True, False), (False, True)]
    assert "only the host's disclosure was given" in results[-1].message
    assert "not that the guest consented to the same businesses" in results[-1].message


def test_without_disclosures_the_check_is_not_run_and_said_not_checked(
    disclosed: Disclosed, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert consented(disclosed) == []
    monkeypatch.setattr(cli_audit, "open_chain", lambda url: disclosed.chain)
    plain = CliRunner().invoke(cli, ["audit", str(disclosed.bundle), "--chain", "http://node"])
    assert plain.exit_code == 0, plain.output
    assert f"{CONSENTED_SUBJECTS}: not checked: no subject disclosures" in plain.stdout
    as_json = CliRunner().invoke(
        cli, ["audit", str(disclosed.bundle), "--chain", "http://node", "--json"]
    )
    document = json.loads(as_json.stdout)
    assert document["notChecked"] == {
        CONSENTED_SUBJECTS: "not checked: no subject disclosures",
        DISCLOSED_WEIGHTS: "not checked: no weights disclosures",
    }
    where = [str(disclosed.bundle), "--chain", "http://node"]
    given = [f"--disclosure={path}" for path in disclosed.files]
    both = CliRunner().invoke(cli, ["audit", *where, *given, "--json"])
    assert both.exit_code == 0, both.output
    document = json.loads(both.stdout)
    assert document["notChecked"] == {DISCLOSED_WEIGHTS: "not checked: no weights disclosures"}
    assert [r["status"] for r in document["results"] if r["check"] == CONSENTED_SUBJECTS] == [
        "pass"
    ] * 3


def test_disclosures_of_another_job_or_dataset_are_refused(disclosed: Disclosed) -> None:
    for wrong, expected in (
        (replace(disclosed.bank, job_id=9), "is for job 9, not job"),
        (replace(disclosed.bank, dataset=99), "of dataset 99, not the job's"),
    ):
        with pytest.raises(UsageError, match=expected):
            consented(disclosed, wrong)
    with pytest.raises(UsageError, match="two disclosures are of dataset"):
        consented(disclosed, disclosed.bank, disclosed.bank)


def _valid(disclosed: Disclosed) -> dict[str, object]:
    return disclosed.platform.to_json()


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: [d], f"is neither a {FORMAT} nor a"),
        (lambda d: {**d, "format": "consortium.subject-disclosure/9"}, f"neither a {FORMAT} nor"),
        (lambda d: {**d, "extra": 1}, "must hold exactly dataset, format, jobId"),
        (lambda d: {k: v for k, v in d.items() if k != "psiKey"}, "must hold exactly"),
        (lambda d: {**d, "jobId": True}, "jobId must be a positive integer"),
        (lambda d: {**d, "subjectsVersion": 2**32}, "subjectsVersion must be a positive"),
        (lambda d: {**d, "subjects": []}, "subjects must be a list of 1 to 1,000,000"),
        (lambda d: {**d, "psiKey": "AB" * 32}, "psiKey must be 64 lowercase hex digits"),
        (lambda d: {**d, "subjects": [*d["subjects"], d["subjects"][0]]}, "disclosed twice"),
        (
            lambda d: {**d, "subjects": [{**d["subjects"][0], "salt": "00"}]},
            "subject 0: a subject disclosure's salt is 32 bytes in hex",
        ),
        (
            lambda d: {**d, "subjects": [{**d["subjects"][0], "id": "\n" * 300}]},
            "subject 0: a subject id is at most 256 bytes",
        ),
        (
            lambda d: {**d, "subjects": [{**d["subjects"][0], "proof": ["00" * 32] * 65}]},
            "proof is a list of at most 64 hashes",
        ),
    ],
)
def test_a_hostile_disclosure_file_is_refused_in_one_line(
    disclosed: Disclosed, tmp_path: Path, edit: object, expected: str
) -> None:
    path = tmp_path / "disclosure.json"
    path.write_text(json.dumps(edit(_valid(disclosed))))  # type: ignore[operator]
    with pytest.raises(DisclosureError) as raised:
        read_disclosure(path)
    message = str(raised.value)
    assert expected in message and "\n" not in message and str(path) in message


def test_the_auditor_refuses_an_unreadable_disclosure_in_one_line(
    disclosed: Disclosed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 1_000)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    monkeypatch.setattr(disclosure, "MAX_DISCLOSURE_BYTES", 10_000)
    for path, expected in (
        (tmp_path / "missing.json", "no such file"),
        (deep, "nests arrays and objects more than 64 deep"),
        (fifo, "FIFO"),
        (disclosed.files[0], "larger than 10,000 bytes"),
    ):
        result = CliRunner().invoke(
            cli,
            ["audit", str(disclosed.bundle), "--chain", "http://node", "--disclosure", str(path)],
        )
        assert result.exit_code == 2, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], lines


def test_disclose_refuses_the_embedded_chain_and_a_party_that_holds_no_data(
    disclosed: Disclosed,
) -> None:
    out = str(disclosed.run.bank.directory.parent.parent)
    for options, expected in (
        (["--chain", "embedded", "--party", "bank"], "the node the run used"),
        (["--chain", "http://node", "--party", "institute"], "'institute' is not one of"),
    ):
        result = CliRunner().invoke(cli, ["disclose", "--out", out, *options])
        assert result.exit_code == 2, result.output
        lines = result.stderr.splitlines()
        assert len(lines) == 1 and expected in lines[0], lines
    with pytest.raises(UsageError, match=r"only the data parties \(bank, platform\) disclose"):
        sme_disclosure.disclose(disclosed.run, "institute")
