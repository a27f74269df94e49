"""The worker's actors, declared on a given broker with their dependencies passed in.

Each actor persists in one transaction, commits, and only then bumps the cache generation of the
accounts it touched (invalidate after commit: invalidating before would let a reader cache the old
rows again). A PostgreSQL that cannot be reached is waited for (workers.dbgate), a cache that
cannot be reached is skipped and caught up later (workers.invalidator); any other failure raises,
so Dramatiq retries the whole message: re-running the upsert is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dramatiq
import psycopg
from psycopg_pool import ConnectionPool

from ledger.chain.node import BudgetUnavailable, TronNode
from ledger.chain.resources import network_totals
from ledger.config import Settings
from ledger.coordination.lease import Fence, StaleTerm, current_fence
from ledger.coordination.queue import (
    BACKGROUND_PRIORITY,
    CONFIRM_BLOCKS,
    DELIVER_WEBHOOK,
    LIFECYCLE,
    NETWORK_TOTALS,
    PERSIST_OPERATION,
    PERSIST_OPERATIONS,
    RECONCILE_GAPS,
    RECONCILE_STATE,
    REVERT_BLOCKS,
    BrokerSink,
    background_queue,
    fence_of,
    lane_actor_name,
    lane_priority,
    webhook_queue,
)
from ledger.domain import Operation, PayloadError
from ledger.ops.metrics import Counters
from ledger.store import jobruns
from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.accounts import tracked_addresses
from ledger.store.jobruns import JOB_TIME_LIMIT_SECONDS
from ledger.store.network_totals import record_totals
from workers import canonical, persist, reconcile, webhooks
from workers.dbgate import DbGate
from workers.invalidator import Invalidator
from workers.lifecycle import run_lifecycle
from workers.metrics import STALE_MESSAGES
from workers.taken import TakenItems

log = logging.getLogger(__name__)

# Never retried: the same input fails the same way every time (poison), so it goes to the
# dead-letter queue at once. DataError/IntegrityError are values the schema rejects (out of range,
# NOT NULL, CHECK); connection loss, deadlocks and serialization failures are OperationalErrors
# and are retried like Redis errors.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (PayloadError, psycopg.DataError, psycopg.IntegrityError)

TIME_LIMIT_MS = 60_000  # a hung statement is abandoned and retried after this
# How long a message that met a PostgreSQL outage waits for it before it gives up one retry (under
# the time limit, which would otherwise interrupt the wait with an error of its own).
DB_WAIT_BUDGET_S = 45.0
# A scheduled job reads pages of TronGrid at the budget's pace: minutes, not seconds. The run's
# accounting (ledger/store/jobruns.py) sends again an item taken longer ago than this.
JOB_TIME_LIMIT_MS = JOB_TIME_LIMIT_SECONDS * 1000


@dataclass(frozen=True)
class Deps:
    """What the actors of one worker process use; built once per process, after the fork."""

    settings: Settings
    pool: ConnectionPool
    gate: DbGate
    invalidator: Invalidator
    node: TronNode | None = None  # for the reconciliation jobs; None without TRON_NODE_URL
    broker: dramatiq.Broker | None = None  # to split a group that holds a poison operation
    counters: Counters | None = None  # this process's pushed counters (webhook deliveries, stale messages)
    sender: webhooks.Sender | None = None  # webhook deliveries' HTTP client
    taken: TakenItems | None = None  # marks the job items being worked on (None: not marked)


def _apply(deps: Deps, actor: str, fence: Fence | None, write: Callable[[], set[str]]) -> set[str] | None:
    """Run a message's transaction; None if its term was no longer current (nothing applied).

    A stale message is acknowledged, not retried or dead-lettered: it failed nothing, its term is
    over and the current term sends what it has to (the accounting re-sends a stale term's
    operations at once). It is counted (ledger_worker_stale_messages_total) and logged."""
    try:
        return deps.gate.call(write, budget=DB_WAIT_BUDGET_S)
    except StaleTerm as exc:
        if deps.counters is not None:
            deps.counters.inc(STALE_MESSAGES, {"actor": actor})
        log.info("dropped a %s message: %s", actor, exc)
        return None


def persist_operation(deps: Deps, payload: Any, fence: Fence | None = None) -> None:
    try:
        op = Operation.from_message(payload)
    except PayloadError:
        raise
    except (TypeError, ValueError) as exc:  # e.g. an unhashable `kind`: just as malformed, never retried
        raise PayloadError(f"bad operation payload: {exc}") from None

    def write() -> set[str]:
        with deps.pool.connection() as conn:  # autocommit: see workers.persist
            return persist.persist_operations(
                conn, [op], unfreeze_delay_seconds=deps.settings.unfreeze_delay_seconds, fence=fence
            )

    touched = _apply(deps, PERSIST_OPERATION, fence, write)
    if touched is None:
        return
    deps.invalidator.invalidate(touched)
    log.debug("persisted %s/%s (%s)", op.tx_id, op.op_index, op.kind)


def persist_operations(deps: Deps, payloads: Any, queue_name: str, fence: Fence | None = None) -> None:
    """A group of operations (ledger.coordination.queue.operations_messages) in one transaction.

    A group holding an operation that can never be stored (a bad payload, a value the schema
    rejects) is split: each operation goes back to `queue_name` as its own persist_operation
    message, so the good ones land (again: upserts are idempotent) and only the poison one is
    dead-lettered, with its own payload. Any other failure retries the whole group.
    """
    if not isinstance(payloads, list) or not payloads:
        raise PayloadError(f"operations payload must be a non-empty list, got {type(payloads).__name__}")
    try:
        ops = [Operation.from_message(payload) for payload in payloads]
    except (TypeError, ValueError):  # PayloadError included
        _split(deps, payloads, queue_name, fence)
        return

    def write() -> set[str]:
        with deps.pool.connection() as conn:  # autocommit: persist_operations opens its transaction
            return persist.persist_operations(
                conn, ops, unfreeze_delay_seconds=deps.settings.unfreeze_delay_seconds, fence=fence
            )

    try:
        touched = _apply(deps, PERSIST_OPERATIONS, fence, write)
    except PERMANENT_ERRORS:
        _split(deps, payloads, queue_name, fence)
        return
    if touched is None:
        return
    deps.invalidator.invalidate(touched)
    log.debug("persisted %d operations of %s", len(ops), ops[0].owner_address)


def _split(deps: Deps, payloads: list[Any], queue_name: str, fence: Fence | None) -> None:
    if len(payloads) == 1 or deps.broker is None:
        # Nothing to split (or nowhere to send the parts): the group is the poison message.
        raise PayloadError(f"a group of {len(payloads)} operation(s) holds one that can never be stored")
    log.warning("a group of %d operations holds one that can never be stored: sent again one by one", len(payloads))
    for payload in payloads:
        deps.broker.enqueue(
            dramatiq.Message(
                queue_name=queue_name,
                actor_name=lane_actor_name(PERSIST_OPERATION, queue_name),
                args=(payload,),
                kwargs={} if fence is None else fence.kwargs(),
                options={},
            )
        )


def confirm_blocks(deps: Deps, solid_block: Any, fence: Fence | None = None) -> None:
    def write() -> set[str]:
        with deps.pool.connection() as conn:
            return persist.confirm_blocks(
                conn, solid_block, unfreeze_delay_seconds=deps.settings.unfreeze_delay_seconds, fence=fence
            )

    addresses = _apply(deps, CONFIRM_BLOCKS, fence, write)
    if addresses is None:
        return
    deps.invalidator.invalidate(addresses)
    if addresses:
        log.info("confirmed up to block %s (%d accounts)", solid_block, len(addresses), extra={"block": solid_block})


def revert_blocks(deps: Deps, blocks: Any, fence: Fence | None = None) -> None:
    """Orphan the records of the blocks shown to be off the canonical chain (workers/canonical.py);
    never those of a block the chain still has. A block nothing shows either way yet (the node
    unreachable) is left: the accounting's re-send of lost reverts brings it back once checked."""
    pairs = persist.block_pairs(blocks)
    verdicts = canonical.Verdicts()

    def write() -> set[str]:
        nonlocal verdicts
        with deps.pool.connection() as conn:
            verdicts = canonical.classify(conn, pairs, canonical.node_block_ids(deps.node))
            off_chain = [[num, block_id] for num, block_id in verdicts.off_chain]
            return persist.revert_blocks(conn, off_chain, fence=fence)

    addresses = _apply(deps, REVERT_BLOCKS, fence, write)
    if addresses is None:
        return
    deps.invalidator.invalidate(addresses)
    if verdicts.on_chain:
        log.warning(
            "refused to orphan %d block(s) the canonical chain still has (first %s)",
            len(verdicts.on_chain),
            verdicts.on_chain[0],
        )
    if verdicts.unknown:
        log.warning(
            "left %d block(s) not shown off the canonical chain yet (first %s)",
            len(verdicts.unknown),
            verdicts.unknown[0],
        )
    log.warning(
        "orphaned the records of %d block(s) that left the chain (%d accounts)", len(verdicts.off_chain), len(addresses)
    )


