"""The SME-credit scenario: a bank and a logistics platform train a credit model on each other's
columns (``hetero-lr/1``), a research institute holding the Paillier key; this module sets the
job up and reloads it.

The institute (coordinator and auditor; the protocol's arbiter) and the bank (provider and
consumer; the guest, with the labels) found the consortium and vote the platform (provider;
the host) and a regulator (auditor) in. Each data owner registers its dataset with the root of
its consent tree (:class:`~consortium.crypto.subjects.SubjectTree`) over the businesses that
consented, and the platform consents to the bank's use of its data for :data:`PURPOSE`; the
bank's own dataset needs no consent. The two then run the PSI over their consented businesses
only; each keeps its rows in the shared order, and the bank names the held-out evaluation rows
by their positions in it, so that no id crosses. The institute makes the arbiter's key, and the
job's model spec commits to the terms, the intersection, each dataset's subjects version and
the key; the initial model is each data party's salted commitment to its zero weights.

A later job of the same consortium on the same datasets (``set_up(..., after=run)``) skips
the founding, the votes, the registrations and the grant: each data party rebuilds its consent
tree of the version now in force from the seed and its withdrawal record
(:mod:`consortium.scenarios.sme_withdrawal`), and the PSI, under keys of the new job, leaves
out every business that withdrew.

What a resumed run needs is recorded in ``scenario.json`` (and the deployment in
``deployment.json``); each party's own records (its rows of the intersection, the opening of
its initial commitment, its PSI key, the arbiter's key) stay in its directory.
:func:`roles_for` rebuilds the tables the protocol trains on from the seed or the recorded
files and checks them against the job's model spec. The parties' keys and subject secrets
derive from the seed, their PSI keys from the seed and the job's id: local development chains
only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from numpy.typing import NDArray

from consortium.chain.base import Chain
from consortium.crypto.canonical import json_digest
from consortium.crypto.digests import from_hex32, hex32
from consortium.errors import UsageError
from consortium.files import write_text_atomically
from consortium.fl.block_lr import DEFAULT_DESCENT, DescentConfig
from consortium.fl.party_table import PartyTable
from consortium.fl.standardize import Standardizer
from consortium.fl.vertical import hetero_lr, psi
from consortium.fl.vertical.paillier import KeyPair
from consortium.fl.vertical.roles import Guest, Host
from consortium.fl.vertical.terms import (
    GUEST,
    HOST,
    MIN_KEY_BITS,
    PROTOCOL,
    HeteroLRError,
    Terms,
)
from consortium.jsonio import read_json_file, read_regular_file
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment
from consortium.ledger.roles import Role
from consortium.protocol.vertical.disclosure import psi_context
from consortium.protocol.vertical.party import VerticalParty
from consortium.protocol.vertical.round import joint_model
from consortium.scenarios.keys import require_local_chain
from consortium.scenarios.parties import PRIVATE_FILE, Party, found, vote_in
from consortium.scenarios.party_secrets import (
    SUBJECT_SECRET_FILE,
    arbiter_key,
    arbiter_key_digest,
    load_arbiter_key,
    psi_key,
    read_subject_secret,
    subject_secret,
)
from consortium.scenarios.sme_data import (
    DEFAULT_BUSINESSES,
    DEFAULT_PLATFORM_ONLY,
    MAX_BUSINESSES,
    SmeData,
)
from consortium.scenarios.sme_inputs import (
    MAX_WITHDRAWALS_BYTES,
    WITHDRAWALS_FILE,
    PartyFile,
    Withdrawals,
    consent_tree,
    consenting_rows,
    read_inputs,
)
from consortium.store.artifacts import ArtifactError, ArtifactStore

PURPOSE = "sme-credit-scoring"
SCENARIO_FILE = "scenario.json"
DEPLOYMENT_FILE = "deployment.json"
SCENARIO_FORMAT = "consortium.simulation.sme-credit/1"
ALIGNMENT_FORMAT = "consortium.sme-credit.alignment/1"
MAX_SCENARIO_BYTES = 2**20  # settings, a deployment, digests and two paths: a few kB
WHAT = "the SME-credit simulation"
INSTITUTE, BANK, PLATFORM, REGULATOR = "institute", "bank", "platform", "regulator"
DATA_PARTIES = (BANK, PLATFORM)
PARTIES = (INSTITUTE, BANK, PLATFORM, REGULATOR)
CONSENT_DAYS = 365
T = TypeVar("T")
_INTEGER_SETTINGS = ("businesses", "seed", "keyBits", "maxRounds", "batchSize")
_SETTINGS = (*_INTEGER_SETTINGS, "learningRate", "consentShare")
_SCENARIO_FIELDS = (
    "format",
    "settings",
    "deployment",
    "jobId",
    "datasets",
    "modelSpec",
    "initialModel",
    "alignments",
    "dataFiles",
)


@dataclass(frozen=True)
class SmeSettings:
    """What a run is set up with; the job's model spec commits to all of it (``max_rounds`` is
    its ``maxEpochs``: the convergence rule may stop the job earlier)."""

    businesses: int = DEFAULT_BUSINESSES
    seed: int = 7
    key_bits: int = 2048
    max_rounds: int = DEFAULT_DESCENT.max_epochs
    batch_size: int = DEFAULT_DESCENT.batch_size
    learning_rate: float = DEFAULT_DESCENT.learning_rate
    consent_share: float = 0.95  # of each side's businesses

    def __post_init__(self) -> None:
        most = MAX_BUSINESSES - DEFAULT_PLATFORM_ONLY
        if not 1 <= self.businesses <= most:
            raise UsageError(f"businesses must be 1 to {most:,}, not {self.businesses}")
        if self.seed < 0 or self.max_rounds < 1 or self.key_bits < MIN_KEY_BITS:
            raise UsageError(
                f"need seed >= 0, max_rounds >= 1 and key_bits >= {MIN_KEY_BITS}; got "
                f"{self.seed}, {self.max_rounds}, {self.key_bits}"
            )
        if not (math.isfinite(self.consent_share) and 0 < self.consent_share <= 1):
            raise UsageError(f"consent_share must be in (0, 1], not {self.consent_share}")
        if self.batch_size < 1 or not (
            math.isfinite(self.learning_rate) and self.learning_rate > 0
        ):
            raise UsageError(
                f"need batch_size >= 1 and a positive learning_rate; got {self.batch_size}, "
                f"{self.learning_rate}"
            )

    def descent(self) -> DescentConfig:
        """The descent both data parties run: the defaults, with this round limit, batch
        size, learning rate and seed."""
        return replace(
            DEFAULT_DESCENT, max_epochs=self.max_rounds, batch_size=self.batch_size,
            learning_rate=self.learning_rate, seed=self.seed,
        )  # fmt: skip

    def to_json(self) -> dict[str, int | float]:
        return {
            "businesses": self.businesses,
            "seed": self.seed,
            "keyBits": self.key_bits,
            "maxRounds": self.max_rounds,
            "batchSize": self.batch_size,
            "learningRate": self.learning_rate,
            "consentShare": self.consent_share,
        }

    @classmethod
    def from_json(cls, value: object, source: str) -> SmeSettings:
        """The settings a scenario file recorded; anything else is a usage error."""
        if not isinstance(value, dict) or sorted(value) != sorted(_SETTINGS):
            raise UsageError(f"{source}: settings must hold exactly {', '.join(_SETTINGS)}")
        for name in _INTEGER_SETTINGS:
            _require_int(value[name], f"{source}: settings.{name}", low=0)
        for name in ("learningRate", "consentShare"):
            number = value[name]
            if not isinstance(number, int | float) or isinstance(number, bool):
                raise UsageError(f"{source}: settings.{name} must be a number, got {number!r}")
        try:
            return cls(*(value[name] for name in _SETTINGS))
        except UsageError as exc:
            raise UsageError(f"{source}: settings: {exc}") from None


@dataclass(frozen=True)
class Alignment:
    """A data party's record of the intersection: the rows of its table in the order both
    share (``rows[k]`` is row k of the aligned table), the positions in that order the bank
    held out for evaluation, and the PSI's commitment as this party computed it."""

    rows: tuple[int, ...]
    evaluation: tuple[int, ...]
    commitment: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "format": ALIGNMENT_FORMAT,
            "psi": psi.PROTOCOL,
            "rows": list(self.rows),
            "evaluation": list(self.evaluation),
            "commitment": hex32(self.commitment),
        }

    @classmethod
    def load(cls, store: ArtifactStore, digest: bytes, table_rows: int, what: str) -> Alignment:
        """The alignment stored under ``digest``, checked against a table of ``table_rows``."""
        try:
            value = store.get_json(digest)
        except ArtifactError as exc:
            raise UsageError(f"{what}: {exc}") from None
        fields = ("commitment", "evaluation", "format", "psi", "rows")
        if not isinstance(value, dict) or sorted(value) != list(fields):
            raise UsageError(f"{what} must hold exactly {', '.join(fields)}")
        if (value["format"], value["psi"]) != (ALIGNMENT_FORMAT, psi.PROTOCOL):
            raise UsageError(f"{what} is not a {ALIGNMENT_FORMAT} record of {psi.PROTOCOL}")
        rows, evaluation = value["rows"], value["evaluation"]
        if not _positions(rows, table_rows) or len(set(rows)) != len(rows):
            raise UsageError(f"{what}: rows must be distinct rows of its {table_rows:,}")
        if not _positions(evaluation, len(rows)) or evaluation != sorted(set(evaluation)):
            raise UsageError(f"{what}: evaluation must be ascending positions in its rows")
        commitment = from_hex32(value["commitment"], what=f"{what}: commitment")
        return cls(tuple(rows), tuple(evaluation), commitment)


