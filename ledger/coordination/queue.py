"""The message contract between the listener (producer) and the workers (consumers).

The listener enqueues by actor name and never imports the actor code (a Dramatiq message names its actor;
broker.enqueue needs no actor object): a message
is plain JSON, so a producer only needs this module.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

import dramatiq
import pika.exceptions
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker
from dramatiq.common import dq_name, q_name

from ledger.coordination.lease import Fence
from ledger.domain import Operation, PayloadError

log = logging.getLogger(__name__)

PERSIST_OPERATION = "persist_operation"  # args: (operation dict,)
PERSIST_OPERATIONS = "persist_operations"  # args: ([operation dict, ...] of one owner account,)
CONFIRM_BLOCKS = "confirm_blocks"  # args: (solid block number,)
REVERT_BLOCKS = "revert_blocks"  # args: ([[block_num, block_id], ...] of blocks that left the chain,)
# Scheduled jobs (scheduler/ enqueues them, workers/reconcile.py and workers/lifecycle.py run them).
RECONCILE_GAPS = "reconcile_gaps"  # args: (pool account, job_runs id)
RECONCILE_STATE = "reconcile_state"  # args: (pool account, job_runs id)
LIFECYCLE = "lifecycle"  # args: (job_runs id,)
NETWORK_TOTALS = "network_totals"  # args: (job_runs id,): getaccountresource's totals (resource units)
DELIVER_WEBHOOK = "deliver_webhook"  # args: (webhook subscription id, event id); on webhook_queue()

AMQP_SCHEMES = ("amqp", "amqps")

# Live first. Work that is not the chain's head (backfill, and any later reconciliation) goes to a
# queue of its own beside the live one, `<QUEUE_NAME>-background`, and its actors are declared
# with a lower priority. A worker consumes both queues, but its threads take prefetched messages by
# actor priority (dramatiq/worker.py: the work queue is a PriorityQueue of (actor.priority, ...),
# lower first), so a live message waits for one running message to finish, never for a backlog.
# Dramatiq priorities belong to actors, not messages, hence one actor name per lane. The queue
# decides the lane: a producer only picks the queue (`background_queue`).
# Measured in docs/BENCHMARKS.md ("Live first"); bench/live_first.py.
BACKGROUND_SUFFIX = "-background"
WEBHOOK_INFIX = "-webhooks"
BACKGROUND_ACTOR_SUFFIX = "_background"
LIVE_PRIORITY = 0
BACKGROUND_PRIORITY = 100  # dramatiq: lower numbers first


def background_queue(queue_name: str) -> str:
    """The low-priority queue beside the live `queue_name` (backfill, reconciliation)."""
    return queue_name + BACKGROUND_SUFFIX


def webhook_queue(queue_name: str) -> str:
    """The queue of webhook deliveries: its own, so a receiver that is down or slow fills only it;
    background priority, since a delivery is never more urgent than the chain's head."""
    return background_queue(queue_name + WEBHOOK_INFIX)


def is_background(queue_name: str) -> bool:
    return queue_name.endswith(BACKGROUND_SUFFIX)


def lane_actor_name(base: str, queue_name: str) -> str:
    """The actor that runs `base` for messages on `queue_name` (its priority follows the lane)."""
    return base + BACKGROUND_ACTOR_SUFFIX if is_background(queue_name) else base


def lane_priority(queue_name: str) -> int:
    return BACKGROUND_PRIORITY if is_background(queue_name) else LIVE_PRIORITY


class BrokerNotDurable(RuntimeError):
    """The broker would lose queued messages on a restart and the settings say to refuse."""


def create_broker(url: str) -> dramatiq.Broker:
    """The broker for this process (Settings.broker_url): RabbitMQ for amqp(s)://, else Redis.

    Call at process start, after any fork. RabbitMQ gets publisher confirms: without them
    `enqueue` returns once the bytes are written to the socket, so a broker crash right after
    would lose a message the listener has already counted as sent, and its checkpoint moves on.
    Dramatiq declares RabbitMQ queues durable and publishes with delivery_mode=2 (persistent).
    """
    if is_amqp(url):
        return RabbitmqBroker(url=url, confirm_delivery=True)
    return RedisBroker(url=url)


def is_amqp(url: str) -> bool:
    return urlsplit(url).scheme in AMQP_SCHEMES


