"""Turning a revert, in whatever shape a backend reports it, into the contract's own words.

The contracts revert with custom errors and document each one with a NatSpec ``@notice``
(solc's ``userdoc``). A revert becomes :class:`ChainRevert` with the error's name, its decoded
arguments and that notice with the arguments filled in, so that users read "0xAb…12 is not an
active member." instead of a selector and hex.
"""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterable, Mapping
from typing import Any

from eth_abi import abi
from eth_abi.exceptions import DecodingError
from eth_abi.grammar import ABIType, BasicType, TupleType, parse
from eth_utils import to_checksum_address
from eth_utils.abi import abi_to_signature, function_signature_to_4byte_selector
from web3.exceptions import ContractLogicError, Web3RPCError

from consortium.errors import ChainRevert

ERROR_SELECTOR = bytes.fromhex("08c379a0")  # Error(string), from require(cond, "text")
PANIC_SELECTOR = bytes.fromhex("4e487b71")  # Panic(uint256), from failed asserts, overflows, ...
# https://docs.soliditylang.org/en/v0.8.28/control-structures.html#panic-via-assert-and-error-via-require
PANIC_REASONS = {
    0x00: "generic compiler-inserted panic",
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division or modulo by zero",
    0x21: "conversion to an invalid enum value",
    0x22: "incorrectly encoded storage byte array",
    0x31: "pop() on an empty array",
    0x32: "array index out of bounds",
    0x41: "too much memory allocated",
    0x51: "call to a zero-initialized internal function",
}
_PARAMETER = re.compile(r"`([A-Za-z_$][A-Za-z0-9_$]*)`")


class RevertDecoder:
    """Knows the custom errors of a set of contracts and how their NatSpec describes them."""

    def __init__(
        self, abis: Iterable[list[dict[str, Any]]], userdocs: Iterable[Mapping[str, Any]] = ()
    ) -> None:
        self._errors: dict[bytes, dict[str, Any]] = {}
        for contract_abi in abis:
            for entry in contract_abi:
                if entry.get("type") == "error":
                    selector = function_signature_to_4byte_selector(abi_to_signature(entry))
                    self._errors[selector] = entry
        self._notices: dict[str, str] = {}
        for userdoc in userdocs:
            for signature, docs in userdoc.get("errors", {}).items():
                notices = [doc["notice"] for doc in docs if doc.get("notice")]
                if notices:
                    self._notices.setdefault(signature, notices[0])

    def decode(self, data: bytes) -> ChainRevert:
        """The error that revert ``data`` encodes; unknown or malformed data is kept as hex."""
        if not data:
            return ChainRevert("EmptyRevert", {}, "reverted without a reason")
        selector, payload = data[:4], data[4:]
        try:
            if selector == ERROR_SELECTOR:
                (reason,) = abi.decode(["string"], payload)
                return ChainRevert("Error", {"reason": reason}, reason)
            if selector == PANIC_SELECTOR:
                (code,) = abi.decode(["uint256"], payload)
                reason = PANIC_REASONS.get(code, "unknown panic code")
                return ChainRevert("Panic", {"code": code}, f"panic 0x{code:02x}: {reason}")
            if selector in self._errors:
                return self._decode_custom(self._errors[selector], payload)
        except DecodingError:
            pass
        hex_data = "0x" + data.hex()
        return ChainRevert(
            "UnknownError",
            {"selector": "0x" + selector.hex(), "data": hex_data},
            f"unknown error 0x{selector.hex()} (revert data {hex_data})",
        )

    def from_exception(self, exc: BaseException) -> ChainRevert | None:
        """The decoded revert carried by ``exc``, or None when ``exc`` is not a revert."""
        data = revert_data(exc)
        return None if data is None else self.decode(data)

    def _decode_custom(self, entry: dict[str, Any], payload: bytes) -> ChainRevert:
        inputs = entry.get("inputs", [])
        types = [parse(_canonical_type(i)) for i in inputs]
        values = abi.decode([t.to_type_str() for t in types], payload)
        args = {
            item.get("name") or f"arg{index}": _normalize(value, abi_type)
            for index, (item, abi_type, value) in enumerate(zip(inputs, types, values, strict=True))
        }
        notice = self._notices.get(abi_to_signature(entry))
        if notice is not None:
            message = _PARAMETER.sub(
                lambda m: format_value(args[m[1]]) if m[1] in args else m[0], notice
            )
        else:
            listed = ", ".join(f"{k}={format_value(v)}" for k, v in args.items())
            message = f"{entry['name']}({listed})"
        return ChainRevert(entry["name"], args, message)


