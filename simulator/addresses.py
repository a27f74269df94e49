"""TRON addresses: base58check, the hex form, and deterministic derivation.

Written from scratch on purpose (not the `base58` package the product uses), so a bug in the
product's address handling cannot be masked by sharing one implementation with the simulator.
"""

from __future__ import annotations

import hashlib

ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_DIGITS = {char: index for index, char in enumerate(ALPHABET)}
ADDRESS_PREFIX = 0x41  # every TRON mainnet address starts with this byte
ADDRESS_BYTES = 21


def _checksum(payload: bytes) -> bytes:
    return hashlib.sha256(hashlib.sha256(payload).digest()).digest()[:4]


def b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    chars: list[str] = []
    while number:
        number, rest = divmod(number, 58)
        chars.append(ALPHABET[rest])
    # Each leading zero byte is written as one "1" (the zero digit); the integer loses them.
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(chars))


def b58decode(text: str) -> bytes:
    number = 0
    for char in text:
        digit = _DIGITS.get(char)
        if digit is None:
            raise ValueError(f"invalid base58 character {char!r}")
        number = number * 58 + digit
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + body


def b58check_encode(payload: bytes) -> str:
    return b58encode(payload + _checksum(payload))


def b58check_decode(text: str) -> bytes:
    raw = b58decode(text)
    if len(raw) < 5:
        raise ValueError("base58check string too short")
    payload, checksum = raw[:-4], raw[-4:]
    if _checksum(payload) != checksum:
        raise ValueError("base58check checksum mismatch")
    return payload


def hex_to_base58(hex_address: str) -> str:
    raw = bytes.fromhex(hex_address)
    _check_raw(raw, hex_address)
    return b58check_encode(raw)


def base58_to_hex(address: str) -> str:
    """`T...` to the 42-char lowercase hex form; raises ValueError for anything invalid."""
    raw = b58check_decode(address)
    _check_raw(raw, address)
    return raw.hex()


def _check_raw(raw: bytes, shown: str) -> None:
    if len(raw) != ADDRESS_BYTES or raw[0] != ADDRESS_PREFIX:
        raise ValueError(f"not a TRON address: {shown!r}")


def derive_address(label: str) -> str:
    """A deterministic, valid hex address from a label (seeded pools, demo accounts)."""
    return bytes([ADDRESS_PREFIX]).hex() + hashlib.sha256(label.encode()).digest()[:20].hex()


class AddressBook:
    """hex -> base58 memo. Every address the generator uses comes from a finite pool, so the
    memo stays small, and visible=true rendering does not redo the bignum division per field."""

    def __init__(self) -> None:
        self._b58: dict[str, str] = {}

    def b58(self, hex_address: str) -> str:
        found = self._b58.get(hex_address)
        if found is None:
            found = hex_to_base58(hex_address)
            self._b58[hex_address] = found
        return found
