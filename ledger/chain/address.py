"""TRON address forms: hex (`41` + 20 bytes, what nodes print by default) and base58check (`T...`).

The ledger stores base58 only (java-tron prints hex unless `visible=true`,
framework/.../services/http/Util.java); nodes and TronGrid hand us either form
depending on `visible`, so every address is converted here, at the edge.
"""

from __future__ import annotations

import functools

import base58

ADDRESS_PREFIX = 0x41  # mainnet, Nile and private nets all use the same prefix byte
ADDRESS_BYTES = 21  # prefix + 20-byte account id
HEX_LENGTH = 2 * ADDRESS_BYTES
# 21 bytes + 4 checksum bytes starting with 0x41 always encode to 34 base58 characters, starting with T.
BASE58_LENGTH = 34

_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class AddressError(ValueError):
    """Text that is not a valid TRON address in either form."""


def to_base58(addr: str) -> str:
    """Return the base58check form (`T...`) of a hex or base58 address; AddressError if invalid."""
    if not isinstance(addr, str):  # before the cache, which would fail on an unhashable value
        raise AddressError(f"address must be a string, got {type(addr).__name__}")
    return _to_base58(addr)


# Cached (a pure function; errors are not cached): the parser converts every stake transaction's
# addresses and the same accounts come back block after block, while two SHA-256 and a bignum base
# conversion per address were a visible share of the listener's catch-up time.
@functools.lru_cache(maxsize=65_536)
def _to_base58(addr: str) -> str:
    return base58.b58encode_check(_to_bytes(addr)).decode("ascii")


def to_hex(addr: str) -> str:
    """Return the lowercase hex form (`41...`, 42 chars) of a hex or base58 address."""
    return _to_bytes(addr).hex()


def is_address(text: object) -> bool:
    """True when `text` is a valid TRON address in hex or base58 form."""
    if not isinstance(text, str):
        return False
    try:
        _to_bytes(text)
    except AddressError:
        return False
    return True


def _to_bytes(addr: str) -> bytes:
    if not isinstance(addr, str):
        raise AddressError(f"address must be a string, got {type(addr).__name__}")
    if len(addr) == HEX_LENGTH and all(c in _HEX_DIGITS for c in addr):
        raw = bytes.fromhex(addr)
        if raw[0] != ADDRESS_PREFIX:
            raise AddressError(f"hex address {addr!r} does not start with 41")
        return raw
    if len(addr) == BASE58_LENGTH and addr.startswith("T"):
        try:
            raw = base58.b58decode_check(addr)
        except ValueError as exc:  # bad alphabet character or bad checksum
            raise AddressError(f"base58 address {addr!r} is invalid: {exc}") from None
        if len(raw) != ADDRESS_BYTES or raw[0] != ADDRESS_PREFIX:
            raise AddressError(f"base58 address {addr!r} does not decode to 41 + 20 bytes")
        return raw
    raise AddressError(
        f"{addr!r} is not a TRON address: expected 42 hex chars starting with 41 "
        f"or a 34-char base58check address starting with T"
    )
