"""Revert decoding for the project's contracts, built once from the committed artifacts."""

from __future__ import annotations

from functools import cache

from consortium.chain.artifacts import all_artifacts
from consortium.chain.reverts import RevertDecoder


@cache
def revert_decoder() -> RevertDecoder:
    """A decoder that knows every custom error of every contract, with its NatSpec notice."""
    artifacts = all_artifacts()
    return RevertDecoder([a.abi for a in artifacts], [a.userdoc for a in artifacts])
