"""A chain reached over JSON-RPC on HTTP(S): a local anvil, or any node of a real network."""

from __future__ import annotations

import requests
from web3 import HTTPProvider, Web3
from web3.types import RPCEndpoint

from consortium.chain.base import Chain, lean
from consortium.crypto.devkeys import ANVIL_KEYS
from consortium.errors import ChainUnavailable, UsageError


class RpcChain(Chain):
    """Any JSON-RPC endpoint over HTTP(S)."""

    def __init__(
        self,
        url: str,
        expected_chain_id: int | None = None,
        poll_latency: float = 0.05,
        *,
        request_timeout: float = 30.0,
        confirmations: int = 1,
    ) -> None:
        """``confirmations``: how many blocks must hold a transaction before its receipt is
        returned (:attr:`Chain.confirmations`); 1, the block that mines it, suits a node
        whose blocks are final once made (anvil, a QBFT network)."""
        if confirmations < 1:
            raise UsageError(f"confirmations must be 1 or more, got {confirmations}")
        super().__init__()
        self.url = url
        self.poll_latency = poll_latency
        self.confirmations = confirmations
        self._session = requests.Session()
        # requests looks the proxy and netrc settings up in the environment on every request
        # (a sizeable share of a local node's round trip); they are read once, here, instead.
        self._session.proxies.update(requests.utils.get_environ_proxies(url))
        self._session.trust_env = False
        # web3 asks for the chain id around every call and estimate; an endpoint's chain id
        # does not change (connect() checks it once), so the provider answers from its cache.
        self.w3 = lean(
            Web3(
                HTTPProvider(
                    url,
                    request_kwargs={"timeout": request_timeout},
                    session=self._session,
                    cache_allowed_requests=True,
                    cacheable_requests={RPCEndpoint("eth_chainId")},
                )
            )
        )
        client = self._probe()
        self.chain_id = self.w3.eth.chain_id
        if expected_chain_id is not None and self.chain_id != expected_chain_id:
            self.close()
            raise UsageError(
                f"{url} is chain id {self.chain_id}, but chain id {expected_chain_id} is configured"
            )
        self.description = f"{url} ({client}, chain id {self.chain_id})"

    def _probe(self) -> str:
        """The node's client version; ``web3_clientVersion`` is answered by every node and,
        unlike eth_* methods, is not retried by web3, so an unreachable URL fails fast."""
        try:
            response = self.w3.provider.make_request(RPCEndpoint("web3_clientVersion"), [])
        except requests.ConnectionError:
            self.close()
            raise ChainUnavailable(f"cannot reach {self.url}: connection refused") from None
        except requests.Timeout:
            self.close()
            raise ChainUnavailable(f"cannot reach {self.url}: timed out") from None
        except (requests.RequestException, ValueError) as exc:
            self.close()
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ChainUnavailable(f"cannot reach {self.url}: {reason}") from None
        return str(response.get("result", "unknown client"))

    @property
    def _faucet_key(self) -> str:
        return ANVIL_KEYS[0]

    def _advance_clock(self, seconds: int) -> None:
        # Dev-chain-only methods (anvil, hardhat, ganache); guarded by _require_local_dev.
        self.w3.provider.make_request(RPCEndpoint("evm_increaseTime"), [seconds])
        self.w3.provider.make_request(RPCEndpoint("evm_mine"), [])

    def close(self) -> None:
        self._session.close()
