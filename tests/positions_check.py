"""Positions end to end against the simulator's account state (the independent oracle).

    .venv/bin/python -m tests.positions_check --blocks 10000      # the long run, for the record

The simulator starts its accounts with stake, V1 stake, locked and unlocked delegations and pending
lots from before its first block (`--opening-state random`) and a history before the listener's
start; the listener starts at the head, so every account's opening position is read from the chain
(ledger.chain.snapshot). Then the chain produces blocks of mixed operations with short lock periods (so
locks expire all along) and forks, in chunks; after each chunk the chain stops, and once the ledger
is at the same block every summary figure of every pool account must equal the simulator's account
state at that block (`/sim/account-state`), with no negative figure and no shortfall.

`run()` is what tests/test_positions_e2e.py calls with a CI-sized setting (a few hundred blocks).
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import orjson
import psycopg

from harness.procs import Proc
from harness.stack import (
    SIM_ACCOUNTS,
    Simulator,
    add_ledger_options,
    main_checkpoint,
    new_ledger,
    settings_env,
    start_chain,
    start_listener,
    start_worker,
    wait_until,
)
from ledger.config import Settings
from web.positions import Summary, read_summary
from web.responses import dumps

RESOURCES = ("BANDWIDTH", "ENERGY", "TRON_POWER")
DELEGABLE = ("BANDWIDTH", "ENERGY")


def expected_figures(state: dict[str, Any]) -> dict[str, Any]:
    """The summary's figures as the simulator's account state gives them, at its block's time."""
    now = state["block_timestamp"]
    out: dict[str, Any] = {}
    for res in RESOURCES:
        v1 = state.get("frozenV1", {}).get(res, {})
        out[res] = {
            "staked": state["frozenV2"].get(res, 0),
            "staked_v1": v1.get("frozen_balance", 0) if isinstance(v1, dict) else 0,
            "receivers": {},
            "lots": [],
            "withdrawable": 0,
        }
    for res in DELEGABLE:
        out[res]["available"] = state["available"].get(res, 0)
        out[res]["delegated"] = (
            state["delegated"].get(res, 0),
            state["effective_locked"].get(res, 0),
            state["effective_unlocked"].get(res, 0),
        )
    for record in state["delegations"]:
        for res in DELEGABLE:
            amount = record.get(res, 0)
            if not amount:
                continue
            expire = record.get(f"expire_time_for_{res.lower()}", 0)
            locked = record["locked"] and expire >= now  # an expire time before now is unlocked
            entry = out[res]["receivers"].setdefault(record["to"], [0, 0, None])
            if locked:
                entry[0] += amount
                entry[2] = expire
            else:
                entry[1] += amount
    for lot in state["unfrozenV2"]:
        res = lot.get("type", "BANDWIDTH")
        amount, expire = lot.get("unfreeze_amount", 0), lot.get("unfreeze_expire_time", 0)
        if expire <= now:
            out[res]["withdrawable"] += amount
        else:
            out[res]["lots"].append((amount, expire))
    for res in RESOURCES:
        out[res]["lots"].sort()
        out[res]["receivers"] = {to: tuple(v) for to, v in out[res]["receivers"].items()}
    out["withdrawable_now"] = state.get("withdrawable", 0)
    return out


def ledger_figures(data: dict[str, Any]) -> dict[str, Any]:
    """The same shape from a summary's data."""
    out: dict[str, Any] = {}
    for res in RESOURCES:
        r = data["resources"][res]
        out[res] = {
            "staked": r["staked"],
            "staked_v1": r["staked_v1"],
            "receivers": {
                x["receiver_address"]: (x["locked"], x["unlocked"], _ms(x["lock_end"]) if x["lock_end"] else None)
                for x in r["delegated"]["receivers"]
            },
            "lots": sorted((lot["amount"], _ms(lot["expire_time"])) for lot in r["unstaking"]["lots"]),
            "withdrawable": r["withdrawable"],
        }
        if res in DELEGABLE:
            out[res]["available"] = r["available"]
            d = r["delegated"]
            out[res]["delegated"] = (d["total"], d["locked"], d["unlocked"])
    out["withdrawable_now"] = data["withdrawable_now"]
    return out


def _ms(value: datetime | str) -> int:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return round(moment.timestamp() * 1000)


