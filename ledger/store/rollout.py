"""Gray release of the records API: which accounts the legacy TronGrid path answers.

The setting is one row in PostgreSQL (sql/012_rollout.sql): `legacy_percent` (0-100) of accounts
are answered the old way (web/legacy.py), and `shadow_percent` (0-100) of the requests answered
natively are also asked the old way in the background and compared (web/shadow.py). Every web
process re-reads the row every ROLLOUT_REFRESH_SECONDS (web/paths.py), so `rollout set 0` is a
rollback in effect everywhere within that time, without a restart.

Stickiness: an account's bucket (0-99) is the first 8 bytes of SHA-256 of its base58 address,
mod 100, the same in every process and on every host (Python's `hash()` is salted per process).
An account goes the legacy way when its bucket is below the percentage, so raising the percentage
only ever adds accounts (10 % -> 50 % keeps the first 10 % where they were).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import psycopg


@dataclass(frozen=True)
class Rollout:
    legacy_percent: int = 0
    shadow_percent: int = 0

    def to_json(self) -> dict[str, int]:
        return {"legacy_percent": self.legacy_percent, "shadow_percent": self.shadow_percent}


def bucket(address: str) -> int:
    """The account's stable bucket, 0-99."""
    return int.from_bytes(hashlib.sha256(address.encode()).digest()[:8], "big") % 100


def goes_legacy(address: str, legacy_percent: int) -> bool:
    return bucket(address) < legacy_percent


def check_percent(value: object, name: str) -> int:
    """An integer 0..100, else ValueError naming `name`."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
        raise ValueError(f"{name} must be an integer from 0 to 100 (got {value!r})")
    return value


def read_rollout(conn: psycopg.Connection) -> Rollout:
    row = conn.execute("SELECT legacy_percent, shadow_percent FROM rollout WHERE id = 1").fetchone()
    return Rollout() if row is None else Rollout(int(row[0]), int(row[1]))


def write_rollout(
    conn: psycopg.Connection, *, legacy: int | None = None, shadow: int | None = None, by: str = ""
) -> Rollout:
    """Change either percentage (None keeps it); returns the new setting."""
    if legacy is not None:
        check_percent(legacy, "legacy percent")
    if shadow is not None:
        check_percent(shadow, "shadow percent")
    row = conn.execute(
        "INSERT INTO rollout (id, legacy_percent, shadow_percent, updated_by)"
        " VALUES (1, coalesce(%(l)s, 0), coalesce(%(s)s, 0), %(by)s)"
        " ON CONFLICT (id) DO UPDATE SET legacy_percent = coalesce(%(l)s, rollout.legacy_percent),"
        " shadow_percent = coalesce(%(s)s, rollout.shadow_percent), updated_at = now(), updated_by = %(by)s"
        " RETURNING legacy_percent, shadow_percent",
        {"l": legacy, "s": shadow, "by": by or None},
    ).fetchone()
    assert row is not None
    if not conn.autocommit:
        conn.commit()
    return Rollout(int(row[0]), int(row[1]))
