"""The HTTP API against a real PostgreSQL and Redis: parameters, paging, caching, summary, errors."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from ledger.chain.address import to_base58, to_hex
from ledger.config import Settings
from ledger.positions import Position
from ledger.store import positions
from ledger.store.accounting import MAIN_CHECKPOINT
from ledger.store.cache import invalidate_accounts
from web.app import close_app, create_app

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def address(n: int) -> str:
    return to_base58("41" + f"{n:040x}")


ALICE, BOB, CAROL = address(1), address(2), address(3)
UNKNOWN = address(99)


# -- fixtures and SQL helpers (test_cache.py uses them too) ------------------------------------------


@pytest.fixture
def conn(clean_db: str) -> Iterator[psycopg.Connection]:
    """Autocommit: the app reads through its own pool, so rows must be committed."""
    with psycopg.connect(clean_db, autocommit=True) as c:
        yield c


@pytest.fixture
def app(settings: Settings, clean_db: str, redis_clean: tuple[redis.Redis, redis.Redis]) -> Iterator[Flask]:
    application = create_app(settings)
    yield application
    close_app(application)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def add_account(conn: psycopg.Connection, addr: str) -> int:
    row = conn.execute("INSERT INTO pool_accounts (address) VALUES (%s) RETURNING id", (addr,)).fetchone()
    assert row is not None
    return int(row[0])


_tx_counter = iter(range(1, 10**9))


def _tx() -> str:
    return f"{next(_tx_counter):064x}"


def insert_stake(
    conn: psycopg.Connection,
    owner: str,
    block_num: int,
    *,
    tx_index: int = 0,
    op_index: int = 0,
    kind: str = "freeze",
    contract_type: str = "FreezeBalanceV2Contract",
    resource: str | None = "ENERGY",
    amount: int = 1_000_000,
    status: str = "confirmed",
    parent: int | None = None,
) -> int:
    row = conn.execute(
        "INSERT INTO stake_records (tx_id, op_index, block_num, block_id, tx_index, block_time, owner_address,"
        " operation_type, contract_type, resource, amount, status, parent_time_ms)"
        " VALUES (%s, %s, %s, 'b', %s, %s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
        (
            _tx(),
            op_index,
            block_num,
            tx_index,
            T0 + timedelta(seconds=3 * block_num),
            owner,
            kind,
            contract_type,
            resource,
            amount,
            status,
            _ms(parent),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def _ms(block_num: int | None) -> int | None:
    """The time of block `block_num` in ms (the helpers' blocks are 3 s apart from T0)."""
    return None if block_num is None else int((T0 + timedelta(seconds=3 * block_num)).timestamp() * 1000)


def insert_delegate(
    conn: psycopg.Connection,
    owner: str,
    receiver: str,
    block_num: int,
    *,
    kind: str = "delegate",
    resource: str = "ENERGY",
    amount: int = 1_000_000,
    lock: bool = False,
    lock_expire_time: datetime | None = None,
    status: str = "confirmed",
    parent: int | None = None,
) -> int:
    contract = "DelegateResourceContract" if kind == "delegate" else "UnDelegateResourceContract"
    row = conn.execute(
        "INSERT INTO delegate_records (tx_id, op_index, block_num, block_id, tx_index, block_time, owner_address,"
        " receiver_address, operation_type, contract_type, resource, amount, lock, lock_period, lock_expire_time,"
        " status, parent_time_ms) VALUES (%s, 0, %s, 'b', 0, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)"
        " RETURNING id",
        (
            _tx(),
            block_num,
            T0 + timedelta(seconds=3 * block_num),
            owner,
            receiver,
            kind,
            contract,
            resource,
            amount,
            lock,
            86_400 if lock else 0,
            lock_expire_time,
            status,
            _ms(parent),
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def insert_lot(
    conn: psycopg.Connection,
    owner: str,
    block_num: int,
    available_time: datetime,
    *,
    resource: str = "ENERGY",
    amount: int = 1_000_000,
    status: str = "pending",
) -> int:
    row = conn.execute(
        "INSERT INTO unfreeze_records (tx_id, op_index, block_num, tx_index, block_time, owner_address, resource,"
        " amount, available_time, status, confirmed) VALUES (%s, 0, %s, 0, %s, %s, %s, %s, %s, %s, true)"
        " RETURNING id",
        (_tx(), block_num, T0 + timedelta(seconds=3 * block_num), owner, resource, amount, available_time, status),
    ).fetchone()
    assert row is not None
    return int(row[0])


def get_json(client: FlaskClient, url: str, status: int = 200) -> dict[str, Any]:
    response = client.get(url)
    assert response.status_code == status, response.data
    assert response.mimetype == "application/json"
    body: dict[str, Any] = json.loads(response.data)
    return body


def records_url(kind: str, account: object, **params: object) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"pool_account_id": account, **params}.items())
    return f"/api/{kind}/records?{query}"


def walk(client: FlaskClient, kind: str, account: object, limit: int) -> list[dict[str, Any]]:
    """Every row of a list, following next_cursor."""
    body = get_json(client, records_url(kind, account, limit=limit))
    rows = list(body["data"])
    while body["meta"]["next_cursor"]:
        body = get_json(client, records_url(kind, account, limit=limit, cursor=body["meta"]["next_cursor"]))
        rows.extend(body["data"])
    return rows


# -- parameters --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "names"),
    [
        ("", "pool_account_id is required"),
        ("pool_account_id=", "pool_account_id is required"),
        ("pool_account_id=hello", "pool_account_id must be an account id"),
        ("pool_account_id=T" + "1" * 33, "pool_account_id must be an account id"),
        ("pool_account_id=0", "pool_account_id must be an account id"),
        ("pool_account_id=1&limit=0", "limit must be an integer from 1 to 100 (got '0')"),
        ("pool_account_id=1&limit=101", "limit must be an integer from 1 to 100 (got '101')"),
        ("pool_account_id=1&limit=abc", "limit must be an integer from 1 to 100 (got 'abc')"),
        ("pool_account_id=1&limit=-5", "limit must be an integer from 1 to 100"),
        ("pool_account_id=1&page=0", "page must be an integer >= 1 (got '0')"),
        ("pool_account_id=1&page=abc", "page must be an integer >= 1 (got 'abc')"),
        ("pool_account_id=1&page=501&limit=20", "page * limit must be at most 10000"),
        ("pool_account_id=1&page=10001&limit=1", "follow meta.next_cursor"),
        ("pool_account_id=1&cursor=", "cursor is not valid"),
        ("pool_account_id=1&cursor=!!!", "cursor is not valid"),
        ("pool_account_id=1&cursor=YWJj", "cursor is not valid"),
        ("pool_account_id=1&cursor=" + base64.urlsafe_b64encode(b"c1.stake.1.2.1.2.3.x").decode(), "cursor"),
        ("pool_account_id=1&cursor=" + base64.urlsafe_b64encode(b"c1.stake.1.2.1.2.99999.4").decode(), "cursor"),
    ],
)
def test_bad_parameters_are_400_with_a_clear_message(
    client: FlaskClient, conn: psycopg.Connection, query: str, names: str
) -> None:
    add_account(conn, ALICE)
    body = get_json(client, f"/api/stake/records?{query}", 400)
    assert body["success"] is False
    assert body["error"]["code"] == "bad_request"
    assert names in body["error"]["message"]