@dataclass(frozen=True, eq=False)
class VerticalJob:
    """What ``hetero-lr/1`` needs of a set-up run: the terms, each data party's aligned,
    standardized training and evaluation tables (the guest's with the labels), the arbiter's
    key pair and the digest of the initial model (the object naming both parties' initial
    weight commitments)."""

    terms: Terms
    guest_train: PartyTable
    host_train: PartyTable
    guest_evaluation: PartyTable
    host_evaluation: PartyTable
    keys: KeyPair
    initial_model: bytes


@dataclass
class SmeRun:
    """A set-up scenario: its parties, deployment and job, and where its records are."""

    settings: SmeSettings
    deployment: Deployment
    job_id: int
    institute: Party
    bank: Party
    platform: Party
    regulator: Party
    datasets: tuple[int, int]  # the bank's, the platform's
    model_spec: bytes
    initial_model: bytes
    alignments: tuple[bytes, bytes]  # in the bank's store, in the platform's
    files: tuple[PartyFile, PartyFile] | None  # None: the generator's data

    def data_party(self, name: str, doing: str) -> tuple[int, Party]:
        """The position (0 the bank, 1 the platform) and the party of data party ``name``, of
        which the caller is ``doing`` something ("disclose"); another name is a usage error."""
        if name not in DATA_PARTIES:
            raise UsageError(
                f"only the data parties ({', '.join(DATA_PARTIES)}) {doing}, not {name!r}"
            )
        which = DATA_PARTIES.index(name)
        return which, (self.bank, self.platform)[which]

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SCENARIO_FORMAT,
            "settings": self.settings.to_json(),
            "deployment": self.deployment.to_json(),
            "jobId": self.job_id,
            "datasets": {BANK: self.datasets[0], PLATFORM: self.datasets[1]},
            "modelSpec": hex32(self.model_spec),
            "initialModel": hex32(self.initial_model),
            "alignments": {BANK: hex32(self.alignments[0]), PLATFORM: hex32(self.alignments[1])},
            "dataFiles": None
            if self.files is None
            else {BANK: self.files[0].to_json(), PLATFORM: self.files[1].to_json()},
        }


