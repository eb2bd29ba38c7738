"""The AML scenario: banks train a shared anti-money-laundering risk model, every round anchored.

A research institute coordinates; each bank registers its transaction dataset and trains on
it locally; the lead bank is the job's consumer and the other banks consent to it using their
data for AML risk scoring. A regulator is voted in as auditor. Each party has its own key,
store and journal under the output directory, and the parties talk only through the round
protocol's messages.

The setup (deployment, votes, datasets, consents, job) is recorded in ``scenario.json`` once
it is complete; a resumed run reloads it and the coordinator's journal and finishes the job.
The deployment is also written as a standard deployment record, ``deployment.json``, which the
CLI's read commands take through ``CONSORTIUM_DEPLOYMENT_FILE``.

Every random choice of a run derives from its seed: the banks' data and the validation set
(:mod:`consortium.scenarios.aml_data`), the initial model, each round's local training and the
parties' keys (:mod:`consortium.scenarios.keys`), so two runs with one seed end with the same
model. Those keys are predictable: the scenario runs on local development chains only.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from consortium.chain.base import Chain
from consortium.crypto.canonical import json_digest
from consortium.errors import UsageError
from consortium.files import write_text_atomically
from consortium.fl.data import LabeledTable
from consortium.fl.model import init_model
from consortium.jsonio import read_json_file
from consortium.ledger.client import Ledger
from consortium.ledger.deployment import Deployment
from consortium.ledger.roles import Role
from consortium.orchestration.coordinator import Coordinator
from consortium.orchestration.engine import RoundResult
from consortium.orchestration.transport import LocalTransport
from consortium.protocol.fedavg.participant import Participant, TrainingPlan
from consortium.protocol.fedavg.round import PROTOCOL_ID, Transport
from consortium.scenarios.aml_data import FEATURE_NAMES, generate_banks, generate_validation
from consortium.scenarios.keys import require_local_chain
from consortium.scenarios.parties import PARTY_NAME, Party, found, vote_in
from consortium.store.models import put_model

PURPOSE = "aml-risk-scoring"
SCENARIO_FILE = "scenario.json"
MAX_SCENARIO_BYTES = 2**20  # settings, parties and a deployment: a few kB
DEPLOYMENT_FILE = "deployment.json"
SCENARIO_FORMAT = "consortium.simulation/1"
CONSENT_DAYS = 365
RESUME_KEEPS = ("banks", "seed", "epochs")
"""Settings a resumed run cannot change: the job's participants and its model spec commit to
them. Its rounds can grow: the job on chain fixes no number of rounds."""


@dataclass(frozen=True)
class AmlSettings:
    banks: int = 4
    rounds: int = 20
    seed: int = 7
    epochs: int = 1  # local epochs per round

    def plan(self) -> TrainingPlan:
        """The training plan every bank follows; the job's model spec commits to it."""
        return TrainingPlan(epochs=self.epochs, seed=self.seed)

    def to_json(self) -> dict[str, int]:
        return {
            "banks": self.banks,
            "rounds": self.rounds,
            "seed": self.seed,
            "epochs": self.epochs,
        }

    @classmethod
    def from_json(cls, value: object, source: str) -> AmlSettings:
        """The settings a scenario file recorded; anything else is a usage error."""
        fields = ("banks", "rounds", "seed", "epochs")
        if not isinstance(value, dict) or sorted(value) != sorted(fields):
            raise UsageError(f"{source}: settings must hold exactly {', '.join(fields)}")
        for name in fields:
            _require_int(value[name], f"{source}: settings.{name}", low=0 if name == "seed" else 1)
        return cls(**value)

    def resumed_with(self, given: dict[str, int], source: str) -> AmlSettings:
        """These settings with the options given to a resume: more rounds than before, and
        nothing else changed. An option not given means "as before"."""
        for name in RESUME_KEEPS:
            if name in given and given[name] != getattr(self, name):
                raise UsageError(
                    f"--{name} {given[name]} differs from this run's {getattr(self, name)} "
                    f"({source}): a resumed run keeps its {', '.join(RESUME_KEEPS)}"
                )
        rounds = given.get("rounds", self.rounds)
        if rounds < self.rounds:
            raise UsageError(
                f"--rounds {rounds} is fewer than this run's {self.rounds} ({source}): a "
                "resumed run can add rounds, not drop them"
            )
        return dataclasses.replace(self, rounds=rounds)


