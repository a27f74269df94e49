"""delegation.lock_ended and unstake.withdrawable against the simulator's truth (java-tron's rules in
simulator/stake_state.py): each lock ends once, at the first block whose time passes its expire
time, with the locked amount; each lot matures once, at the first block whose time reaches its
expire time; lots cancelled before then never do."""

from __future__ import annotations

from collections import Counter
from typing import Any

import psycopg
import pytest

from harness.procs import Proc
from harness.stack import SIM_ACCOUNTS, start_chain, start_listener, start_worker, wait_until
from harness.truth import checkpoint, watermark
from ledger.config import Settings
from ledger.store.events import LOCK_ENDED, WITHDRAWABLE

Key = tuple[Any, ...]


def clock_block(url: str) -> int | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT block_num FROM event_clock").fetchone()
        return int(row[0]) if row else None


def truth(sim: Any, first: int, last: int) -> tuple[Counter[Key], Counter[Key]]:
    """(owner, receiver, resource, amount, lock end, block) of every lock that ended in blocks
    first..last, and (owner, resource, amount, expire, block) of every lot that matured there."""
    locks: Counter[Key] = Counter()
    lots: Counter[Key] = Counter()
    for account in SIM_ACCOUNTS:
        before = sim.http.get("/sim/account-state", params={"account": account, "block": first - 1}).json()
        for block in range(first, last + 1):
            state = sim.http.get("/sim/account-state", params={"account": account, "block": block}).json()
            t0, t1 = before["block_timestamp"], state["block_timestamp"]
            for d in state["delegations"]:
                for resource in ("BANDWIDTH", "ENERGY"):
                    end = d[f"expire_time_for_{resource.lower()}"]
                    if d["locked"] and d[resource] and t0 <= end < t1:
                        locks[(account, d["to"], resource, d[resource], end, block)] += 1
            for lot in state["unfrozenV2"]:
                if t0 < lot["unfreeze_expire_time"] <= t1:
                    lots[(account, lot["type"], lot["unfreeze_amount"], lot["unfreeze_expire_time"], block)] += 1
            before = state
    return locks, lots


@pytest.mark.slow
def test_locks_end_and_lots_mature_once_at_the_chains_first_block_past_them(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a chain with short lock periods and unstake delay, the ledger following it
    sim = start_chain(
        procs, settings, "--history-blocks", "40", "--ops-per-block", "3", "--lock-periods", "2,4,7",
        "--block-interval", "0.15", "--paused",
    )  # fmt: skip
    head = int(sim.status()["head"])
    run_env = {**env, "TRON_NODE_URL": sim.url, "START_BLOCK": str(sim.status()["start_block"])}
    run_env["EVENTS_RELAY_SECONDS"] = "0.1"
    procs.append(start_worker(run_env))
    procs.append(start_listener(run_env))
    url = settings.database_url
    wait_until(lambda: (watermark(url) or 0) >= head and clock_block(url) == head, 60, "the clock to start")
    # When the chain moves on for a while
    sim.resume()
    wait_until(lambda: int(sim.status()["head"]) >= head + 90, 60, "90 more blocks")
    sim.pause()
    last = int(sim.status()["head"])
    wait_until(lambda: checkpoint(url) == last, 60, "the listener at the head")
    wait_until(lambda: (watermark(url) or 0) == last and clock_block(url) == last, 60, "the clock at the head")
    # Then the events are exactly the truth's locks ended and lots matured, each once
    locks, lots = truth(sim, head + 1, last)
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT type, account, block_num, payload FROM events WHERE type IN (%s, %s)", (LOCK_ENDED, WITHDRAWABLE)
        ).fetchall()
    got_locks: Counter[Key] = Counter()
    got_lots: Counter[Key] = Counter()
    for kind, account, block, p in rows:
        if kind == LOCK_ENDED:
            end = _ms(p["lock_end"])
            got_locks[(account, p["receiver_address"], p["resource"], p["amount"], end, block)] += 1
        else:
            got_lots[(account, p["resource"], p["amount"], _ms(p["expire_time"]), block)] += 1
    print(f"{sum(locks.values())} locks ended, {sum(lots.values())} lots matured")
    assert locks and lots, "the run must end some locks and mature some lots"
    assert got_locks == locks
    assert got_lots == lots


def _ms(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)
