"""End to end: simulator -> listener -> Dramatiq workers -> PostgreSQL -> API.

Every process is real and really started; the only stand-in is the simulator for the TRON network.
The checks compare the API's records with the simulator's ground truth: nothing missing, nothing
extra, statuses right.
"""

from __future__ import annotations

import time

import pytest

from harness.procs import Proc
from harness.stack import (
    lose_queued_messages,
    queued,
    start_chain,
    start_listener,
    start_worker,
    start_worker_and_listener,
    wait_until,
)
from harness.truth import (
    assert_ledger_matches_truth,
    checkpoint,
    solid_block,
    start_long_catch_up,
    watermark,
)
from ledger.config import Settings


@pytest.mark.slow
@pytest.mark.parametrize("broker_env", ["redis", "rabbitmq"], indirect=True)
def test_simulated_chain_lands_in_the_api_exactly(
    settings: Settings, broker_env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a chain with history and live blocks, a worker and a listener from its first block
    sim = start_chain(procs, settings, "--block-interval", "0.2", "--history-blocks", "120", "--ops-per-block", "2")
    first = sim.status()["start_block"]  # the chain's first block: the truth starts there too
    env = {**broker_env, "TRON_NODE_URL": sim.url, "START_BLOCK": str(first)}
    procs += start_worker_and_listener(env)
    # When it has caught up and followed the head for a while, then the chain stops
    wait_until(lambda: checkpoint(settings.database_url) >= sim.status()["head"], 90, "catch-up")
    sim.produce(10)
    sim.pause()
    head = sim.status()["head"]
    wait_until(lambda: checkpoint(settings.database_url) == head, 30, "the listener to reach the head")
    # Then the API holds exactly the simulator's operations, with the right statuses
    assert_ledger_matches_truth(settings, sim, env)
    # And the persisted watermark reaches the checkpoint
    wait_until(lambda: watermark(settings.database_url) == head, 30, "the watermark to reach the head")


@pytest.mark.slow
@pytest.mark.parametrize("broker_env", ["redis", "rabbitmq"], indirect=True)
def test_a_broker_flush_between_enqueue_and_persist_is_repaired_with_no_operator_action(
    settings: Settings, broker_env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a listener that enqueued a chain's operations and checkpointed past them, no worker yet
    grace = 3.0
    sim = start_chain(procs, settings, "--history-blocks", "150", "--ops-per-block", "2", "--paused")
    head = sim.status()["head"]
    env = {**broker_env, "TRON_NODE_URL": sim.url, "START_BLOCK": str(head - 149), "REPAIR_GRACE_SECONDS": str(grace)}
    listener = start_listener(env)
    procs.append(listener)
    wait_until(lambda: checkpoint(settings.database_url) == head, 60, "the listener to checkpoint the head")
    assert queued(env) > 0
    before = watermark(settings.database_url)
    assert before is None or before < head  # nothing persisted: the watermark stays behind
    # When the broker loses every queued message (a restart without AOF, a failover, a flush)
    lose_queued_messages(env)
    assert queued(env) == 0
    started = time.monotonic()
    procs.append(start_worker(env))
    # Then, with nobody doing anything, the listener re-sends what is missing from its record and
    # the ledger equals the chain: nothing lost, nothing doubled, statuses right
    assert_ledger_matches_truth(settings, sim, env)
    took = time.monotonic() - started
    wait_until(lambda: watermark(settings.database_url) == head, 30, "the watermark to reach the head")
    assert "repair:" in listener.output()
    print(f"repaired in {took:.1f}s after the workers started (grace {grace:g}s)")


@pytest.mark.slow
@pytest.mark.parametrize("broker_env", ["redis", "rabbitmq"], indirect=True)
def test_a_broker_that_lost_its_queue_is_caught_up_within_30_s(
    settings: Settings, broker_env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a chain followed live, with a grace period longer than the 30 s allowed, so that
    # the re-send cannot be the one that waits for it
    sim = start_chain(procs, settings, "--block-interval", "0.3", "--history-blocks", "60", "--ops-per-block", "2")
    first = sim.status()["start_block"]
    env = {**broker_env, "TRON_NODE_URL": sim.url, "START_BLOCK": str(first), "REPAIR_GRACE_SECONDS": "60"}
    worker = start_worker(env)
    procs += [worker, start_listener(env)]
    wait_until(lambda: checkpoint(settings.database_url) >= sim.status()["head"] - 1, 90, "catch-up")
    # And a backlog in the broker: live blocks queued while no worker takes them
    worker.stop()
    time.sleep(3)
    sim.pause()
    head = sim.status()["head"]
    wait_until(lambda: checkpoint(settings.database_url) == head, 30, "the listener to enqueue the head")
    # And the quiet chain's last confirmation among them (it is sent with no batch: the listener
    # stores its solidified head first)
    solid = sim.status()["solid"]
    wait_until(lambda: solid_block(settings.database_url) == solid, 30, "the listener to confirm the quiet chain")
    assert queued(env) > 0
    # When the broker loses every queued message, and the worker comes back
    lose_queued_messages(env)
    lost_at = time.monotonic()
    procs.append(start_worker(env))
    # Then within 30 s the ledger equals the chain: nothing lost, nothing doubled, statuses right
    assert_ledger_matches_truth(settings, sim, env, timeout=30)
    took = time.monotonic() - lost_at
    print(f"complete {took:.1f}s after the broker lost its queue")
    assert took <= 30


@pytest.mark.slow
def test_listener_killed_mid_catch_up_leaves_no_gap_and_no_duplicate(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a long history and a listener that checkpoints every 20 blocks
    sim, env = start_long_catch_up(settings, env, procs)
    head = sim.status()["head"]
    listener = start_listener(env)
    # When it is killed with SIGKILL mid-catch-up and started again
    wait_until(lambda: checkpoint(settings.database_url) >= head - 1000, 60, "some progress")
    listener.kill()
    listener.popen.wait(10)
    assert checkpoint(settings.database_url) < head
    procs.append(start_listener(env))
    wait_until(lambda: checkpoint(settings.database_url) == head, 120, "the restarted listener to finish")
    # Then nothing is missing and nothing is doubled
    assert_ledger_matches_truth(settings, sim, env)