def set_up(
    chain: Chain,
    out: Path,
    settings: SmeSettings,
    report: Callable[[str], None],
    *,
    files: tuple[PartyFile, PartyFile] | None = None,
    after: SmeRun | None = None,
) -> SmeRun:
    """Founds the consortium, votes the platform and the regulator in, registers both datasets
    with their consent trees, grants the platform's consent, runs the PSI, makes the arbiter's
    key and creates the job; records the result in ``scenario.json``.

    The data is the generator's (``settings.businesses``, ``settings.seed``), or the bank's
    and the platform's CSV ``files``. ``chain`` must be a local development chain: the
    parties' keys derive from the seed.

    With ``after``, an earlier run on ``chain``, sets up a later job of the same consortium on
    the same datasets instead: the earlier run's deployment, parties and data (its businesses,
    seed, consent share and files; only the training settings may differ), with no founding,
    voting, registration or grant. Each data party takes its subject secret and withdrawal
    record from the earlier run, and the PSI runs, under new keys, over the businesses that
    consent now: the job's model spec names the subjects versions in force."""
    require_local_chain(chain, WHAT)
    if (out / SCENARIO_FILE).exists():
        raise UsageError(f"{out} already holds a scenario: pass --resume, or another --out")
    if after is None:
        data, files = read_inputs(settings.businesses, settings.seed, files)
        parties = tuple(Party.create(name, out, seed=settings.seed) for name in PARTIES)
        deployment, datasets = _found(chain, parties, data, settings, report)
    else:
        data, files = _earlier_inputs(after, settings, files)
        parties = _later_parties(out, after)
        deployment, datasets = after.deployment, after.datasets
    institute, bank, platform, regulator = parties
    ledgers = {p.name: Ledger(chain, deployment, p.account) for p in parties}

    report("intersecting the consented businesses")
    sides = ((bank, data.bank), (platform, data.platform))
    (bank_rows, bank_version), (platform_rows, platform_version) = (
        _consenting_now(ledgers[INSTITUTE], owner, table, dataset, settings)
        for (owner, table), dataset in zip(sides, datasets, strict=True)
    )
    versions = {datasets[0]: bank_version, datasets[1]: platform_version}
    context = psi_context(chain.chain_id, deployment.ledger, datasets[0], datasets[1])
    job = ledgers[INSTITUTE].jobs.count() + 1
    psi_keys = (
        psi_key(bank, seed=settings.seed, job=job),
        psi_key(platform, seed=settings.seed, job=job),
    )
    alignments = _intersect(data, bank_rows, platform_rows, context, psi_keys)
    shared, held_out = len(alignments[0].rows), len(alignments[0].evaluation)
    if shared == held_out:
        raise UsageError(
            f"the bank and the platform share {shared} consented businesses, none of them to "
            f"train on ({_source(files)}): the job would have no rows"
        )
    report("making the arbiter's key")
    keys = arbiter_key(institute, bits=settings.key_bits)
    try:
        terms, guest, host = _job_tables(data, alignments, settings)
        roles = hetero_lr.set_up(guest[0], host[0], terms, keys=keys)
    except HeteroLRError as exc:  # e.g. too few shared rows for the batch rule
        raise UsageError(f"{exc} ({_source(files)})") from None
    commitments = {
        party.account.address: _commit_initial(party, role, ledgers[party.name])
        for party, role in ((bank, roles.guest), (platform, roles.host))
    }
    initial_model = institute.store.put_json(joint_model(0, commitments, None))
    spec = institute.store.put_json(_model_spec(terms, data, alignments[0], versions, keys))
    report("creating the job")
    job_id = ledgers[INSTITUTE].jobs.create(
        purpose=PURPOSE,
        model_spec_digest=spec,
        initial_model_digest=initial_model,
        consumer=bank.account.address,
        participants=[bank.account.address, platform.account.address],
        dataset_ids=datasets,
    )
    run = SmeRun(
        settings,
        deployment,
        job_id,
        institute,
        bank,
        platform,
        regulator,
        datasets,
        spec,
        initial_model,
        (
            bank.store.put_json(alignments[0].to_json()),
            platform.store.put_json(alignments[1].to_json()),
        ),
        files,
    )
    (out / DEPLOYMENT_FILE).unlink(missing_ok=True)  # a set-up cut short left another one
    deployment.save(out / DEPLOYMENT_FILE)
    write_text_atomically(out / SCENARIO_FILE, json.dumps(run.to_json(), indent=2))
    return run


