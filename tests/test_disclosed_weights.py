"""A data party of the SME-credit job discloses the weights of the head model and their salt;
the auditor checks that they open the party's commitment in that round's anchored model and have
its part's shape: both parties' disclosures pass; a changed weight, a wrong salt, the wrong
shape, another party's weights or a round the bundle lacks fail; a model that did not verify
leaves the check unverifiable; hostile files are one line; ``consortium disclose --weights``
writes the file and ``consortium audit --disclosure`` reads it."""

from __future__ import annotations

import json
import os
import shutil
import stat
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from sme_job import exported_job

from consortium.audit import CheckResult, open_bundle, verify_bundle
from consortium.audit.checks import DISCLOSED_WEIGHTS
from consortium.chain.embedded import EmbeddedChain
from consortium.cli import audit as cli_audit
from consortium.cli.main import cli
from consortium.errors import UsageError
from consortium.ledger.client import Ledger
from consortium.protocol.vertical.disclosure import Disclosure, read_disclosure
from consortium.protocol.vertical.weights_disclosure import (
    WeightsDisclosure,
    WeightsDisclosureError,
)
from consortium.scenarios import sme_credit, sme_weights

SETTINGS = sme_credit.SmeSettings(businesses=600, seed=5, key_bits=512, max_rounds=2)


@dataclass(frozen=True)
class Disclosed:
    chain: EmbeddedChain
    run: sme_credit.SmeRun
    bundle: Path
    bank: WeightsDisclosure
    platform: WeightsDisclosure
    files: tuple[Path, Path]


@pytest.fixture(scope="module")
def disclosed(tmp_path_factory: pytest.TempPathFactory) -> Disclosed:
    """A two-epoch SME-credit job, its bundle, and both data parties' weights disclosures."""
    chain = EmbeddedChain()
    out = tmp_path_factory.mktemp("weights")
    run, bundle = exported_job(chain, out, SETTINGS)
    files = tuple(sme_weights.disclose_weights(chain, run, p) for p in ("bank", "platform"))
    bank, platform = (read_disclosure(path) for path in files)
    assert isinstance(bank, WeightsDisclosure) and isinstance(platform, WeightsDisclosure)
    return Disclosed(chain, run, bundle, bank, platform, (files[0], files[1]))


def audited(
    disclosed: Disclosed, *disclosures: Disclosure, bundle: Path | None = None
) -> list[CheckResult]:
    with open_bundle(bundle or disclosed.bundle) as opened:
        results = list(verify_bundle(opened, disclosed.chain, disclosures=disclosures))
    return [r for r in results if r.name == DISCLOSED_WEIGHTS]


def test_both_parties_weights_open_their_commitments_in_the_head_model(
    disclosed: Disclosed,
) -> None:
    run = disclosed.run
    job = Ledger(disclosed.chain, run.deployment).jobs.get(run.job_id)
    assert disclosed.bank.round == disclosed.platform.round == job.last_round
    terms = run.institute.store.get_json(run.model_spec)["terms"]
    assert disclosed.bank.weights["weights"].shape == (terms["guestFeatures"],)
    assert disclosed.bank.weights["bias"].shape == ()
    assert disclosed.platform.weights["weights"].shape == (terms["hostFeatures"],)
    assert np.any(disclosed.platform.weights["weights"] != 0)  # trained, not the initial zeros
    for path in disclosed.files:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600

    results = audited(disclosed, disclosed.platform, disclosed.bank)
    assert [(r.ok, r.participant) for r in results] == [
        (True, run.platform.account.address),
        (True, run.bank.account.address),
    ]
    assert f"the host's weights of round {job.last_round}" in results[0].message
    assert "they are the weights the job trained" in results[0].message
    assert disclosed.platform.commitment().hex() in results[0].message


def test_a_round_file_read_back_is_the_same_disclosure(disclosed: Disclosed) -> None:
    again = WeightsDisclosure.from_json(disclosed.bank.to_json(), "here")
    assert again.commitment() == disclosed.bank.commitment()
    assert json.loads(disclosed.files[0].read_text()) == disclosed.bank.to_json()


def _changed(disclosure: WeightsDisclosure, name: str, values: np.ndarray) -> WeightsDisclosure:
    return replace(disclosure, weights={**disclosure.weights, name: values})


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            lambda d: _changed(d, "weights", d.weights["weights"] + 1e-12),
            "they open commitment",
        ),
        (lambda d: replace(d, salt=bytes(32)), "they open commitment"),
        (
            lambda d: _changed(d, "weights", d.weights["weights"][:-1]),
            "weights has shape",
        ),
        (
            lambda d: replace(d, weights={"weights": d.weights["weights"]}),
            "they name tensors ['weights'], the guest's are ['bias', 'weights']",
        ),
    ],
    ids=["one-weight-changed", "wrong-salt", "one-weight-short", "no-bias"],
)
def test_weights_that_are_not_the_committed_ones_fail(
    disclosed: Disclosed, edit: object, expected: str
) -> None:
    (result,) = audited(disclosed, edit(disclosed.bank))  # type: ignore[operator]
    assert not result.ok and not result.unverifiable
    assert "are not the committed ones" in result.message and expected in result.message