def test_page_and_cursor_together_are_rejected(client: FlaskClient, conn: psycopg.Connection) -> None:
    account = add_account(conn, ALICE)
    for block in range(1, 4):
        insert_stake(conn, ALICE, block)
    cursor = get_json(client, records_url("stake", account, limit=1))["meta"]["next_cursor"]
    body = get_json(client, records_url("stake", account, limit=1, page=2, cursor=cursor), 400)
    assert "either page or cursor" in body["error"]["message"]


def test_cursor_from_another_account_or_kind_is_rejected(client: FlaskClient, conn: psycopg.Connection) -> None:
    alice, bob = add_account(conn, ALICE), add_account(conn, BOB)
    for block in range(1, 4):
        insert_stake(conn, ALICE, block)
        insert_stake(conn, BOB, block)
    cursor = get_json(client, records_url("stake", alice, limit=1))["meta"]["next_cursor"]
    assert cursor
    body = get_json(client, records_url("stake", bob, limit=1, cursor=cursor), 400)
    assert "cursor belongs to another list" in body["error"]["message"]
    body = get_json(client, records_url("unfreeze", alice, limit=1, cursor=cursor), 400)
    assert "cursor belongs to another list" in body["error"]["message"]
    assert get_json(client, records_url("stake", alice, limit=1, cursor=cursor))["meta"]["page"] == 2


def test_unknown_account_is_404(client: FlaskClient, conn: psycopg.Connection) -> None:
    add_account(conn, ALICE)
    for key in ("999", UNKNOWN, to_hex(UNKNOWN)):
        body = get_json(client, records_url("stake", key), 404)
        assert body == {"success": False, "error": {"code": "not_found", "message": body["error"]["message"]}}
        assert key in body["error"]["message"]
    get_json(client, f"/api/accounts/{UNKNOWN}/summary", 404)
    get_json(client, "/api/accounts/nonsense/summary", 400)


