"""Webhook delivery through an outage, end to end: tests/test_webhook_delivery.py runs it short,
bench/webhooks.py long.

A simulated chain's operations flow through the real listener and workers while the only
subscriber, a real local HTTP receiver (harness/receiver.py), is down for `outage` seconds, and then
answers 500 to a share of requests and drops the connection unanswered on another share. The run
then waits for every delivery and judges the receiver's log:

- every event in the log reached the receiver (no id missing);
- every request's signature verifies with the subscription's secret;
- each event was accepted (2xx) exactly once, so any other copy it received was the re-send of a
  request whose answer was lost: duplicates only where a delivery's answer was lost.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import psycopg

from harness.procs import Proc
from harness.receiver import ACCEPTED, LOST, REFUSED, Behaviour, Receiver
from harness.stack import start_chain, start_listener, start_worker, wait_until
from harness.truth import checkpoint, watermark
from ledger.config import Settings
from ledger.store.webhooks import EVENT_ID_HEADER, SIGNATURE_HEADER, add_subscription, delivery_figures, verify


@dataclass
class Outcome:
    operations: int
    events: int
    requests: int
    accepted: int
    refused: int
    lost: int
    duplicates: int  # copies received beyond the first, per event, summed
    outage_s: float
    took_s: float  # from the receiver's return to the last delivery
    missing: list[int] = field(default_factory=list)
    bad_signatures: int = 0
    accepted_twice: list[int] = field(default_factory=list)

    def problems(self) -> list[str]:
        out = []
        if self.missing:
            out.append(f"{len(self.missing)} event(s) never delivered, e.g. {self.missing[:5]}")
        if self.bad_signatures:
            out.append(f"{self.bad_signatures} request(s) whose signature does not verify")
        if self.accepted_twice:
            out.append(f"event(s) accepted more than once: {self.accepted_twice[:5]}")
        if self.duplicates > self.lost:
            out.append(f"{self.duplicates} duplicate(s) but only {self.lost} lost answer(s)")
        return out


def run(
    settings: Settings,
    env: dict[str, str],
    procs: list[Proc],
    *,
    outage: float,
    operations: int = 1_000,
    error_rate: float = 0.10,
    lose_rate: float = 0.02,
    timeout: float = 600.0,
) -> Outcome:
    """The scenario (module doc) on the test database and queues of `env`; processes go to `procs`."""
    ops_per_block = 4
    blocks = operations // ops_per_block
    sim = start_chain(
        procs, settings, "--history-blocks", str(blocks), "--ops-per-block", str(ops_per_block), "--paused"
    )
    head = int(sim.status()["head"])
    first = int(sim.status()["start_block"])
    receiver = Receiver(Behaviour(error_rate=error_rate, lose_rate=lose_rate, seed=22))
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            _, secret = add_subscription(conn, receiver.url, allow_private=True, from_start=True)
        # Retries must outlast the outage; longer waits between them bound the attempts it costs.
        max_backoff_ms = int(min(15_000, max(1_000, outage * 100)))
        worker_env = {
            **env,
            "TRON_NODE_URL": sim.url,
            "START_BLOCK": str(first),
            "EVENTS_RELAY_SECONDS": "0.1",
            "WEBHOOK_ALLOW_PRIVATE": "1",
            "WEBHOOK_TIMEOUT_SECONDS": "2",
            "WEBHOOK_MIN_BACKOFF_MS": "200",
            "WEBHOOK_MAX_BACKOFF_MS": str(max_backoff_ms),
            "WEBHOOK_RETRY_HOURS": str((outage + 300) / 3600),
        }
        receiver.stop()
        down_at = time.monotonic()
        procs.append(start_worker(worker_env, processes=2, threads=8))
        procs.append(start_listener(worker_env))
        # The history is read and its events are made while the receiver is down; live blocks follow.
        wait_until(lambda: checkpoint(settings.database_url) >= head, 120, "the listener to read the history")
        sim.resume()
        time.sleep(max(0.0, outage - (time.monotonic() - down_at)))
        sim.pause()
        receiver.start()
        back_at = time.monotonic()
        end = int(sim.status()["head"])
        wait_until(lambda: (watermark(settings.database_url) or 0) >= end, 120, "every operation stored")
        with psycopg.connect(settings.database_url, autocommit=True) as conn:

            def settled() -> bool:
                unsequenced = conn.execute("SELECT count(*) FROM events WHERE seq IS NULL").fetchone()
                made = conn.execute("SELECT count(*) FROM events").fetchone()
                done = conn.execute("SELECT count(*) FROM webhook_deliveries WHERE status = 'delivered'").fetchone()
                return unsequenced == (0,) and made == done and delivery_figures(conn)["pending"] == 0

            wait_until(settled, timeout, "every event delivered", interval=1.0)
            took = time.monotonic() - back_at
            ids = [int(seq) for (seq,) in conn.execute("SELECT seq FROM events ORDER BY seq").fetchall()]
            ops = conn.execute("SELECT (SELECT count(*) FROM stake_records) + (SELECT count(*) FROM delegate_records)")
            count = ops.fetchone()
        return judge(receiver.snapshot(), ids, secret, int(count[0]) if count else 0, outage, took)
    finally:
        receiver.stop()


def judge(receipts: list[Any], ids: list[int], secret: str, operations: int, outage: float, took: float) -> Outcome:
    outcomes = Counter(r.outcome for r in receipts)
    processed: Counter[int] = Counter()  # copies the receiver took in (answered 2xx, or answer lost)
    accepted: Counter[int] = Counter()
    bad = 0
    now = time.time()
    for r in receipts:
        # The signature's timestamp is checked against the time it was sent, not the end of the run.
        stamp = int(r.headers[SIGNATURE_HEADER].split(",")[0][2:])
        if not verify(r.body, r.headers[SIGNATURE_HEADER], secret, now=stamp) or abs(now - stamp) > 3_600:
            bad += 1
        event_id = int(r.headers[EVENT_ID_HEADER])
        if r.outcome in (ACCEPTED, LOST):
            processed[event_id] += 1
        if r.outcome == ACCEPTED:
            accepted[event_id] += 1
    return Outcome(
        operations=operations,
        events=len(ids),
        requests=len(receipts),
        accepted=outcomes[ACCEPTED],
        refused=outcomes[REFUSED],
        lost=outcomes[LOST],
        duplicates=sum(n - 1 for n in processed.values() if n > 1),
        outage_s=outage,
        took_s=round(took, 1),
        missing=[i for i in ids if accepted[i] == 0],
        bad_signatures=bad,
        accepted_twice=[i for i, n in accepted.items() if n > 1],
    )
