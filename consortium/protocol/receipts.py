"""A party's check of its round receipt, the same in every protocol: the chain, read by the
party itself, must hold the anchor the receipt names, its participant set must name the party
exactly when the receipt puts the party in the round, and the party's own record must be a leaf
of its tree. The coordinator's word counts for nothing here; a failed check is an alarm.
"""

from __future__ import annotations

from consortium.crypto.merkle import verify_inclusion
from consortium.errors import ChainRevert, ConsortiumError
from consortium.ledger.client import Ledger
from consortium.ledger.jobs import mask_participants
from consortium.protocol.messages import RoundReceipt


class ReceiptAlarm(ConsortiumError):
    """A receipt does not prove that this party's record is in the anchored round."""


def check_receipt(
    receipt: RoundReceipt, ledger: Ledger, own_record: bytes | None, who: str
) -> None:
    """Raises ReceiptAlarm (its message starting with ``who``) unless ``receipt`` is true.

    ``own_record`` is the JCS bytes of the record this party signed for the receipt's round, or
    None if it sent none; a receipt telling the party it was refused needs none."""
    anchor = receipt.anchor
    if (
        max(anchor.round, anchor.participant_count) >= 2**32
        or max(anchor.job_id, anchor.block_number, anchor.timestamp) >= 2**256
    ):  # the contract's uint32 and uint256 fields
        raise ReceiptAlarm(f"{who}: the receipt's anchor fields are out of range")
    try:
        on_chain = ledger.jobs.round_commitment(anchor.job_id, anchor.round)
    except ChainRevert as exc:  # no such job or round: the receipt claims a false anchor
        raise ReceiptAlarm(
            f"{who}: the receipt is for job {anchor.job_id} round {anchor.round}, "
            f"which the chain has not anchored ({exc.name})"
        ) from None
    if anchor.commitment() != on_chain:
        raise ReceiptAlarm(
            f"{who}: the receipt for job {anchor.job_id} round {anchor.round} does not "
            "match the commitment on chain"
        )
    # The anchor's participant set must say what the receipt says of us: a record of ours under
    # a mask that leaves us out would have spared our consent the contract's check.
    participants = ledger.jobs.participants(anchor.job_id)
    named = ledger.address in mask_participants(participants, anchor.participant_mask)
    if named == (receipt.refusal is not None):
        raise ReceiptAlarm(
            f"{who}: the anchor of round {anchor.round} of job {anchor.job_id} "
            + ("names us among its participants, though the receipt says we were left out"
               if named else "leaves us out of its participants, though the receipt says we "
               "are in its tree")
        )  # fmt: skip
    if receipt.refusal is not None:
        return  # left out of the round, and told why; nothing of ours to find in the tree
    if own_record is None or receipt.leaf_index is None:
        raise ReceiptAlarm(
            f"{who}: a receipt for round {anchor.round} of job {anchor.job_id} "
            "names an update this participant did not send, or lacks its proof"
        )
    try:
        verify_inclusion(
            own_record, receipt.leaf_index, anchor.participant_count,
            receipt.proof, anchor.merkle_root,
        )  # fmt: skip
    except ConsortiumError as exc:
        raise ReceiptAlarm(
            f"{who}: round {anchor.round} does not include our record: {exc}"
        ) from None
