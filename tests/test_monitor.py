"""The monitor's figures against a real running system: each one moves when what it measures moves.

Simulator -> listener -> worker -> PostgreSQL, the web app in process (Flask test client) for the
JSON figures, and granian with two processes for /metrics and the status page in headless Chromium.
The heartbeat's age decides "stale" and "offline": once the listener has stopped, the test sets that
age in its row, so each status is seen whatever the host's load.
"""

from __future__ import annotations

import dataclasses
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import dramatiq
import httpx
import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from harness.cdp import Browser, chromium
from harness.procs import ROOT, Proc
from harness.servers import free_port
from harness.stack import (
    SIM_ACCOUNTS,
    Simulator,
    delete_rabbitmq_queues,
    start_listener,
    start_simulator,
    start_web,
    start_worker,
    wait_until,
)
from ledger.config import Settings
from ledger.coordination.queue import PERSIST_OPERATION, create_broker
from ledger.positions import Position
from tests.conftest import TEST_RABBITMQ_URL
from web import monitor
from web.app import close_app, create_app

ARTIFACTS = ROOT / "tests" / "artifacts"
TOKEN = "monitor-test-token"
# Thresholds a listener beating every 0.3 s stays under on a loaded host (its figures must read
# "online" and "healthy" while it runs); the stopped one's ages are set past them, not waited for.
STALE_SECONDS, OFFLINE_SECONDS = 10, 60
LISTENER_ENV = {
    "LISTENER_HEARTBEAT_SECONDS": "0.3",
    "LISTENER_STALE_SECONDS": str(STALE_SECONDS),
    "LISTENER_OFFLINE_SECONDS": str(OFFLINE_SECONDS),
}


@pytest.fixture
def stack(settings: Settings, env: dict[str, str], procs: list[Proc]) -> Iterator[dict[str, Any]]:
    sim_proc, url = start_simulator("--block-interval", "0.5", "--history-blocks", "30", "--ops-per-block", "2")
    procs.append(sim_proc)
    sim = Simulator(url)
    env = {**env, **LISTENER_ENV, "TRON_NODE_URL": url, "START_BLOCK": str(sim.status()["start_block"])}
    worker = start_worker(env)
    procs.append(worker)
    listener = start_listener(env)
    procs.append(listener)
    wsettings = dataclasses.replace(
        settings,
        queue_name=env["QUEUE_NAME"],
        listener_stale_seconds=float(STALE_SECONDS),
        listener_offline_seconds=float(OFFLINE_SECONDS),
        admin_token=TOKEN,
        cache_local_ttl=0.0,
        hit_rate_min_reads=4,  # the few reads below are judged (test_a_quiet_window_is_not_judged: the default)
    )
    app = create_app(wsettings)
    yield {"sim": sim, "env": env, "worker": worker, "listener": listener, "app": app, "settings": wsettings}
    close_app(app)


def figures(client: FlaskClient) -> dict[str, Any]:
    body = client.get("/api/monitor").get_json()
    assert body["success"], body
    return body["data"]  # type: ignore[no-any-return]


def idle(queues: dict[str, int]) -> bool:
    return queues["ready"] == queues["delayed"] == queues["in_flight"] == 0


def settled(database_url: str, solid: int) -> bool:
    """No record at or below the solidified head is still pending: a stopped chain's last
    confirmation (sent QUIET_SECONDS after its last block) has been applied."""
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT NOT EXISTS (SELECT 1 FROM stake_records WHERE status = 'pending' AND block_num <= %(s)s)"
            " AND NOT EXISTS (SELECT 1 FROM delegate_records WHERE status = 'pending' AND block_num <= %(s)s)",
            {"s": solid},
        ).fetchone()
    return bool(row and row[0])


