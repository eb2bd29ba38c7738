"""One seed, one model: every random choice of ``simulate aml`` derives from ``--seed``.

The parties' keys included (the aggregation order follows their addresses), so two runs with
one seed end with the same head model, and a resumed run can be checked against a fresh run
with nothing copied from it. The keys are predictable, so the simulation refuses any chain
that is not a local development chain.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from click.testing import CliRunner, Result

from consortium.chain.anvil import AnvilNode
from consortium.cli.main import cli
from consortium.crypto.devkeys import DEV_KEYS, LOCAL_CHAIN_IDS
from consortium.errors import UsageError
from consortium.faults import KILL_AT_ENV
from consortium.scenarios import aml, keys
from consortium.scenarios.keys import SECP256K1_ORDER, simulation_key
from consortium.scenarios.parties import Party

CONSORTIUM = Path(sys.executable).parent / "consortium"
PARTIES = ("institute", "bank-0", "bank-1", "regulator")


def simulate(*args: str) -> Result:
    return CliRunner().invoke(cli, ["simulate", "aml", *args])


def addresses(out: Path) -> dict[str, str]:
    """Each party's address, as its keystore file names it."""
    return {
        p: "0x" + json.loads((out / "parties" / p / "key.json").read_text())["address"].lower()
        for p in PARTIES
    }


def run_embedded(out: Path, seed: int) -> tuple[str, dict[str, str]]:
    """The head model digest and the parties' addresses of a two-bank, two-round run."""
    result = simulate(
        "--banks", "2", "--rounds", "2", "--seed", str(seed), "--out", str(out), "--json"
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["audit"]["status"] == "pass"
    return report["rounds"][-1]["anchor"]["modelDigest"], addresses(out)


# ------------------------------------------------------------------------------ derivation


def test_a_simulation_key_is_the_documented_hash_of_seed_and_name() -> None:
    """The derivation the module documents, recomputed by hand: SHA-256 of the RFC 8785 JSON
    of the attempt, domain, party and seed (in decimal), big-endian."""
    for seed, name in ((7, "bank-0"), (0, "institute"), (2**70, "regulator")):
        text = (
            f'{{"attempt":0,"domain":"consortium simulation key","party":"{name}","seed":"{seed}"}}'
        )
        expected = hashlib.sha256(text.encode()).digest()
        assert 1 <= int.from_bytes(expected, "big") < SECP256K1_ORDER
        assert bytes(simulation_key(seed, name).key) == expected


def test_simulation_keys_differ_by_seed_and_by_name_and_are_no_dev_key() -> None:
    derived = {(s, n): simulation_key(s, n).address for s in (0, 1, 7) for n in PARTIES}
    assert len(set(derived.values())) == len(derived)
    assert simulation_key(7, "bank-0").address == derived[(7, "bank-0")]  # and stable
    dev = {key.lower() for key in DEV_KEYS}
    assert not any(simulation_key(s, n).key.to_0x_hex() in dev for s, n in derived)


def test_a_candidate_that_is_a_dev_key_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    first = simulation_key(7, "bank-0").address
    monkeypatch.setattr(keys, "is_dev_key", lambda address: address == first)
    second = simulation_key(7, "bank-0")
    assert second.address != first
    text = '{"attempt":1,"domain":"consortium simulation key","party":"bank-0","seed":"7"}'
    assert bytes(second.key) == hashlib.sha256(text.encode()).digest()


def test_a_simulation_refuses_a_chain_that_is_not_local(tmp_path: Path) -> None:
    """Before a key is derived or loaded: nothing is written, nothing read."""
    remote: Any = SimpleNamespace(chain_id=1, is_local_dev=False)
    local = ", ".join(str(i) for i in sorted(LOCAL_CHAIN_IDS))
    expected = (
        f"the AML simulation runs only on a local development chain ({local}), not on chain id "
        "1: its parties' keys derive from the seed, and anyone who knows the seed can sign as "
        "them"
    )
    with pytest.raises(UsageError) as refused:
        aml.set_up(remote, tmp_path, aml.AmlSettings(banks=2, rounds=1), report=lambda _: None)
    assert str(refused.value) == expected
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(UsageError) as refused:
        aml.load(remote, tmp_path)
    assert str(refused.value) == expected


# ------------------------------------------------------------------------ embedded runs


def test_two_runs_with_one_seed_end_with_the_same_model(tmp_path: Path) -> None:
    first = run_embedded(tmp_path / "first", seed=7)
    assert run_embedded(tmp_path / "second", seed=7) == first
    assert first[1]["bank-0"] == simulation_key(7, "bank-0").address.lower()
    model, parties = run_embedded(tmp_path / "other", seed=8)
    assert model != first[0]
    assert set(parties.values()).isdisjoint(first[1].values())


def test_a_key_already_in_the_directory_is_used(tmp_path: Path) -> None:
    """Keys put in place before the run win over the seed's: another key set, another
    aggregation order, the same data."""
    _, derived = run_embedded(tmp_path / "seed-7", seed=7)
    out = tmp_path / "kept"
    for party in PARTIES:
        Party.create(party, out, seed=8)
    kept = addresses(out)
    assert kept != derived
    assert run_embedded(out, seed=7)[1] == kept


# ------------------------------------------------------------------------------ on a node


def cli_process(*args: str, kill_at: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != KILL_AT_ENV}
    if kill_at is not None:
        env[KILL_AT_ENV] = kill_at
    return subprocess.run(
        [str(CONSORTIUM), "simulate", "aml", *args], env=env, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@pytest.mark.anvil
@pytest.mark.slow
def test_a_resumed_run_ends_with_the_model_of_a_fresh_run_with_its_seed(
    anvil_node: AnvilNode, tmp_path: Path
) -> None:
    """Killed in round 2 and resumed, with no key copied from anywhere."""
    settings = ("--chain", anvil_node.url, "--banks", "2", "--rounds", "3", "--seed", "5")
    fresh = cli_process(*settings, "--out", str(tmp_path / "fresh"), "--json")
    assert fresh.returncode == 0, fresh.stderr
    models = [r["anchor"]["modelDigest"] for r in json.loads(fresh.stdout)["rounds"]]

    out = tmp_path / "killed"
    died = cli_process(*settings, "--out", str(out), "--json", kill_at="intent:2")
    assert died.returncode == -signal.SIGKILL, died.stderr
    resumed = cli_process("--chain", anvil_node.url, "--out", str(out), "--resume", "--json")
    assert resumed.returncode == 0, resumed.stderr
    report = json.loads(resumed.stdout)
    assert report["rounds"][0]["resumed"] and report["audit"]["status"] == "pass"
    assert [r["anchor"]["modelDigest"] for r in report["rounds"]] == models
    assert addresses(out) == addresses(tmp_path / "fresh")


@pytest.mark.anvil
def test_a_node_with_another_chain_id_is_refused(tmp_path: Path, unused_port: int) -> None:
    node = AnvilNode(tmp_path / "node", port=unused_port, chain_id=4242)
    node.start()
    try:
        result = simulate("--chain", node.url, "--out", str(tmp_path / "run"))
        assert result.exit_code == 2, result.output
        (line,) = result.stderr.splitlines()
        assert line.startswith("error: the AML simulation runs only on a local development")
        assert "not on chain id 4242" in line
        assert not (tmp_path / "run" / "parties").exists()
    finally:
        node.stop()
