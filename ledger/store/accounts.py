"""Pool accounts: the operator's staking accounts whose operations the ledger tracks."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import psycopg

from ledger.chain.address import AddressError, to_base58
from ledger.domain import INT64_MAX


@dataclass(frozen=True)
class PoolAccount:
    id: int
    address: str
    label: str | None
    added_at: datetime
    # The platform's own id of the account (sql/011_external_ids.sql); None when it has none.
    external_id: str | None = None


_COLUMNS = "id, address, label, added_at, external_id"


def add_accounts(conn: psycopg.Connection, addresses: list[str], label: str | None = None) -> list[PoolAccount]:
    """Add accounts (hex or base58; stored base58); existing ones are kept as they are."""
    normalised = [to_base58(a) for a in addresses]
    with conn.transaction():
        for address in normalised:
            conn.execute(
                "INSERT INTO pool_accounts (address, label) VALUES (%s, %s) ON CONFLICT (address) DO NOTHING",
                (address, label),
            )
    return [a for a in list_accounts(conn) if a.address in set(normalised)]


def list_accounts(conn: psycopg.Connection) -> list[PoolAccount]:
    rows = conn.execute(f"SELECT {_COLUMNS} FROM pool_accounts ORDER BY id").fetchall()
    return [PoolAccount(*row) for row in rows]


def tracked_addresses(conn: psycopg.Connection) -> frozenset[str]:
    return frozenset(row[0] for row in conn.execute("SELECT address FROM pool_accounts"))


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


class AccountKeyError(ValueError):
    """Text that is neither an account id nor a TRON address."""


def parse_account_key(key: str) -> int | str:
    """An account id (int) or a base58 address (str) from what a user gave (id, hex or base58)."""
    key = key.strip()
    # A hex address can be all digits, so it is recognised before the numeric id.
    if len(key) == 42 and key.startswith("41") and all(c in _HEX_DIGITS for c in key):
        return _base58(key)
    if key.isdigit() and key.isascii():
        # Length first: int() refuses strings past 4,300 digits with a plain ValueError.
        if len(key) > len(str(INT64_MAX)) or not 1 <= int(key) <= INT64_MAX:
            raise AccountKeyError(
                f"account id {key[:20]}{'…' if len(key) > 20 else ''} is out of range (1 to {INT64_MAX})"
            )
        return int(key)
    return _base58(key)


def _base58(key: str) -> str:
    try:
        return to_base58(key)
    except AddressError as exc:
        raise AccountKeyError(f"pool_account_id must be an account id or a TRON address: {exc}") from None


def find_account(conn: psycopg.Connection, key: int | str) -> PoolAccount | None:
    """Look an account up by its id or its address (either form). None if unknown.

    Raises AccountKeyError when `key` is neither an account id nor an address.
    """
    normal = parse_account_key(key) if isinstance(key, str) else key
    column = "id" if isinstance(normal, int) else "address"
    row = conn.execute(f"SELECT {_COLUMNS} FROM pool_accounts WHERE {column} = %s", (normal,)).fetchone()
    return PoolAccount(*row) if row else None


# Mirrors the CHECK of sql/011_external_ids.sql, so a bad id is refused with a message, not a
# constraint violation.
EXTERNAL_ID_FORM = "1 to 64 printable ASCII characters, no spaces, not starting with = + - @ (e.g. 42)"
_EXTERNAL_ID = re.compile(r"[!-~]{1,64}")
# A cell starting with one of these is a formula to a spreadsheet: an id exported to one (by the
# platform, or from `accounts list`) must not run as one.
_FORMULA_START = ("=", "+", "-", "@")


class ExternalIdError(ValueError):
    """Text that cannot be a platform external id."""


def parse_external_id(text: str) -> str:
    """The external id in `text` (surrounding blanks dropped); ExternalIdError if it has another form."""
    value = text.strip()
    if not _EXTERNAL_ID.fullmatch(value) or value.startswith(_FORMULA_START):
        raise ExternalIdError(f"an external id is {EXTERNAL_ID_FORM}")
    return value


MAX_LABEL = 200
_LABEL_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class LabelError(ValueError):
    """Text that cannot be an account's label."""


def parse_label(text: str) -> str:
    """A label as stored: at most MAX_LABEL characters, no control characters (a newline or a
    terminal escape would be printed by `accounts list` as it is; PostgreSQL text cannot hold NUL)."""
    value = text.strip()
    if len(value) > MAX_LABEL:
        raise LabelError(f"at most {MAX_LABEL} characters (got {len(value)})")
    found = _LABEL_CONTROL.search(value)
    if found:
        raise LabelError(f"no control characters (found {found.group()!r} at character {found.start() + 1})")
    return value


def find_by_external_id(conn: psycopg.Connection, external_id: str) -> PoolAccount | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM pool_accounts WHERE external_id = %s", (external_id,)).fetchone()
    return PoolAccount(*row) if row else None