# -- scheduled jobs (scheduler/ sends them; each takes and closes its item of the run) ------------------


@dataclass(frozen=True)
class JobOutcome:
    """What one job message did: its numbers (summed into the run's result), or why it has to wait
    (`deferred`: the item is sent again later, ledger/store/jobruns.py)."""

    result: dict[str, int]
    deferred: str | None = None


def _job(deps: Deps, run_id: Any, account: str, body: Callable[[psycopg.Connection], JobOutcome]) -> None:
    run = run_id if isinstance(run_id, int) and not isinstance(run_id, bool) else None
    grace = deps.settings.repair_grace_seconds
    who = account or "-"
    with deps.pool.connection() as conn:
        taken = jobruns.UNLISTED if run is None else jobruns.take_item(conn, run, account, grace)
        if taken in (jobruns.DONE, jobruns.BUSY):
            # A copy the repair pass sent while the first was queued or running: one does the work.
            log.info(
                "job of run %s for %s skipped: %s", run, who, "done already" if taken == jobruns.DONE else "running"
            )
            return
        if taken == jobruns.UNLISTED:
            log.warning("job of run %s for %s: the run does not list it, so it is done without being counted", run, who)
        marked: contextlib.AbstractContextManager[None] = (
            deps.taken.holding(run, account)
            if taken == jobruns.TAKEN and run is not None and deps.taken is not None
            else contextlib.nullcontext()
        )
        try:
            with marked:
                outcome = body(conn)
        except BudgetUnavailable as exc:
            # The shared request budget refuses for longer than a job waits (the day's background
            # share spent, or a long suspension). A retry seconds later meets the same refusal, so
            # retrying only ended in dead letters (1,000 accounts' jobs a window, once the share
            # was spent). The item closes with that reason; the next window runs the job again.
            log.info("job of run %s for %s not done: %s", run, who, exc)
            if taken == jobruns.TAKEN:
                assert run is not None
                jobruns.finish_item(conn, run, account, {"deferred_budget": 1}, reason=f"request budget spent: {exc}")
            return
        except Exception as exc:
            if taken == jobruns.TAKEN:
                assert run is not None
                with contextlib.suppress(psycopg.Error):  # the original error is the one to retry on
                    jobruns.fail_item(conn, run, account, f"{type(exc).__name__}: {exc}", grace)
            raise
        if taken != jobruns.TAKEN:
            return
        assert run is not None
        if outcome.deferred is None:
            jobruns.finish_item(conn, run, account, outcome.result)
        elif jobruns.defer_item(conn, run, account, outcome.deferred, outcome.result):
            log.warning("job of run %s for %s not done: %s", run, who, outcome.deferred)
        else:
            log.info("job of run %s for %s waits: %s", run, who, outcome.deferred)