def _source(files: tuple[PartyFile, PartyFile] | None) -> str:
    """Where the job's data comes from, for an error about it."""
    if files is None:
        return "the generated data"
    return f"{files[0].path.resolve()} and {files[1].path.resolve()}"


def _found(
    chain: Chain,
    parties: tuple[Party, ...],
    data: SmeData,
    settings: SmeSettings,
    report: Callable[[str], None],
) -> tuple[Deployment, tuple[int, int]]:
    """Funds the parties, deploys the contracts, votes the platform and the regulator in,
    registers the bank's and the platform's datasets and grants the platform's consent."""
    institute, bank, platform, regulator = parties
    deployment = found(chain, parties, institute, bank, report)
    ledgers = {p.name: Ledger(chain, deployment, p.account) for p in parties}
    vote_in(
        ledgers, [institute, bank], [(platform, Role.PROVIDER), (regulator, Role.AUDITOR)], report
    )
    datasets = []
    for owner, table in ((bank, data.bank), (platform, data.platform)):
        report(f"{owner.name} registers its dataset with its consent tree")
        datasets.append(_register(ledgers[owner.name], owner, table, settings))
    now = ledgers[INSTITUTE].now()
    report(f"{platform.name} grants {bank.name} consent")
    ledgers[PLATFORM].consents.grant(
        datasets[1], bank.account.address, PURPOSE, now, now + CONSENT_DAYS * 86_400
    )
    return deployment, (datasets[0], datasets[1])


