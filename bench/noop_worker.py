"""A worker whose only actor does nothing: the broker's drain-rate ceiling for bench/ingest.py.

Run as `dramatiq bench.noop_worker:setup`; queue from BENCH_NOOP_QUEUE.
"""

from __future__ import annotations

import os

import dramatiq

from ledger.config import load_settings
from ledger.coordination.queue import create_broker


def noop(*args: object) -> None:
    return None


def setup() -> None:
    settings = load_settings()
    broker = create_broker(settings.effective_broker_url)
    dramatiq.set_broker(broker)
    dramatiq.actor(actor_name="noop", queue_name=os.environ["BENCH_NOOP_QUEUE"], broker=broker, max_retries=0)(noop)
