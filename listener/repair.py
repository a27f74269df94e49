"""One accounting pass on demand: `python -m listener repair`, or `repair_once(settings)` from code
(the fault suite calls it to repair without waiting for the listener's next pass).

The active listener runs the same pass every few seconds (listener/streamer.py); running one more
from outside is safe (ledger/store/accounting.py explains why).
"""

from __future__ import annotations

import psycopg

from ledger.config import Settings
from ledger.coordination.lease import current_fence
from ledger.coordination.queue import BrokerSink, create_broker
from ledger.store.accounting import MAIN_CHECKPOINT, Repair, repair


def repair_once(settings: Settings, *, grace_seconds: float | None = None, name: str = MAIN_CHECKPOINT) -> Repair:
    """Re-send whatever has been missing longer than `grace_seconds` (default: the setting)."""
    grace = settings.repair_grace_seconds if grace_seconds is None else grace_seconds
    broker = create_broker(settings.effective_broker_url)
    try:
        with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
            # Under the active listener's term: what it sends counts while that term lasts.
            sink = BrokerSink(broker, settings.queue_name, threads=4, fence=current_fence(conn, name))
            try:
                return repair(conn, sink, grace_seconds=grace, name=name)
            finally:
                sink.close()
    finally:
        broker.close()
