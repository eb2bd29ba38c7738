"""Independent verification of a training job from its audit bundle and the chain.

This is what a regulator runs. It trusts the chain and recomputation, nothing the coordinator
says: see :mod:`consortium.audit.checks` for the checks of every job,
:mod:`consortium.audit.protocols` for the protocols whose own checks it knows (each protocol's
live with it, FedAvg's in :mod:`consortium.protocol.fedavg.audit`) and
:mod:`consortium.audit.verifier` for how they are run. The names below are the public API
(``scripts/verify_job.py`` uses nothing else)::

    from consortium.audit import Verdict, open_bundle, open_chain, verify_bundle

    verdict = Verdict()
    with open_bundle(Path("bundle")) as bundle:
        for result in verify_bundle(bundle, open_chain("http://127.0.0.1:8545")):
            verdict.add(result)
    print(verdict.describe())

An :class:`AuditReport` fed the same results renders the audit as a self-contained HTML page
(``check_report_path`` first refuses a path that cannot be written, ``write_report`` writes it
atomically).
"""

from consortium.audit.bundle import (
    BUNDLE_FORMAT,
    AuditBundle,
    BundleError,
    open_bundle,
    read_bundle,
)
from consortium.audit.checks import CHECK_NAMES
from consortium.audit.protocols import PROTOCOLS, UnknownProtocol
from consortium.audit.report import AuditReport, check_report_path, write_report
from consortium.audit.results import CheckResult, Scope, Verdict
from consortium.audit.verifier import (
    JobAudit,
    ModelProvenance,
    locate_model,
    model_digest_from,
    open_chain,
    verify_bundle,
)
from consortium.errors import ConsortiumError

__all__ = [
    "BUNDLE_FORMAT",
    "CHECK_NAMES",
    "PROTOCOLS",
    "AuditBundle",
    "AuditReport",
    "BundleError",
    "CheckResult",
    "ConsortiumError",
    "JobAudit",
    "ModelProvenance",
    "Scope",
    "UnknownProtocol",
    "Verdict",
    "check_report_path",
    "locate_model",
    "model_digest_from",
    "open_bundle",
    "open_chain",
    "read_bundle",
    "verify_bundle",
    "write_report",
]
