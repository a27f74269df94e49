"""`python -m listener backfill`: the date search, then real runs against the simulator (exact rows
for a range and an account; resume after SIGKILL)."""

from __future__ import annotations

import io
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from harness.procs import Proc, python
from harness.stack import SIM_ACCOUNTS, Simulator, settings_env, start_chain, start_worker, wait_until
from harness.truth import assert_ledger_matches_truth, truth_rows
from ledger.chain.parser import ParseIssue
from ledger.config import Settings
from ledger.ops.logs import ProgressLine
from ledger.store.accounts import add_accounts
from listener.backfill import Backfill, BackfillError, checkpoint_name, first_block_since, parse_since
from tests.clocks import ManualClock
from tests.test_streamer import OWNER, ListSink, StubAdapter

# -- the date search, without a node -----------------------------------------------------------


class TimestampNode:
    """Blocks first..head, 3 s apart; below `first` the node answers {} (None)."""

    def __init__(self, first: int, head: int, t0: int = 1_700_000_000_000) -> None:
        self.first, self.head, self.t0 = first, head, t0
        self.calls = 0

    def time_of(self, num: int) -> int:
        return self.t0 + (num - self.first) * 3000

    def block(self, num: int) -> dict[str, Any] | None:
        self.calls += 1
        if not self.first <= num <= self.head:
            return None
        return {"block_header": {"raw_data": {"number": num, "timestamp": self.time_of(num)}}}


def test_since_finds_the_first_block_at_or_after_the_time_by_binary_search() -> None:
    node = TimestampNode(first=60_000_000, head=60_100_000)
    assert first_block_since(node, node.time_of(60_012_345), node.head) == 60_012_345  # type: ignore[arg-type]
    assert first_block_since(node, node.time_of(60_012_345) - 1, node.head) == 60_012_345  # type: ignore[arg-type]
    assert first_block_since(node, node.time_of(60_012_345) + 1, node.head) == 60_012_346  # type: ignore[arg-type]
    node.calls = 0
    # Before the node's first block: that block (missing blocks count as older)
    assert first_block_since(node, node.t0 - 10**9, node.head) == node.first  # type: ignore[arg-type]
    assert node.calls <= 30  # log2(60 M) + the head
    with pytest.raises(BackfillError):
        first_block_since(node, node.time_of(node.head) + 1, node.head)  # type: ignore[arg-type]


def test_since_accepts_dates_and_times_utc_by_default() -> None:
    assert parse_since("2025-01-01") == 1_735_689_600_000
    assert parse_since("2025-01-01T01:00:00Z") == 1_735_693_200_000
    assert parse_since("2025-01-01T02:00+01:00") == 1_735_693_200_000
    with pytest.raises(BackfillError):
        parse_since("yesterday")


def test_the_checkpoint_name_is_the_same_for_the_same_command() -> None:
    a, b = SIM_ACCOUNTS[0], SIM_ACCOUNTS[1]
    assert checkpoint_name(10, 20, [a, b]) == checkpoint_name(10, 20, [b, a])
    assert checkpoint_name(10, 20, [a]) != checkpoint_name(10, 20, [a, b])
    assert checkpoint_name(10, None, [a]).startswith("backfill:10-head:")


# -- the walk, with the streamer tests' stub adapter and sink ----------------------------------


class MemoryBackfillStore:
    name = "backfill:test"

    def __init__(self, position: int | None = None) -> None:
        self.done = position
        self.issues: list[ParseIssue] = []

    def position(self) -> int | None:
        return self.done

    def advance(self, block_num: int, block_id: str) -> None:
        self.done = block_num

    def record_issues(self, issues: list[ParseIssue]) -> None:
        self.issues.extend(issues)


def _walk(adapter: StubAdapter, store: MemoryBackfillStore, sink: ListSink, **kw: Any) -> Backfill:
    return Backfill(
        adapter,
        store,
        sink,
        accounts=[OWNER],
        batch_blocks=10,
        poll_interval=0.01,
        progress=ProgressLine(io.StringIO()),
        **kw,
    )


def test_walks_the_range_in_batches_and_checkpoints_each() -> None:
    adapter, store, sink = StubAdapter(head=100), MemoryBackfillStore(), ListSink()
    result = _walk(adapter, store, sink, start=5, end=30).run()
    assert result.completed and result.last == 30 and store.done == 30
    assert adapter.exports == [(5, 15), (15, 25), (25, 31)]
    assert [op.block_num for op in sink.ops] == list(range(5, 31))
    assert sink.confirmed == [100 - 19]  # rows that went out pending get confirmed at the end


def test_resumes_after_its_checkpoint_and_retries_a_failed_batch() -> None:
    adapter, store, sink = StubAdapter(head=100), MemoryBackfillStore(position=19), ListSink()
    adapter.fail_next = TimeoutError("node timed out")
    result = _walk(adapter, store, sink, start=5, end=30).run()
    assert result.completed and [op.block_num for op in sink.ops] == list(range(20, 31))