def _node(deps: Deps) -> TronNode:
    if deps.node is None:
        raise PayloadError("TRON_NODE_URL is not set: reconciliation needs a node")
    return deps.node


def reconcile_gaps(deps: Deps, account: Any, run_id: Any) -> None:
    def body(conn: psycopg.Connection) -> JobOutcome:
        return JobOutcome(
            reconcile.reconcile_gaps(
                conn,
                _node(deps),
                str(account),
                lambda op: persist_operation(deps, op.to_message()),
                run_id=run_id if isinstance(run_id, int) else None,
                lookback_seconds=deps.settings.gap_lookback_seconds,
                settle_seconds=deps.settings.gap_settle_seconds,
            )
        )

    _job(deps, run_id, str(account), body)


def reconcile_state(deps: Deps, account: Any, run_id: Any) -> None:
    delay_ms = deps.settings.unfreeze_delay_seconds * 1000
    address = str(account)
    run = run_id if isinstance(run_id, int) and not isinstance(run_id, bool) else None

    def body(conn: psycopg.Connection) -> JobOutcome:
        try:
            compared = reconcile.compare_state(conn, _node(deps), address, delay_ms)
        except BudgetUnavailable:
            reconcile.note_comparison(conn, address, run, reason="request budget spent")
            raise
        if isinstance(compared, str):
            reconcile.note_comparison(conn, address, run, reason=compared)
            return JobOutcome({"deferred": 1}, deferred=compared)
        block, differing = compared
        reconcile.note_comparison(conn, address, run, block=block, differing=differing)
        deps.invalidator.invalidate({address})  # the summary shows meta.chain_drift
        return JobOutcome({"compared": 1, "drift": differing})

    _job(deps, run_id, address, body)


