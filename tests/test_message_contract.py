"""The message contract between producers and actors, checked on the real code of both sides.

Producers enqueue by actor name and never import the actors (ledger/coordination/queue.py says why),
so no type checker links a message's arguments to the function that receives them. This test does:
every message each producer builds is bound to the signature of the actor registered under its
name, so an argument added, renamed or dropped on one side alone fails here, not in production as
a dead letter.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from ledger.config import Settings
from ledger.coordination.lease import Fence, Term
from ledger.coordination.queue import (
    confirm_message,
    operation_message,
    operations_messages,
    revert_message,
    webhook_message,
)
from ledger.store.cache import create_cache_client
from ledger.store.db import create_pool
from ledger.store.jobruns import SINGLE, DueItem
from scheduler.main import Ticker, job_specs
from tests.conftest import settings_for
from tests.test_persist import make_op
from workers.actors import Deps, register_actors
from workers.dbgate import DbGate
from workers.invalidator import Invalidator


@pytest.fixture
def contract(database_url: str) -> Iterator[tuple[Settings, dict[str, dramatiq.Actor[..., None]]]]:
    settings = settings_for(database_url)
    pool = create_pool(settings.database_url, max_size=1, name="contract")
    deps = Deps(
        settings=settings,
        pool=pool,
        gate=DbGate(settings.database_url, pool),
        invalidator=Invalidator(create_cache_client(settings.cache_redis_url, 0.25)),
    )
    try:
        yield settings, register_actors(StubBroker(), deps)
    finally:
        pool.close()


def produced(settings: Settings) -> list[dramatiq.Message[object]]:
    """Every kind of message the listener, the workers' relay and the scheduler send."""
    queue = settings.queue_name
    fence = Fence("main", 3)
    ops = [make_op("freeze", 100), make_op("delegate", 101, receiver_address=make_op("freeze").owner_address)]
    messages: list[dramatiq.Message[object]] = [
        operation_message(ops[0], queue),
        *operations_messages(ops, queue),
        *operations_messages(ops, queue, fence),
        confirm_message(120, queue),
        confirm_message(120, queue, fence),
        revert_message([(101, "ab" * 32)], queue),
        revert_message([(101, "ab" * 32)], queue, fence),
        webhook_message(1, 2, queue),
    ]
    ticker = Ticker(settings, StubBroker(), Term("scheduler", 1, deadline=0.0), "test")
    for spec in job_specs(settings):
        account = "T" * 34 if spec.per_account else SINGLE
        messages.append(ticker._message(DueItem(run_id=7, job=spec.name, account=account, sends=0)))
    return messages


def test_every_message_a_producer_sends_binds_to_its_actors_signature(
    contract: tuple[Settings, dict[str, dramatiq.Actor[..., None]]],
) -> None:
    settings, actors = contract
    messages = produced(settings)
    assert {m.actor_name for m in messages} >= {"persist_operations", "confirm_blocks", "revert_blocks"}
    for message in messages:
        assert message.actor_name in actors, f"no actor {message.actor_name!r} for a message producers send"
        signature = inspect.signature(actors[message.actor_name].fn)
        try:
            signature.bind(*message.args, **message.kwargs)
        except TypeError as exc:
            raise AssertionError(
                f"{message.actor_name}{signature} cannot take {message.args} {message.kwargs}"
            ) from exc


def test_a_message_with_an_argument_its_actor_lacks_is_caught(
    contract: tuple[Settings, dict[str, dramatiq.Actor[..., None]]],
) -> None:
    # The check itself can fail: an extra keyword (a producer ahead of its workers) does not bind.
    _, actors = contract
    signature = inspect.signature(actors["confirm_blocks"].fn)
    with pytest.raises(TypeError):
        signature.bind(120, lease="main", term=3, solid_time_ms=0)