def queued_messages(broker: dramatiq.Broker, queue_name: str) -> int:
    """Messages the broker holds for `queue_name`: waiting, plus retries delayed in its `.DQ`.

    (Messages a worker has taken and not yet acknowledged are not counted.) The accounting's
    repair holds back while this is not zero: a missing operation may still be among them.
    """
    name = q_name(queue_name)
    if isinstance(broker, RabbitmqBroker):
        try:
            broker.declare_queue(name, ensure=True)
            return sum(
                int(broker.channel.queue_declare(queue=queue, passive=True).method.message_count)
                for queue in (name, dq_name(name))
            )
        except pika.exceptions.AMQPError:
            del broker.connection  # the next call opens a fresh one, as RabbitmqBroker.enqueue does
            raise
    if isinstance(broker, RedisBroker):
        # The queue list holds ids not yet fetched; a delayed message stays in `.DQ.msgs` until
        # it is acknowledged, wherever it waits for its eta.
        prefix = f"{broker.namespace}:{name}"
        pipe = broker.client.pipeline(transaction=False)
        pipe.llen(prefix)
        pipe.hlen(f"{prefix}.DQ.msgs")
        return sum(int(n) for n in pipe.execute())
    raise TypeError(f"unknown broker {type(broker).__name__}")


def check_broker_durability(broker: dramatiq.Broker, *, require: bool) -> str:
    """Say (log) whether the broker keeps queued messages across a restart; return the verdict.

    Redis keeps them only with AOF (`appendonly yes`); RDB snapshots alone lose everything since
    the last snapshot. Managed Redis services often disable CONFIG: then nothing can be checked,
    a warning says so, and `require` does not refuse (only a setting seen to be off refuses).
    The end-to-end accounting (ledger/store/accounting.py) repairs what a broker loses either way; this
    check is about not relying on it for routine restarts.
    """
    if isinstance(broker, RabbitmqBroker):
        verdict = "durable: RabbitMQ, durable queues, persistent messages, publisher confirms"
        log.info("broker %s", verdict)
        return verdict
    if not isinstance(broker, RedisBroker):
        return "unknown broker"
    try:
        config = broker.client.config_get("appendonly")
        config.update(broker.client.config_get("save"))
    except redis.ResponseError as exc:
        verdict = f"unknown: CONFIG GET refused ({exc}); make sure the broker Redis runs with appendonly yes"
        log.warning("broker persistence %s", verdict)
        return verdict
    if config.get("appendonly") == "yes":
        log.info("broker Redis persistence: AOF on")
        return "durable: AOF"
    snapshots = config.get("save", "")
    risk = (
        f"only RDB snapshots (save {snapshots!r}): a restart loses the messages queued since the last one"
        if snapshots
        else "no persistence (no AOF, no snapshots): a restart loses every queued message"
    )
    message = (
        f"broker Redis has {risk}; the end-to-end accounting re-enqueues them after its grace period,"
        " but run it with appendonly yes (see docs/RELIABILITY.md)"
    )
    if require:
        raise BrokerNotDurable(message + "; refusing to start (BROKER_REQUIRE_PERSISTENCE=1)")
    log.warning("%s", message)
    return "not durable: " + risk


def operation_message(op: Operation, queue_name: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=lane_actor_name(PERSIST_OPERATION, queue_name),
        args=(op.to_message(),),
        kwargs={},
        options={},
    )


# Operations per persist_operations message. The listener sends a batch's operations grouped by
# owner account, in messages of at most this many: one message, one transaction and one cache
# invalidation per group instead of per operation (docs/BENCHMARKS.md, "Ingest"). A group per owner
# keeps one owner's lots and settlements in one transaction (workers.persist takes that owner's lock
# once) and lets other owners' groups run beside it. 200 rather than 50: cheaper per operation for
# the workers and PostgreSQL in the same runs (docs/BENCHMARKS.md); a retry still redoes about a
# tenth of a second of work, and a message stays under 100 kB.
OPERATIONS_PER_MESSAGE = 200


def _fenced(fence: Fence | None) -> dict[str, Any]:
    return {} if fence is None else fence.kwargs()


def fence_of(lease: Any, term: Any) -> Fence | None:
    """The fence a message's kwargs carry; None for a message without one (queued across an upgrade by a
    listener that sends none): such a message is applied unfenced."""
    if lease is None and term is None:
        return None
    if not isinstance(lease, str) or not isinstance(term, int) or isinstance(term, bool):
        raise PayloadError(f"fence lease={lease!r} term={term!r} is not a lease name and a term")
    return Fence(lease, term)


def operations_messages(
    operations: Iterable[Operation], queue_name: str, fence: Fence | None = None
) -> list[dramatiq.Message[Any]]:
    """The persist_operations messages for `operations`: per owner, in chain order, chunked."""
    by_owner: dict[str, list[dict[str, Any]]] = {}
    for op in operations:
        by_owner.setdefault(op.owner_address, []).append(op.to_message())
    actor = lane_actor_name(PERSIST_OPERATIONS, queue_name)
    return [
        dramatiq.Message(
            queue_name=queue_name,
            actor_name=actor,
            args=(group[i : i + OPERATIONS_PER_MESSAGE],),
            kwargs=_fenced(fence),
            options={},
        )
        for group in by_owner.values()
        for i in range(0, len(group), OPERATIONS_PER_MESSAGE)
    ]