def test_account_by_id_base58_or_hex(client: FlaskClient, conn: psycopg.Connection) -> None:
    account = add_account(conn, ALICE)
    insert_stake(conn, ALICE, 5)
    for key in (str(account), ALICE, to_hex(ALICE), to_hex(ALICE).upper()):
        assert len(get_json(client, records_url("stake", key))["data"]) == 1


# -- pages -------------------------------------------------------------------------------------------


def test_records_are_newest_first_with_the_documented_body(client: FlaskClient, conn: psycopg.Connection) -> None:
    account = add_account(conn, ALICE)
    older = insert_stake(conn, ALICE, 10, kind="freeze", amount=5)
    same_block_first = insert_stake(
        conn, ALICE, 20, tx_index=0, kind="unfreeze", contract_type="UnfreezeBalanceV2Contract"
    )
    same_tx_second = insert_stake(
        conn, ALICE, 20, tx_index=1, op_index=1, kind="withdraw_expire_unfreeze", resource=None
    )
    same_tx_first = insert_stake(conn, ALICE, 20, tx_index=1, op_index=0, kind="cancel_all_unfreeze")
    insert_stake(conn, BOB, 30)  # another account's row never shows

    body = get_json(client, records_url("stake", account))
    assert set(body) == {"success", "data", "meta"}
    assert body["meta"] == {"page": 1, "limit": 20, "source": "database", "next_cursor": None}
    assert [r["id"] for r in body["data"]] == [same_tx_second, same_tx_first, same_block_first, older]
    row = body["data"][-1]
    assert row == {
        "id": older,
        "tx_id": row["tx_id"],
        "op_index": 0,
        "block_num": 10,
        "block_time": "2025-01-01T00:00:30Z",
        "owner_address": ALICE,
        "operation_type": "freeze",
        "contract_type": "FreezeBalanceV2Contract",
        "resource": "ENERGY",
        "amount": 5,
        "status": "confirmed",
    }


def test_keyset_walk_has_no_duplicates_or_gaps_while_rows_arrive(
    client: FlaskClient, conn: psycopg.Connection, settings: Settings
) -> None:
    account = add_account(conn, ALICE)
    expected = [insert_stake(conn, ALICE, block, tx_index=block % 3, op_index=block % 2) for block in range(1, 48)]
    expected.reverse()  # newest first: higher blocks were inserted later
    cache = redis.Redis.from_url(settings.cache_redis_url)
    seen: list[int] = []
    body = get_json(client, records_url("stake", account, limit=10))
    pages = 1
    while True:
        seen.extend(r["id"] for r in body["data"])
        # A worker lands newer rows between requests and invalidates, as the real one does.
        insert_stake(conn, ALICE, 1000 + pages)
        invalidate_accounts(cache, [ALICE])
        if not body["meta"]["next_cursor"]:
            break
        body = get_json(client, records_url("stake", account, limit=10, cursor=body["meta"]["next_cursor"]))
        pages += 1
        assert body["meta"]["page"] == pages
    assert seen == expected
    assert pages == 5


def test_numbered_pages_match_the_cursor_walk(client: FlaskClient, conn: psycopg.Connection) -> None:
    account = add_account(conn, ALICE)
    for block in range(1, 26):
        insert_stake(conn, ALICE, block)
    walked = [r["id"] for r in walk(client, "stake", account, 10)]
    numbered: list[Any] = []
    for page in (1, 2, 3):
        body = get_json(client, records_url("stake", account, limit=10, page=page))
        numbered.extend(r["id"] for r in body["data"])
        assert (body["meta"]["next_cursor"] is None) == (page == 3)
    assert numbered == walked and len(walked) == 25
    # A numbered page's next_cursor continues where it ends.
    body = get_json(client, records_url("stake", account, limit=10, page=2))
    after = get_json(client, records_url("stake", account, limit=10, cursor=body["meta"]["next_cursor"]))
    assert [r["id"] for r in after["data"]] == walked[20:]


