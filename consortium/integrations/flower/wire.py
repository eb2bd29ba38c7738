"""The project's protocol messages inside Flower messages: one ``ConfigRecord`` named
:data:`RECORD`, whose values are the messages' canonical JSON as bytes, parsed as hostile (they
cross a network) on the other side.

Message types: ``train`` opens a round, ``query.receipt`` hands a receipt over, and
``query.hello`` asks a node which participant it speaks for: Flower's node ids are not
identities (a restarted SuperNode gets a new one), the address in a signed record is.
"""

from __future__ import annotations

import json
from typing import Any

from flwr.app import ConfigRecord, Message, RecordDict

from consortium.errors import UsageError
from consortium.jsonio import parse_json

RECORD = "consortium"
OPEN, RECEIPT, HELLO = "train", "query.receipt", "query.hello"
MAX_MESSAGE_BYTES = 256 * 2**20
"""A round's message holds a model (or an update) and its metrics; the audit's largest model
is 8 MB of float64."""


def content(**values: Any) -> RecordDict:
    """A message's content: each value as JSON bytes, or a string as it is. The receiving side
    checks what it parses (the digests inside included); it never hashes these bytes."""
    return RecordDict(
        {
            RECORD: ConfigRecord(
                {k: v if isinstance(v, str) else json.dumps(v).encode() for k, v in values.items()}
            )
        }
    )


def value(message: Message, key: str) -> Any:
    """The JSON value ``key`` of a message built by :func:`content`; a UsageError if absent,
    too large or not JSON."""
    record = message.content.config_records.get(RECORD) if message.has_content() else None
    raw = None if record is None else record.get(key)
    if not isinstance(raw, bytes):
        raise UsageError(f"the {message.metadata.message_type} message carries no {key}")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise UsageError(f"the {key} is larger than {MAX_MESSAGE_BYTES:,} bytes")
    return parse_json(raw)


def text(message: Message, key: str) -> str:
    """The string ``key`` of a message built by :func:`content`, or "" if absent."""
    record = message.content.config_records.get(RECORD) if message.has_content() else None
    found = None if record is None else record.get(key)
    return found if isinstance(found, str) else ""