def numbers(value: Any) -> Iterator[int]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from numbers(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from numbers(v)


def read_paged(conn: psycopg.Connection, account: str, unfreeze_delay_ms: int) -> Summary:
    """The summary as the route serves it (from the figures stored with the folded state, a few
    receivers a page), its pages' receivers put together."""
    first = page = read_summary(conn, account, unfreeze_delay_ms, limit=3)
    while page.next_key is not None:
        page = read_summary(conn, account, unfreeze_delay_ms, after=page.next_key, limit=3)
        for res, figures in page.data["resources"].items():
            first.data["resources"][res]["delegated"]["receivers"] += figures["delegated"]["receivers"]
    return first


def compare(settings: Settings, sim: Simulator, head: int) -> dict[str, str]:
    """Differences per account between the ledger's summary and the simulator's state ({} = none)."""
    problems = {}
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        for account in SIM_ACCOUNTS:
            state = sim.http.get("/sim/account-state", params={"account": account, "block": head}).json()
            summary = read_paged(conn, account, settings.unfreeze_delay_seconds * 1000)
            got, want = ledger_figures(_jsonable(summary.data)), expected_figures(state)
            if summary.data["as_of_block"] != head:
                problems[account] = f"as of block {summary.data['as_of_block']}, not {head}"
            elif min(numbers(got), default=0) < 0:
                problems[account] = f"a negative figure: {got}"
            elif summary.shortfall:
                problems[account] = f"shortfall {summary.shortfall}"
            elif got != want:
                diff = {k: (got[k], want[k]) for k in want if got.get(k) != want[k]}
                problems[account] = f"ledger vs chain: {diff}"
    return problems


def _jsonable(data: dict[str, Any]) -> dict[str, Any]:

    result: dict[str, Any] = orjson.loads(dumps(data))
    return result


def run(
    settings: Settings,
    procs: list[Proc],
    *,
    blocks: int,
    chunk: int = 50,
    history: int = 60,
    fork_rate: float = 0.05,
    log: Any = print,
) -> int:
    """Start the stack, produce `blocks` blocks in chunks and compare after each; return the number
    of comparisons made (each over every account). AssertionError on the first difference."""
    sim = start_chain(
        procs,
        settings,
        "--paused",
        "--history-blocks",
        str(history),
        "--ops-per-block",
        "3",
        "--opening-state",
        "random",
        "--lock-periods",
        "3,5,20,40",
        "--fork-rate",
        str(fork_rate),
        "--fork-depth",
        "3",
    )
    env = {
        **settings_env(settings),
        "QUEUE_NAME": f"pos-{uuid.uuid4().hex[:8]}",
        "POLL_INTERVAL": "0.1",
        "POOL_ACCOUNTS": ",".join(SIM_ACCOUNTS),
        "TRON_NODE_URL": sim.url,
    }
    procs.append(start_worker(env))
    procs.append(start_listener(env))  # no START_BLOCK: it starts after the snapshots' block
    comparisons = 0
    produced = 0
    while True:
        head = sim.status()["head"]

        def reached(head: int = head) -> bool:
            return main_checkpoint(settings.database_url) == head

        wait_until(reached, 120, f"the listener to reach block {head}")
        problems: dict[str, str] = {}

        def agreed(head: int = head) -> bool:
            nonlocal problems
            problems = compare(settings, sim, head)
            return not problems

        try:
            wait_until(agreed, 60, f"the ledger to agree with the chain at block {head}", interval=0.5)
        except TimeoutError:
            raise AssertionError(f"block {head}: {problems}") from None
        comparisons += 1
        forks = sim.status()["forks"]
        log(f"block {head}: {len(SIM_ACCOUNTS)} accounts agree ({produced} blocks produced, {forks} forks)")
        if produced >= blocks:
            return comparisons
        step = min(chunk, blocks - produced)
        sim.produce(step)
        produced += step


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.positions_check", description=__doc__.split("\n\n")[0])
    p.add_argument("--blocks", type=int, default=10_000)
    p.add_argument("--chunk", type=int, default=100, help="blocks between two comparisons")
    p.add_argument("--fork-rate", type=float, default=0.05)
    add_ledger_options(p, "ledger_positions_check", 8, 9)
    args = p.parse_args(argv)
    settings = new_ledger(args.database_url, args.redis_url, args.cache_redis_url, unfreeze_delay_seconds=30)
    procs: list[Proc] = []
    started = time.monotonic()
    try:
        count = run(settings, procs, blocks=args.blocks, chunk=args.chunk, fork_rate=args.fork_rate)
    finally:
        for proc in reversed(procs):
            proc.stop(timeout=10)
    print(
        f"{args.blocks} blocks, {count} comparisons of {len(SIM_ACCOUNTS)} accounts: all equal "
        f"({time.monotonic() - started:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