def test_delegate_records_include_owner_and_receiver_rows(client: FlaskClient, conn: psycopg.Connection) -> None:
    alice = add_account(conn, ALICE)
    ids = []
    for block in range(1, 13):
        if block % 3 == 0:
            ids.append(insert_delegate(conn, BOB, ALICE, block))  # received by ALICE
        else:
            ids.append(insert_delegate(conn, ALICE, CAROL, block, lock=True, lock_expire_time=T0))
    insert_delegate(conn, BOB, CAROL, 50)  # neither side is ALICE
    rows = walk(client, "delegate", alice, 5)
    assert [r["id"] for r in rows] == ids[::-1]
    received = next(r for r in rows if r["receiver_address"] == ALICE)
    assert received["owner_address"] == BOB
    given = next(r for r in rows if r["owner_address"] == ALICE)
    assert given["lock"] is True and given["lock_period"] == 86_400
    assert given["lock_expire_time"] == "2025-01-01T00:00:00Z"
    assert set(given) == {
        "id", "tx_id", "op_index", "block_num", "block_time", "owner_address", "operation_type", "contract_type",
        "resource", "amount", "status", "receiver_address", "lock", "lock_period", "lock_expire_time",
    }  # fmt: skip


def test_unfreeze_records_show_withdrawable_once_available(client: FlaskClient, conn: psycopg.Connection) -> None:
    account = add_account(conn, ALICE)
    now = datetime.now(UTC)
    matured = insert_lot(conn, ALICE, 1, now - timedelta(days=1))
    waiting = insert_lot(conn, ALICE, 2, now + timedelta(days=1))
    withdrawn = insert_lot(conn, ALICE, 3, now - timedelta(days=2), status="withdrawn")
    rows = {r["id"]: r for r in get_json(client, records_url("unfreeze", account))["data"]}
    assert rows[matured]["status"] == "withdrawable"
    assert rows[waiting]["status"] == "pending"
    assert rows[withdrawn]["status"] == "withdrawn"
    assert rows[matured]["operation_type"] == "unfreeze"
    assert rows[matured]["contract_type"] == "UnfreezeBalanceV2Contract"
    assert {"available_time", "settled_tx_id"} <= set(rows[matured])


def test_amounts_beyond_2_pow_53_are_exact_json_integers(client: FlaskClient, conn: psycopg.Connection) -> None:
    account = add_account(conn, ALICE)
    big = 2**62 + 1  # a float would round this to 2**62
    insert_stake(conn, ALICE, 1, amount=big)
    for _ in range(2):  # from the database, then from the cache
        response = client.get(records_url("stake", account))
        assert b'"amount":4611686018427387905' in response.data
        assert json.loads(response.data)["data"][0]["amount"] == big
    summary = get_json(client, f"/api/accounts/{account}/summary")
    assert summary["data"]["resources"]["ENERGY"]["staked"] == big


# -- cache -------------------------------------------------------------------------------------------


def test_source_is_database_then_cache_until_invalidated(
    client: FlaskClient, conn: psycopg.Connection, settings: Settings
) -> None:
    account = add_account(conn, ALICE)
    insert_stake(conn, ALICE, 1)
    url = records_url("stake", account, limit=5)
    first = get_json(client, url)
    second = get_json(client, url)
    assert first["meta"]["source"] == "database"
    assert second["meta"]["source"] == "cache"
    assert second["data"] == first["data"]

    new_id = insert_stake(conn, ALICE, 2)
    assert get_json(client, url)["meta"]["source"] == "cache"  # not invalidated yet: still the old page
    invalidate_accounts(redis.Redis.from_url(settings.cache_redis_url), [ALICE])
    third = get_json(client, url)
    assert third["meta"]["source"] == "database"
    assert third["data"][0]["id"] == new_id
    assert get_json(client, url)["meta"]["source"] == "cache"
    # The same page asked for by address shares the cache entry.
    assert get_json(client, records_url("stake", ALICE, limit=5))["meta"]["source"] == "cache"


def test_cache_stats_count_hits_and_misses(client: FlaskClient, conn: psycopg.Connection) -> None:
    account = add_account(conn, ALICE)
    insert_stake(conn, ALICE, 1)
    for _ in range(4):
        client.get(records_url("stake", account))
    client.get(f"/api/accounts/{account}/summary")
    stats = get_json(client, "/api/cache/stats")["data"]
    assert (stats["hits"], stats["misses"], stats["errors"]) == (3, 2, 0)
    assert stats["hit_ratio"] == 0.6
    assert stats["process"]["hits"] == 3 and stats["process"]["fills"] == 2


def test_page_ttls_follow_their_class(
    client: FlaskClient, conn: psycopg.Connection, redis_clean: tuple[redis.Redis, redis.Redis]
) -> None:
    _, cache = redis_clean
    account = add_account(conn, ALICE)
    for block in range(1, 4):
        insert_stake(conn, ALICE, block)
    cursor = get_json(client, records_url("stake", account, limit=1))["meta"]["next_cursor"]
    get_json(client, records_url("stake", account, limit=1, cursor=cursor))
    get_json(client, f"/api/accounts/{account}/summary")
    ttls = {key.decode().rsplit(":", 3)[-1]: cache.ttl(key) for key in cast(list[bytes], cache.keys("ledger:page:*"))}
    assert 290 < ttls["p1"] <= 300
    assert 1790 < ttls["summary"] <= 1800
    historical = next(v for k, v in ttls.items() if k.startswith("c2."))
    assert 3590 < historical <= 3600