def _earlier_inputs(
    after: SmeRun, settings: SmeSettings, files: tuple[PartyFile, PartyFile] | None
) -> tuple[SmeData, tuple[PartyFile, PartyFile] | None]:
    """The earlier run's data, read again (its files refused if changed); ``settings`` and
    ``files`` may not name other data."""
    data_settings = ("businesses", "seed", "consent_share")
    differ = [n for n in data_settings if getattr(settings, n) != getattr(after.settings, n)]
    if differ or files is not None:
        raise UsageError(
            "a later job is on the earlier run's data: "
            + (f"its {', '.join(differ)} differ" if differ else "its files are the earlier run's")
        )
    return read_inputs(after.settings.businesses, after.settings.seed, after.files)


def _later_parties(out: Path, after: SmeRun) -> tuple[Party, ...]:
    """The earlier run's parties, each in its directory under ``out`` with its key (derived
    from the seed, and refused unless the earlier run's); each data party with its subject
    secret and withdrawal record copied from the earlier run."""
    parties = tuple(Party.create(name, out, seed=after.settings.seed) for name in PARTIES)
    earlier = (after.institute, after.bank, after.platform, after.regulator)
    for party, before in zip(parties, earlier, strict=True):
        if party.account.address != before.account.address:
            raise UsageError(
                f"the {party.name}'s key in {party.directory} is not its key in the earlier "
                f"run ({before.directory})"
            )
    for party, before in zip(parties[1:3], earlier[1:3], strict=True):
        for name in (SUBJECT_SECRET_FILE, WITHDRAWALS_FILE):
            source, copy = before.directory / name, party.directory / name
            if not source.exists():
                copy.unlink(missing_ok=True)
                continue
            text = read_regular_file(source, what=name, max_bytes=MAX_WITHDRAWALS_BYTES)
            write_text_atomically(copy, text.decode(), mode=PRIVATE_FILE)
    return parties