def test_another_partys_weights_under_its_address_fail(disclosed: Disclosed) -> None:
    stolen = replace(disclosed.platform, participant=disclosed.bank.participant)
    (result,) = audited(disclosed, stolen)
    assert not result.ok and "the guest's are ['bias', 'weights']" in result.message


def test_a_round_the_bundle_lacks_fails(disclosed: Disclosed) -> None:
    (result,) = audited(disclosed, replace(disclosed.bank, round=disclosed.bank.round + 5))
    assert not result.ok and f"the bundle has no round {disclosed.bank.round + 5}" in result.message


def test_weights_of_a_model_that_did_not_verify_are_unverifiable(
    disclosed: Disclosed, tmp_path: Path
) -> None:
    """Round 1's metrics object changed in a copy of the bundle: every later model is no
    longer proven, so the opened weights are not shown to be the trained ones."""
    copy = Path(shutil.copytree(disclosed.bundle, tmp_path / "bundle"))
    first = json.loads((copy / "rounds.jsonl").read_text().splitlines()[0])
    metrics = next(copy.rglob(first["metrics"][2:]))  # objects/ab/cdef…
    metrics.chmod(0o644)
    metrics.write_bytes(metrics.read_bytes() + b" ")
    (result,) = audited(disclosed, disclosed.bank, bundle=copy)
    assert result.unverifiable, result.message
    assert "open the commitment" in result.message and "did not verify" in result.message


def test_disclosures_of_another_job_or_party_are_refused(disclosed: Disclosed) -> None:
    outsider = "0x" + "11" * 20
    for wrong, expected in (
        (replace(disclosed.bank, job_id=9), "is for job 9, not"),
        (replace(disclosed.bank, participant=outsider), "not a party of the job"),
    ):
        with pytest.raises(UsageError, match=expected):
            audited(disclosed, wrong)
    with pytest.raises(UsageError, match="two weights disclosures are of"):
        audited(disclosed, disclosed.bank, disclosed.bank)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda d: {**d, "extra": 1}, "must hold exactly format, jobId, participant"),
        (lambda d: {**d, "round": 0}, "round must be a positive integer"),
        (lambda d: {**d, "participant": "bank"}, "participant: not an address"),
        (lambda d: {**d, "salt": "00"}, "salt must be 64 lowercase hex digits"),
        (lambda d: {**d, "weights": {}}, "weights must be an object of 1 to 16"),
        (
            lambda d: {**d, "weights": {"bias": {"shape": [], "values": [float("nan")]}}},
            "every value must be a finite float",
        ),
        (
            lambda d: {**d, "weights": {"bias": {"shape": [2], "values": [1.0]}}},
            "values must be a list of 2 numbers",
        ),
        (
            lambda d: {**d, "weights": {"w": {"shape": [10**4, 10**4], "values": []}}},
            "more than 1,000,000 values",
        ),
        (lambda d: {**d, "weights": {"w": {"shape": [-1], "values": []}}}, "shape must be"),
    ],
)
def test_a_hostile_weights_file_is_refused_in_one_line(
    disclosed: Disclosed, tmp_path: Path, edit: object, expected: str
) -> None:
    path = tmp_path / "weights.json"
    path.write_text(json.dumps(edit(disclosed.bank.to_json())))  # type: ignore[operator]
    with pytest.raises(WeightsDisclosureError) as raised:
        read_disclosure(path)
    message = str(raised.value)
    assert expected in message and "\n" not in message and str(path) in message


def test_the_cli_writes_and_audits_a_weights_disclosure(
    disclosed: Disclosed, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = CliRunner().invoke(
        cli, ["disclose", "--out", "x", "--chain", "embedded", "--party", "bank", "--weights"]
    )
    assert refused.exit_code == 2 and "not the embedded chain" in refused.stderr
    monkeypatch.setattr(cli_audit, "open_chain", lambda url: disclosed.chain)
    where = [str(disclosed.bundle), "--chain", "http://node"]
    result = CliRunner().invoke(
        cli, ["audit", *where, "--disclosure", str(disclosed.files[1]), "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    weights = [r for r in document["results"] if r["check"] == DISCLOSED_WEIGHTS]
    assert [r["status"] for r in weights] == ["pass"]
    assert document["notChecked"] == {"consented-subjects": "not checked: no subject disclosures"}