def test_pages_with_a_maturing_lot_expire_when_it_matures(
    client: FlaskClient, conn: psycopg.Connection, redis_clean: tuple[redis.Redis, redis.Redis]
) -> None:
    _, cache = redis_clean
    account = add_account(conn, ALICE)
    # Both clocks are the chain's, the checkpoint's block time (block 2's, T0 + 6 s): a lot of the
    # records page maturing 40 s after it, and the lot of an unfreeze in block 2 (now = its parent's
    # time, block 1's) maturing 30 s (the test delay) later, 27 s after the checkpoint.
    insert_lot(conn, ALICE, 1, T0 + timedelta(seconds=6 + 40))
    insert_stake(conn, ALICE, 1, amount=100)
    insert_stake(conn, ALICE, 2, amount=100, kind="unfreeze", contract_type="UnfreezeBalanceV2Contract", parent=1)
    set_checkpoint(conn, 2)
    get_json(client, records_url("unfreeze", account))
    get_json(client, f"/api/accounts/{account}/summary")
    ttls = {key.decode().rsplit(":", 1)[-1]: cache.ttl(key) for key in cast(list[bytes], cache.keys("ledger:page:*"))}
    assert len(ttls) == 2
    assert 25 < ttls.pop("summary") <= 27
    assert all(38 < ttl <= 40 for ttl in ttls.values())


# -- summary -----------------------------------------------------------------------------------------


def set_checkpoint(conn: psycopg.Connection, block_num: int) -> None:
    """The listener's checkpoint at `block_num` (time T0 + 3 s * block_num, as the insert helpers')."""
    ms = int((T0 + timedelta(seconds=3 * block_num)).timestamp() * 1000)
    conn.execute(
        "INSERT INTO listener_checkpoint (name, block_num, block_id, block_time_ms) VALUES (%s, %s, 'b', %s)"
        " ON CONFLICT (name) DO UPDATE SET block_num = EXCLUDED.block_num, block_time_ms = EXCLUDED.block_time_ms",
        (MAIN_CHECKPOINT, block_num, ms),
    )


