"""The protocols this auditor knows: protocol id -> that protocol's audit checks.

A bundle names its job's protocol (manifest ``protocol``; a ``consortium.audit-bundle/2``
bundle, from before bundles named one, implies ``fedavg/1``). The verifier runs the checks
every job gets (:mod:`consortium.audit.checks`), confirms that protocol is the one the job's
model spec names, whose digest the chain holds (the ``protocol`` check), and runs the
protocol's own checks for every round. A bundle of a protocol that is not registered here is
refused unread, as a format this auditor does not know would be: its rounds cannot be judged.
"""

from __future__ import annotations

from collections.abc import Mapping

from consortium.errors import UsageError
from consortium.protocol.audit import ProtocolAudit
from consortium.protocol.fedavg import audit as fedavg
from consortium.protocol.registry import by_protocol, lookup
from consortium.protocol.vertical import audit as vertical

PROTOCOLS: Mapping[str, ProtocolAudit] = by_protocol(fedavg.AUDIT, vertical.AUDIT)


class UnknownProtocol(UsageError):
    """The bundle's protocol is not one this auditor has checks for."""


def protocol_audit(protocol_id: str) -> ProtocolAudit:
    """The audit checks of ``protocol_id``.

    Raises:
        UnknownProtocol: if no registered protocol has that id.
    """
    return lookup(
        PROTOCOLS,
        protocol_id,
        lambda known: UnknownProtocol(
            f"bundle protocol {protocol_id!r} is not one this auditor knows (known: {known})"
        ),
    )
