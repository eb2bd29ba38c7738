"""The protocol a job's model spec names.

The model spec is the JSON object whose digest ``createJob`` commits on chain; its
``"protocol"`` field names the round protocol the job runs (``"fedavg/1"``). Jobs created
before specs named their protocol all ran FedAvg, so a spec without the field implies it.
"""

from __future__ import annotations

from typing import Any

from consortium.errors import UsageError
from consortium.protocol.fedavg.round import PROTOCOL_ID as FEDAVG

IMPLIED_PROTOCOL = FEDAVG
"""The protocol of a job whose model spec names none: every such job ran FedAvg."""


def spec_protocol(spec: Any) -> str:
    """The protocol id the model spec ``spec`` names (:data:`IMPLIED_PROTOCOL` if none).

    Raises:
        UsageError: if the spec is not a JSON object, or its ``protocol`` is not a string.
    """
    if not isinstance(spec, dict):
        raise UsageError("the model spec is not a JSON object")
    protocol = spec.get("protocol", IMPLIED_PROTOCOL)
    if not isinstance(protocol, str) or not protocol:
        raise UsageError(f"the model spec's protocol {protocol!r} is not a protocol id")
    return protocol
