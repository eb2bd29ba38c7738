"""The ledger commands (deploy, member, dataset, consent, compile) as a user types them.

Every test drives ``consortium`` through click's CliRunner, the way the console script runs it,
against the session's anvil node (the CLI refuses the embedded chain, which lives inside one
process). Each test founds its own consortium with fresh keys in its own data directory, so
tests share the node but nothing else.

What is checked besides the happy paths: exit 0 on success, 1 with the decoded NatSpec reason
when the chain refuses, 2 for usage errors (caught before anything is signed or sent, and
before the network is even needed where possible); ``--json`` parses; human output is a
table; re-running a state-changing command changes nothing twice; and no file is ever
overwritten or half-written.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from conftest import ANVIL_CHAIN_ID, free_port, isolate_cli

from consortium.chain.anvil import AnvilNode
from consortium.chain.rpc import RpcChain
from consortium.cli import compile as compile_module
from consortium.cli.main import cli
from consortium.crypto.canonical import json_digest
from consortium.crypto.keystore import Keystore
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment

Run = Callable[..., Result]

DAY = 86_400
ROOT_A = "aa" * 32
ROOT_B = "0x" + "bb" * 32
FOUNDERS = {
    "bank": ("Bank A", "provider,consumer"),
    "logistics": ("Logistics B", "provider"),
    "institute": ("Research Institute", "coordinator,auditor"),
}
# A well-formed address nobody holds a key for (EIP-55 example address).
STRANGER = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


def write_config(directory: Path, url: str) -> Path:
    """A configuration file like a user's, pointing at ``url``, with cheap scrypt."""
    path = directory / "hardhat-free-config.toml"
    path.write_text(
        f'[network]\nurl = "{url}"\nchain_id = {ANVIL_CHAIN_ID}\npoll_latency = 0.01\n\n'
        '[paths]\ndata_dir = "data"\n\n[keys]\nscrypt_n = 1024\n'
    )
    return path


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """Invoke ``consortium`` in ``tmp_path`` with a known password and no stray settings.

    The configuration file there points at a port nobody listens on; tests that need the
    chain rewrite it. A wide terminal keeps addresses in tables on one line.
    """
    isolate_cli(monkeypatch, tmp_path)
    monkeypatch.setenv("COLUMNS", "200")
    write_config(tmp_path, f"http://127.0.0.1:{free_port()}")
    runner = CliRunner()

    def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
        return runner.invoke(cli, list(args), env=env, prog_name="consortium")

    return invoke


def ok(result: Result) -> str:
    """The stdout of a command that must have succeeded."""
    assert result.exit_code == 0, (result.exit_code, result.output)
    assert "Traceback" not in result.output
    return result.stdout


def as_json(result: Result) -> Any:
    return json.loads(ok(result))


def one_line_error(result: Result, code: int) -> str:
    """The single ``error: ...`` line of a failed command, checking its exit code."""
    assert result.exit_code == code, (result.exit_code, result.output)
    assert result.stdout == ""
    assert "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


def usage_error(result: Result) -> str:
    """The one-line error of a command click refused while parsing its arguments (exit 2)."""
    return one_line_error(result, 2)


@dataclass
class Consortium:
    """A consortium founded through the CLI for one test."""

    run: Run
    address: dict[str, str]  # keystore name -> checksummed address
    deployment_file: Path


def _create_accounts(run: Run, names: list[str]) -> dict[str, str]:
    for name in names:
        ok(run("account", "new", name))
    return {row["name"]: row["address"] for row in as_json(run("account", "list", "--json"))}


@pytest.fixture
def consortium(run: Run, tmp_path: Path, anvil_node: AnvilNode) -> Iterator[Consortium]:
    """Three founders (bank, logistics, institute) plus a funded outsider (newcomer)."""
    write_config(tmp_path, anvil_node.url)
    address = _create_accounts(run, [*FOUNDERS, "newcomer"])
    chain = RpcChain(anvil_node.url, ANVIL_CHAIN_ID, poll_latency=0.01)
    try:
        for who in address.values():
            chain.fund(who, 10**18)
    finally:
        chain.close()
    founders = [f"--founder={n}:{name}:{roles}" for n, (name, roles) in FOUNDERS.items()]
    ok(run("deploy", *founders, "--account", "institute"))
    yield Consortium(run, address, tmp_path / "data" / "deployment.json")


# ============================================================================ without a chain


@pytest.mark.parametrize(
    ("words", "commands"),
    [
        (["deploy"], ["--founder", "--quorum-bps", "--account"]),
        (["member"], ["propose", "vote", "execute", "leave", "list", "show", "proposals"]),
        (["member", "propose"], ["add", "remove", "roles", "quorum"]),
        (["dataset"], ["register", "update-subjects", "list", "show"]),
        (["consent"], ["grant", "revoke", "cancel", "list", "show", "sign", "relay"]),
        (["consent", "sign"], ["--deadline", "--out", "--until"]),
        (["job"], ["list", "show", "close"]),
        (["compile"], ["--check"]),
    ],
)
def test_help_of_every_group(run: Run, words: list[str], commands: list[str]) -> None:
    # --help needs no configuration, not even a readable one.
    result = run("--config", "missing.toml", *words, "--help")
    text = ok(result)
    assert text.startswith(f"Usage: consortium {' '.join(words)} ")
    for command in commands:
        assert command in text