def lifecycle(deps: Deps, run_id: Any) -> None:
    def body(conn: psycopg.Connection) -> JobOutcome:
        if deps.broker is None:
            raise PayloadError("the lifecycle job sends messages: it needs the broker")
        # Under the listener's current term: a takeover before they are applied drops them, and
        # the next run looks again.
        sink = BrokerSink(deps.broker, deps.settings.queue_name, threads=1, fence=current_fence(conn, MAIN_CHECKPOINT))
        try:
            counts, touched = run_lifecycle(conn, deps.node, sink, grace_seconds=deps.settings.repair_grace_seconds)
        finally:
            sink.close()
        deps.invalidator.invalidate(touched)
        return JobOutcome(counts)

    _job(deps, run_id, jobruns.SINGLE, body)


def deliver_webhook(deps: Deps, subscription_id: Any, event_id: Any) -> None:
    settings = deps.settings
    sender = deps.sender or webhooks.Sender(settings)

    def with_conn(fn: Callable[[psycopg.Connection], Any]) -> Any:
        def run() -> Any:
            with deps.pool.connection() as conn:
                return fn(conn)

        return deps.gate.call(run, budget=DB_WAIT_BUDGET_S)

    webhooks.deliver(
        with_conn, sender, settings, deps.counters, subscription_id, event_id, max_retries=webhook_retries(settings)
    )


def webhook_retries(settings: Settings) -> int:
    return webhooks.retries_for(
        settings.webhook_retry_hours * 3_600_000, settings.webhook_min_backoff_ms, settings.webhook_max_backoff_ms
    )


def read_network_totals(deps: Deps, run_id: Any) -> None:
    """The network's totals (getaccountresource, at the solidified head, through the request
    budget), stored with the block they were read at; every account's cached summary then shows
    the new units."""

    def body(conn: psycopg.Connection) -> JobOutcome:
        accounts = sorted(tracked_addresses(conn))
        if not accounts:
            # getaccountresource needs an account; the totals are the network's
            return JobOutcome({"skipped": 1})
        node = _node(deps)
        totals = network_totals(node.account_resource(accounts[0], solid=True))
        block = node.solid_block_number()
        record_totals(conn, block, totals)
        deps.invalidator.invalidate(set(accounts))
        return JobOutcome({"read": 1})

    _job(deps, run_id, jobruns.SINGLE, body)


def _persist_operations_actor(deps: Deps, queue_name: str) -> Callable[..., None]:
    def persist_operations_actor(payloads: Any, lease: Any = None, term: Any = None) -> None:
        persist_operations(deps, payloads, queue_name, fence_of(lease, term))

    return persist_operations_actor