@dataclass
class AmlRun:
    """A set-up scenario: its parties, deployment and job."""

    settings: AmlSettings
    deployment: Deployment
    job_id: int
    institute: Party
    banks: list[Party]
    regulator: Party

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SCENARIO_FORMAT,
            "settings": self.settings.to_json(),
            "deployment": self.deployment.to_json(),
            "jobId": self.job_id,
            "parties": {
                "institute": self.institute.name,
                "banks": [b.name for b in self.banks],
                "regulator": self.regulator.name,
            },
        }


def set_up(chain: Chain, out: Path, settings: AmlSettings, report: Callable[[str], None]) -> AmlRun:
    """Founds the consortium, votes the banks and the regulator in, registers datasets, grants
    consents and creates the job; records the result in ``scenario.json``. ``chain`` must be a
    local development chain: the parties' keys derive from the seed."""
    require_local_chain(chain, "the AML simulation")
    if (out / SCENARIO_FILE).exists():
        raise UsageError(f"{out} already holds a scenario: pass --resume, or another --out")
    if settings.banks < 2:
        raise UsageError("the AML scenario needs at least two banks")
    institute = Party.create("institute", out, seed=settings.seed)
    banks = [Party.create(f"bank-{i}", out, seed=settings.seed) for i in range(settings.banks)]
    regulator = Party.create("regulator", out, seed=settings.seed)
    deployment = found(chain, (institute, *banks, regulator), institute, banks[0], report)
    ledgers = {p.name: Ledger(chain, deployment, p.account) for p in (institute, *banks, regulator)}
    vote_in(
        ledgers,
        [institute, banks[0]],
        [*((b, Role.PROVIDER | Role.CONSUMER) for b in banks[1:]), (regulator, Role.AUDITOR)],
        report,
    )

    bank_data = generate_banks(settings.banks, settings.seed)
    consumer = banks[0]
    dataset_ids = []
    for bank, data in zip(banks, bank_data, strict=True):
        report(f"{bank.name} registers its dataset")
        dataset_ids.append(
            ledgers[bank.name].consents.register(
                f"aml-transactions/{bank.name}", json_digest(data.schema())
            )
        )
    now = ledgers[institute.name].now()
    for bank, dataset_id in zip(banks[1:], dataset_ids[1:], strict=True):
        report(f"{bank.name} grants {consumer.name} consent")
        ledgers[bank.name].consents.grant(
            dataset_id, consumer.account.address, PURPOSE, now, now + CONSENT_DAYS * 86_400
        )

    store = institute.store
    initial_model = put_model(store, init_model(len(FEATURE_NAMES), settings.seed))
    spec = store.put_json(
        {
            "protocol": PROTOCOL_ID,
            "model": "logistic-regression",
            "features": list(FEATURE_NAMES),
            "aggregation": "fedavg-by-examples, participant address ascending, float64",
            "training": settings.plan().__dict__,
        }
    )
    report("creating the job")
    job_id = ledgers[institute.name].jobs.create(
        purpose=PURPOSE,
        model_spec_digest=spec,
        initial_model_digest=initial_model,
        consumer=consumer.account.address,
        participants=[b.account.address for b in banks],
        dataset_ids=dataset_ids,
    )
    run = AmlRun(settings, deployment, job_id, institute, banks, regulator)
    (out / DEPLOYMENT_FILE).unlink(missing_ok=True)  # a set-up cut short left another one
    deployment.save(out / DEPLOYMENT_FILE)
    write_text_atomically(out / SCENARIO_FILE, json.dumps(run.to_json(), indent=2))
    return run


def load(chain: Chain, out: Path) -> AmlRun:
    """The scenario recorded in ``out``, checked to belong to ``chain`` (a local development
    chain: the parties' keys derive from the seed)."""
    require_local_chain(chain, "the AML simulation")
    path = out / SCENARIO_FILE
    if not path.exists():
        raise UsageError(f"nothing to resume: {path} does not exist")
    data = read_json_file(path, what="scenario file", max_bytes=MAX_SCENARIO_BYTES)
    if not isinstance(data, dict) or data.get("format") != SCENARIO_FORMAT:
        raise UsageError(f"{path} is not a {SCENARIO_FORMAT} file")
    missing = [key for key in ("settings", "deployment", "jobId", "parties") if key not in data]
    if missing:
        raise UsageError(f"{path}: missing field {missing[0]}")
    deployment = Deployment.from_json(data["deployment"], source=str(path))
    if deployment.chain_id != chain.chain_id:
        raise UsageError(
            f"{path} ran on chain {deployment.chain_id}; this chain is {chain.chain_id}"
        )
    deployment.require_code(chain, str(path), remedy="start a new run with another --out")
    institute, banks, regulator = _party_names(data["parties"], str(path))
    return AmlRun(
        AmlSettings.from_json(data["settings"], str(path)),
        deployment,
        _require_int(data["jobId"], f"{path}: jobId", low=1),
        Party.load(institute, out),
        [Party.load(name, out) for name in banks],
        Party.load(regulator, out),
    )