def format_value(value: object) -> str:
    """How an error argument reads in a message: checksummed addresses, 0x-hex bytes, decimal
    integers, and lists and tuples of those."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, tuple):
        return "(" + ", ".join(format_value(v) for v in value) + ")"
    return str(value)


def revert_data(exc: BaseException) -> bytes | None:
    """The raw revert data in ``exc``: ``b""`` for a revert without data, None for no revert.

    Shapes seen (web3 8, anvil 1.7, eth-tester 0.14):

    - ``ContractLogicError`` and its subclasses ``ContractCustomError``/``ContractPanicError``,
      with ``.data`` a 0x-hex string: anvil, and :class:`EmbeddedChain`, which normalizes
      eth-tester to the same shape. Nodes that send no data leave ``None`` or ``"no data"``.
    - ``Web3RPCError`` with ``error.data`` hex but a message web3 does not recognise as a
      revert (Besu's "Execution reverted" for ``Error(string)``).
    - eth-tester's own ``TransactionFailed``, from a plain ``EthereumTesterProvider``: the data
      as ``repr(bytes)`` after "execution reverted: ", or already decoded to a reason string.
    """
    if isinstance(exc, ContractLogicError):
        data = _hex_bytes(exc.data)
        return b"" if data is None else data
    if isinstance(exc, Web3RPCError):
        error = (exc.rpc_response or {}).get("error") or {}
        if not isinstance(error, Mapping):
            return None
        data = _hex_bytes(error.get("data"))
        if data is None and "revert" in str(error.get("message", "")).lower():
            return b""
        return data
    # eth-tester (slow to import) is loaded only with an embedded chain: none of its
    # exceptions can exist before, so it is looked up rather than imported here.
    tester = sys.modules.get("eth_tester.exceptions")
    if tester is not None and isinstance(exc, tester.TransactionFailed) and exc.args:
        return _tester_data(exc.args[0])
    return None


def _tester_data(detail: object) -> bytes:
    if isinstance(detail, Exception):  # raised by EthereumTester itself, wrapping py-evm's
        detail = detail.args[0] if detail.args else b""
    if isinstance(detail, bytes):
        return detail
    text = str(detail).removeprefix("execution reverted").removeprefix(": ")
    if text.startswith(("b'", 'b"')):
        return ast.literal_eval(text)
    return ERROR_SELECTOR + abi.encode(["string"], [text]) if text else b""


def _hex_bytes(value: object) -> bytes | None:
    if isinstance(value, Mapping):  # hardhat-style {"message": ..., "data": "0x..."}
        return _hex_bytes(value.get("data"))
    if isinstance(value, str) and value.startswith("0x"):
        try:
            return bytes.fromhex(value[2:])
        except ValueError:
            return None
    return None


def _canonical_type(item: Mapping[str, Any]) -> str:
    """The ABI type string of an input, with struct components spelled out as a tuple."""
    kind: str = item["type"]
    if kind.startswith("tuple"):
        components = ",".join(_canonical_type(c) for c in item["components"])
        return f"({components}){kind[len('tuple') :]}"
    return kind


def _normalize(value: Any, abi_type: ABIType) -> Any:
    """Decoded values with checksummed addresses, lists for arrays and tuples for structs."""
    if abi_type.is_array:
        return [_normalize(v, abi_type.item_type) for v in value]
    if isinstance(abi_type, TupleType):
        return tuple(_normalize(v, t) for v, t in zip(value, abi_type.components, strict=True))
    if isinstance(abi_type, BasicType) and abi_type.base == "address":
        return to_checksum_address(value)
    return value
