"""The network's totals read from getaccountresource (ledger/chain/resources.py), kept with the block."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import psycopg

from ledger.chain.resources import NetworkTotals


@dataclass(frozen=True)
class StoredTotals:
    block_num: int
    read_at: datetime
    totals: NetworkTotals


def record_totals(conn: psycopg.Connection, block_num: int, totals: NetworkTotals) -> None:
    conn.execute(
        "INSERT INTO network_totals (block_num, total_energy_limit, total_energy_weight, total_net_limit,"
        " total_net_weight) VALUES (%s, %s, %s, %s, %s)",
        (block_num, totals.total_energy_limit, totals.total_energy_weight, totals.total_net_limit,
         totals.total_net_weight),
    )  # fmt: skip


def latest_totals(conn: psycopg.Connection) -> StoredTotals | None:
    row = conn.execute(
        "SELECT block_num, read_at, total_energy_limit, total_energy_weight, total_net_limit, total_net_weight"
        " FROM network_totals ORDER BY block_num DESC, id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    return StoredTotals(int(row[0]), row[1], NetworkTotals(int(row[2]), int(row[3]), int(row[4]), int(row[5])))