def confirm_message(solid_block: int, queue_name: str, fence: Fence | None = None) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=lane_actor_name(CONFIRM_BLOCKS, queue_name),
        args=(solid_block,),
        kwargs=_fenced(fence),
        options={},
    )


def revert_message(blocks: list[tuple[int, str]], queue_name: str, fence: Fence | None = None) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=lane_actor_name(REVERT_BLOCKS, queue_name),
        args=([[num, block_id] for num, block_id in blocks],),
        kwargs=_fenced(fence),
        options={},
    )


def job_message(actor_name: str, args: tuple[Any, ...], queue_name: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(queue_name=queue_name, actor_name=actor_name, args=args, kwargs={}, options={})


OperationKey = tuple[str, int, str]  # (tx_id, op_index, block_id): one recorded operation


@dataclass(frozen=True)
class BrokerLoss:
    """The broker lost queued messages since its state was last marked kept (`mark_kept`)."""

    # The operations still in the broker's messages (queued, delayed, or taken by a worker and not
    # yet acknowledged); None when the broker cannot be read that way: take every one as lost.
    held: frozenset[OperationKey] | None
    mark: str  # what `mark_kept` stores, so that the next look finds nothing lost
    reason: str


class Sink(Protocol):
    """Where operations and block messages go: the listener's sends and the accounting's re-sends."""

    def publish(self, operations: Iterable[Operation]) -> int: ...

    def confirm(self, solid_block: int) -> None: ...

    def revert(self, blocks: list[tuple[int, str]]) -> None: ...

    def backlog(self) -> int: ...

    def lost(self) -> BrokerLoss | None: ...

    def mark_kept(self, loss: BrokerLoss) -> None: ...


class BrokerSink:
    """Enqueues a batch's groups through a few threads: each enqueue is one broker round trip (one
    publisher confirm on RabbitMQ), and waiting on them one after another would add up.

    A sink for a lease term (`for_term`) stamps each message with the term's fence and checks,
    right before each enqueue, that the term may still act (`guard`, which raises when not)."""

    def __init__(
        self,
        broker: dramatiq.Broker,
        queue_name: str,
        threads: int = 8,
        *,
        fence: Fence | None = None,
        guard: Callable[[], None] | None = None,
        pool: ThreadPoolExecutor | None = None,
    ) -> None:
        self._broker = broker
        self._queue = queue_name
        self._owns_pool = pool is None
        self._pool = pool or ThreadPoolExecutor(max_workers=threads, thread_name_prefix="enqueue")
        self.fence = fence
        self._guard = guard

    def for_term(self, fence: Fence, guard: Callable[[], None]) -> BrokerSink:
        """This sink's broker and threads, for messages of one term."""
        return BrokerSink(self._broker, self._queue, fence=fence, guard=guard, pool=self._pool)

    def _send(self, message: dramatiq.Message[Any]) -> None:
        if self._guard is not None:
            self._guard()
        self._broker.enqueue(message)

    def publish(self, operations: Iterable[Operation]) -> int:
        """Enqueue `operations`; return how many (not how many messages)."""
        ops = list(operations)
        messages = operations_messages(ops, self._queue, self.fence)
        # list() waits for all of them and re-raises the first failure, so the caller never
        # advances its checkpoint past a message that was not enqueued.
        list(self._pool.map(self._send, messages))
        return len(ops)

    def close(self) -> None:
        if self._owns_pool:
            self._pool.shutdown(wait=True)

    def confirm(self, solid_block: int) -> None:
        self._send(confirm_message(solid_block, self._queue, self.fence))

    def revert(self, blocks: list[tuple[int, str]]) -> None:
        self._send(revert_message(blocks, self._queue, self.fence))

    def backlog(self) -> int:
        """Messages the broker holds for the queue (the accounting's re-sends hold back behind a backlog)."""
        return queued_messages(self._broker, self._queue)

    def lost(self) -> BrokerLoss | None:
        return broker_loss(self._broker, self._queue)

    def mark_kept(self, loss: BrokerLoss) -> None:
        mark_broker_kept(self._broker, self._queue, loss.mark)


# A broker that lost its queued messages (a Redis restarted without persistence, or from an older
# snapshot, flushed, or failed over to a replica that lagged; a RabbitMQ node that lost its data
# directory) says nothing about it: the queue is simply shorter. The accounting would re-send the
# missing operations only a grace period after they were recorded, and behind the backlog a
# catch-up refills at once, only after BACKLOG_PATIENCE grace periods (5 min by default). A mark
# kept in the broker itself tells at once: it is lost with the messages.
# - Redis: `ledger:kept:<queue>` holds the server's run id when the mark was set. Missing (the
#   data is gone) or another run id (the server restarted: with AOF it kept all but the last
#   second, from a snapshot only what the snapshot held, a promoted replica what it had received)
#   is a loss, and the queue's messages are read to tell which recorded operations are still in it.
# - RabbitMQ: a durable queue `<queue>.kept` holding one persistent message, which nobody
#   consumes. It survives restarts as durable queues do, and goes with them when the node's data
#   does. RabbitMQ's messages cannot be read without taking them, so a loss there means every
#   operation in flight.
# Not seen: messages deleted by hand (a purge, a DEL of the queue key) with the mark left in place;
# the grace period re-sends those.
KEPT_KEY = "ledger:kept:{queue}"
KEPT_QUEUE_SUFFIX = ".kept"


def broker_loss(broker: dramatiq.Broker, queue_name: str) -> BrokerLoss | None:
    """What the broker lost from `queue_name` since `mark_broker_kept` (None: nothing)."""
    if isinstance(broker, RedisBroker):
        mark = broker.client.get(KEPT_KEY.format(queue=queue_name))
        run_id = _redis_run_id(broker.client)
        if isinstance(mark, bytes) and mark.decode() == run_id:
            return None
        reason = "its data is gone" if mark is None else "the server restarted"
        return BrokerLoss(held=_held_operations(broker, queue_name), mark=run_id, reason=reason)
    if isinstance(broker, RabbitmqBroker):
        try:
            channel = broker.connection.channel()
            try:
                kept = channel.queue_declare(queue_name + KEPT_QUEUE_SUFFIX, passive=True).method.message_count > 0
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404:
                    raise
                kept = False  # the broker closed the channel with the answer
            else:
                channel.close()
        except pika.exceptions.AMQPError:
            del broker.connection  # the next call opens a fresh one, as RabbitmqBroker.enqueue does
            raise
        return None if kept else BrokerLoss(held=None, mark="", reason="its durable queues are gone")
    raise TypeError(f"unknown broker {type(broker).__name__}")


def _redis_run_id(client: redis.Redis) -> str:
    """The server's run id (new at every start); empty where INFO is refused (some managed
    services), which leaves the mark's presence to tell a loss."""
    try:
        info = client.info("server")
    except redis.ResponseError:
        return ""
    return str(info.get("run_id", ""))


def mark_broker_kept(broker: dramatiq.Broker, queue_name: str, mark: str) -> None:
    """Note in the broker that its messages for `queue_name` are accounted for (see `broker_loss`)."""
    if isinstance(broker, RedisBroker):
        broker.client.set(KEPT_KEY.format(queue=queue_name), mark)
        return
    if isinstance(broker, RabbitmqBroker):
        try:
            channel = broker.connection.channel()
            channel.confirm_delivery()
            name = queue_name + KEPT_QUEUE_SUFFIX
            if channel.queue_declare(name, durable=True).method.message_count == 0:
                channel.basic_publish("", name, b"kept", pika.BasicProperties(delivery_mode=2))
            channel.close()
        except pika.exceptions.AMQPError:
            del broker.connection
            raise
        return
    raise TypeError(f"unknown broker {type(broker).__name__}")


def _held_operations(broker: RedisBroker, queue_name: str) -> frozenset[OperationKey]:
    """The operations in the Redis broker's messages for the queue: queued, delayed, or taken by a
    worker and not yet acknowledged (Dramatiq keeps a message in `<queue>.msgs` until its ack)."""
    held: set[OperationKey] = set()
    name = q_name(queue_name)
    for key in (f"{broker.namespace}:{name}.msgs", f"{broker.namespace}:{dq_name(name)}.msgs"):
        for _, data in broker.client.hscan_iter(key, count=500):
            message = dramatiq.Message.decode(data)
            if message.actor_name == lane_actor_name(PERSIST_OPERATIONS, queue_name):
                ops = message.args[0]
            elif message.actor_name == lane_actor_name(PERSIST_OPERATION, queue_name):
                ops = [message.args[0]]
            else:
                continue
            held.update((op["tx_id"], int(op["op_index"]), op["block_id"]) for op in ops)
    return frozenset(held)


def webhook_message(subscription_id: int, event_id: int, queue_name: str) -> dramatiq.Message[Any]:
    queue = webhook_queue(queue_name)
    return dramatiq.Message(
        queue_name=queue,
        actor_name=lane_actor_name(DELIVER_WEBHOOK, queue),
        args=(subscription_id, event_id),
        kwargs={},
        options={},
    )
