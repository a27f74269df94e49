"""The broker is chosen by URL in one place (ledger/coordination/queue.py) and checked for durability at start.

Private redis-servers stand for the broker Redis in each persistence setup (the shared one is never
reconfigured); RabbitMQ is the machine's, with a queue of this test's own that is deleted after."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import dramatiq
import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from harness.procs import Proc, python
from harness.servers import PrivateRedis
from harness.stack import delete_rabbitmq_queues, settings_env
from ledger.config import ConfigError, Settings, load_settings
from ledger.coordination.queue import (
    BrokerNotDurable,
    check_broker_durability,
    create_broker,
    operation_message,
    queued_messages,
)
from tests.conftest import TEST_RABBITMQ_URL
from tests.test_persist import make_op


def redis_broker(*flags: str, aof: bool = False) -> Iterator[RedisBroker]:
    server = PrivateRedis(*flags, aof=aof)
    server.start()
    broker = create_broker(server.url())
    assert isinstance(broker, RedisBroker)
    try:
        yield broker
    finally:
        broker.close()
        server.close()


@pytest.fixture
def volatile() -> Iterator[RedisBroker]:
    yield from redis_broker()  # as the issue found scripts/services: no AOF, no snapshots


@pytest.fixture
def rabbit() -> Iterator[tuple[RabbitmqBroker, str]]:
    broker = create_broker(TEST_RABBITMQ_URL)
    assert isinstance(broker, RabbitmqBroker)
    queue = f"brokers-{uuid.uuid4().hex[:8]}"
    yield broker, queue
    broker.close()
    delete_rabbitmq_queues(TEST_RABBITMQ_URL, queue)


def test_broker_url_selects_the_broker_and_defaults_to_redis_url() -> None:
    assert load_settings({"REDIS_URL": "redis://h:1/0"}).effective_broker_url == "redis://h:1/0"
    settings = load_settings({"REDIS_URL": "redis://h:1/0", "BROKER_URL": "amqp://u:p@h:5672/%2F"})
    assert settings.effective_broker_url == "amqp://u:p@h:5672/%2F"
    assert isinstance(create_broker("redis://127.0.0.1:1/0"), RedisBroker)
    rabbit = create_broker("amqps://u:p@127.0.0.1:1/%2F")  # no connection until first use
    assert isinstance(rabbit, RabbitmqBroker) and rabbit.confirm_delivery


def test_a_broker_url_of_another_kind_or_a_bad_grace_is_refused() -> None:
    with pytest.raises(ConfigError, match="BROKER_URL: broker scheme 'kafka'"):
        load_settings({"BROKER_URL": "kafka://h:9092"})
    with pytest.raises(ConfigError, match="REDIS_URL: broker scheme 'http'"):
        load_settings({"REDIS_URL": "http://h:6379/0"})
    for bad in ("0", "-1", "soon"):
        with pytest.raises(ConfigError, match="REPAIR_GRACE_SECONDS"):
            load_settings({"REPAIR_GRACE_SECONDS": bad})


def test_a_broker_redis_without_persistence_is_named_as_a_risk(
    volatile: RedisBroker, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="ledger.coordination.queue"):
        verdict = check_broker_durability(volatile, require=False)
    assert verdict.startswith("not durable")
    assert "a restart loses every queued message" in caplog.text and "appendonly yes" in caplog.text
    with pytest.raises(BrokerNotDurable, match="BROKER_REQUIRE_PERSISTENCE"):
        check_broker_durability(volatile, require=True)


def test_snapshots_alone_are_not_durable() -> None:
    for broker in redis_broker("--save", "3600 1"):
        assert "only RDB snapshots" in check_broker_durability(broker, require=False)
        with pytest.raises(BrokerNotDurable):
            check_broker_durability(broker, require=True)


def test_aof_is_durable() -> None:
    for broker in redis_broker(aof=True):
        assert check_broker_durability(broker, require=True) == "durable: AOF"


def test_config_disabled_cannot_be_checked_and_is_not_refused(caplog: pytest.LogCaptureFixture) -> None:
    # Managed Redis services often rename or disable CONFIG.
    for broker in redis_broker("--rename-command", "CONFIG", ""):
        with caplog.at_level(logging.WARNING, logger="ledger.coordination.queue"):
            verdict = check_broker_durability(broker, require=True)
        assert verdict.startswith("unknown: CONFIG GET refused")
        assert "make sure the broker Redis runs with appendonly yes" in caplog.text


def test_rabbitmq_is_durable_and_counts_what_waits_or_is_delayed(rabbit: tuple[RabbitmqBroker, str]) -> None:
    broker, queue = rabbit
    assert check_broker_durability(broker, require=True).startswith("durable: RabbitMQ")
    assert queued_messages(broker, queue) == 0
    message: dramatiq.Message[object] = operation_message(make_op("freeze", 100), queue)
    broker.enqueue(message)  # returns once RabbitMQ confirmed it (publisher confirms)
    assert queued_messages(broker, queue) == 1
    broker.enqueue(operation_message(make_op("freeze", 101), queue), delay=60_000)  # a retry waiting
    assert queued_messages(broker, queue) == 2
    # the queue survives a broker restart: declared durable (a passive re-declare says it exists)
    assert broker.channel.queue_declare(queue=queue, passive=True).method.message_count == 1


def test_the_redis_broker_counts_what_waits_or_is_delayed(volatile: RedisBroker) -> None:
    queue = "count-me"
    assert queued_messages(volatile, queue) == 0
    volatile.enqueue(operation_message(make_op("freeze", 100), queue))
    volatile.enqueue(operation_message(make_op("freeze", 101), queue))
    assert queued_messages(volatile, queue) == 2
    volatile.enqueue(operation_message(make_op("freeze", 102), queue), delay=60_000)  # a retry waiting
    assert queued_messages(volatile, queue) == 3


def test_the_listener_refuses_a_volatile_broker_when_told_to(volatile: RedisBroker, database_url: str) -> None:
    url = f"redis://127.0.0.1:{volatile.client.connection_pool.connection_kwargs['port']}/0"
    env = {
        "DATABASE_URL": database_url,
        "REDIS_URL": url,
        "TRON_NODE_URL": "http://127.0.0.1:1",
        "BROKER_REQUIRE_PERSISTENCE": "1",
        "PYTHONUNBUFFERED": "1",
    }
    proc = Proc("listener", python("-m", "listener"), env)
    proc.wait_for(r"refusing to start \(BROKER_REQUIRE_PERSISTENCE=1\)", timeout=30)
    assert proc.popen.wait(30) == 2


def test_the_workers_refuse_a_volatile_broker_when_told_to(
    volatile: RedisBroker, settings: Settings, database_url: str
) -> None:
    url = f"redis://127.0.0.1:{volatile.client.connection_pool.connection_kwargs['port']}/0"
    env = {**settings_env(settings), "REDIS_URL": url, "BROKER_REQUIRE_PERSISTENCE": "1", "QUEUE_NAME": "refused"}
    proc = Proc("worker", python("-m", "dramatiq", "workers.main:setup", "--processes", "1", "--threads", "1"), env)
    proc.wait_for(r"refusing to start \(BROKER_REQUIRE_PERSISTENCE=1\)", timeout=60)
    assert proc.popen.wait(30) != 0
