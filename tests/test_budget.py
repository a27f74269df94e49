"""The request budget shared by every process (ledger/budget.py), against real Redis and, for the
cross-process case, the simulator's own per-client request count."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from ledger.budget import BudgetExhausted, BudgetLimits, RequestBudget, create_budget
from ledger.config import Settings, load_settings
from ledger.tron_json import NodeError
from ledger.tron_node import NodeUnavailable, TronNode
from simulator.requests import client_label
from tests.procs import Proc, python
from tests.stack import Simulator, start_listener, start_simulator, start_worker, wait_until
from tests.test_pipeline import checkpoint

KEY = "0b1d3a5e-7c2f-4e11-9a8b-secretkey000"


@pytest.fixture
def budget_redis(settings: Settings) -> Iterator[str]:
    client = redis.Redis.from_url(settings.cache_redis_url)
    client.flushdb()
    yield settings.cache_redis_url
    client.flushdb()
    client.close()


def _budgets(url: str, limits: BudgetLimits, count: int, **kwargs: float) -> list[RequestBudget]:
    budgets = [create_budget(url, limits) for _ in range(count)]
    for budget in budgets:
        budget.max_wait = kwargs.get("max_wait", budget.max_wait)
    return budgets


def test_rate_is_shared_by_all_clients(budget_redis: str) -> None:
    # Three clients (as three processes would), 40 requests: with 20/s and a burst of 2, the last
    # one cannot leave before (40 - 2) / 20 = 1.9 s, however the clients interleave.
    budgets = _budgets(budget_redis, BudgetLimits(per_second=20, burst=2, per_day=0), 3)
    granted: list[float] = []
    lock = threading.Lock()

    def spend(budget: RequestBudget, count: int) -> None:
        for _ in range(count):
            budget.acquire()
            with lock:
                granted.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=spend, args=(b, n)) for b, n in zip(budgets, (14, 13, 13), strict=True)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(granted) == 40
    assert max(granted) - started >= (40 - 2) / 20 - 0.05
    for budget in budgets:
        budget.close()


def test_daily_cap_is_hard(budget_redis: str) -> None:
    first, second = _budgets(budget_redis, BudgetLimits(per_second=0, burst=1, per_day=5), 2, max_wait=0.2)
    for budget in (first, second, first, second, first):
        budget.acquire()
    with pytest.raises(BudgetExhausted, match="daily") as caught:
        second.acquire()
    # Until the next UTC midnight, whichever client asks.
    assert 0 < caught.value.retry_after <= 86_400
    with pytest.raises(BudgetExhausted):
        first.acquire()


def test_a_suspension_reported_by_one_client_holds_for_all(budget_redis: str) -> None:
    one, other = _budgets(budget_redis, BudgetLimits(per_second=0, burst=1, per_day=0), 2, max_wait=0.3)
    other.acquire()
    one.suspend(2.0)
    # Without a quota the other process learns it from a publish (its mirror, see the next test):
    # as fast as the message travels, not necessarily before `suspend` returns here.
    told = time.monotonic()
    caught = _refusal(other)
    assert time.monotonic() - told < 0.5
    assert 1.0 < caught.retry_after <= 2.0
    one.suspend(0.5)  # a shorter one never shortens it
    with pytest.raises(BudgetExhausted):
        other.acquire()


def _refusal(budget: RequestBudget, within: float = 5.0) -> BudgetExhausted:
    """The BudgetExhausted `budget.acquire()` raises within `within` seconds (fails if it never does)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            budget.acquire()
        except BudgetExhausted as exc:
            return exc
        time.sleep(0.001)
    pytest.fail(f"acquire() was still granted after {within}s")


def _evalsha_calls(url: str) -> int:
    client = redis.Redis.from_url(url)
    stats = client.info("commandstats").get("cmdstat_evalsha", {"calls": 0})
    client.close()
    return int(stats["calls"])


def test_without_a_quota_requests_ask_a_subscribed_mirror_not_redis(budget_redis: str) -> None:
    # Given two processes' budgets with no quota: only the suspension is shared
    one, other = _budgets(budget_redis, BudgetLimits(per_second=0, burst=1, per_day=0), 2, max_wait=0.3)
    wait_until(lambda: one.mirrored and other.mirrored, 10, "both suspension watches subscribed")
    # When they ask for many requests, Redis runs no script for them
    before = _evalsha_calls(budget_redis)
    for _ in range(200):
        other.acquire()
    assert _evalsha_calls(budget_redis) == before
    # And a suspension one of them stores reaches the other one's mirror
    one.suspend(2.0)
    caught = _refusal(other, within=0.5)
    assert "suspended" in str(caught) and 1.0 < caught.retry_after <= 2.0
    assert other.mirrored and _evalsha_calls(budget_redis) == before + 1  # the suspend script alone
    one.close()
    other.close()


