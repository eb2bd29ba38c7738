"""Calling a contract's view function in one ``eth_call``, as web3 would, at a fraction of its
cost.

Every round reads the chain several times (the job's progress, each participant's commitment),
and web3's contract call spends most of a local node's round trip in Python: it re-resolves
the function's ABI, normalises the arguments, runs the request and result formatters. Here the
call data is the function's selector and web3's own codec over its arguments, the request goes
straight to the provider (the same connection, session and cache), and the result is decoded
with web3's codec and its return normalisers (checksummed addresses), so callers get exactly
what ``ContractFunction.call`` returns. Measured on anvil: about 2.2 ms a call through web3,
0.8 ms here, against 0.8 ms for the bare request.
"""

from __future__ import annotations

from typing import Any

from eth_abi.exceptions import DecodingError
from eth_utils.abi import get_abi_input_types, get_abi_output_types
from hexbytes import HexBytes
from web3._utils.abi import map_abi_data
from web3._utils.normalizers import BASE_RETURN_NORMALIZERS
from web3.contract.contract import ContractFunction
from web3.exceptions import Web3RPCError
from web3.types import BlockIdentifier, RPCEndpoint

from consortium.chain.base import rpc_message
from consortium.chain.reverts import RevertDecoder
from consortium.errors import ChainUnavailable


def call_data(fn: ContractFunction) -> str:
    """The 0x-hex call data of ``fn`` with its bound arguments."""
    encoded = fn.w3.codec.encode(get_abi_input_types(fn.abi), fn.arguments)
    return fn.selector + encoded.hex()


def call_view(
    fn: ContractFunction,
    decoder: RevertDecoder,
    *,
    block_identifier: BlockIdentifier = "latest",
    sender: str | None = None,
) -> Any:
    """``fn.call()`` as one raw ``eth_call``; a revert raises its decoded ChainRevert, any other
    failure of the node ChainUnavailable."""
    request: dict[str, Any] = {"to": fn.address, "data": call_data(fn)}
    if sender:
        request["from"] = sender
    block = hex(block_identifier) if isinstance(block_identifier, int) else block_identifier
    if isinstance(block, bytes):
        block = HexBytes(block).to_0x_hex()
    response = fn.w3.provider.make_request(RPCEndpoint("eth_call"), [request, block])
    if response.get("error") is not None:
        failure = Web3RPCError(str(response["error"]), rpc_response=response)
        revert = decoder.from_exception(failure)
        if revert is None:
            raise ChainUnavailable(f"the node failed the call: {rpc_message(failure)}")
        raise revert
    output_types = get_abi_output_types(fn.abi)
    try:
        decoded = fn.w3.codec.decode(output_types, HexBytes(response.get("result") or b""))
    except DecodingError:
        raise ChainUnavailable(
            f"the node's answer to {fn.abi_element_identifier} at {fn.address} is not what the "
            "function returns (is the contract deployed at that address?)"
        ) from None
    normalized = map_abi_data(BASE_RETURN_NORMALIZERS, output_types, decoded)
    return normalized[0] if len(normalized) == 1 else normalized