def _consenting_now(
    ledger: Ledger, owner: Party, table: PartyTable, dataset: int, settings: SmeSettings
) -> tuple[NDArray[np.intp], int]:
    """The rows of ``owner``'s table whose businesses consent at its dataset's subjects version
    in force, and that version; refused unless their consent tree is the dataset's subjects
    root on chain, and while a withdrawal the owner recorded is not yet published."""
    on_chain = ledger.consents.dataset(dataset)
    version = on_chain.subjects_version
    record = Withdrawals.read(owner.directory, dataset)
    if record.latest > version:
        raise UsageError(
            f"the {owner.name}'s withdrawal at subjects version {record.latest} of dataset "
            f"{dataset} is not on chain yet: run its 'consortium withdraw' again first"
        )
    rows = consenting_rows(table, settings.consent_share, settings.seed, record.through(version))
    if consent_tree(table, rows, read_subject_secret(owner)).root != on_chain.subjects_root:
        raise UsageError(
            f"the {owner.name}'s consent tree (its seed, subject secret and withdrawal record in "
            f"{owner.directory}) is not dataset {dataset}'s subjects root version {version} on "
            "chain"
        )
    return rows, version


def load(chain: Chain, out: Path) -> SmeRun:
    """The scenario recorded in ``out``, checked to belong to ``chain`` (a local development
    chain: the parties' keys derive from the seed) and to be the job on it."""
    require_local_chain(chain, WHAT)
    path = out / SCENARIO_FILE
    if not path.exists():
        raise UsageError(f"nothing to resume: {path} does not exist")
    data = read_json_file(path, what="scenario file", max_bytes=MAX_SCENARIO_BYTES)
    if not isinstance(data, dict) or data.get("format") != SCENARIO_FORMAT:
        raise UsageError(f"{path} is not a {SCENARIO_FORMAT} file")
    if sorted(data) != sorted(_SCENARIO_FIELDS):
        raise UsageError(f"{path} must hold exactly {', '.join(_SCENARIO_FIELDS)}")
    deployment = Deployment.from_json(data["deployment"], source=str(path))
    if deployment.chain_id != chain.chain_id:
        raise UsageError(
            f"{path} ran on chain {deployment.chain_id}; this chain is {chain.chain_id}"
        )
    deployment.require_code(chain, str(path), remedy="start a new run with another --out")
    institute, bank, platform, regulator = (Party.load(name, out) for name in PARTIES)
    run = SmeRun(
        SmeSettings.from_json(data["settings"], str(path)),
        deployment,
        _require_int(data["jobId"], f"{path}: jobId", low=1),
        institute,
        bank,
        platform,
        regulator,
        _pair(data["datasets"], f"{path}: datasets", lambda v, w: _require_int(v, w, low=1)),
        from_hex32(data["modelSpec"], what=f"{path}: modelSpec"),
        from_hex32(data["initialModel"], what=f"{path}: initialModel"),
        _pair(data["alignments"], f"{path}: alignments", lambda v, w: from_hex32(v, what=w)),
        None
        if data["dataFiles"] is None
        else _pair(data["dataFiles"], f"{path}: dataFiles", PartyFile.from_json),
    )
    _require_job(chain, run, str(path))
    return run


def roles_for(run: SmeRun) -> VerticalJob:
    """The tables, terms and key the protocol needs, rebuilt from the seed (or the recorded
    files, refused if changed) and the parties' own records, and checked against the job's
    model spec."""
    data, _ = read_inputs(run.settings.businesses, run.settings.seed, run.files)
    bank, platform = (
        Alignment.load(party.store, digest, table.num_rows, f"{party.name}'s alignment")
        for party, digest, table in zip(
            (run.bank, run.platform), run.alignments, (data.bank, data.platform), strict=True
        )
    )
    if (len(bank.rows), bank.evaluation, bank.commitment) != (
        len(platform.rows),
        platform.evaluation,
        platform.commitment,
    ):
        raise UsageError("the bank's and the platform's records of the intersection disagree")
    keys = load_arbiter_key(run.institute, bits=run.settings.key_bits)
    terms, guest, host = _job_tables(data, (bank, platform), run.settings)
    try:
        spec = run.institute.store.get_json(run.model_spec)
    except ArtifactError as exc:
        raise UsageError(f"the job's model spec: {exc}") from None
    # The subjects versions are the chain's; everything else follows from what was rebuilt.
    expected = _model_spec(terms, data, bank, {}, keys)
    if not isinstance(spec, dict) or {**spec, "subjects": {}} != expected:
        raise UsageError(
            "the data, the intersection or the arbiter's key is not what the job's model spec "
            "commits to"
        )
    return VerticalJob(terms, guest[0], host[0], guest[1], host[1], keys, run.initial_model)


