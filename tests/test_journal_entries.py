"""The coordinator journal's typed entries: each kind round-trips, writes exactly the line
journals on disk already hold, and refuses a hand-edited field in one line naming the entry."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from eth_utils import keccak
from hexbytes import HexBytes

from consortium.chain.transact import SignedTransaction
from consortium.ledger.jobs import RoundAnchor
from consortium.orchestration import journal_entries
from consortium.orchestration.journal_entries import (
    AnchorMined,
    AnchorSigned,
    JobBinding,
    JournalEntry,
    MalformedEntry,
    RoundDelivered,
    RoundOpened,
)
from consortium.protocol.base import RoundIntent
from consortium.store.journal import Journal, JournalReader

LEDGER = "0x" + "1a" * 20
DEPLOYMENT = {
    "format": 1,
    "chain_id": 31337,
    "registry": "0x" + "2b" * 20,
    "consents": "0x" + "3c" * 20,
    "ledger": LEDGER,
    "block_number": 4,
    "deployer": "0x" + "4d" * 20,
}
RAW = b"\x02\xf8\x71" + bytes(range(100))
TX_HASH = "0x" + keccak(RAW).hex()
MINED_TX = "0x" + "ee" * 32
ANCHOR = RoundAnchor(
    1, 2, b"\x01" * 32, 3, 0b1101, b"\x02" * 32, b"\x03" * 32, b"\x04" * 32, block_number=9,
    timestamp=7,
)  # fmt: skip
ANCHOR_JSON = {
    "jobId": 1,
    "round": 2,
    "merkleRoot": "01" * 32,
    "participantCount": 3,
    "participantMask": "00" * 31 + "0d",
    "modelDigest": "02" * 32,
    "metricsDigest": "03" * 32,
    "previousModelDigest": "04" * 32,
    "blockNumber": 9,
    "timestamp": 7,
}
INTENT = RoundIntent(
    2, b"\x01" * 32, 3, b"\x02" * 32, b"\x03" * 32, (b"\x05" * 32, b"\x06" * 32, b"\x07" * 32),
    ("0xaa", "0xbb", "0xcc"), {"0xdd": "its update is not finite"},
)  # fmt: skip

# Each kind as the round engine, the anchorer and repair wrote it before these types: kind,
# entry, and the fields of its line besides ``seq``.
WRITTEN: list[tuple[str, JournalEntry, dict[str, Any]]] = [
    (
        "job", JobBinding(1, LEDGER, 31337, DEPLOYMENT),
        {"jobId": 1, "ledger": LEDGER, "chainId": 31337, "deployment": DEPLOYMENT},
    ),
    ("job", JobBinding(5, None, None), {"jobId": 5, "ledger": None, "chainId": None}),
    ("opened", RoundOpened(2, b"\x04" * 32), {"round": 2, "base": "04" * 32}),
    (
        "intent", INTENT,
        {
            "round": 2, "root": "01" * 32, "count": 3, "model": "02" * 32, "metrics": "03" * 32,
            "records": ["05" * 32, "06" * 32, "07" * 32], "participants": ["0xaa", "0xbb", "0xcc"],
            "refused": {"0xdd": "its update is not finite"},
        },
    ),
    (
        "signed", AnchorSigned(2, SignedTransaction(HexBytes(TX_HASH), HexBytes(RAW), 17)),
        {"round": 2, "txHash": TX_HASH, "raw": "0x" + RAW.hex(), "nonce": 17},
    ),
    (
        "anchored", AnchorMined(ANCHOR, MINED_TX, 101_234),
        {"round": 2, "anchor": ANCHOR_JSON, "txHash": MINED_TX, "gasUsed": 101_234},
    ),
    ("delivered", RoundDelivered(2, {"0xaa": "late"}), {"round": 2, "failures": {"0xaa": "late"}}),
    ("delivered", RoundDelivered(2, rebuilt=True), {"round": 2, "failures": {}, "rebuilt": True}),
]  # fmt: skip
IDS = [
    "job",
    "job-without-ledger",
    "opened",
    "intent",
    "signed",
    "anchored",
    "delivered",
    "rebuilt",
]


@pytest.mark.parametrize(("kind", "entry", "fields"), WRITTEN, ids=IDS)
def test_each_kind_writes_todays_line_and_reads_it_back(
    tmp_path: Path, kind: str, entry: JournalEntry, fields: dict[str, Any]
) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    journal_entries.record(journal, entry)
    journal.close()
    line = (tmp_path / "journal.jsonl").read_text()
    assert json.loads(line) == {"seq": 0, "kind": kind, **fields}
    assert journal_entries.as_line(entry) == {"kind": kind, **fields}
    read = JournalReader(tmp_path / "journal.jsonl").find(kind)[0]
    assert journal_entries.parse(read) == entry
    assert entry.to_json() == fields


def test_the_readers_pick_each_round_and_the_newest(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.jsonl")
    for _, entry, _ in WRITTEN:
        journal_entries.record(journal, entry)
    resent = AnchorMined(replace(ANCHOR, block_number=12), MINED_TX, 9)
    first = AnchorMined(replace(ANCHOR, round=1), MINED_TX, 8)
    journal_entries.record(journal, resent)
    journal_entries.record(journal, first)
    assert journal_entries.job_binding(journal) == JobBinding(5, None, None)
    assert journal_entries.last_opened(journal, 2) == RoundOpened(2, b"\x04" * 32)
    assert journal_entries.last_opened(journal, 3) is None
    assert journal_entries.last_intent(journal, 2) == INTENT
    assert journal_entries.signed_attempts(journal, 2) == [WRITTEN[4][1]]
    assert journal_entries.signed_attempts(journal, 1) == []
    assert journal_entries.last_anchored(journal, 2) == resent
    assert journal_entries.all_anchored(journal) == [WRITTEN[5][1], resent, first]
    assert journal_entries.newest_anchored(journal) == [first, resent]
    assert journal_entries.last_delivered(journal, 2) == RoundDelivered(2, rebuilt=True)
    journal.close()


def _edited(kind: str, **changes: Any) -> dict[str, Any]:
    """The line of ``kind`` written above, with fields changed (None: removed)."""
    fields = next(f for k, _, f in WRITTEN if k == kind)
    line = {"seq": 0, "kind": kind, **fields, **changes}
    return {k: v for k, v in line.items() if v is not None}


HOSTILE = [
    (_edited("signed", nonce=None), '"signed" entry of round 2 is malformed: it has no nonce'),
    (
        _edited("signed", nonce="17"),
        "\"signed\" entry of round 2 is malformed: nonce must be a non-negative integer, not '17'",
    ),
    (_edited("signed", raw="0x" + RAW.hex() + "0"), "raw must be lowercase hex after 0x"),
    (_edited("signed", raw="0x" + RAW.hex()[:-2]), "txHash is not the hash of raw"),
    (_edited("signed", txHash=TX_HASH.upper()), "txHash must be lowercase hex after 0x"),
    (
        _edited("opened", round=-1),
        '"opened" entry of round -1 is malformed: round must be a positive integer, not -1',
    ),
    (_edited("opened", base="zz" * 32), "base must be 64 lowercase hex digits"),
    (_edited("intent", records=["05" * 31]), "records[0] must be 64 lowercase hex digits"),
    (_edited("intent", count=None), '"intent" entry of round 2 is malformed: it has no count'),
    (_edited("intent", participants="0xaa"), "participants must be a list of strings"),
    (_edited("intent", refused={"0xdd": 1}), "refused must be an object of reasons"),
    (_edited("anchored", anchor=[]), "anchor must be an object, not []"),
    (_edited("anchored", anchor={**ANCHOR_JSON, "jobId": -1}), "its anchor's field 'jobId' must"),
    (
        _edited("anchored", anchor={k: v for k, v in ANCHOR_JSON.items() if k != "timestamp"}),
        "its anchor has no timestamp",
    ),
    (
        _edited("anchored", anchor={**ANCHOR_JSON, "merkleRoot": "0x" + "01" * 32}),
        "its anchor's merkleRoot must be 64 lowercase hex digits",
    ),
    (_edited("anchored", round=3), '"anchored" entry of round 3 is malformed: its anchor is of'),
    (_edited("anchored", gasUsed=-5), "gasUsed must be a non-negative integer, not -5"),
    (_edited("delivered", failures=["0xaa"]), "failures must be an object of reasons"),
    (_edited("delivered", rebuilt="yes"), "rebuilt must be true or false, not 'yes'"),
    (_edited("job", ledger="0x12"), '"job" entry is malformed: ledger must be an address or null'),
    (_edited("job", jobId=-1), "jobId must be a non-negative integer, not -1"),
    (_edited("job", deployment=[]), "deployment must be an object, not []"),
]


@pytest.mark.parametrize(("line", "expected"), HOSTILE)
def test_a_hand_edited_field_is_one_line_naming_the_entry(
    tmp_path: Path, line: dict[str, Any], expected: str
) -> None:
    path = tmp_path / "journal.jsonl"
    path.write_text(json.dumps(line) + "\n")
    journal = JournalReader(path)
    read = {
        "job": lambda: journal_entries.job_binding(journal),
        "opened": lambda: journal_entries.last_opened(journal, line["round"]),
        "intent": lambda: journal_entries.last_intent(journal, line["round"]),
        "signed": lambda: journal_entries.signed_attempts(journal, line["round"]),
        "anchored": lambda: journal_entries.newest_anchored(journal),
        "delivered": lambda: journal_entries.last_delivered(journal, line["round"]),
    }[line["kind"]]
    with pytest.raises(MalformedEntry) as raised:
        read()
    message = str(raised.value)
    assert "\n" not in message and expected in message, message
    assert message.startswith(f'{path}: the journal\'s "{line["kind"]}" entry')
    assert message.endswith("`consortium journal repair` rebuilds it from the chain and the store")
    with pytest.raises(MalformedEntry, match="is malformed"):
        journal_entries.parse(line)  # repair reads salvaged lines the same way


@pytest.mark.parametrize("number", [True, "2", 2.0, None])
def test_a_round_that_is_no_round_number_is_refused(number: object) -> None:
    """The journal indexes only integer rounds, so such an entry is met by :func:`parse`."""
    with pytest.raises(MalformedEntry, match=f"round {number!r} .* round must be a positive"):
        journal_entries.parse(_edited("opened", round=number) | {"round": number})


def test_a_huge_wrong_value_is_quoted_short() -> None:
    with pytest.raises(MalformedEntry) as raised:
        RoundDelivered.from_json({"round": 1, "failures": "x" * 100_000})
    assert len(str(raised.value)) < 200


def test_kinds_the_coordinator_does_not_write_are_not_parsed() -> None:
    assert journal_entries.parse({"kind": "sent", "round": 1, "jobId": 1}) is None
