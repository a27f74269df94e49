"""The request budget shared by every process (ledger/coordination/budget.py), against real Redis and, for the
cross-process case, the simulator's own per-client request count."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import redis

from harness.procs import Proc, python
from harness.servers import free_port
from harness.stack import Simulator, start_simulator, start_worker_and_listener, wait_until
from harness.truth import checkpoint
from ledger.chain.node import NodeUnavailable, TronNode, budget_limits
from ledger.chain.values import NodeError
from ledger.config import ConfigError, Settings, load_settings
from ledger.coordination.budget import BudgetExhausted, BudgetLimits, Priority, RequestBudget, create_budget
from simulator.requests import client_label
from tests.clocks import ManualClock

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
            budget.acquire(Priority.LIVE)
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
        budget.acquire(Priority.LIVE)
    with pytest.raises(BudgetExhausted, match="daily") as caught:
        second.acquire(Priority.LIVE)
    # Until the next UTC midnight, whichever client asks.
    assert 0 < caught.value.retry_after <= 86_400
    with pytest.raises(BudgetExhausted):
        first.acquire(Priority.LIVE)


def test_a_suspension_reported_by_one_client_holds_for_all(budget_redis: str) -> None:
    one, other = _budgets(budget_redis, BudgetLimits(per_second=0, burst=1, per_day=0), 2, max_wait=0.3)
    other.acquire(Priority.LIVE)
    one.suspend(2.0)
    # Without a quota the other process learns it from a publish (its mirror, see the next test):
    # as fast as the message travels, not necessarily before `suspend` returns here.
    told = time.monotonic()
    caught = _refusal(other)
    assert time.monotonic() - told < 0.5
    assert 1.0 < caught.retry_after <= 2.0
    one.suspend(0.5)  # a shorter one never shortens it
    with pytest.raises(BudgetExhausted):
        other.acquire(Priority.LIVE)


def _refusal(budget: RequestBudget, within: float = 5.0) -> BudgetExhausted:
    """The BudgetExhausted `budget.acquire()` raises within `within` seconds (fails if it never does)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            budget.acquire(Priority.LIVE)
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
        other.acquire(Priority.LIVE)
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
    monkeypatch.setattr("ledger.coordination.budget.REDIS_RETRY_SECONDS", 1.0)
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
        other.acquire(Priority.LIVE)
    assert _evalsha_calls(budget_redis) > before + 1
    # And the watch, back, reads the suspension it missed before it is trusted again
    wait_until(lambda: other.mirrored, 10, "the watch subscribed again")
    with pytest.raises(BudgetExhausted, match="suspended"):
        other.acquire(Priority.LIVE)
    admin.close()
    one.close()
    other.close()


def test_redis_down_degrades_to_a_local_limiter_and_says_so_once(caplog: pytest.LogCaptureFixture) -> None:
    clock = ManualClock()
    budget = create_budget(
        f"redis://127.0.0.1:{free_port()}/0",
        BudgetLimits(per_second=50, burst=1, per_day=0),
        clock=clock,
        sleep=clock.advance,
    )
    caplog.set_level(logging.WARNING, "ledger.coordination.budget")
    started = clock()
    for _ in range(11):
        budget.acquire(Priority.LIVE)
    # Still limited (locally): 10 waits of 1/50 s.
    assert clock() - started >= 10 / 50 - 1e-9
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
from ledger.coordination.budget import Priority
from ledger.chain.node import node_from_settings
node = node_from_settings(load_settings(), priority=Priority(sys.argv[2]))
deadline = time.monotonic() + float(sys.argv[1])
count = 0
while time.monotonic() < deadline:
    node.head_header()
    count += 1