def _register(ledger: Ledger, owner: Party, table: PartyTable, settings: SmeSettings) -> int:
    """Registers ``owner``'s dataset with the root of its consent tree over the businesses that
    consented (version 1: none has withdrawn), salted with its subject secret."""
    rows = consenting_rows(table, settings.consent_share, settings.seed)
    tree = consent_tree(table, rows, subject_secret(owner, seed=settings.seed))
    name = f"sme-credit/{owner.name}"
    schema = {"dataset": name, "labels": table.y is not None, "features": list(table.feature_names)}
    return ledger.consents.register(name, json_digest(schema), tree.root)


def _intersect(
    data: SmeData,
    bank_rows: NDArray[np.intp],
    platform_rows: NDArray[np.intp],
    context: str,
    keys: tuple[X25519PrivateKey, X25519PrivateKey],
) -> tuple[Alignment, Alignment]:
    """The PSI over the consenting rows of each side under the bank's and the platform's PSI
    ``keys``, and each side's record of it; the bank names the held-out rows by their
    positions in the shared order."""
    bank_ids, platform_ids = data.bank.ids, data.platform.ids
    guest, host = psi.intersect(
        [bank_ids[i] for i in bank_rows.tolist()],
        [platform_ids[i] for i in platform_rows.tolist()],
        context,
        keys=keys,
    )
    if guest.commitment != host.commitment:
        raise UsageError("the two sides of the PSI computed different commitments")
    shared_bank = bank_rows[np.asarray(guest.positions, dtype=np.intp)].tolist()
    evaluation = tuple(
        k for k, row in enumerate(shared_bank) if bank_ids[row] in data.evaluation_ids
    )
    shared_platform = platform_rows[np.asarray(host.positions, dtype=np.intp)].tolist()
    return (
        Alignment(tuple(shared_bank), evaluation, guest.commitment),
        Alignment(tuple(shared_platform), evaluation, host.commitment),
    )


def _job_tables(
    data: SmeData, alignments: tuple[Alignment, Alignment], settings: SmeSettings
) -> tuple[Terms, tuple[PartyTable, PartyTable], tuple[PartyTable, PartyTable]]:
    """The terms, and the guest's and the host's (training, evaluation) tables."""
    guest, host = _split(data.bank, alignments[0]), _split(data.platform, alignments[1])
    terms = Terms(
        rows=guest[0].num_rows,
        guest_features=len(data.bank.feature_names),
        host_features=len(data.platform.feature_names),
        config=settings.descent(),
        key_bits=settings.key_bits,
    )
    return terms, guest, host


def training_standardizer(table: PartyTable, alignment: Alignment) -> Standardizer:
    """The standardization the party's job tables were made with (fitted on its training rows),
    for scoring any of its rows with the job's model."""
    return Standardizer.fit(_cut(table, alignment)[0].X)


def _split(table: PartyTable, alignment: Alignment) -> tuple[PartyTable, PartyTable]:
    """The party's rows in the shared order cut into (training, evaluation) by the held-out
    positions, both standardized with statistics of the training rows only."""
    train, evaluation = _cut(table, alignment)
    scaler = Standardizer.fit(train.X)
    return scaler.apply(train), scaler.apply(evaluation)