def test_summary_figures(client: FlaskClient, conn: psycopg.Connection) -> None:
    account = add_account(conn, ALICE)
    # ENERGY: 1000 + 500 staked; failed and orphaned rows moved nothing.
    insert_stake(conn, ALICE, 1, amount=1000)
    insert_stake(conn, ALICE, 2, amount=500, status="pending")
    insert_stake(conn, ALICE, 5, amount=7777, status="failed")
    insert_stake(conn, ALICE, 6, amount=8888, status="orphaned")
    # Two lots: 300 ENERGY unfrozen in block 3 (now = block 2's time: matures 30 s later, at block
    # 12's time), 40 BANDWIDTH unfrozen in block 7 (matures at block 16's time).
    insert_stake(conn, ALICE, 3, amount=300, kind="unfreeze", contract_type="UnfreezeBalanceV2Contract", parent=2)
    insert_stake(conn, ALICE, 4, amount=90, resource="BANDWIDTH")
    insert_stake(
        conn,
        ALICE,
        7,
        amount=40,
        resource="BANDWIDTH",
        kind="unfreeze",
        contract_type="UnfreezeBalanceV2Contract",
        parent=6,
    )
    # Legacy V1: 90 - 30 = 60 BANDWIDTH, kept apart.
    insert_stake(conn, ALICE, 8, amount=90, resource="BANDWIDTH", contract_type="FreezeBalanceContract")
    insert_stake(
        conn, ALICE, 9, amount=30, resource="BANDWIDTH", kind="unfreeze", contract_type="UnfreezeBalanceContract"
    )
    insert_stake(conn, BOB, 11, amount=10**9)  # another account
    # Delegations: BOB unlocked 200 - 50 = 150, BOB locked 100 + 200 (one lock end: the last one's,
    # block 11's parent time + 86,400 slots); CAROL 30 - 30 = 0 (gone); a failed one moved nothing.
    insert_delegate(conn, ALICE, BOB, 8, amount=200)
    insert_delegate(conn, ALICE, BOB, 9, amount=50, kind="undelegate")
    insert_delegate(conn, ALICE, BOB, 9, amount=100, lock=True)
    insert_delegate(conn, ALICE, BOB, 11, amount=200, lock=True, parent=10)
    insert_delegate(conn, ALICE, CAROL, 12, amount=30, resource="BANDWIDTH")
    insert_delegate(conn, ALICE, CAROL, 13, amount=30, resource="BANDWIDTH", kind="undelegate")
    insert_delegate(conn, ALICE, CAROL, 13, amount=999, status="failed")
    insert_delegate(conn, BOB, ALICE, 13, amount=5000)  # delegated to ALICE, not by her
    set_checkpoint(conn, 14)

    body = get_json(client, f"/api/accounts/{ALICE}/summary")
    assert body["meta"]["source"] == "database"
    assert body["meta"]["shortfall"] == body["meta"]["chain_drift"] == body["meta"]["drift"] == {}
    data = body["data"]
    assert data["account_id"] == account and data["owner_address"] == ALICE
    assert data["as_of_block"] == 14
    assert datetime.fromisoformat(data["as_of_time"]) == T0 + timedelta(seconds=42)
    energy, bandwidth = data["resources"]["ENERGY"], data["resources"]["BANDWIDTH"]
    # 1500 - 300 unfrozen - 200 - 100 - 200 delegated + 50 undelegated
    assert (energy["staked"], energy["available"]) == (750, 750)
    assert (bandwidth["staked"], bandwidth["staked_v1"], energy["staked_v1"]) == (50, 60, 0)
    assert (bandwidth["legacy_v1"], energy["legacy_v1"]) == (60, 0)  # the earlier name
    lock_end = T0 + timedelta(seconds=3 * 10 + 3 * 86_400)
    assert energy["delegated"] == {
        "total": 450,
        "locked": 300,
        "unlocked": 150,
        "receivers_count": 1,
        "receivers": [{"receiver_address": BOB, "locked": 300, "unlocked": 150, "lock_end": ANY_TIME, "units": None}],
    }
    assert datetime.fromisoformat(energy["delegated"]["receivers"][0]["lock_end"]) == lock_end
    assert bandwidth["delegated"] == {"total": 0, "locked": 0, "unlocked": 0, "receivers_count": 0, "receivers": []}
    # At block 14's time the ENERGY lot (block 12's time) is withdrawable, the BANDWIDTH one not.
    assert (energy["withdrawable"], data["withdrawable_now"]) == (300, 300)
    assert energy["unstaking"] == {"total": 0, "lots": []}
    assert bandwidth["unstaking"]["total"] == 40
    (lot,) = bandwidth["unstaking"]["lots"]
    assert datetime.fromisoformat(lot["expire_time"]) == T0 + timedelta(seconds=3 * 6 + 30)
    assert get_json(client, f"/api/accounts/{account}/summary")["meta"]["source"] == "cache"


class _AnyTime:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and datetime.fromisoformat(other).tzinfo is not None


ANY_TIME: Any = _AnyTime()


def test_summary_undelegate_after_expiry_takes_the_merged_lock_from_unlocked(
    client: FlaskClient, conn: psycopg.Connection
) -> None:
    # java-tron (DelegatedResourceStore.unLockExpireResource) merges an expired lock into the
    # unlocked record before the undelegate, which then takes only from the unlocked record:
    # 100 locked (ending 86,400 slots after block 1) + 40 unlocked - 90 = 50 unlocked, 0 locked.
    add_account(conn, ALICE)
    insert_stake(conn, ALICE, 1, amount=1000)
    insert_delegate(conn, ALICE, BOB, 2, amount=100, lock=True, parent=1)
    insert_delegate(conn, ALICE, BOB, 3, amount=40)
    insert_delegate(conn, ALICE, BOB, 90_000, amount=90, kind="undelegate")
    energy = get_json(client, f"/api/accounts/{ALICE}/summary")["data"]["resources"]["ENERGY"]
    assert energy["delegated"] == {
        "total": 50,
        "locked": 0,
        "unlocked": 50,
        "receivers_count": 1,
        "receivers": [{"receiver_address": BOB, "locked": 0, "unlocked": 50, "lock_end": None, "units": None}],
    }
    assert energy["staked"] == 1000 - 140 + 90


