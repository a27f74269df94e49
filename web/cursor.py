"""Opaque, signed keyset cursors for the record lists and the summary's receivers.

A cursor holds the last row's sort key (block_num, tx_index, op_index, id), plus the list it was
issued for (kind and account id) and the number of the page it leads to, and an HMAC-SHA256 of all
that under the server's `CURSOR_SECRET`. So a client cannot make one up: a page number or key it
altered fails the signature (400), and every cache key a cursor leads to is one this server issued.
The server still validates every field, and a cursor from another list is rejected rather than
silently paging through the wrong rows. A receivers cursor (`ReceiverCursor`) holds, in the same
signed form, the account id and the last (receiver address, resource) of the page before.

Rotation: `CURSOR_SECRET=new,old` signs with the first secret and accepts any of them; drop the old
one once no client can still hold a cursor signed with it (cached pages keep theirs for up to
`CACHE_TTL_HISTORICAL`, 1 h by default).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.domain import INT64_MAX

_VERSION = "c2"
_RECEIVERS = "r1"  # the layout of a receivers cursor
# Column types of the sort key: bigint, integer, smallint, bigint.
_KEY_MAX = (INT64_MAX, 2**31 - 1, 2**15 - 1, INT64_MAX)
_MAX_TOKEN = 200  # a real one is about 80 characters
_SIG_BYTES = 16  # HMAC-SHA256 cut to 128 bits (RFC 2104 section 5: truncation to half is fine)


class CursorError(ValueError):
    """A cursor that is not one this server issued (or has been altered)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    kind: str
    account_id: int
    page: int
    key: tuple[int, int, int, int]  # block_num, tx_index, op_index, id of the previous page's last row

    def encode(self, secret: bytes) -> str:
        """`<payload>.<signature>`, both base64url ('.' is not in that alphabet)."""
        text = ".".join((_VERSION, self.kind, str(self.account_id), str(self.page), *map(str, self.key)))
        body = _b64(text.encode())
        return f"{body}.{_b64(_sign(secret, body))}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(secret: bytes, body: str) -> bytes:
    return hmac.new(secret, body.encode(), hashlib.sha256).digest()[:_SIG_BYTES]


@dataclass(frozen=True, slots=True)
class ReceiverCursor:
    account_id: int
    key: tuple[str, str]  # receiver address, resource of the previous page's last receiver record

    def encode(self, secret: bytes) -> str:
        body = _b64(".".join((_RECEIVERS, str(self.account_id), *self.key)).encode())
        return f"{body}.{_b64(_sign(secret, body))}"


def _signed_text(token: str, secrets: Sequence[bytes]) -> str:
    """The payload of `token` if one of `secrets` signed it; CursorError otherwise."""
    if not token or len(token) > _MAX_TOKEN:
        raise CursorError("empty or too long")
    body, dot, signature = token.partition(".")
    if not dot or not body.isascii() or not signature.isascii():
        raise CursorError("not a cursor this server issued")
    try:
        given = base64.urlsafe_b64decode(signature + "=" * (-len(signature) % 4))
        text = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise CursorError("not base64url text") from None
    if not any(hmac.compare_digest(given, _sign(secret, body)) for secret in secrets):
        raise CursorError("signature does not match: not a cursor this server issued, or altered")
    return text


def decode_receiver_cursor(token: str, secrets: Sequence[bytes]) -> ReceiverCursor:
    """The receivers cursor in `token` if one of `secrets` signed it; CursorError otherwise."""
    parts = _signed_text(token, secrets).split(".")
    if len(parts) != 4 or parts[0] != _RECEIVERS:
        raise CursorError("not a receivers cursor")
    number, receiver, resource = parts[1:]
    if not (number.isdigit() and number.isascii() and len(number) <= 19 and 1 <= int(number) <= INT64_MAX):
        raise CursorError("account out of range")
    if not (receiver.isalnum() and resource.isalnum()):
        raise CursorError("receiver or resource is not alphanumeric")
    return ReceiverCursor(int(number), (receiver, resource))


def decode_cursor(token: str, secrets: Sequence[bytes]) -> Cursor:
    """The cursor in `token` if one of `secrets` signed it; CursorError otherwise."""
    text = _signed_text(token, secrets)
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
