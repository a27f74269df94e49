"""Pool accounts: the operator's staking accounts whose operations the ledger tracks."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from ledger.address import AddressError, to_base58


@dataclass(frozen=True)
class PoolAccount:
    id: int
    address: str
    label: str | None
    added_at: datetime


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
    rows = conn.execute("SELECT id, address, label, added_at FROM pool_accounts ORDER BY id").fetchall()
    return [PoolAccount(*row) for row in rows]


def tracked_addresses(conn: psycopg.Connection) -> frozenset[str]:
    return frozenset(row[0] for row in conn.execute("SELECT address FROM pool_accounts"))


def find_account(conn: psycopg.Connection, key: str) -> PoolAccount | None:
    """Look an account up by its id or its address (either form). None if unknown.

    Raises ValueError when `key` is neither a positive integer nor an address.
    """
    key = key.strip()
    if key.isdigit():
        row = conn.execute(
            "SELECT id, address, label, added_at FROM pool_accounts WHERE id = %s", (int(key),)
        ).fetchone()
    else:
        try:
            address = to_base58(key)
        except AddressError as exc:
            raise ValueError(f"pool_account_id must be an account id or a TRON address: {exc}") from None
        row = conn.execute(
            "SELECT id, address, label, added_at FROM pool_accounts WHERE address = %s", (address,)
        ).fetchone()
    return PoolAccount(*row) if row else None
