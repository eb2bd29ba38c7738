"""Connecting to a chain by URL: the embedded one in this process, or a node over HTTP(S).

The connection types live in their own modules (:mod:`consortium.chain.base` the interface,
:mod:`consortium.chain.rpc` and :mod:`consortium.chain.embedded` its two implementations);
this one only picks between them, so that neither implementation imports the other.
"""

from __future__ import annotations

from consortium.chain.base import Chain
from consortium.chain.rpc import RpcChain
from consortium.errors import UsageError

EMBEDDED = "embedded"


def connect(
    url: str, *, chain_id: int | None = None, poll_latency: float = 0.05, confirmations: int = 1
) -> Chain:
    """The chain at ``url``: ``"embedded"`` for a fresh in-process chain, or an http(s) URL.

    ``chain_id``, when given, must match the endpoint's, so that a configuration pointing at
    the wrong network fails before anything is signed. ``confirmations`` is how many blocks
    must hold a transaction before its receipt is returned. The embedded chain refuses more
    than one: it mines a block only when a transaction arrives, so a wait for blocks on top
    of the last one would never end, and it never reorganises, so there is nothing to wait
    for.
    """
    if url == EMBEDDED:
        if confirmations != 1:
            raise UsageError(
                f"the embedded chain takes 1 confirmation, not {confirmations}: it mines a "
                "block only when a transaction arrives and never reorganises"
            )
        # Imported here: py-evm and eth-tester take a third of a second to import, and only
        # the embedded chain needs them.
        from consortium.chain.embedded import EmbeddedChain

        chain: Chain = EmbeddedChain()
        if chain_id is not None and chain.chain_id != chain_id:
            raise UsageError(
                f"the embedded chain is chain id {chain.chain_id}, "
                f"but chain id {chain_id} is configured"
            )
        return chain
    if url.startswith(("http://", "https://")):
        return RpcChain(url, chain_id, poll_latency, confirmations=confirmations)
    raise UsageError(f"unsupported chain URL {url!r}: use 'embedded' or an http(s):// URL")