def test_usage_errors_need_no_chain(run: Run, tmp_path: Path) -> None:
    """Bad input is refused before the (here unreachable) node or any key is touched."""
    bad_checksum = STRANGER.replace("a", "A", 1)
    propose = ("member", "propose", "add")
    assert "not an address: '0x1234'" in usage_error(
        run(*propose, "0x1234", "--name", "X", "--roles", "provider", "-a", "bank")
    )
    assert "wrong EIP-55 checksum" in usage_error(
        run(*propose, bad_checksum, "--name", "X", "--roles", "provider", "-a", "bank")
    )
    assert "unknown role 'wizard'" in usage_error(
        run(*propose, STRANGER, "--name", "X", "--roles", "provider,wizard", "-a", "bank")
    )
    assert "at least one role" in usage_error(
        run(*propose, STRANGER, "--name", "X", "--roles", ",", "-a", "bank")
    )
    assert "Invalid value for 'PROPOSAL_ID'" in usage_error(run("member", "vote", "0", "-a", "b"))
    assert "Missing option '--account'" in usage_error(run("member", "leave"))

    grant = ("consent", "grant", "1", STRANGER, "--purpose", "credit")
    assert "'tomorrow' is not now, unix seconds, ISO 8601 or +N[smhdw]" in usage_error(
        run(*grant, "--until", "tomorrow", "-a", "bank")
    )
    assert "'+3y' is not now" in usage_error(run(*grant, "--until", "+3y", "-a", "bank"))
    too_long = one_line_error(
        run("consent", "grant", "1", STRANGER, "--purpose", "x" * 33, "--until", "+1d", "-a", "b"),
        2,
    )
    assert "purpose must be 1 to 32 bytes" in too_long

    assert "give exactly one of --schema or --schema-digest" in usage_error(
        run("dataset", "register", "shipments", "-a", "bank")
    )
    assert one_line_error(
        run("dataset", "register", "shipments", "--schema-digest", "abc", "-a", "bank"), 2
    ) == ("error: schema digest is not hex: 'abc'")
    assert "must be 32 bytes" in one_line_error(
        run("dataset", "update-subjects", "1", "ab" * 31, "-a", "bank"), 2
    )

    # deploy: malformed founders, each named in the message.
    assert one_line_error(run("deploy", "--founder", "nonsense", "-a", "x"), 2) == (
        "error: --founder takes ACCOUNT:NAME:ROLES, got 'nonsense'"
    )
    founder = f"{STRANGER}:Bank:provider,wizard"
    assert one_line_error(run("deploy", "--founder", founder, "-a", "x"), 2).startswith(
        f"error: --founder '{founder}': unknown role 'wizard'"
    )
    assert "unknown account 'bank'" in one_line_error(
        run("deploy", "--founder", "bank:Bank:provider", "-a", "x"), 2
    )
    twice = [f"--founder={STRANGER}:A:provider", f"--founder={STRANGER.lower()}:B:consumer"]
    assert one_line_error(run("deploy", *twice, "-a", "x"), 2) == (
        "error: the same account is named as founder twice"
    )

    # Ids and times beyond what the chain holds, in every consent command that takes them.
    beyond = str(2**256)
    for words in (
        ("consent", "grant", beyond, STRANGER, "--purpose", "p", "--until", "+1d", "-a", "x"),
        ("consent", "revoke", beyond, STRANGER, "--purpose", "p", "-a", "x"),
        ("consent", "cancel", beyond, STRANGER, "--purpose", "p", "-a", "x"),
        ("consent", "show", beyond, STRANGER, "--purpose", "p"),
        ("consent", "sign", beyond, STRANGER, "--purpose", "p", "--until", "+1d", "-a", "x"),
    ):
        assert one_line_error(run(*words), 2) == (
            f"error: Invalid value for 'DATASET_ID': {beyond} is beyond uint256 "
            f"(see 'consortium consent {words[1]} --help')"
        )
    assert f"'--dataset': {beyond} is beyond uint256" in usage_error(
        run("consent", "list", "--dataset", beyond)
    )
    for option in ("--from", "--until", "--deadline"):
        times = {"--until": "+1d", option: str(2**64)}
        sign = ("consent", "sign", "1", STRANGER, "--purpose", "p", "--out", "g.json", "-a", "x")
        assert one_line_error(run(*sign, *(x for kv in times.items() for x in kv)), 2) == (
            f"error: Invalid value for '{option}': time '{2**64}' is beyond uint64 seconds "
            "(see 'consortium consent sign --help')"
        )

    # consent sign: the output must be a new file in an existing directory.
    sign = ("consent", "sign", "1", STRANGER, "--purpose", "p", "--until", "+1d", "-a", "bank")
    assert "directory missing does not exist" in one_line_error(
        run(*sign, "--out", "missing/grant.json"), 2
    )
    (tmp_path / "taken.json").write_text("precious\n")
    assert one_line_error(run(*sign, "--out", "taken.json"), 2) == (
        "error: taken.json already exists; not overwriting it"
    )
    assert (tmp_path / "taken.json").read_text() == "precious\n"

    # A missing deployment is named before the network is tried; with one in place, the
    # command reaches for the network and says it is not there.
    missing = one_line_error(run("member", "list"), 2)
    assert missing.startswith("error: no deployment at ") and "consortium deploy" in missing
    assert "cannot reach http://127.0.0.1:" in one_line_error(run("chain", "fund", STRANGER), 1)