def register_actors(broker: dramatiq.Broker, deps: Deps) -> dict[str, dramatiq.Actor[Any, None]]:
    """Declare the actors on `broker`, once per lane (the live queue and its background queue, at a
    lower priority: see ledger.coordination.queue), with retries sized by settings. Keyed by actor name."""
    settings = deps.settings

    # lease, term: the fence of the term the message was sent under (ledger.coordination.queue).
    def persist_operation_actor(payload: Any, lease: Any = None, term: Any = None) -> None:
        persist_operation(deps, payload, fence_of(lease, term))

    def confirm_blocks_actor(solid_block: Any, lease: Any = None, term: Any = None) -> None:
        confirm_blocks(deps, solid_block, fence_of(lease, term))

    def revert_blocks_actor(blocks: Any, lease: Any = None, term: Any = None) -> None:
        revert_blocks(deps, blocks, fence_of(lease, term))

    def reconcile_gaps_actor(account: Any, run_id: Any = None) -> None:
        reconcile_gaps(deps, account, run_id)

    def reconcile_state_actor(account: Any, run_id: Any = None) -> None:
        reconcile_state(deps, account, run_id)

    def lifecycle_actor(run_id: Any = None) -> None:
        lifecycle(deps, run_id)

    def network_totals_actor(run_id: Any = None) -> None:
        read_network_totals(deps, run_id)

    jobs: dict[str, Callable[..., None]] = {
        RECONCILE_GAPS: reconcile_gaps_actor,
        RECONCILE_STATE: reconcile_state_actor,
        LIFECYCLE: lifecycle_actor,
        NETWORK_TOTALS: network_totals_actor,
    }
    functions = {
        PERSIST_OPERATION: persist_operation_actor,
        CONFIRM_BLOCKS: confirm_blocks_actor,
        REVERT_BLOCKS: revert_blocks_actor,
    }
    actors: dict[str, dramatiq.Actor[Any, None]] = {}
    for queue_name in (settings.queue_name, background_queue(settings.queue_name)):
        options: dict[str, Any] = {
            "queue_name": queue_name,
            "priority": lane_priority(queue_name),
            "broker": broker,
            "max_retries": settings.retry_max_retries,
            "min_backoff": settings.retry_min_backoff_ms,
            "max_backoff": settings.retry_max_backoff_ms,
            "throws": PERMANENT_ERRORS,
            "time_limit": TIME_LIMIT_MS,
        }
        for base, function in functions.items():
            name = lane_actor_name(base, queue_name)
            actors[name] = dramatiq.actor(actor_name=name, **options)(function)
        name = lane_actor_name(PERSIST_OPERATIONS, queue_name)
        actors[name] = dramatiq.actor(actor_name=name, **options)(_persist_operations_actor(deps, queue_name))
        # A job run is read-mostly and long (pages of TronGrid at the budget's pace): more time,
        # and fewer retries (the next window runs it again anyway).
        job_options = {**options, "time_limit": JOB_TIME_LIMIT_MS, "max_retries": min(3, settings.retry_max_retries)}
        for base, job in jobs.items():
            name = lane_actor_name(base, queue_name)
            actors[name] = dramatiq.actor(actor_name=name, **job_options)(job)

    def deliver_webhook_actor(subscription_id: Any, event_id: Any) -> None:
        deliver_webhook(deps, subscription_id, event_id)

    queue = webhook_queue(settings.queue_name)
    name = lane_actor_name(DELIVER_WEBHOOK, queue)
    actors[name] = dramatiq.actor(
        actor_name=name,
        queue_name=queue,
        priority=BACKGROUND_PRIORITY,
        broker=broker,
        max_retries=webhook_retries(settings),
        min_backoff=settings.webhook_min_backoff_ms,
        max_backoff=settings.webhook_max_backoff_ms,
        throws=PERMANENT_ERRORS,
        # connect + read, twice over, and the two statements around them
        time_limit=int(4 * settings.webhook_timeout_seconds * 1000) + 10_000,
    )(deliver_webhook_actor)
    return actors