def test_summary_receivers_come_in_pages_with_the_totals_in_each(client: FlaskClient, conn: psycopg.Connection) -> None:
    account = add_account(conn, ALICE)
    other = add_account(conn, BOB)
    insert_stake(conn, ALICE, 1, amount=10_000)
    receivers = [address(10 + i) for i in range(5)]
    for i, receiver in enumerate(receivers):
        insert_delegate(conn, ALICE, receiver, 2, amount=100 + i)
        insert_delegate(conn, ALICE, receiver, 3, amount=10, resource="BANDWIDTH")
    set_checkpoint(conn, 3)
    with conn.transaction():
        positions.fold(conn, 2, 30_000)  # the ENERGY records folded and stored, BANDWIDTH's the tail
    whole = get_json(client, f"/api/accounts/{ALICE}/summary?limit=1000")
    assert whole["meta"]["next_cursor"] is None and whole["meta"]["limit"] == 1000
    seen: dict[str, list[Any]] = {"ENERGY": [], "BANDWIDTH": []}
    url, pages = f"/api/accounts/{ALICE}/summary?limit=3", 0
    while True:
        body = get_json(client, url)
        pages += 1
        for res, got in seen.items():
            figures = body["data"]["resources"][res]
            got += figures["delegated"]["receivers"]
            assert figures["delegated"]["receivers_count"] == 5
            assert {k: v for k, v in figures["delegated"].items() if k != "receivers"} == {
                k: v for k, v in whole["data"]["resources"][res]["delegated"].items() if k != "receivers"
            }
        cursor = body["meta"]["next_cursor"]
        if cursor is None:
            break
        url = f"/api/accounts/{ALICE}/summary?limit=3&cursor={cursor}"
    assert pages == 4  # 10 receiver records, 3 a page
    for res, got in seen.items():
        assert got == whole["data"]["resources"][res]["delegated"]["receivers"]
    assert [r["receiver_address"] for r in seen["ENERGY"]] == sorted(receivers)
    first = get_json(client, f"/api/accounts/{ALICE}/summary?limit=3")
    # A cursor is the account's own, signed, and the limit bounded.
    get_json(client, f"/api/accounts/{other}/summary?cursor={first['meta']['next_cursor']}", 400)
    get_json(client, f"/api/accounts/{account}/summary?cursor={first['meta']['next_cursor']}x", 400)
    get_json(client, f"/api/accounts/{account}/summary?limit=0", 400)
    get_json(client, f"/api/accounts/{account}/summary?limit=1001", 400)


def test_summary_of_an_unfreeze_with_nothing_staked_shows_drift_not_a_negative(
    client: FlaskClient, conn: psycopg.Connection
) -> None:
    add_account(conn, ALICE)
    insert_stake(conn, ALICE, 5, amount=579_000_000, kind="unfreeze", contract_type="UnfreezeBalanceV2Contract")
    insert_delegate(conn, ALICE, BOB, 6, amount=1_000_000, kind="undelegate")
    body = get_json(client, f"/api/accounts/{ALICE}/summary")
    energy = body["data"]["resources"]["ENERGY"]
    assert energy["staked"] == 1_000_000 and energy["delegated"]["total"] == 0
    assert energy["unstaking"]["total"] == 579_000_000
    shortfall = {"ENERGY.staked": 579_000_000, f"ENERGY.delegated.{BOB}": 1_000_000}
    assert body["meta"]["shortfall"] == body["meta"]["drift"] == shortfall


def test_a_summary_says_whether_the_account_has_an_opening_position(
    client: FlaskClient, conn: psycopg.Connection, settings: Settings
) -> None:
    """Without an opening the figures count only the records seen since the account was added:
    `meta.opening` says so instead of letting zeros pass for the chain's state."""
    add_account(conn, ALICE)
    insert_stake(conn, ALICE, 5, amount=1_000_000)
    meta = get_json(client, f"/api/accounts/{ALICE}/summary")["meta"]
    assert meta["opening"]["source"] is None and meta["opening"]["block"] is None
    assert "no opening position" in meta["opening"]["warning"]
    assert f"accounts snapshot {ALICE}" in meta["opening"]["warning"]

    conn.execute(
        "INSERT INTO position_openings (address, block_num, state) VALUES (%s, 4, %s)",
        (ALICE, Position(block_num=4).to_json().decode()),
    )
    cache = redis.Redis.from_url(settings.cache_redis_url)
    invalidate_accounts(cache, [ALICE])
    cache.close()
    meta = get_json(client, f"/api/accounts/{ALICE}/summary")["meta"]
    assert meta["opening"] == {"source": "chain", "block": 4}


# -- other endpoints and errors ----------------------------------------------------------------------


def test_health(client: FlaskClient) -> None:
    assert get_json(client, "/health/live") == {"success": True, "status": "ok"}
    body = get_json(client, "/health/ready")
    assert body["status"] == "ready"
    assert body["checks"]["postgres"]["ok"] and body["checks"]["redis"]["ok"]