print("CLIENT DONE", count, flush=True)
"""


@pytest.mark.slow
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
    # One live client and two background ones: the classes share one bucket, so the bound is for all.
    classes = ("live", "background", "background")
    clients = [Proc(f"client{i}", python("-c", CLIENT, str(seconds), c), env) for i, c in enumerate(classes)]
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


@pytest.mark.slow
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
    procs += start_worker_and_listener(env)
    wait_until(lambda: checkpoint(settings.database_url) == sim.status()["head"], 60, "catch-up")
    sim.http.post("/sim/requests/reset")

    # When it follows 40 new blocks, one at a time
    blocks = 40
    for _ in range(blocks):
        sim.produce(1)
        head = sim.status()["head"]

        def reached(head: int = head) -> bool:
            return checkpoint(settings.database_url) >= head

        wait_until(reached, 30, f"block {head}")

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


@pytest.mark.slow
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


# -- priority: the live path first ---------------------------------------------------------------


@pytest.mark.slow
def test_a_background_hog_cannot_delay_the_live_path_beyond_one_token_interval(budget_redis: str) -> None:
    # Four background clients (as four worker processes would) take every token they may, for 6 s;
    # a live client (the listener) asks twice a second, below the rate, as following the head does.
    rate, seconds = 5.0, 6.0
    limits = BudgetLimits(per_second=rate, burst=3, per_day=0, reserve_fraction=0.5)
    hogs = _budgets(budget_redis, limits, 4, max_wait=60)
    live = create_budget(budget_redis, limits)
    stop = threading.Event()
    taken = [0] * len(hogs)
    waits: list[float] = []

    def hog(i: int) -> None:
        while not stop.is_set():
            hogs[i].acquire(Priority.BACKGROUND)
            taken[i] += 1

    threads = [threading.Thread(target=hog, args=(i,)) for i in range(len(hogs))]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    time.sleep(1.0)  # the hogs have emptied the bucket down to the reserve
    while time.monotonic() - started < seconds:
        asked = time.monotonic()
        live.acquire(Priority.LIVE)
        waits.append(time.monotonic() - asked)
        time.sleep(0.5)
    stop.set()
    for thread in threads:
        thread.join(10)
    elapsed = time.monotonic() - started
    # Then no live request waited more than one token interval (plus scheduling slack on a busy machine)
    assert max(waits) <= 1 / rate + 0.15, waits
    # And the background lost no rate to the reserve: it had what the live client left
    total = sum(taken) + len(waits)
    assert sum(taken) >= 0.7 * (rate * elapsed - len(waits)), (taken, elapsed)
    # And both classes together stayed in one bucket's bound
    assert total <= limits.burst + rate * elapsed + 1, (total, elapsed)
    for budget in (*hogs, live):
        budget.close()


def test_background_stops_at_its_daily_share_and_leaves_the_rest_to_the_live_path(budget_redis: str) -> None:
    limits = BudgetLimits(per_second=0, burst=1, per_day=10, daily_reserve_fraction=0.3)
    background, listener = _budgets(budget_redis, limits, 2, max_wait=0.2)
    for _ in range(7):
        background.acquire(Priority.BACKGROUND)
    with pytest.raises(BudgetExhausted, match="background share") as caught:
        background.acquire(Priority.BACKGROUND)
    assert 0 < caught.value.retry_after <= 86_400  # tomorrow
    for _ in range(3):
        listener.acquire(Priority.LIVE)
    # The cap itself is still hard: the live path stops at the day's total.
    with pytest.raises(BudgetExhausted, match="live share"):
        listener.acquire(Priority.LIVE)


def test_the_live_path_may_spend_the_day_background_left(budget_redis: str) -> None:
    # The reserve is a floor for the live path, not a ceiling: a quiet background leaves it everything.
    limits = BudgetLimits(per_second=0, burst=1, per_day=6, daily_reserve_fraction=0.5)
    (listener,) = _budgets(budget_redis, limits, 1, max_wait=0.2)
    for _ in range(6):
        listener.acquire(Priority.LIVE)
    with pytest.raises(BudgetExhausted):
        listener.acquire(Priority.BACKGROUND)


def test_without_redis_the_local_limiter_keeps_the_same_reserves() -> None:
    limits = BudgetLimits(per_second=0, burst=1, per_day=4, daily_reserve_fraction=0.5)
    budget = create_budget(f"redis://127.0.0.1:{free_port()}/0", limits)
    budget.max_wait = 0.2
    budget.acquire(Priority.BACKGROUND)
    budget.acquire(Priority.BACKGROUND)
    with pytest.raises(BudgetExhausted):
        budget.acquire(Priority.BACKGROUND)
    budget.acquire(Priority.LIVE)
    budget.acquire(Priority.LIVE)
    with pytest.raises(BudgetExhausted):
        budget.acquire(Priority.LIVE)
    budget.close()


def test_the_local_limiter_leaves_the_bucket_reserve_to_the_live_path() -> None:
    limits = BudgetLimits(per_second=1, burst=4, per_day=0, reserve_fraction=0.5)
    clock = ManualClock()
    budget = RequestBudget(limits, None, max_wait=0.05, clock=clock, sleep=clock.advance)
    budget.acquire(Priority.BACKGROUND)
    budget.acquire(Priority.BACKGROUND)  # 2 tokens left: the reserve
    with pytest.raises(BudgetExhausted, match="busy"):
        budget.acquire(Priority.BACKGROUND)
    budget.acquire(Priority.LIVE)
    budget.acquire(Priority.LIVE)
    # The bucket refills at its rate: background gets a token again only above the reserve
    clock.advance(1.0)
    with pytest.raises(BudgetExhausted, match="busy"):
        budget.acquire(Priority.BACKGROUND)
    budget.acquire(Priority.LIVE)
    clock.advance(2.9)
    with pytest.raises(BudgetExhausted, match="busy"):
        budget.acquire(Priority.BACKGROUND)  # 0.1 s of refill short of the reserve
    clock.advance(0.1)
    budget.acquire(Priority.BACKGROUND)


@pytest.mark.parametrize("var", ["TRON_BUDGET_RESERVE_FRACTION", "TRON_BUDGET_DAILY_RESERVE_FRACTION"])
@pytest.mark.parametrize("raw", ["1", "1.5", "-0.1", "half"])
def test_a_reserve_outside_0_to_1_is_refused_naming_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ConfigError, match=var):
        load_settings({var: raw})


def test_the_reserves_reach_the_node_client_from_the_settings() -> None:
    settings = load_settings({"TRON_BUDGET_RESERVE_FRACTION": "0.25", "TRON_BUDGET_DAILY_RESERVE_FRACTION": "0.5"})
    limits = budget_limits(settings)
    assert limits.reserve(Priority.LIVE) == (0.0, 0)
    assert limits.reserve(Priority.BACKGROUND) == (settings.tron_requests_burst * 0.25, 50_000)