def resume(chain: Chain, out: Path, given: dict[str, int]) -> AmlRun:
    """The scenario recorded in ``out`` with the settings given to the resume, which are
    recorded before any round runs, so that a resume of the resume aims at the same end."""
    run = load(chain, out)
    settings = run.settings.resumed_with(given, str(out / SCENARIO_FILE))
    if settings != run.settings:
        run = dataclasses.replace(run, settings=settings)
        write_text_atomically(out / SCENARIO_FILE, json.dumps(run.to_json(), indent=2))
    return run


def _require_int(value: object, what: str, *, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise UsageError(f"{what} must be an integer of at least {low}, got {value!r}")
    return value


def _party_names(value: object, source: str) -> tuple[str, list[str], str]:
    """The institute's, the banks' and the regulator's names a scenario file recorded."""
    if not isinstance(value, dict):
        raise UsageError(f"{source}: parties must be an object, got {value!r}")
    institute, banks, regulator = (value.get(k) for k in ("institute", "banks", "regulator"))
    if not isinstance(banks, list) or len(banks) < 2:
        raise UsageError(f"{source}: parties.banks must list at least two names, got {banks!r}")
    for name in (institute, *banks, regulator):
        if not isinstance(name, str) or not PARTY_NAME.match(name):
            raise UsageError(f"{source}: {name!r} is not a party name")
    return institute, banks, regulator


def participants_for(chain: Chain, run: AmlRun) -> dict[str, Participant]:
    """The banks of ``run`` as participants, by address, each with its own data, store,
    journal and view of the chain."""
    data = generate_banks(run.settings.banks, run.settings.seed)
    return {
        bank.account.address: _participant(chain, run, bank, bank_data)
        for bank, bank_data in zip(run.banks, data, strict=True)
    }


def participant_for(chain: Chain, run: AmlRun, name: str) -> Participant:
    """The bank ``name`` of ``run`` as a participant, alone: what one member's own process
    runs (over Flower, a SuperNode's ClientApp)."""
    names = [bank.name for bank in run.banks]
    if name not in names:
        raise UsageError(f"the run has no bank {name!r} (its banks: {', '.join(names)})")
    which = names.index(name)
    data = generate_banks(run.settings.banks, run.settings.seed)[which]
    return _participant(chain, run, run.banks[which], data)


def _participant(chain: Chain, run: AmlRun, bank: Party, data: LabeledTable) -> Participant:
    return Participant(
        bank.name,
        bank.account,
        data,
        bank.store,
        bank.journal(),
        Ledger(chain, run.deployment, bank.account),  # reads the chain as itself
        run.settings.plan(),
    )


def coordinator_for(
    chain: Chain, run: AmlRun, transport: Transport | None = None, *, depth: int = 1
) -> Coordinator:
    """The coordinator of ``run``, reaching the participants through ``transport`` (by
    default the local transport to :func:`participants_for`)."""
    return Coordinator(
        Ledger(chain, run.deployment, run.institute.account),
        run.job_id,
        run.institute.store,
        run.institute.journal(),
        transport or LocalTransport(participants_for(chain, run)),
        generate_validation(run.settings.seed),
        depth=depth,
    )


def run_rounds(
    chain: Chain, run: AmlRun, on_round: Callable[[RoundResult], None], *, depth: int = 1
) -> list[RoundResult]:
    """Runs (or finishes) the scenario's rounds, ``depth`` rounds in flight at most; every
    party's journal is closed, and its writer's lock given up, when they end, however they
    end."""
    participants = participants_for(chain, run)
    coordinator = coordinator_for(chain, run, LocalTransport(participants), depth=depth)
    try:
        return coordinator.run(run.settings.rounds, on_round)
    finally:
        for journal in (coordinator.journal, *(p.journal for p in participants.values())):
            journal.close()