def test_health_and_ingest_tell_the_checkpoint_from_the_persisted_watermark(
    client: FlaskClient, conn: psycopg.Connection
) -> None:
    # Before any listener ran there is no checkpoint: no figure is made up
    assert get_json(client, "/api/ingest")["data"]["lag_blocks"] == {"listener": None, "workers": None, "total": None}
    # Given a listener that enqueued up to 120 of a chain at 125, and workers complete up to 112
    conn.execute("UPDATE chain_state SET head_block = 125, solid_block = 100")
    conn.execute(
        "INSERT INTO listener_checkpoint (name, block_num, block_id, persisted_block, persisted_at)"
        " VALUES ('main', 120, 'x', 112, now())"
    )
    # With no listener beating, the head is not vouched for: its lags are unknown, and say why
    data = get_json(client, "/api/ingest")["data"]
    assert (data["head"], data["solid"], data["checkpoint"], data["persisted"]) == (125, 100, 120, 112)
    assert data["lag_blocks"] == {"listener": None, "workers": 8, "total": None}
    assert data["lag_unknown"] == "no listener has been active: no chain head seen"
    # With the listener online and following the chain, every lag is known
    conn.execute(
        "INSERT INTO listener_heartbeats (holder, name, role, term, started_at, beat_at, head_block, processed_block,"
        " state) VALUES ('h', 'main', 'active', 1, now(), now(), 125, 120, 'following')"
    )
    data = get_json(client, "/api/ingest")["data"]
    assert data["lag_blocks"] == {"listener": 5, "workers": 8, "total": 13}
    assert data["listener"]["status"] == "online" and data["listener"]["state"] == "following"
    assert get_json(client, "/health/ready")["ingest"]["lag_blocks"] == data["lag_blocks"]


def test_ready_is_degraded_when_redis_is_unreachable(settings: Settings, clean_db: str) -> None:
    from harness.servers import free_port

    dead = create_app(replace(settings, cache_redis_url=f"redis://127.0.0.1:{free_port()}/0"))
    try:
        body = get_json(dead.test_client(), "/health/ready", 200)
    finally:
        close_app(dead)
    assert body["success"] is True and body["status"] == "degraded"
    assert body["checks"]["postgres"]["ok"] is True
    assert body["checks"]["redis"] == {"ok": False, "error": "ConnectionError"}


def test_constant_route_only_when_benchmarking(client: FlaskClient, settings: Settings) -> None:
    get_json(client, "/bench/constant", 404)
    bench = create_app(replace(settings, bench_routes=True))
    try:
        assert get_json(bench.test_client(), "/bench/constant") == {"success": True, "data": {"constant": True}}
    finally:
        close_app(bench)


def test_unknown_route_and_method_are_json(client: FlaskClient) -> None:
    body = get_json(client, "/api/nothing", 404)
    assert body["error"]["code"] == "not_found" and "/api/nothing" in body["error"]["message"]
    get_json(client, "/api/transfer/records?pool_account_id=1", 404)
    response = client.post("/api/stake/records")
    assert response.status_code == 405
    assert json.loads(response.data)["error"]["code"] == "method_not_allowed"


def test_unexpected_errors_are_500_json_without_details(app: Flask) -> None:
    def boom() -> str:
        raise RuntimeError("password=hunter2 at /secret/path")

    app.add_url_rule("/boom", "boom", boom)
    response = app.test_client().get("/boom")
    assert response.status_code == 500
    assert json.loads(response.data) == {
        "success": False,
        "error": {"code": "internal_error", "message": "internal server error"},
    }
    assert b"hunter2" not in response.data and b"Traceback" not in response.data


def test_public_dead_letters_show_counts_only(client: FlaskClient, conn: psycopg.Connection) -> None:
    for n, actor in enumerate(("persist_operation", "persist_operation", "confirm_blocks")):
        conn.execute(
            "INSERT INTO dead_letters (message_id, queue_name, actor_name, args, error_type, error, retries)"
            " VALUES (%s, 'ledger', %s, %s, 'ValueError', 'secret-host:5432 refused', 3)",
            (f"m{n}", actor, json.dumps([{"owner_address": "TSecretAccount", "n": n}])),
        )
    response = client.get("/api/dead-letters")
    assert response.status_code == 200
    data = json.loads(response.data)["data"]
    assert data["total"] == 3 and data["by_actor"] == {"persist_operation": 2, "confirm_blocks": 1}
    assert data["by_reason"] == {"retries_exhausted": 3} and data["in_broker"] == 0
    for secret in (b"TSecretAccount", b"secret-host", b"ValueError", b"m0"):
        assert secret not in response.data
    # The old per-message route is gone from the public API (it lives under /admin).
    assert client.get("/api/dead-letters/1").status_code == 404
