"""Gray release of the records API: the share of accounts the new path (PostgreSQL and the cache)
answers; the others are answered the legacy way, TronGrid (web/legacy.py).

The setting is one row in PostgreSQL (sql/012_rollout.sql, sql/015_rollout_new_percent.sql):
`new_percent` (0-100) of accounts are answered by the new path, and `shadow_percent` (0-100) of the
requests it answers are also asked the legacy way in the background and compared (web/shadow.py).
The operator's steps are the plan's: `rollout set 10`, then 50, then 100; `rollout rollback` sends
every account back to the legacy path. Every web process re-reads the row every
ROLLOUT_REFRESH_SECONDS (web/paths.py), so a change is in effect everywhere within that time,
without a restart.

Until an operator sets a share (`new_percent` NULL, or no row), ROLLOUT_START_NEW_PERCENT decides:
100 on a fresh install, which has no legacy path to keep serving; a platform cutting over from its
TronGrid path sets where its plan starts (0 or 10).

Stickiness: an account's bucket (0-99) is the first 8 bytes of SHA-256 of its base58 address,
mod 100, the same in every process and on every host (Python's `hash()` is salted per process).
An account goes the new way when its bucket is at or above 100 - new_percent, so raising the share
only ever adds accounts (10 % -> 50 % keeps the first 10 % where they were), and the legacy path
keeps the buckets below 100 - new_percent: the accounts a `legacy_percent` of the same size sent
there, so the migrated setting moves no account.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Rollout:
    new_percent: int = 100
    shadow_percent: int = 0
    set_by_operator: bool = False  # False: new_percent is ROLLOUT_START_NEW_PERCENT

    def to_json(self) -> dict[str, int | bool]:
        return {
            "new_percent": self.new_percent,
            "legacy_percent": 100 - self.new_percent,
            "shadow_percent": self.shadow_percent,
            "set_by_operator": self.set_by_operator,
        }


def bucket(address: str) -> int:
    """The account's stable bucket, 0-99."""
    return int.from_bytes(hashlib.sha256(address.encode()).digest()[:8], "big") % 100


def goes_legacy(address: str, new_percent: int) -> bool:
    return bucket(address) < 100 - new_percent


def split_accounts(addresses: Collection[str], new_percent: int) -> tuple[int, int]:
    """How many of `addresses` the new path and the legacy path serve at `new_percent`."""
    legacy = sum(1 for a in addresses if goes_legacy(a, new_percent))
    return len(addresses) - legacy, legacy


def check_percent(value: object, name: str) -> int:
    """An integer 0..100, else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"{name} must be an integer from 0 to 100 (got {value!r})")
    return value


def read_rollout(conn: psycopg.Connection, start_new_percent: int) -> Rollout:
    """The stored setting; `start_new_percent` (ROLLOUT_START_NEW_PERCENT) until an operator set one."""
    row = conn.execute("SELECT new_percent, shadow_percent FROM rollout WHERE id = 1").fetchone()
    if row is None:
        return Rollout(start_new_percent)
    return _rollout(row[0], row[1], start_new_percent)


def write_rollout(
    conn: psycopg.Connection,
    *,
    start_new_percent: int,
    new: int | None = None,
    shadow: int | None = None,
    by: str = "",
) -> Rollout:
    """Change either percentage (None keeps it); returns the new setting."""
    if new is not None:
        check_percent(new, "new percent")
    if shadow is not None:
        check_percent(shadow, "shadow percent")
    row = conn.execute(
        "INSERT INTO rollout (id, new_percent, shadow_percent, updated_by)"
        " VALUES (1, %(n)s, coalesce(%(s)s, 0), %(by)s)"
        " ON CONFLICT (id) DO UPDATE SET new_percent = coalesce(%(n)s, rollout.new_percent),"
        " shadow_percent = coalesce(%(s)s, rollout.shadow_percent), updated_at = now(), updated_by = %(by)s"
        " RETURNING new_percent, shadow_percent",
        {"n": new, "s": shadow, "by": by or None},
    ).fetchone()
    assert row is not None
    if not conn.autocommit:
        conn.commit()
    return _rollout(row[0], row[1], start_new_percent)


def _rollout(new_percent: int | None, shadow_percent: int, start_new_percent: int) -> Rollout:
    if new_percent is None:
        return Rollout(start_new_percent, int(shadow_percent))
    return Rollout(int(new_percent), int(shadow_percent), set_by_operator=True)