def test_an_open_range_follows_the_head_until_the_listener_tracks_a_new_account() -> None:
    adapter, store, sink = StubAdapter(head=50), MemoryBackfillStore(), ListSink()
    clock = ManualClock()
    walk = _walk(adapter, store, sink, start=45, end=None, settle_until=clock() + 20, clock=clock)
    thread = threading.Thread(target=walk.run)
    thread.start()
    try:
        wait_until(lambda: store.done == 50, 5, "the walk at the head", interval=0.01)
        adapter.head = 55  # blocks the running listener may have passed before re-reading pool_accounts
        wait_until(lambda: store.done == 55, 5, "the walk following the head", interval=0.01)
        clock.advance(19.99)
        thread.join(0.1)
        assert thread.is_alive()  # still following: the listener may not track the account yet
        clock.advance(0.01)
        thread.join(5)
        assert not thread.is_alive()
    finally:
        walk.stop.set()
    assert [op.block_num for op in sink.ops] == list(range(45, 56))


def test_a_range_past_the_head_is_refused() -> None:
    with pytest.raises(BackfillError):
        _walk(StubAdapter(head=20), MemoryBackfillStore(), ListSink(), start=5, end=30).run()


# -- real runs -----------------------------------------------------------------------------------


def record_count(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM stake_records) + (SELECT count(*) FROM delegate_records)"
        ).fetchone()
        assert row is not None
        return int(row[0])


def backfill_position(url: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT block_num FROM listener_checkpoint WHERE name LIKE 'backfill:%'").fetchone()
        return row[0] if row else -1


def _stack(settings: Settings, procs: list[Proc], history: int) -> tuple[Simulator, dict[str, str]]:
    sim = start_chain(procs, settings, "--history-blocks", str(history), "--ops-per-block", "2", "--paused")
    env = {
        **settings_env(settings),
        "QUEUE_NAME": f"bf-{uuid.uuid4().hex[:8]}",
        "TRON_NODE_URL": sim.url,
        "LISTENER_BATCH_BLOCKS": "20",
    }
    procs.append(start_worker(env))
    return sim, env


def backfill(env: dict[str, str], *args: str) -> Proc:
    return Proc("backfill", python("-m", "listener", "backfill", *args), env)


def test_backfill_of_a_range_indexes_exactly_that_range_for_the_account(
    settings: Settings, clean_db: str, redis_clean: object, procs: list[Proc]
) -> None:
    # Given a chain with history, no listener, and an account nobody tracks yet
    sim, env = _stack(settings, procs, history=400)
    head = sim.status()["head"]
    lo, hi = head - 300, head - 100
    account = SIM_ACCOUNTS[0]
    start_ms = sim.http.post("/wallet/getblockbynum", json={"num": lo}).json()["block_header"]["raw_data"]["timestamp"]
    since = datetime.fromtimestamp(start_ms / 1000, UTC).isoformat(timespec="milliseconds")
    # When its history is backfilled from a date to a block
    proc = backfill(
        env, "--since", since, "--scan-blocks", "--to-block", str(hi), "--account", account, "--add-account"
    )
    procs.append(proc)
    assert proc.popen.wait(60) == 0, proc.output()
    assert f"backfill:{lo}-{hi}:" in proc.output()
    assert "backfill complete" in proc.output()
    # Then the ledger holds exactly the truth's rows of that account in that range, nothing else
    assert_ledger_matches_truth(settings, sim, env, [account], lo, hi, timeout=30)
    assert record_count(clean_db) == len(truth_rows(sim, account, lo, hi))
    # And the same command again has nothing left to do
    again = backfill(env, "--since", since, "--scan-blocks", "--to-block", str(hi), "--account", account)
    procs.append(again)
    assert again.popen.wait(30) == 0, again.output()
    assert f"resuming backfill:{lo}-{hi}:" in again.output() and "0 block(s)" in again.output()


@pytest.mark.slow
def test_a_killed_backfill_resumes_where_it_stopped(
    settings: Settings, clean_db: str, redis_clean: object, procs: list[Proc]
) -> None:
    # Given tracked pool accounts and a rate-limited backfill of a long range
    sim, env = _stack(settings, procs, history=1500)
    with psycopg.connect(clean_db) as conn:
        add_accounts(conn, list(SIM_ACCOUNTS))
    head = sim.status()["head"]
    lo, hi = head - 1400, head - 50
    args = ("--from-block", str(lo), "--to-block", str(hi), "--rate", "150")
    first = backfill(env, *args)
    procs.append(first)
    # When it is SIGKILLed part way
    wait_until(lambda: backfill_position(clean_db) >= lo + 200, 60, "some progress")
    first.kill()
    first.popen.wait(10)
    stopped = backfill_position(clean_db)
    assert lo + 200 <= stopped < hi
    # Then the same command resumes after the checkpoint and completes the range exactly
    second = backfill(env, *args[:-1], "0")  # the rate is not part of the backfill's identity
    procs.append(second)
    assert second.popen.wait(60) == 0, second.output()
    assert f"resuming backfill:{lo}-{hi}:" in second.output()
    assert f"after block {stopped}" in second.output()
    assert backfill_position(clean_db) == hi
    assert_ledger_matches_truth(settings, sim, env, SIM_ACCOUNTS, lo, hi, timeout=30)
