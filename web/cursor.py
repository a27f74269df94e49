"""Opaque keyset cursors for the record lists.

A cursor holds the last row's sort key (block_num, tx_index, op_index, id), plus the list it was
issued for (kind and account id) and the number of the page it leads to. Clients must treat it as
opaque; the server validates every field, and a cursor from another list is rejected rather than
silently paging through the wrong rows.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass

from ledger.domain import INT64_MAX

_VERSION = "c1"
# Column types of the sort key: bigint, integer, smallint, bigint.
_KEY_MAX = (INT64_MAX, 2**31 - 1, 2**15 - 1, INT64_MAX)
_MAX_TOKEN = 200  # a real one is about 60 characters


class CursorError(ValueError):
    """A cursor that is not one this server issued (or has been altered)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    kind: str
    account_id: int
    page: int
    key: tuple[int, int, int, int]  # block_num, tx_index, op_index, id of the previous page's last row

    def encode(self) -> str:
        text = ".".join((_VERSION, self.kind, str(self.account_id), str(self.page), *map(str, self.key)))
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()


def decode_cursor(token: str) -> Cursor:
    if not token or len(token) > _MAX_TOKEN:
        raise CursorError("empty or too long")
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise CursorError("not base64url text") from None
    parts = text.split(".")
    if len(parts) != 8 or parts[0] != _VERSION:
        raise CursorError("unknown layout")
    numbers = parts[2:]
    if not all(n.isdigit() and n.isascii() and len(n) <= 19 for n in numbers):
        raise CursorError("fields are not non-negative integers")
    account_id, page, *key = map(int, numbers)
    if not 1 <= account_id <= INT64_MAX or page < 2:
        raise CursorError("account or page out of range")
    if any(value > limit for value, limit in zip(key, _KEY_MAX, strict=True)):
        raise CursorError("sort key out of range")
    return Cursor(kind=parts[1], account_id=account_id, page=page, key=(key[0], key[1], key[2], key[3]))