@pytest.mark.slow
def test_compile_check_reports_fresh_artifacts(run: Run) -> None:
    result = run("compile", "--check")
    assert ok(result) == "artifacts are up to date\n"
    assert result.stderr.startswith("compiling with ")


def test_compile_check_reports_stale_artifacts(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stale artifact is exit 1 with the names; ``--check`` writes nothing."""

    def compile_to_something_else(compiler: object = None) -> dict[str, dict[str, Any]]:
        return {"ConsentRegistry": {"abi": []}}

    written: list[object] = []
    monkeypatch.setattr(compile_module, "find_compiler", lambda: _FakeCompiler())
    monkeypatch.setattr(compile_module, "compile_contracts", compile_to_something_else)
    monkeypatch.setattr(compile_module, "write_artifacts", written.append)
    result = run("compile", "--check")
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        "compiling with fake",
        "error: stale artifacts: ConsentRegistry; run `consortium compile`",
    ]
    assert written == []


class _FakeCompiler:
    def describe(self) -> str:
        return "fake"


# ============================================================================ deploy


@pytest.mark.anvil
def test_deploy_records_the_consortium_and_never_overwrites_it(consortium: Consortium) -> None:
    run, address = consortium.run, consortium.address
    recorded = json.loads(consortium.deployment_file.read_text())
    assert recorded["chain_id"] == ANVIL_CHAIN_ID
    assert recorded["deployer"] == address["institute"]
    assert len({recorded["registry"], recorded["consents"], recorded["ledger"]}) == 3

    members = as_json(run("member", "list", "--json"))
    assert members == [
        {
            "address": address[who],
            "name": name,
            "roles": roles,
            "active": True,
            "joinedAt": members[0]["joinedAt"],
        }
        for who, (name, roles) in FOUNDERS.items()
    ]

    # A second deploy is refused before anything is sent; the record stays byte for byte.
    before = consortium.deployment_file.read_bytes()
    again = run("deploy", "--founder", "bank:Bank:provider", "-a", "bank")
    assert one_line_error(again, 2) == (
        f"error: {consortium.deployment_file} already records a deployment; "
        "move it away to deploy a new consortium"
    )
    assert consortium.deployment_file.read_bytes() == before

    # Without a deployment record, the commands that need one say how to get one.
    missing = run("member", "list", env={"CONSORTIUM_DEPLOYMENT_FILE": "elsewhere.json"})
    assert one_line_error(missing, 2) == (
        f"error: no deployment at {consortium.deployment_file.parent / 'elsewhere.json'}: "
        "run `consortium deploy` first"
    )


@pytest.mark.anvil
def test_deploy_refusal_by_the_chain_records_nothing(
    run: Run, tmp_path: Path, anvil_node: AnvilNode
) -> None:
    write_config(tmp_path, anvil_node.url)
    address = _create_accounts(run, ["bank"])
    chain = RpcChain(anvil_node.url, ANVIL_CHAIN_ID)
    chain.fund(address["bank"], 10**18)
    chain.close()
    long_name = "n" * 65
    result = run("deploy", "--founder", f"bank:{long_name}:provider", "-a", "bank")
    assert one_line_error(result, 1) == "error: Member name must be 1 to 64 bytes long."
    assert not (tmp_path / "data" / "deployment.json").exists()


# ============================================================================ member


@pytest.mark.anvil
def test_membership_proposals_votes_and_refusals(consortium: Consortium) -> None:
    run, a = consortium.run, consortium.address

    proposed = run(
        "member",
        "propose",
        "add",
        "newcomer",
        "--name",
        "Newcomer",
        "--roles",
        "consumer",
        "-a",
        "bank",
    )
    assert ok(proposed) == "proposal 1: open, waiting for approvals\n"
    # Re-running the proposal finds the open one instead of opening a duplicate.
    again = run(
        "member",
        "propose",
        "add",
        a["newcomer"].lower(),
        "--name",
        "Newcomer",
        "--roles",
        "consumer",
        "-a",
        "bank",
    )
    assert ok(again) == (
        "proposal 1: already open for this change, waiting for approvals (1/2); nothing sent\n"
    )
    (pending,) = as_json(run("member", "proposals", "--pending", "--json"))
    assert pending == {
        "id": 1,
        "kind": "add_member",
        "status": "pending",
        "change": f"add Newcomer {a['newcomer']} as consumer",
        "account": a["newcomer"],
        "name": "Newcomer",
        "roles": "consumer",
        "quorumBps": 0,
        "proposer": a["bank"],
        "createdAt": pending["createdAt"],
        "expiresAt": pending["createdAt"] + 604800,
        "approvals": 1,
        "needed": 2,
    }

    # Voting twice is the chain's refusal, with the contract's own words.
    twice = run("member", "vote", "1", "-a", "bank")
    assert one_line_error(twice, 1) == f"error: {a['bank']} has already approved proposal 1."
    assert ok(run("member", "vote", "1", "-a", "logistics")) == "proposal 1: executed\n"
    late = run("member", "vote", "1", "-a", "institute")
    assert one_line_error(late, 1) == "error: Proposal 1 has already been executed."
    rerun = run(
        "member",
        "propose",
        "add",
        "newcomer",
        "--name",
        "Newcomer",
        "--roles",
        "consumer",
        "-a",
        "bank",
    )
    assert one_line_error(rerun, 1) == f"error: {a['newcomer']} is already an active member."
    assert one_line_error(run("member", "vote", "7", "-a", "bank"), 1) == (
        "error: Proposal 7 does not exist."
    )

    shown = as_json(run("member", "show", "newcomer", "--json"))
    assert (shown["address"], shown["roles"], shown["active"]) == (a["newcomer"], "consumer", True)

    # Change roles (four members now: three approvals are needed); a re-run of the proposal
    # by another member counts as that member's approval.
    ok(
        run(
            "member",
            "propose",
            "roles",
            "newcomer",
            "--roles",
            "provider,consumer",
            "-a",
            "institute",
        )
    )
    second = run(
        "member", "propose", "roles", "newcomer", "--roles", "consumer,provider", "-a", "logistics"
    )
    assert ok(second) == (
        "proposal 2 is already open for this change; approving it\n"
        "proposal 2: open, waiting for approvals\n"
    )
    assert ok(run("member", "vote", "2", "-a", "bank")) == "proposal 2: executed\n"
    assert as_json(run("member", "show", a["newcomer"], "--json"))["roles"] == "provider,consumer"
    unchanged = run(
        "member", "propose", "roles", "newcomer", "--roles", "consumer,provider", "-a", "bank"
    )
    assert "already has roles" in one_line_error(unchanged, 1)

    assert ok(run("member", "propose", "quorum", "2500", "-a", "bank")) == (
        "proposal 3: open, waiting for approvals\n"
    )
    ok(run("member", "propose", "remove", "newcomer", "-a", "bank"))
    assert ok(run("member", "vote", "4", "-a", "logistics")) == (
        "proposal 4: open, waiting for approvals\n"
    )
    early = run("member", "execute", "4", "-a", "institute")
    assert one_line_error(early, 1) == (
        "error: Proposal 4 has not reached its quorum yet: 2 of 3 approvals."
    )
    # Once the institute leaves, two approvals of three active members pass the quorum.
    assert ok(run("member", "leave", "-a", "institute")) == (
        f"{a['institute']} left the consortium\n"
    )
    assert ok(run("member", "execute", "4", "-a", "bank")) == "proposal 4: executed\n"
    assert one_line_error(run("member", "leave", "-a", "newcomer"), 1) == (
        f"error: {a['newcomer']} is not an active member."
    )

    active = as_json(run("member", "list", "--json"))
    assert [m["address"] for m in active] == [a["bank"], a["logistics"]]
    everyone = as_json(run("member", "list", "--all", "--json"))
    assert [(m["name"], m["active"]) for m in everyone] == [
        ("Bank A", True),
        ("Logistics B", True),
        ("Research Institute", False),
        ("Newcomer", False),
    ]
    statuses = [p["status"] for p in as_json(run("member", "proposals", "--json"))]
    assert statuses == ["executed", "executed", "pending", "executed"]

    # For people: tables and aligned fields, no JSON.
    table = ok(run("member", "list", "--all"))
    assert table.splitlines()[0].strip() == "members"
    for text in ("name", "address", "roles", "active", "joined", "Research Institute"):
        assert text in table
    assert a["bank"] in table
    assert "provider,consumer" in table
    proposals_table = ok(run("member", "proposals"))
    assert f"set roles of {a['newcomer']} to provider,consumer" in proposals_table
    assert "set quorum to 2500 bps" in proposals_table
    assert "1/2" in proposals_table
    shown_text = ok(run("member", "show", "institute"))
    assert shown_text.splitlines() == [
        "name     Research Institute",
        f"address  {a['institute']}",
        "roles    coordinator,auditor",
        "active   no",
        shown_text.splitlines()[4],
    ]
    assert shown_text.splitlines()[4].startswith("joined   20")
    assert "has never been a member" in one_line_error(run("member", "show", STRANGER), 2)


# ============================================================================ dataset


@pytest.mark.anvil
def test_datasets_register_update_list_show(consortium: Consortium, tmp_path: Path) -> None:
    run, a = consortium.run, consortium.address
    schema = {"fields": [{"name": "shipment_id", "type": "string"}], "version": 1}
    (tmp_path / "schema.json").write_text(json.dumps(schema, indent=4))
    register = ("dataset", "register", "shipments", "--schema", "schema.json")

    assert ok(run(*register, "-a", "logistics")) == "dataset 1: registered 'shipments'\n"
    assert ok(run(*register, "-a", "logistics")) == (
        "dataset 1: 'shipments' is already registered; nothing sent\n"
    )
    other_root = run(*register, "--subjects-root", ROOT_A, "-a", "logistics")
    assert "already registered with another subjects root" in one_line_error(other_root, 2)
    digest = "0x" + "12" * 32
    assert ok(
        run(
            "dataset",
            "register",
            "loans",
            "--schema-digest",
            digest,
            "--subjects-root",
            ROOT_A,
            "-a",
            "bank",
        )
    ) == ("dataset 2: registered 'loans'\n")
    assert one_line_error(run(*register, "-a", "institute"), 1) == (
        f"error: {a['institute']} is not an active member with the PROVIDER role."
    )
    (tmp_path / "broken.json").write_text("{")
    broken = run("dataset", "register", "x", "--schema", "broken.json", "-a", "logistics")
    assert one_line_error(broken, 2) == (
        "error: schema file broken.json is not JSON "
        "(Expecting property name enclosed in double quotes at column 2)"
    )

    update = ("dataset", "update-subjects", "1")
    # Registration is version 1; each new root is the next version, an unchanged one is not.
    assert ok(run(*update, ROOT_A, "-a", "logistics")) == "dataset 1: subjects root version 2\n"
    assert ok(run(*update, "0x" + ROOT_A, "-a", "logistics")) == (
        "dataset 1: already at this subjects root (version 2); nothing sent\n"
    )
    assert ok(run(*update, ROOT_B, "-a", "logistics")) == "dataset 1: subjects root version 3\n"
    assert one_line_error(run(*update, ROOT_A, "-a", "bank"), 1) == (
        f"error: {a['bank']} does not own dataset 1."
    )
    assert one_line_error(run("dataset", "update-subjects", "9", ROOT_A, "-a", "bank"), 1) == (
        "error: Dataset 9 does not exist."
    )

    shown = as_json(run("dataset", "show", "1", "--json"))
    assert shown == {
        "id": 1,
        "name": "shipments",
        "owner": a["logistics"],
        "schemaDigest": "0x" + json_digest(schema).hex(),
        "subjectsRoot": ROOT_B,
        "subjectsVersion": 3,
        "registeredAt": shown["registeredAt"],
    }
    listed = as_json(run("dataset", "list", "--json"))
    assert listed[0] == shown
    assert listed[1]["schemaDigest"] == digest
    assert listed[1]["subjectsRoot"] == "0x" + ROOT_A
    assert one_line_error(run("dataset", "show", "3"), 1) == "error: Dataset 3 does not exist."

    table = ok(run("dataset", "list"))
    assert table.splitlines()[0].strip() == "datasets"
    for text in ("id", "name", "owner", "schema", "subjects version", "shipments", a["bank"]):
        assert text in table
    lines = ok(run("dataset", "show", "2")).splitlines()
    assert lines[:6] == [
        "id        2",
        "name      loans",
        f"owner     {a['bank']}",
        f"schema    {'12' * 32}",
        f"subjects  {ROOT_A}",
        "version   1",
    ]


# ============================================================================ consent


@pytest.mark.anvil
def test_consents_grant_list_show_revoke(consortium: Consortium) -> None:
    run, a = consortium.run, consortium.address
    ok(run("dataset", "register", "shipments", "--schema-digest", ROOT_A, "-a", "logistics"))
    purpose = ("--purpose", "credit-scoring")

    granted = run("consent", "grant", "1", "bank", *purpose, "--until", "+30d", "-a", "logistics")
    assert ok(granted).startswith("consent granted: dataset 1 to bank for 'credit-scoring' from ")
    shown = as_json(run("consent", "show", "1", "bank", *purpose, "--json"))
    assert shown["validUntil"] - shown["validFrom"] == 30 * DAY
    assert shown == {
        "datasetId": 1,
        "grantee": a["bank"],
        "purpose": "credit-scoring",
        "validFrom": shown["validFrom"],
        "validUntil": shown["validUntil"],
        "grantedAt": shown["grantedAt"],
        "revoked": False,
        "state": "valid",
    }
    later = ("--from", "+1d", "--until", "2099-12-31T23:59:59")
    ok(
        run(
            "consent", "grant", "1", a["institute"], "--purpose", "audit", *later, "-a", "logistics"
        )
    )

    # The chain's refusals, in its own words.
    not_owner = run("consent", "grant", "1", "bank", *purpose, "--until", "+1d", "-a", "bank")
    assert one_line_error(not_owner, 1) == f"error: {a['bank']} does not own dataset 1."
    outsider = run(
        "consent", "grant", "1", "newcomer", *purpose, "--until", "+1d", "-a", "logistics"
    )
    assert one_line_error(outsider, 1) == (
        f"error: Grantee {a['newcomer']} is not an active member."
    )
    past = run(
        "consent",
        "grant",
        "1",
        "bank",
        *purpose,
        "--from",
        "946684800",
        "--until",
        "2000-01-02",
        "-a",
        "logistics",
    )
    assert one_line_error(past, 1) == (
        "error: Validity window from 946684800 until 946771200 is empty or already over."
    )

    listed = as_json(run("consent", "list", "--json"))
    assert [(c["grantee"], c["purpose"], c["state"]) for c in listed] == [
        (a["bank"], "credit-scoring", "valid"),
        (a["institute"], "audit", "pending"),
    ]
    assert listed[1]["validUntil"] == 4102444799
    assert as_json(run("consent", "list", "--dataset", "1", "--json")) == listed

    assert ok(run("consent", "revoke", "1", "bank", *purpose, "-a", "logistics")) == (
        "consent revoked: dataset 1 to bank for 'credit-scoring'\n"
    )
    again = run("consent", "revoke", "1", "bank", *purpose, "-a", "logistics")
    assert "is already revoked" in one_line_error(again, 1)
    assert as_json(run("consent", "show", "1", "bank", *purpose, "--json"))["state"] == "revoked"
    never = run("consent", "show", "1", "logistics", *purpose)
    assert one_line_error(never, 2) == (
        "error: no consent for dataset 1, " + a["logistics"] + ", 'credit-scoring'"
    )

    table = ok(run("consent", "list"))
    assert table.splitlines()[0].strip() == "consents"
    for text in ("dataset", "grantee", "purpose", "from", "until", "state", "revoked", "pending"):
        assert text in table
    assert "2099-12-31T23:59:59Z" in table
    lines = ok(run("consent", "show", "1", "institute", "--purpose", "audit")).splitlines()
    assert lines[:4] == [
        "datasetId  1",
        f"grantee    {a['institute']}",
        "purpose    audit",
        "state      pending",
    ]
    assert lines[5] == "until      2099-12-31T23:59:59Z"


@pytest.mark.anvil
def test_signed_grant_is_relayed_by_anyone_once(consortium: Consortium, tmp_path: Path) -> None:
    run, a = consortium.run, consortium.address
    ok(run("dataset", "register", "shipments", "--schema-digest", ROOT_A, "-a", "logistics"))
    sign = ("consent", "sign", "1", "bank", "--purpose", "credit", "--until", "+30d")

    assert ok(run(*sign, "--out", "grant.json", "-a", "logistics")) == (
        "signed grant written to grant.json (nonce 0)\n"
    )
    grant_file = tmp_path / "grant.json"
    signed = json.loads(grant_file.read_text())
    assert signed["format"] == "consortium.consent-grant/1"
    assert (signed["signer"], signed["grantee"], signed["nonce"]) == (
        a["logistics"],
        a["bank"],
        0,
    )
    assert signed["chainId"] == ANVIL_CHAIN_ID
    assert (
        signed["verifyingContract"]
        == json.loads(consortium.deployment_file.read_text())["consents"]
    )
    assert signed["validUntil"] - signed["validFrom"] == 30 * DAY
    assert signed["deadline"] - signed["validFrom"] == 7 * DAY

    before = grant_file.read_bytes()
    assert one_line_error(run(*sign, "--out", "grant.json", "-a", "logistics"), 2) == (
        "error: grant.json already exists; not overwriting it"
    )
    assert grant_file.read_bytes() == before
    not_owner = run(*sign, "--out", "bank.json", "-a", "bank")
    assert one_line_error(not_owner, 2) == (
        f"error: {a['bank']} does not own dataset 1 (its owner is {a['logistics']}); "
        "only the owner's signature grants consent"
    )
    assert not (tmp_path / "bank.json").exists()

    # Files that were damaged or edited are refused before anything is sent.
    def edited(name: str, **changes: object) -> str:
        (tmp_path / name).write_text(json.dumps({**signed, **changes}))
        return name

    relay = ("consent", "relay")
    longer = edited("longer.json", validUntil=signed["validUntil"] + DAY)
    assert one_line_error(run(*relay, longer, "-a", "newcomer"), 2) == (
        f"error: longer.json: the signature does not match the grant's contents and signer "
        f"{a['logistics']} (damaged or edited file)"
    )
    garbage = edited("garbage.json", signature="0x" + "ff" * 65)
    assert "does not match" in one_line_error(run(*relay, garbage, "-a", "newcomer"), 2)
    short = edited("short.json", signature="0x1234")
    assert one_line_error(run(*relay, short, "-a", "newcomer"), 2) == (
        "error: signed grant field 'signature' must be 65 bytes of hex"
    )
    elsewhere = edited("elsewhere.json", verifyingContract=STRANGER)
    assert "not this deployment's" in one_line_error(run(*relay, elsewhere, "-a", "newcomer"), 2)
    other_chain = edited("chain.json", chainId=1)
    assert "was signed for chain 1" in one_line_error(run(*relay, other_chain, "-a", "newcomer"), 2)
    unsigned = {k: v for k, v in signed.items() if k != "signature"}
    (tmp_path / "unsigned.json").write_text(json.dumps(unsigned))
    assert one_line_error(run(*relay, "unsigned.json", "-a", "newcomer"), 2) == (
        "error: signed grant lacks field 'signature'"
    )
    # Numbers beyond their field's Solidity type, each named with its bound.
    for field, bits in [
        ("chainId", 256),
        ("datasetId", 256),
        ("validFrom", 64),
        ("validUntil", 64),
        ("nonce", 256),
        ("deadline", 256),
    ]:
        beyond = edited(f"{field}.json", **{field: 2**bits})
        assert one_line_error(run(*relay, beyond, "-a", "newcomer"), 2) == (
            f"error: signed grant field {field!r} must be an integer from 0 to 2**{bits}-1 "
            f"(uint{bits})"
        )
    negative = edited("negative.json", nonce=-1)
    assert "field 'nonce' must be an integer from 0" in one_line_error(
        run(*relay, negative, "-a", "newcomer"), 2
    )
    (tmp_path / "notjson.json").write_text("not json")
    assert one_line_error(run(*relay, "notjson.json", "-a", "x"), 2) == (
        "error: signed grant notjson.json is not JSON (Expecting value at column 1)"
    )
    assert "does not exist" in usage_error(run(*relay, "absent.json", "-a", "newcomer"))
    assert one_line_error(run("consent", "show", "1", "bank", "--purpose", "credit"), 2).startswith(
        "error: no consent for dataset 1"
    )

    # An outsider relays (and pays); the owner grants. A second relay sends nothing.
    assert ok(run(*relay, "grant.json", "-a", "newcomer")) == (
        f"consent granted by {a['logistics']}: dataset 1 to {a['bank']} for 'credit'\n"
    )
    shown = as_json(run("consent", "show", "1", "bank", "--purpose", "credit", "--json"))
    assert (shown["state"], shown["validFrom"], shown["validUntil"]) == (
        "valid",
        signed["validFrom"],
        signed["validUntil"],
    )
    assert ok(run(*relay, "grant.json", "-a", "institute")) == (
        f"consent already granted by {a['logistics']}: dataset 1 to {a['bank']} "
        "for 'credit'; nothing sent\n"
    )

    # Two grants signed for the consent as it is: only the first relayed one can count.
    audit = ("consent", "sign", "1", "institute", "--purpose", "audit", "-a", "logistics")
    ok(run(*audit, "--until", "+1d", "--out", "audit.json"))
    assert ok(run(*audit, "--until", "+2d", "--out", "audit2.json")).endswith("(nonce 0)\n")
    ok(run(*relay, "audit2.json", "-a", "bank"))
    assert one_line_error(run(*relay, "audit.json", "-a", "bank"), 1) == (
        "error: audit.json: superseded: the consent changed or its signed grants were "
        "cancelled since it was signed (nonce 0, now 1)"
    )

    # Past its deadline, the chain refuses it.
    late = ("consent", "sign", "1", "institute", "--purpose", "late", "--until", "+1d")
    ok(run(*late, "--deadline", "1", "--out", "late.json", "-a", "logistics"))
    assert one_line_error(run(*relay, "late.json", "-a", "bank"), 1) == (
        "error: The signed grant expired at 1."
    )
    # Revoked after relaying: relaying the same file again does not silently re-grant.
    ok(run("consent", "revoke", "1", "bank", "--purpose", "credit", "-a", "logistics"))
    assert one_line_error(run(*relay, "grant.json", "-a", "bank"), 1) == (
        "error: grant.json: superseded: the consent changed or its signed grants were "
        "cancelled since it was signed (nonce 0, now 2)"
    )
    shown = as_json(run("consent", "show", "1", "bank", "--purpose", "credit", "--json"))
    assert shown["state"] == "revoked"


@pytest.mark.anvil
def test_signed_grants_die_with_any_later_change_of_their_consent(
    consortium: Consortium, tmp_path: Path
) -> None:
    """A signed grant handed out before a revocation, a newer grant or a cancellation cannot
    bring its consent back or roll it back: the relay is refused before anything is sent."""
    run, a = consortium.run, consortium.address
    ok(run("dataset", "register", "shipments", "--schema-digest", ROOT_A, "-a", "logistics"))
    purpose = ("--purpose", "credit")
    sign = ("consent", "sign", "1", "bank", *purpose, "-a", "logistics")
    relay = ("consent", "relay")
    show = ("consent", "show", "1", "bank", *purpose, "--json")

    # Signed, then revoked: the old signature does not revive the consent.
    ok(run("consent", "grant", "1", "bank", *purpose, "--until", "+1d", "-a", "logistics"))
    ok(run(*sign, "--until", "+30d", "--out", "before-revoke.json"))
    ok(run("consent", "revoke", "1", "bank", *purpose, "-a", "logistics"))
    assert one_line_error(run(*relay, "before-revoke.json", "-a", "newcomer"), 1) == (
        "error: before-revoke.json: superseded: the consent changed or its signed grants were "
        "cancelled since it was signed (nonce 1, now 2)"
    )
    assert as_json(run(*show))["state"] == "revoked"

    # Signed, then granted directly with another window: no rollback to the signed one.
    ok(run(*sign, "--until", "+30d", "--out", "before-grant.json"))
    ok(run("consent", "grant", "1", "bank", *purpose, "--until", "+2d", "-a", "logistics"))
    window = as_json(run(*show))
    assert "(nonce 2, now 3)" in one_line_error(run(*relay, "before-grant.json", "-a", "bank"), 1)
    assert as_json(run(*show)) == window

    # Signed and handed out, then cancelled: the consent stays as it is, the file is void.
    ok(run(*sign, "--until", "+30d", "--out", "handed-out.json"))
    cancel = ("consent", "cancel", "1", "bank", *purpose)
    assert ok(run(*cancel, "-a", "logistics")) == (
        "signed grants cancelled: dataset 1 to bank for 'credit'; the consent is unchanged, "
        "and grants signed from now on carry nonce 4\n"
    )
    assert as_json(run(*show)) == window
    assert "(nonce 3, now 4)" in one_line_error(run(*relay, "handed-out.json", "-a", "bank"), 1)
    assert one_line_error(run(*cancel, "-a", "bank"), 1) == (
        f"error: {a['bank']} does not own dataset 1."
    )
    # A consent never granted can have its signed grants cancelled too.
    never = ("consent", "cancel", "1", "institute", "--purpose", "audit", "-a", "logistics")
    assert ok(run(*never)).endswith("grants signed from now on carry nonce 1\n")

    # Signed after all that, the grant is relayed once; the second relay sends nothing.
    assert ok(run(*sign, "--until", "+30d", "--out", "fresh.json")).endswith("(nonce 4)\n")
    ok(run(*relay, "fresh.json", "-a", "institute"))
    fresh = json.loads((tmp_path / "fresh.json").read_text())
    assert as_json(run(*show))["validUntil"] == fresh["validUntil"]
    assert ok(run(*relay, "fresh.json", "-a", "institute")).endswith("; nothing sent\n")


@pytest.mark.anvil
def test_signing_keys_and_json_flags(consortium: Consortium) -> None:
    """A wrong password or unknown account is a usage error; every read takes ``--json``."""
    run = consortium.run
    wrong = run("member", "leave", "-a", "bank", env={"CONSORTIUM_PASSWORD": "nope"})
    assert one_line_error(wrong, 2) == "error: wrong password for account 'bank'"
    assert one_line_error(run("member", "leave", "-a", "nobody"), 2).startswith(
        "error: unknown account 'nobody'"
    )
    # The signing account may come from the environment.
    left = run("member", "leave", env={"CONSORTIUM_ACCOUNT": "bank"})
    assert ok(left) == f"{consortium.address['bank']} left the consortium\n"
    for words in (
        ("member", "list"),
        ("member", "proposals"),
        ("member", "show", "institute"),
        ("dataset", "list"),
        ("consent", "list"),
    ):
        json.loads(ok(run(*words, "--json")))


# ============================================================================ jobs


def _create_job(consortium: Consortium, url: str) -> int:
    """A job of the institute's that trains on bank's own dataset. Jobs are created by the
    coordinator that runs them (no command does that alone), so here through the Python API,
    with the institute's key from the keystore the commands use."""
    a = consortium.address
    ok(consortium.run("dataset", "register", "loans", "--schema-digest", "ab" * 32, "-a", "bank"))
    chain = RpcChain(url, ANVIL_CHAIN_ID, poll_latency=0.01)
    try:
        keystore = Keystore(consortium.deployment_file.parent / "keystore", 1024)
        institute = keystore.signer("institute", "pw", ANVIL_CHAIN_ID)
        ledger = Ledger(chain, Deployment.load(consortium.deployment_file), institute)
        return ledger.jobs.create(
            purpose="credit-scoring", model_spec_digest="01" * 32, initial_model_digest="02" * 32,
            consumer=a["bank"], participants=[a["bank"]], dataset_ids=[1],
        )  # fmt: skip
    finally:
        chain.close()


@pytest.mark.anvil
def test_jobs_list_show_and_close(consortium: Consortium, anvil_node: AnvilNode) -> None:
    run, a = consortium.run, consortium.address
    assert as_json(run("job", "list", "--json")) == []
    job_id = _create_job(consortium, anvil_node.url)

    (listed,) = as_json(run("job", "list", "--json"))
    assert (listed["id"], listed["status"], listed["purpose"], listed["rounds"]) == (
        job_id, "open", "credit-scoring", 0,
    )  # fmt: skip
    assert (listed["coordinator"], listed["consumer"]) == (a["institute"], a["bank"])
    assert (listed["participants"], listed["datasets"]) == ([a["bank"]], [1])
    assert (listed["headModel"], listed["lastAnchorBlock"]) == ("0x" + "02" * 32, None)
    assert listed["modelUses"] == 0
    assert as_json(run("job", "show", str(job_id), "--json")) == {
        **listed, "checkStillHolds": True,
    }  # fmt: skip
    shown = ok(run("job", "show", str(job_id)))
    assert "status       open\n" in shown and "rounds       0 anchored\n" in shown
    assert "next anchor  fast path" in shown and f"participant  {a['bank']}\n" in shown
    assert "model uses   0 recorded\n" in shown
    assert "credit-scoring" in ok(run("job", "list"))

    # Only the job's coordinator closes it, and closing twice sends nothing.
    refused = one_line_error(run("job", "close", str(job_id), "-a", "bank"), 1)
    assert f"{a['bank']} is not the coordinator of job {job_id}" in refused
    closed = ok(run("job", "close", str(job_id), "-a", "institute"))
    assert closed == f"job {job_id} closed after 0 rounds; head model {'02' * 32}\n"
    again = ok(run("job", "close", str(job_id), "-a", "institute"))
    assert again == f"job {job_id} is already closed after 0 rounds; nothing sent\n"
    assert as_json(run("job", "show", str(job_id), "--json"))["status"] == "closed"
    assert "next anchor  none: the job is closed" in ok(run("job", "show", str(job_id)))

    assert "Job 99 does not exist" in one_line_error(run("job", "show", "99"), 1)
