"""The bundle writer and the auditor look a job's protocol up by id, and refuse an unknown one
in one line that names the ids they know."""

from __future__ import annotations

import pytest

from consortium.audit.protocols import UnknownProtocol, protocol_audit
from consortium.protocol.bundles import NoBundleLayout, bundle_layout


def test_both_registries_know_the_same_protocols() -> None:
    for protocol in ("fedavg/1", "hetero-lr/1"):
        assert bundle_layout(protocol).protocol_id == protocol_audit(protocol).protocol_id


@pytest.mark.parametrize(
    ("look_up", "refusal", "expected"),
    [
        (bundle_layout, NoBundleLayout, "a bundle can be written for"),
        (protocol_audit, UnknownProtocol, "this auditor knows"),
    ],
)
def test_an_unknown_protocol_is_refused_naming_the_known_ones(
    look_up: object, refusal: type[Exception], expected: str
) -> None:
    with pytest.raises(refusal) as raised:
        look_up("x/9")  # type: ignore[operator]
    message = str(raised.value)
    assert expected in message and message.endswith("(known: fedavg/1, hetero-lr/1)")