def test_a_lost_suspension_watch_falls_back_to_asking_redis_then_comes_back(
    budget_redis: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ledger.budget.REDIS_RETRY_SECONDS", 1.0)
    one, other = _budgets(budget_redis, BudgetLimits(per_second=0, burst=1, per_day=0), 2, max_wait=0.3)
    wait_until(lambda: other.mirrored, 10, "the suspension watch subscribed")
    # Given the watches' connections cut (a publish sent now would reach nobody)
    admin = redis.Redis.from_url(budget_redis)
    admin.client_kill_filter(_type="pubsub")
    wait_until(lambda: not other.mirrored, 5, "the lost watch no longer trusted")
    # When a suspension is stored meanwhile, the other process still honours it (asking Redis)
    before = _evalsha_calls(budget_redis)
    one.suspend(3.0)
    with pytest.raises(BudgetExhausted, match="suspended"):
        other.acquire()
    assert _evalsha_calls(budget_redis) > before + 1
    # And the watch, back, reads the suspension it missed before it is trusted again
    wait_until(lambda: other.mirrored, 10, "the watch subscribed again")
    with pytest.raises(BudgetExhausted, match="suspended"):
        other.acquire()
    admin.close()
    one.close()
    other.close()


def _dead_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_redis_down_degrades_to_a_local_limiter_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    budget = create_budget(f"redis://127.0.0.1:{_dead_port()}/0", BudgetLimits(per_second=50, burst=1, per_day=0))
    caplog.set_level(logging.WARNING, "ledger.budget")
    started = time.monotonic()
    for _ in range(11):
        budget.acquire()
    # Still limited (locally): 10 waits of 1/50 s.
    assert time.monotonic() - started >= 10 / 50 - 0.02
    lines = [r for r in caplog.records if "Redis unreachable" in r.getMessage()]
    assert len(lines) == 1
    budget.close()


def test_the_api_key_never_reaches_an_error_or_a_log(caplog: pytest.LogCaptureFixture) -> None:
    replies = iter(
        [
            # A proxy that echoes the request headers in its error page, and a node error quoting them.
            httpx.Response(429, text=f'{{"Error":"key {KEY} exceeds the frequency limit, suspended for 0 s"}}'),
            httpx.Response(200, json={"Error": f"bad request from TRON-PRO-API-KEY: {KEY}"}),
            httpx.Response(502, text=f"<html>upstream said {KEY}</html>"),
            httpx.Response(200, text=f"not json {KEY}"),
        ]
    )
    seen_keys: list[str | None] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen_keys.append(request.headers.get("TRON-PRO-API-KEY"))
        return next(replies)

    caplog.set_level(logging.DEBUG)
    node = TronNode("http://trongrid.test", api_key=KEY, transport=httpx.MockTransport(handle), retries=0)
    errors: list[str] = []
    for _ in range(4):
        with pytest.raises((NodeUnavailable, NodeError)) as caught:
            node.head_header()
        errors.append(str(caught.value))
    assert seen_keys == [KEY] * 4  # it is sent, as TronGrid wants
    assert all(KEY not in e for e in errors) and all("***" in e for e in errors)
    assert KEY not in caplog.text
    settings = load_settings({"TRON_API_KEY": KEY})
    assert settings.tron_api_key == KEY and KEY not in repr(settings)


CLIENT = """
import sys, time
from ledger.config import load_settings
from ledger.tron_node import node_from_settings
node = node_from_settings(load_settings())
deadline = time.monotonic() + float(sys.argv[1])
count = 0
while time.monotonic() < deadline:
    node.head_header()
    count += 1
print("CLIENT DONE", count, flush=True)
"""


def test_three_processes_stay_within_the_rate_by_the_nodes_own_count(budget_redis: str) -> None:
    rate, burst, seconds = 8.0, 2.0, 4.0
    sim_proc, url = start_simulator("--block-interval", "3")
    sim = Simulator(url)
    env = {
        "TRON_NODE_URL": url,
        "TRON_API_KEY": KEY,
        "CACHE_REDIS_URL": budget_redis,
        "TRON_REQUESTS_PER_SECOND": str(rate),
        "TRON_REQUESTS_BURST": str(burst),
        "TRON_REQUESTS_PER_DAY": "0",
        "PYTHONUNBUFFERED": "1",
    }
    clients = [Proc(f"client{i}", python("-c", CLIENT, str(seconds)), env) for i in range(3)]
    try:
        sim.http.post("/sim/requests/reset")
        done = [int(c.wait_for(r"CLIENT DONE (\d+)", timeout=60).group(1)) for c in clients]
        counts = sim.http.get("/sim/requests", params={"client": client_label(KEY, "")}).json()
    finally:
        for proc in (*clients, sim_proc):
            proc.stop()
    mine = counts["clients"][client_label(KEY, "")]
    assert mine["total"] == sum(done) > 0
    per_second = [n for n in mine["per_second"].values()]
    # Any 1-s window: at most burst + rate, plus one in flight per process across its edge.
    assert max(per_second) <= rate + burst + 3, per_second
    span = max(int(s) for s in mine["per_second"]) - min(int(s) for s in mine["per_second"]) + 1
    assert mine["total"] <= burst + rate * span + 3
    assert all(KEY not in c.output() for c in clients)


def test_following_the_head_asks_for_no_full_block_to_learn_it_and_for_the_solid_head_rarely(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a listener at the head of a chain that makes blocks only when told to
    sim_proc, url = start_simulator("--block-interval", "3", "--history-blocks", "30", "--ops-per-block", "2")
    procs.append(sim_proc)
    sim = Simulator(url)
    sim.pause()
    env.update(
        {
            "TRON_NODE_URL": url,
            "TRON_API_KEY": KEY,
            "START_BLOCK": str(sim.status()["start_block"]),
            # Woken by the feed: blocks made on demand come faster than their 3-s slots.
            "TRON_WS_URL": url.replace("http://", "ws://") + "/ws",
        }
    )
    procs.append(start_worker(env))
    procs.append(start_listener(env))
    wait_until(lambda: checkpoint(settings.database_url) == sim.status()["head"], 60, "catch-up")
    sim.http.post("/sim/requests/reset")

    # When it follows 40 new blocks, one at a time
    blocks = 40
    for _ in range(blocks):
        sim.produce(1)
        head = sim.status()["head"]
        wait_until(lambda h=head: checkpoint(settings.database_url) >= h, 30, f"block {head}")

    # Then it never fetched a whole block to learn the head, nor block by block, and asked for the
    # solidified head at most once per 10 blocks (plus the one when the chain stopped)
    paths = sim.http.get("/sim/requests", params={"client": client_label(KEY, "")}).json()["clients"]
    paths = paths[client_label(KEY, "")]["paths"]
    assert "/wallet/getnowblock" not in paths and "/walletsolidity/getnowblock" not in paths, paths
    assert "/wallet/getblockbynum" not in paths, paths
    assert paths.get("/walletsolidity/getblock", 0) <= blocks // 10 + 2, paths
    assert paths["/wallet/getblockbylimitnext"] >= blocks
    # Every TransactionInfo asked for is for a block holding a tracked operation whose amount lives there.
    assert paths.get("/wallet/gettransactioninfobyblocknum", 0) <= blocks


def test_a_rate_limit_seen_by_one_client_holds_every_client_on_the_budget(budget_redis: str) -> None:
    # Given two node clients (two processes' worth) on one budget, the first told to back off
    limits = BudgetLimits(per_second=0, burst=1, per_day=0)
    refusals = iter([httpx.Response(429, json={"Error": "request rate exceeded, suspended for 3 s"})])
    asked: list[str] = []

    def first(request: httpx.Request) -> httpx.Response:
        asked.append("first")
        return next(refusals, httpx.Response(200, json={"blockID": "00"}))

    def second(request: httpx.Request) -> httpx.Response:
        asked.append("second")
        return httpx.Response(200, json={"blockID": "00"})

    one = TronNode(
        "http://n.test", transport=httpx.MockTransport(first), retries=1, budget=create_budget(budget_redis, limits)
    )
    other_budget = create_budget(budget_redis, limits)
    other_budget.max_wait = 1.0
    other = TronNode("http://n.test", transport=httpx.MockTransport(second), retries=0, budget=other_budget)
    waiting = threading.Thread(target=one.head_header)  # waits the suspension out, then retries
    waiting.start()
    shared = redis.Redis.from_url(budget_redis)
    wait_until(lambda: shared.exists("budget:tron:suspended") == 1, 10, "the suspension in the budget")
    shared.close()
    # Then the other client sends nothing while the suspension lasts
    with pytest.raises(NodeUnavailable, match="suspended"):
        other.head_header()
    waiting.join(10)
    assert asked[:2] == ["first", "first"]  # the first client's retry came after the suspension
    one.close()
    other.close()