def _cut(table: PartyTable, alignment: Alignment) -> tuple[PartyTable, PartyTable]:
    """The party's rows in the shared order cut into (training, evaluation), unstandardized."""
    aligned = table.aligned(alignment.rows)
    held_out = np.zeros(aligned.num_rows, dtype=bool)
    held_out[list(alignment.evaluation)] = True
    if held_out.all():
        raise UsageError(f"the {table.name}'s rows in the intersection leave none to train on")
    return aligned.aligned(np.flatnonzero(~held_out)), aligned.aligned(np.flatnonzero(held_out))


def _commit_initial(party: Party, role: Guest | Host, ledger: Ledger) -> bytes:
    """The data party's commitment to its initial weights (zeros), made as the protocol makes
    every round's (:meth:`VerticalParty.commit`): the opening stored and journaled by the
    party, so that it can go on from the initial model and disclose it."""
    journal = party.journal()
    try:
        return VerticalParty(party.name, party.account, role, party.store, journal, ledger).commit(
            0
        )
    finally:
        journal.close()


def _model_spec(
    terms: Terms,
    data: SmeData,
    alignment: Alignment,
    versions: Mapping[int, int],
    keys: KeyPair,
) -> dict[str, Any]:
    """The object whose digest the job stores: protocol, terms, features, intersection, the
    datasets' subjects versions and the arbiter's key."""
    config = terms.config
    return {
        "protocol": PROTOCOL,
        "purpose": PURPOSE,
        "terms": {
            "rows": terms.rows,
            "guestFeatures": terms.guest_features,
            "hostFeatures": terms.host_features,
            "learningRate": config.learning_rate,
            "batchSize": config.batch_size,
            "l2": config.l2,
            "maxEpochs": config.max_epochs,
            "tolerance": config.tolerance,
            "seed": config.seed,
            "keyBits": terms.key_bits,
            "scoreExponent": terms.score_exponent,
            "featureExponent": terms.feature_exponent,
            "featureBound": terms.feature_bound,
            "scoreBound": terms.score_bound,
        },
        "features": {GUEST: list(data.bank.feature_names), HOST: list(data.platform.feature_names)},
        "intersection": {
            "size": len(alignment.rows),
            "commitment": hex32(alignment.commitment),
            "psi": psi.PROTOCOL,
        },
        "subjects": {str(dataset): version for dataset, version in versions.items()},
        "arbiterKey": hex32(arbiter_key_digest(keys.public_key)),
    }


def _require_job(chain: Chain, run: SmeRun, source: str) -> None:
    """Refuses a run whose job on chain is not the one it recorded: its model spec, initial
    model, consumer, participants or datasets."""
    jobs = Ledger(chain, run.deployment, source=source).jobs
    if run.job_id > jobs.count():
        raise UsageError(f"{source}: job {run.job_id} is not on chain {chain.chain_id}")
    job = jobs.get(run.job_id)
    bank, platform = run.bank.account.address, run.platform.account.address
    recorded = (
        run.model_spec,
        run.initial_model,
        bank,
        tuple(sorted((bank, platform), key=lambda a: int(a, 16))),
        run.datasets,
    )
    on_chain = (
        job.model_spec_digest,
        job.initial_model_digest,
        job.consumer,
        job.participants,
        job.dataset_ids,
    )
    if recorded != on_chain:
        raise UsageError(f"{source}: job {run.job_id} on chain is not the job this run set up")


def _require_int(value: object, what: str, *, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UsageError(f"{what} must be an integer of at least {low}, got {value!r}")
    return value


def _pair(value: object, what: str, parse: Callable[[object, str], T]) -> tuple[T, T]:
    """The bank's and the platform's entries of an object in a scenario file, each parsed."""
    if not isinstance(value, dict) or sorted(value) != [BANK, PLATFORM]:
        raise UsageError(f"{what} must hold exactly {BANK} and {PLATFORM}")
    return parse(value[BANK], f"{what}.{BANK}"), parse(value[PLATFORM], f"{what}.{PLATFORM}")


def _positions(value: object, bound: int) -> bool:
    """Whether ``value`` is a list of integers in ``[0, bound)``."""
    return isinstance(value, list) and all(type(i) is int and 0 <= i < bound for i in value)
