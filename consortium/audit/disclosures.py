"""What an audit says of the checks that only a data party's disclosure makes possible
(``consented-subjects``, ``disclosed-weights``) when it was given none: each is named with the
reason, so that a verdict on a hetero-lr/1 job never reads as though they had run."""

from __future__ import annotations

from collections.abc import Sequence

from consortium.audit.checks import CONSENTED_SUBJECTS, DISCLOSED_WEIGHTS
from consortium.fl.vertical.terms import PROTOCOL
from consortium.protocol.vertical.disclosure import Disclosure, PartyDisclosure
from consortium.protocol.vertical.weights_disclosure import WeightsDisclosure

NO_SUBJECTS = "not checked: no subject disclosures"
NO_WEIGHTS = "not checked: no weights disclosures"
_CHECKS = (
    (CONSENTED_SUBJECTS, PartyDisclosure, NO_SUBJECTS),
    (DISCLOSED_WEIGHTS, WeightsDisclosure, NO_WEIGHTS),
)


def not_checked(protocol: str, disclosures: Sequence[Disclosure]) -> dict[str, str]:
    """Each disclosure check that does not run, with why: for a hetero-lr/1 job, those of the
    kinds of disclosure not given; for any other protocol, none (they are not its checks)."""
    if protocol != PROTOCOL:
        return {}
    given = {type(disclosure) for disclosure in disclosures}
    return {check: reason for check, kind, reason in _CHECKS if kind not in given}