def age_heartbeat(database_url: str, seconds: float) -> None:
    """Make the listener's heartbeat (and the head it last saw) `seconds` old, as that much time
    passing after its last beat would."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE listener_heartbeats SET beat_at = now() - make_interval(secs => %(s)s),"
            " head_seen_at = now() - make_interval(secs => %(s)s) WHERE name = 'main'",
            {"s": seconds},
        )


def data_health(client: FlaskClient) -> tuple[int, dict[str, Any]]:
    response = client.get("/health/tron-data-health")
    return response.status_code, response.get_json()


@pytest.mark.slow
def test_each_figure_moves_with_what_it_measures(stack: dict[str, Any], procs: list[Proc]) -> None:
    sim: Simulator = stack["sim"]
    app: Flask = stack["app"]
    settings: Settings = stack["settings"]
    client = app.test_client()

    # The listener beats, reports the head it saw and catches up: online, healthy, latency measured.
    def caught_up() -> bool:
        listener = figures(client)["listener"]
        return bool(listener["status"] == "online" and listener["blocks_behind"] == 0)

    wait_until(caught_up, 60, "the listener to be online at the head")
    sim.pause()
    head = sim.status()["head"]
    wait_until(lambda: figures(client)["listener"]["processed_block"] == head, 30, "the last block")
    wait_until(lambda: idle(figures(client)["queues"]), 30, "the worker to drain the queue")
    wait_until(lambda: figures(client)["sync"]["first_attempts"] > 0, 10, "the worker's metrics flush")
    # The accounting work's persisted watermark (every operation up to it is stored) reaches the head.
    wait_until(
        lambda: figures(client)["persisted_watermark"].get("persisted_block") == head, 30, "the persisted watermark"
    )
    snap = figures(client)
    assert snap["listener"]["head_block"] == head and snap["listener"]["active_holder"]
    assert snap["data_latency"]["ms"] is not None and snap["data_latency"]["ms"] < 300_000
    assert snap["data_latency"]["persist_lag_ms"]["records"] > 0
    assert snap["sync"]["first_attempts"] > 0 and snap["sync"]["success_rate"] == 1.0
    assert snap["cache"]["hit_rate"] is None  # no API lookups yet: no rate, and not held against health
    status, body = data_health(client)
    assert (status, body["status"]) == (200, "healthy"), body

    # Cache: one miss then hits move the hit rate; at 3/4 it is below 0.8, so health warns.
    # (Once the stopped chain's last confirmation is applied and acknowledged: it invalidates the
    # pages of the accounts it confirms, which would make a hit below a miss.)
    wait_until(lambda: settled(settings.database_url, sim.status()["solid"]), 30, "the last confirmation")
    wait_until(lambda: idle(figures(client)["queues"]), 30, "the worker to finish it")
    account = SIM_ACCOUNTS[0]
    for _ in range(4):
        assert client.get(f"/api/accounts/{account}/summary").status_code == 200
    cache = figures(client)["cache"]
    assert (cache["hits"], cache["misses"], cache["hit_rate"]) == (3, 1, 0.75)
    assert cache["keys"] > 0 and cache["memory_bytes"] > 0
    status, body = data_health(client)
    assert body["status"] == "warning" and any("hit rate" in r for r in body["reasons"]), body
    for _ in range(16):
        client.get(f"/api/accounts/{account}/summary")
    assert figures(client)["cache"]["hit_rate"] == 0.95
    assert data_health(client)[1]["status"] == "healthy"

    # Queues and sync: with the worker stopped, new blocks' messages wait as ready.
    stack["worker"].kill()
    before = figures(client)["sync"]["first_attempts"]
    sim.produce(6)
    wait_until(lambda: figures(client)["queues"]["ready"] > 0, 30, "messages waiting in the queue")
    # A poison message: dead at its first attempt, so the success rate drops and the dead count rises.
    broker = create_broker(settings.redis_url)
    broker.enqueue(
        dramatiq.Message(
            queue_name=settings.queue_name, actor_name=PERSIST_OPERATION, args=({"tx_id": "x"},), kwargs={}, options={}
        )
    )
    procs.append(start_worker(stack["env"]))
    wait_until(lambda: figures(client)["queues"]["ready"] == 0, 30, "the new worker to drain the queue")
    wait_until(lambda: figures(client)["sync"]["dead_letters"] == 1, 10, "the dead letter")
    wait_until(lambda: figures(client)["sync"]["dead_in_window"] == 1, 10, "the worker's metrics flush")
    snap = figures(client)
    assert snap["sync"]["first_attempts"] > before and 0 < snap["sync"]["success_rate"] < 1
    assert snap["queues"]["dead"] == 1 and snap["dead_letters"]["total"] == 1

    # /metrics across granian's two processes: parses, and every process tells the same counts.
    port = free_port()
    web_env = {**stack["env"], **LISTENER_ENV, "ADMIN_TOKEN": TOKEN, "CACHE_LOCAL_TTL": "0"}
    procs.append(start_web(web_env, port, workers=2, threads=2))
    # The worker still confirms the last blocks' records now and then: scrape while its counts hold.
    parsed: list[dict[str, Any]] = []

    def same_counts_six_times() -> bool:
        scrapes = [httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text for _ in range(6)]
        parsed[:] = [{f.name: f for f in text_string_to_metric_families(text)} for text in scrapes]
        return len({str(sorted(map(str, f["ledger_worker_messages"].samples))) for f in parsed}) == 1

    wait_until(same_counts_six_times, 30, "six scrapes that tell the same worker counts")
    for families in parsed:
        assert families["ledger_listener_status"].samples
        assert families["ledger_node_requests"].samples and families["ledger_worker_message_duration_seconds"].samples
        dead = [s for s in families["ledger_worker_messages"].samples if s.labels.get("outcome") == "dead"]
        assert sum(s.value for s in dead) == 1
        depth = {s.labels["state"]: s.value for s in families["ledger_queue_messages"].samples}
        assert depth["dead"] == 1
    worker_counts = {
        str(sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in f["ledger_worker_messages"].samples))
        for f in parsed
    }
    assert len(worker_counts) == 1  # whichever granian process answered

    # The status page renders the live numbers in headless Chromium.
    render_status_page(port, head + 6)

    # Stop the listener: its heartbeat stops.
    stack["listener"].kill(signal.SIGTERM)
    stack["listener"].popen.wait(30)
    # Its heartbeat's age (no process writes the row any more) past each limit: stale, then
    # offline; health warns with the reason.
    seen: list[tuple[str, int, dict[str, Any]]] = []  # (status, latency, health) at each age
    for age in (STALE_SECONDS + (OFFLINE_SECONDS - STALE_SECONDS) / 2, OFFLINE_SECONDS * 1.5):
        age_heartbeat(settings.database_url, age)
        snap = figures(client)
        seen.append((snap["listener"]["status"], snap["data_latency"]["ms"], data_health(client)[1]))
    assert [s[0] for s in seen] == ["stale", "offline"], seen
    (_, stale_latency, stale_health), (_, offline_latency, offline_health) = seen
    assert stale_health["status"] == "warning" and "listener is stale" in stale_health["reasons"]
    assert offline_health["status"] == "warning" and "listener is offline" in offline_health["reasons"]
    assert offline_latency > stale_latency  # a stopped listener's latency grows


@pytest.mark.slow
def test_a_node_behind_the_checkpoint_is_an_error_everywhere(
    settings: Settings, env: dict[str, str], procs: list[Proc]
) -> None:
    # Given a node whose head is 40 blocks below the listener's checkpoint (a resynced node, a
    # node of another network, or the demo's simulator started anew on a database it had filled)
    sim_proc, url = start_simulator("--paused", "--history-blocks", "30")
    procs.append(sim_proc)
    sim = Simulator(url)
    head = sim.status()["head"]
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO listener_checkpoint (name, block_num, block_id) VALUES ('main', %s, %s)",
            (head + 40, "ab" * 32),
        )
    # When the listener starts on it
    listener = start_listener({**env, **LISTENER_ENV, "TRON_NODE_URL": url})
    procs.append(listener)
    app = create_app(dataclasses.replace(settings, listener_stale_seconds=2.0, listener_offline_seconds=5.0))
    try:
        client = app.test_client()
        # Then it logs an error saying so
        listener.wait_for(r"ERROR listener\.streamer: node behind the checkpoint by 40 blocks", timeout=30)
        # The data health check is an error, with the reason
        wait_until(lambda: data_health(client)[0] == 500, 20, "the health check to say error")
        status, body = data_health(client)
        assert body["status"] == "error" and "node behind the checkpoint by 40 blocks" in body["reasons"], body
        # The status page's data says what the listener is doing, and gives no figure it cannot know
        listener_part = figures(client)["listener"]
        assert listener_part["status"] == "online" and listener_part["state"] == "node_behind"
        assert listener_part["state_detail"].startswith("node behind the checkpoint by 40 blocks"), listener_part
        assert (listener_part["head_block"], listener_part["processed_block"]) == (head, head + 40)
        assert listener_part["blocks_behind"] is None and listener_part["node_behind_by"] == 40
        assert "node behind the checkpoint by 40 blocks" in listener_part["blocks_behind_unknown"]
        assert figures(client)["data_latency"]["ms"] is None
        ingest = client.get("/api/ingest").get_json()["data"]
        assert ingest["lag_blocks"]["listener"] is None and "node behind the checkpoint" in ingest["lag_unknown"]
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
        assert families["ledger_node_behind_checkpoint_blocks"].samples[0].value == 40
        states = {s.labels["state"]: s.value for s in families["ledger_listener_state"].samples}
        assert states["node_behind"] == 1 and sum(states.values()) == 1
        assert "ledger_blocks_behind_head" not in families  # unknown, so absent: never a 0
        # And the status page shows it: the error badge, the state, and no "blocks behind" figure
        binary = chromium()
        if binary is not None:
            port = free_port()
            procs.append(start_web({**env, **LISTENER_ENV, "TRON_NODE_URL": url}, port, workers=1, threads=2))
            browser = Browser(binary)
            try:
                browser.goto(f"http://127.0.0.1:{port}/status?refresh=1000")
                text = "(id) => document.getElementById(id).textContent"
                browser.wait_for(f"({text})('listener-state').startsWith('node behind the checkpoint by 40 blocks')")
                assert browser.eval(f"({text})('health')") == "error"
                assert browser.eval(f"({text})('listener-state-badge')") == "node behind"
                assert browser.eval(f"({text})('blocks-behind')").startswith("unknown: listener node behind")
            finally:
                browser.close()
        # When the node passes the checkpoint, the listener reads again and the error is gone
        sim.produce(45)
        wait_until(lambda: figures(client)["listener"]["state"] == "following", 30, "the listener to follow again")
        assert figures(client)["listener"]["processed_block"] == head + 45
        assert "node behind" not in " ".join(data_health(client)[1]["reasons"])
        listener.wait_for(r"INFO listener\.streamer: the node is no longer behind the checkpoint", timeout=5)
    finally:
        close_app(app)


def test_a_quiet_window_is_not_judged(settings: Settings, clean_db: str, redis_clean: object) -> None:
    # 60 reads in the window, a third of them misses (20 distinct pages): a hit rate of 0.67 that
    # says nothing of the cache, since entries expire between a quiet API's reads.
    # A generous cache timeout: on a loaded machine a read that times out bypasses the cache uncounted.
    app = create_app(dataclasses.replace(settings, cache_local_ttl=0.0, cache_socket_timeout=2.0))
    try:
        client = app.test_client()
        with psycopg.connect(clean_db, autocommit=True) as conn:
            conn.execute("INSERT INTO pool_accounts (address) VALUES (%s)", (SIM_ACCOUNTS[0],))
        for limit in range(1, 21):
            for _ in range(3):
                page = client.get(
                    "/api/stake/records", query_string={"pool_account_id": SIM_ACCOUNTS[0], "limit": limit}
                )
                assert page.status_code == 200
        cache = figures(client)["cache"]
        assert (cache["hits"] + cache["local_hits"], cache["misses"]) == (40, 20)
        status, body = data_health(client)
        assert not any("hit rate" in reason for reason in body["reasons"]), body
        (rule,) = [r for r in body["rules"] if r["rule"] == "cache_hit_rate"]
        assert (rule["result"], rule["reason"]) == ("not judged", "not judged (60 reads)")
        # Every figure the rule used is in the body.
        assert rule["figures"] == {
            "hit_rate": 0.6667,
            "min_hit_rate": 0.8,
            "reads": 60,
            "min_reads": 200,
            "hits": cache["hits"],
            "local_hits": cache["local_hits"],
            "misses": 20,
            "window_s": 900,
        }
        # The same reads over a threshold they reach are judged: a warning, with its figures.
        strict = create_app(dataclasses.replace(settings, hit_rate_min_reads=60))
        try:
            body = data_health(strict.test_client())[1]
            assert "cache hit rate 0.6667 <= 0.8 over 60 reads" in body["reasons"], body
        finally:
            close_app(strict)
    finally:
        close_app(app)


@pytest.mark.slow
def test_health_says_error_when_it_cannot_tell(settings: Settings, clean_db: str, redis_clean: object) -> None:
    dead_pg = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    app = create_app(dataclasses.replace(settings, database_url=dead_pg))
    try:
        client = app.test_client()
        status, body = data_health(client)
        assert (status, body["status"]) == (500, "error") and body["listener"] == {"error": "PoolTimeout"}
        assert client.get("/health/live").status_code == 200  # nothing outside the process
        ready = client.get("/health/ready")
        assert ready.status_code == 503 and ready.get_json()["checks"]["postgres"]["ok"] is False
        assert ready.get_json()["checks"]["redis"]["ok"] is True
        # /metrics still answers with what it can read, and says which sources failed.
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
        up = {s.labels["source"]: s.value for s in families["ledger_metrics_source_up"].samples}
        assert up["listener"] == 0 and up["queues"] == 1 and up["pushed_counters"] == 1
    finally:
        close_app(app)


def test_no_listener_ever_is_offline(settings: Settings, clean_db: str, redis_clean: object) -> None:
    app = create_app(settings)
    try:
        status, body = data_health(app.test_client())
        assert (status, body["status"]) == (200, "warning") and body["listener"]["status"] == "offline"
    finally:
        close_app(app)


# Cards (sections) whose content is wider than they are: the card's own scrollWidth against its
# clientWidth, and any element inside that reaches past the card's right edge; and the page itself
# scrolling sideways.
OVERFLOWS = """(() => {
  const out = [];
  if (document.documentElement.scrollWidth > window.innerWidth + 1)
    out.push(`page: ${document.documentElement.scrollWidth} > ${window.innerWidth}`);
  for (const card of document.querySelectorAll("section")) {
    if (card.offsetParent === null) continue;
    const title = (card.querySelector("h2, h3") || card).textContent.trim().slice(0, 40);
    if (card.scrollWidth > card.clientWidth + 1)
      out.push(`${title}: scrollWidth ${card.scrollWidth} > ${card.clientWidth}`);
    const right = card.getBoundingClientRect().right;
    for (const e of card.querySelectorAll("*")) {
      const r = e.getBoundingClientRect();
      if (r.width && r.right > right + 1) {
        out.push(`${title}: <${e.tagName.toLowerCase()}> ends at ${Math.round(r.right)} > ${Math.round(right)}`);
        break;
      }
    }
  }
  return out;
})()"""


def render_status_page(port: int, head: int) -> None:
    """Open /status in headless Chromium: live numbers, the chart, then a requeue with the token."""
    binary = chromium()
    if binary is None:
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium): status page not rendered")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser = Browser(binary)
    try:
        browser.goto(f"http://127.0.0.1:{port}/status?refresh=1000")
        text = "(id) => document.getElementById(id).textContent"
        # The live numbers, not placeholders: the chain head the listener reached, the health badge,
        # the listener status, the queue depths and the freshness chart's points.
        browser.wait_for(f"({text})('head-block') === '{head:,}'")
        assert browser.eval(f"({text})('listener-status')") == "online"
        assert browser.eval(f"({text})('q-dead')") == "1"
        assert browser.eval(f"/^[0-9,]+$/.test(({text})('watermark'))")  # a block number, not "not available"
        assert browser.eval(f"({text})('health')") in ("healthy", "warning")
        assert browser.eval("document.querySelectorAll('#freshness-svg circle').length") >= 1
        # The operator's view: a card per pool account with its figures per resource.
        browser.wait_for("document.querySelectorAll('#accounts section.account').length === 3")
        assert browser.eval("document.querySelectorAll('#accounts .figure').length") == 3 * 2 * 5
        browser.screenshot(ARTIFACTS / "status-page.png")
        # No card's content overflows it, on a desktop and on a phone; a screenshot of each.
        for width in (1280, 390):
            browser.call(
                "Emulation.setDeviceMetricsOverride", width=width, height=1500, deviceScaleFactor=1, mobile=width < 800
            )
            browser.wait_for(f"window.innerWidth === {width}")
            overflows = browser.eval(OVERFLOWS)
            browser.screenshot(ARTIFACTS / f"status-page-{width}.png")
            assert overflows == [], f"at {width} px: {overflows}"
        browser.call("Emulation.clearDeviceMetricsOverride")
        # Dead letters need the token: typed in, the list comes from the admin API, and "requeue"
        # sends the message again (a poison one dies again, under a new dead-letter id).
        assert browser.eval("document.querySelectorAll('#dead-rows tr').length") == 0
        browser.eval(
            f"document.getElementById('token').value = '{TOKEN}'; document.getElementById('token-save').click()"
        )
        first = browser.wait_for(
            "document.querySelector('#dead-rows tr td') && document.querySelector('#dead-rows tr td').textContent"
        )
        browser.eval("document.querySelector('#dead-rows button').click()")
        browser.wait_for(f"({text})('admin-msg').includes('requeued')")
        cell = "document.querySelector('#dead-rows tr td')"
        browser.wait_for(f"{cell} && {cell}.textContent !== '{first}'")
        browser.screenshot(ARTIFACTS / "status-page-admin.png")
    finally:
        browser.close()
    assert (ARTIFACTS / "status-page.png").stat().st_size > 10_000


def test_watermark_and_shortfall_appear_once_their_data_exists(db: psycopg.Connection, settings: Settings) -> None:
    # Without the accounting and positions migrations' columns: reported unavailable, never invented.

    has_watermark = monitor._has_column(db, "listener_checkpoint", "persisted_block")
    has_positions = monitor._has_column(db, "positions", "state")
    if not has_watermark:
        with pytest.raises(monitor.Unavailable):
            monitor.persisted_watermark(db)
    if not has_positions:
        with pytest.raises(monitor.Unavailable):
            monitor.shortfall(db)
    # With their columns and rows (made here inside the test's transaction when missing), they show.
    db.execute(
        "ALTER TABLE listener_checkpoint ADD COLUMN IF NOT EXISTS persisted_block bigint,"
        " ADD COLUMN IF NOT EXISTS persisted_at timestamptz"
    )
    db.execute(
        "INSERT INTO listener_checkpoint (name, block_num, block_id, persisted_block, persisted_at)"
        " VALUES ('main', 120, 'x', 117, now())"
    )
    assert monitor.persisted_watermark(db)["persisted_block"] == 117
    db.execute(
        "CREATE TABLE IF NOT EXISTS positions (address text PRIMARY KEY, block_num bigint NOT NULL,"
        " state json NOT NULL, updated_at timestamptz NOT NULL DEFAULT now())"
    )
    db.execute("INSERT INTO pool_accounts (address) VALUES (%s), (%s)", SIM_ACCOUNTS[:2])
    db.execute(
        "INSERT INTO positions (address, block_num, state) VALUES (%s, 90, %s)",
        (SIM_ACCOUNTS[0], '{"d": {"ENERGY.cancel": 5}}'),
    )
    db.execute(
        "INSERT INTO position_openings (address, block_num, state) VALUES (%s, 80, %s)",
        (SIM_ACCOUNTS[0], Position(block_num=80).to_json().decode()),
    )
    db.execute(
        "INSERT INTO chain_comparisons (account, compared_at, block, differing, attempted_at, reason)"
        " VALUES (%s, '2026-01-02T03:04:05Z', 85, 2, now(), %s)",
        (SIM_ACCOUNTS[0], "the ledger is at block 90, before the solidified block 95"),
    )
    assert monitor.shortfall(db) == [
        {
            "account": SIM_ACCOUNTS[0],
            "block": 90,
            "shortfall": {"ENERGY.cancel": 5},
            "opening": {"source": "chain", "block": 80},
            # Its last comparison with the chain, and why the attempt after it did not compare.
            "compared": {
                "at": "2026-01-02T03:04:05+00:00",
                "block": 85,
                "result": "differs in 2 figure(s)",
                "reason": "the ledger is at block 90, before the solidified block 95",
            },
        },
        # Added without an opening position: said, not shown as if its figures were the chain's.
        {
            "account": SIM_ACCOUNTS[1],
            "block": None,
            "shortfall": {},
            "opening": None,
            "compared": {"at": None, "block": None, "result": "never compared", "reason": None},
        },
    ]


def test_queue_depths_on_rabbitmq(settings: Settings, clean_db: str, redis_clean: object) -> None:
    # RabbitMQ counts its own queues (ready, delayed, dead); messages in flight are not in those
    # counts, so that figure is unknown there rather than a wrong zero.
    queue = f"mon_{uuid.uuid4().hex[:8]}"
    rabbit_settings = dataclasses.replace(settings, broker_url=TEST_RABBITMQ_URL, queue_name=queue)
    app = create_app(rabbit_settings)
    try:
        broker = resources_of(app).broker
        broker.declare_queue(queue)
        for n in range(3):
            broker.enqueue(dramatiq.Message(queue_name=queue, actor_name="a", args=(n,), kwargs={}, options={}))
        client = app.test_client()
        wait_until(lambda: figures(client)["queues"]["ready"] == 3, 10, "RabbitMQ's count")
        queues = figures(client)["queues"]
        assert queues["live"] == {"ready": 3, "delayed": 0, "in_flight": None, "dead": 0}
        assert (queues["ready"], queues["in_flight"]) == (3, None)  # with the empty background queue
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").get_data(as_text=True))}
        assert {s.labels["state"] for s in families["ledger_queue_messages"].samples} == {"ready", "delayed", "dead"}
    finally:
        close_app(app)
        delete_rabbitmq_queues(TEST_RABBITMQ_URL, queue)


def resources_of(app: Flask) -> Any:
    return app.extensions["ledger"]
