"""The message contract between the listener (producer) and the workers (consumers).

The listener enqueues by actor name and never imports the actor code (a Dramatiq message names its actor;
broker.enqueue needs no actor object): a message
is plain JSON, so a producer only needs this module.
"""

from __future__ import annotations

from typing import Any

import dramatiq
from dramatiq.brokers.redis import RedisBroker

from ledger.domain import Operation

PERSIST_OPERATION = "persist_operation"  # args: (operation dict,)
CONFIRM_BLOCKS = "confirm_blocks"  # args: (solid block number,)
REVERT_BLOCKS = "revert_blocks"  # args: ([[block_num, block_id], ...] of blocks that left the chain,)


def create_broker(redis_url: str, **options: object) -> RedisBroker:
    """A Redis broker for this process. Call at process start, after any fork."""
    broker = RedisBroker(url=redis_url, **options)
    return broker


def operation_message(op: Operation, queue_name: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=PERSIST_OPERATION,
        args=(op.to_message(),),
        kwargs={},
        options={},
    )


def confirm_message(solid_block: int, queue_name: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=CONFIRM_BLOCKS,
        args=(solid_block,),
        kwargs={},
        options={},
    )


def revert_message(blocks: list[tuple[int, str]], queue_name: str) -> dramatiq.Message[Any]:
    return dramatiq.Message(
        queue_name=queue_name,
        actor_name=REVERT_BLOCKS,
        args=([[num, block_id] for num, block_id in blocks],),
        kwargs={},
        options={},
    )
