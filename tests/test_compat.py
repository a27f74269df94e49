"""The platform's ids and shape against real PostgreSQL and Redis.

- The compatibility record lists (/compat/api/{kind}/records) checked against the plan's field list,
  written here from the plan (not from web/compat.py): names, JSON types, the envelope, and the values
  of the same records in the native lists.
- External ids on every route that takes an account.
- Compatibility pages: cursor paging, their own cache entries, invalidation.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import psycopg
import pytest
import redis
from flask.testing import FlaskClient
from psycopg.conninfo import make_conninfo

from harness.tcpproxy import TcpProxy
from ledger.config import Settings
from ledger.store.cache import invalidate_accounts
from tests.clocks import ManualClock
from tests.test_api import ALICE, BOB, CAROL, T0, add_account, get_json, insert_delegate, insert_lot, insert_stake
from web.app import close_app, create_app
from web.directory import AccountDirectory


@pytest.fixture
def conn(clean_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(clean_db, autocommit=True) as c:
        yield c


@pytest.fixture
def client(settings: Settings, clean_db: str, redis_clean: object) -> Iterator[FlaskClient]:
    app = create_app(settings)
    yield app.test_client()
    close_app(app)


# -- the plan's field list ---------------------------------------------------------------------------

Check = Callable[[Any], bool]
RESOURCE_NAMES = ("BANDWIDTH", "ENERGY", "TRON_POWER")


def integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def count(value: Any) -> bool:
    return integer(value) and value >= 0


def text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def tx_hash(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def utc_time(value: Any) -> bool:
    """ISO-8601 in UTC, as the plan's `created_at`: '2025-01-01T00:00:30Z'."""
    if not isinstance(value, str) or not value.endswith("Z"):
        return False
    try:
        parsed = datetime.fromisoformat(value[:-1] + "+00:00")
    except ValueError:
        return False
    return parsed.utcoffset() == timedelta(0)


def address(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 34 and value.startswith("T")


def maybe(check: Check) -> Check:
    return lambda value: value is None or check(value)


# The plan's tables, each with the fields its frontend reads from every record of that table.
PLAN_COMMON: dict[str, Check] = {
    "tx_hash": tx_hash,
    "resource_type": maybe(lambda v: v in RESOURCE_NAMES),  # withdraw has no resource
    "block_number": count,
    "created_at": utc_time,  # the block's time
    "pool_account_id": text,  # the platform's id of the account, not this ledger's
}
PLAN_TABLES: dict[str, dict[str, Check]] = {
    "stake_records": PLAN_COMMON,
    "delegate_records": PLAN_COMMON,
    # The lot's own transaction, the unfreeze, under the plan's name (`tx_hash` stays beside it).
    "unfreeze_records": {**PLAN_COMMON, "unfreeze_tx_hash": tx_hash},
}
PLAN_TABLE = {"stake": "stake_records", "delegate": "delegate_records", "unfreeze": "unfreeze_records"}
# The rest of each row, named in the same style (docs/API.md lists them).
COMMON_FIELDS: dict[str, Check] = {
    "id": integer,
    "op_index": count,
    "owner_address": address,
    "operation_type": text,
    "contract_type": text,
    "amount": count,  # sun, an integer
    "status": text,
}
KIND_FIELDS: dict[str, dict[str, Check]] = {
    "stake": {},
    "delegate": {
        "receiver_address": address,
        "lock": lambda v: isinstance(v, bool),
        "lock_period": count,
        "lock_expire_time": maybe(utc_time),
    },
    "unfreeze": {"available_time": utc_time, "settled_tx_hash": maybe(tx_hash)},
}
SOURCES = ("database", "cache", "legacy", "fallback")


def assert_plan_page(body: dict[str, Any], kind: str, external_id: str) -> None:
    """The plan's envelope `{success, data, meta{page, limit, source}}` and its record fields."""
    assert set(body) == {"success", "data", "meta"}
    assert body["success"] is True
    meta = body["meta"]
    assert {"page", "limit", "source"} <= set(meta) <= {"page", "limit", "source", "next_cursor"}
    assert integer(meta["page"]) and meta["page"] >= 1
    assert integer(meta["limit"]) and 1 <= meta["limit"] <= 100
    assert meta["source"] in SOURCES
    assert maybe(text)(meta.get("next_cursor"))
    assert isinstance(body["data"], list)
    fields = {**PLAN_TABLES[PLAN_TABLE[kind]], **COMMON_FIELDS, **KIND_FIELDS[kind]}
    for row in body["data"]:
        assert set(row) == set(fields), (kind, sorted(set(row) ^ set(fields)))
        bad = {name: row[name] for name, ok in fields.items() if not ok(row[name])}
        assert bad == {}, (kind, bad)
        assert row["pool_account_id"] == external_id


# The same record in both shapes: the compatibility field and the native field it shows.
SAME_VALUE = {
    "tx_hash": "tx_id",
    "block_number": "block_num",
    "created_at": "block_time",
    "resource_type": "resource",
    "amount": "amount",
    "operation_type": "operation_type",
    "status": "status",
    "owner_address": "owner_address",
}


# -- data --------------------------------------------------------------------------------------------


@pytest.fixture
def seeded(conn: psycopg.Connection) -> dict[str, Any]:
    """ALICE with records of every kind (external id "7"), BOB with one of each (external id "1":
    the same text as ALICE's own id), CAROL without an external id."""
    alice, bob, carol = add_account(conn, ALICE), add_account(conn, BOB), add_account(conn, CAROL)
    conn.execute("UPDATE pool_accounts SET external_id = '7' WHERE id = %s", (alice,))
    conn.execute("UPDATE pool_accounts SET external_id = '1' WHERE id = %s", (bob,))
    now = datetime.now(UTC)
    for block in range(1, 11):
        insert_stake(conn, ALICE, block, resource=None if block == 5 else "ENERGY", kind="freeze")
        if block % 2:
            insert_delegate(conn, ALICE, CAROL, block, lock=True, lock_expire_time=T0)
        else:
            insert_delegate(conn, CAROL, ALICE, block)
        insert_lot(conn, ALICE, block, now + timedelta(days=block - 5))
    insert_stake(conn, BOB, 3)
    insert_delegate(conn, BOB, CAROL, 3)
    insert_lot(conn, BOB, 3, now)
    for who, what in ((ALICE, "staked_v2:ENERGY"), (BOB, "staked_v2:BANDWIDTH")):
        conn.execute(
            "INSERT INTO drift (account, what, chain_amount, ledger_amount, difference, since_block, checked_block)"
            " VALUES (%s, %s, 10, 4, 6, 1, 2)",
            (who, what),
        )
    return {"alice": alice, "bob": bob, "carol": carol}


# -- the compatibility shape -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["stake", "delegate", "unfreeze"])
def test_compat_records_follow_the_plans_field_list(client: FlaskClient, seeded: dict[str, Any], kind: str) -> None:
    native = get_json(client, f"/api/{kind}/records?pool_account_id={seeded['alice']}&limit=100")
    for _ in range(2):  # from the database, then from the cache
        body = get_json(client, f"/compat/api/{kind}/records?pool_account_id=7&limit=100")
        assert_plan_page(body, kind, "7")
    assert body["meta"]["source"] == "cache"
    assert len(body["data"]) == len(native["data"]) == 10
    for compat, row in zip(body["data"], native["data"], strict=True):
        assert compat["id"] == row["id"]
        assert {name: compat[name] for name in SAME_VALUE} == {name: row[n] for name, n in SAME_VALUE.items()}
    assert any(r["resource_type"] is None for r in body["data"]) == (kind == "stake")
    if kind == "unfreeze":
        assert [r["unfreeze_tx_hash"] for r in body["data"]] == [r["tx_id"] for r in native["data"]]


def test_compat_errors_keep_the_error_envelope(client: FlaskClient, seeded: dict[str, Any]) -> None:
    for url, status in (
        ("/compat/api/stake/records", 400),
        ("/compat/api/stake/records?pool_account_id=a%20b", 400),
        ("/compat/api/stake/records?pool_account_id=99", 404),
        ("/compat/api/stake/records?pool_account_id=7&limit=0", 400),
        ("/compat/api/stake/records?pool_account_id=7&external_id=7", 400),
        ("/compat/api/stake/records?pool_account_id=7&cursor=abc", 400),
    ):
        body = get_json(client, url, status)
        assert set(body) == {"success", "error"} and body["success"] is False
        assert set(body["error"]) == {"code", "message"}


def test_on_compat_routes_pool_account_id_is_the_platforms_id(client: FlaskClient, seeded: dict[str, Any]) -> None:
    # "1" is ALICE's id in this ledger and BOB's id on the platform: each route reads it its own way.
    native = get_json(client, "/api/stake/records?pool_account_id=1")["data"]
    compat = get_json(client, "/compat/api/stake/records?pool_account_id=1")["data"]
    assert {r["owner_address"] for r in native} == {ALICE}
    assert {r["owner_address"] for r in compat} == {BOB}
    assert {r["pool_account_id"] for r in compat} == {"1"}
    # Neither this ledger's ids nor addresses name accounts there.
    get_json(client, f"/compat/api/stake/records?pool_account_id={seeded['carol']}", 404)
    get_json(client, f"/compat/api/stake/records?pool_account_id={ALICE}", 404)


def test_compat_cursor_paging_walks_the_native_list(client: FlaskClient, seeded: dict[str, Any]) -> None:
    for kind in ("stake", "delegate", "unfreeze"):
        native = [r["id"] for r in get_json(client, f"/api/{kind}/records?external_id=7&limit=100")["data"]]
        url = f"/compat/api/{kind}/records?pool_account_id=7&limit=3"
        body = get_json(client, url)
        walked, pages = [r["id"] for r in body["data"]], 1
        while body["meta"]["next_cursor"]:
            body = get_json(client, f"{url}&cursor={body['meta']['next_cursor']}")
            pages += 1
            assert body["meta"]["page"] == pages
            assert_plan_page(body, kind, "7")
            walked.extend(r["id"] for r in body["data"])
        assert walked == native and pages == 4
        # Numbered pages too.
        page2 = get_json(client, f"{url}&page=2")
        assert [r["id"] for r in page2["data"]] == native[3:6]


def test_compat_pages_are_cached_apart_and_invalidated_with_the_account(
    client: FlaskClient, conn: psycopg.Connection, seeded: dict[str, Any], settings: Settings
) -> None:
    native_url = "/api/stake/records?external_id=7&limit=5"
    compat_url = "/compat/api/stake/records?pool_account_id=7&limit=5"
    assert get_json(client, native_url)["meta"]["source"] == "database"
    assert get_json(client, native_url)["meta"]["source"] == "cache"
    # A native page in the cache is not a compatibility page: the shapes never mix.
    first = get_json(client, compat_url)
    assert first["meta"]["source"] == "database"
    cached = get_json(client, compat_url)
    assert cached["meta"]["source"] == "cache" and cached["data"] == first["data"]
    assert "tx_id" in get_json(client, native_url)["data"][0]

    new_id = insert_stake(conn, ALICE, 500)
    assert get_json(client, compat_url)["data"][0]["id"] != new_id  # not invalidated yet
    cache = redis.Redis.from_url(settings.cache_redis_url)
    invalidate_accounts(cache, [ALICE])  # what a worker does after its commit
    cache.close()
    for url in (compat_url, native_url):
        body = get_json(client, url)
        assert body["meta"]["source"] == "database"
        assert body["data"][0]["id"] == new_id
    assert get_json(client, compat_url)["data"][0]["tx_hash"] == get_json(client, native_url)["data"][0]["tx_id"]


# -- external ids on every route ---------------------------------------------------------------------

# Every route that takes an account: (route, the URL by external id, the same by this ledger's id).
# {ext} and {id} are filled in; the bodies' `data` must be the same.
KINDS = ("stake", "delegate", "unfreeze")
NATIVE_LIST = "/api/{kind}/records?pool_account_id={{id}}"
ROUTES = [
    *[(f"{k} records", f"/api/{k}/records?external_id={{ext}}", NATIVE_LIST.format(kind=k)) for k in KINDS],
    *[(f"compat {k}", f"/compat/api/{k}/records?pool_account_id={{ext}}", NATIVE_LIST.format(kind=k)) for k in KINDS],
    *[(f"compat {k} by external_id", f"/compat/api/{k}/records?external_id={{ext}}", NATIVE_LIST.format(kind=k))
      for k in KINDS],
    ("summary", "/api/summary?external_id={ext}", "/api/accounts/{id}/summary"),
    ("summary by query", "/api/summary?pool_account_id={id}", "/api/accounts/{id}/summary"),
    ("drift", "/api/drift?external_id={ext}", "/api/drift?pool_account_id={id}"),
]  # fmt: skip
ROUTE_IDS = [r[0] for r in ROUTES]


def comparable(body: dict[str, Any]) -> Any:
    data = body["data"]
    if isinstance(data, list):
        return [r["id"] for r in data]
    return data


@pytest.mark.parametrize(("name", "by_external", "by_id"), ROUTES, ids=ROUTE_IDS)
def test_external_ids_work_on_every_route(
    client: FlaskClient, seeded: dict[str, Any], name: str, by_external: str, by_id: str
) -> None:
    for ext, account in (("7", seeded["alice"]), ("1", seeded["bob"])):
        got = get_json(client, by_external.format(ext=ext, id=account))
        want = get_json(client, by_id.format(id=account))
        assert comparable(got) == comparable(want) and comparable(want), name
    alice = comparable(get_json(client, by_external.format(ext="7", id=seeded["alice"])))
    bob = comparable(get_json(client, by_external.format(ext="1", id=seeded["bob"])))
    assert alice != bob


@pytest.mark.parametrize(
    ("name", "by_external"), [r[:2] for r in ROUTES if "{ext}" in r[1]], ids=[r[0] for r in ROUTES if "{ext}" in r[1]]
)
def test_external_id_errors_on_every_route(
    client: FlaskClient, seeded: dict[str, Any], name: str, by_external: str
) -> None:
    param = by_external.split("?")[1].split("=")[0]
    unknown = get_json(client, by_external.format(ext="404"), 404)
    assert "'404'" in unknown["error"]["message"]
    for bad in ("a b", "x" * 65, "é", " "):
        body = get_json(client, by_external.format(ext=quote(bad)), 400)
        assert param in body["error"]["message"], body
    if param == "external_id" or name.startswith("compat"):
        # Both names at once: refused, whatever they say.
        other = "pool_account_id" if param == "external_id" else "external_id"
        body = get_json(client, by_external.format(ext="7") + f"&{other}=7", 400)
        assert "not both" in body["error"]["message"]


def test_an_account_without_an_external_id_is_still_served_natively(
    client: FlaskClient, seeded: dict[str, Any]
) -> None:
    get_json(client, f"/api/summary?pool_account_id={CAROL}")
    get_json(client, f"/api/delegate/records?pool_account_id={seeded['carol']}")
    get_json(client, "/api/summary", 400)
    assert "pool_account_id is required" in get_json(client, "/api/summary", 400)["error"]["message"]
    # The drift list without an account is every account's.
    assert len(get_json(client, "/api/drift")["data"]) == 2


@pytest.mark.slow
def test_cached_compat_pages_are_served_while_postgresql_is_away(
    settings: Settings, conn: psycopg.Connection, seeded: dict[str, Any], redis_clean: object
) -> None:
    """The external id's mapping has expired and PostgreSQL cannot be asked: the last one read is
    used, so the page in the cache is still served (and a page not cached is a 503)."""
    with TcpProxy("127.0.0.1", 5432) as proxy:
        url = make_conninfo(settings.database_url, host="127.0.0.1", port=str(proxy.port))
        clock = ManualClock()
        app = create_app(dataclasses.replace(settings, database_url=url))
        try:
            res = app.extensions["ledger"]
            app.extensions["ledger"] = dataclasses.replace(
                res, accounts=AccountDirectory(res.pool, external_ttl=0.2, negative_ttl=0.2, clock=clock)
            )
            client = app.test_client()
            page = "/compat/api/stake/records?pool_account_id=7&limit=5"
            assert get_json(client, page)["meta"]["source"] == "database"
            proxy.close()
            clock.advance(0.2)
            body = get_json(client, page)
            assert body["meta"]["source"] == "cache" and body["data"][0]["pool_account_id"] == "7"
            assert get_json(client, page.replace("limit=5", "limit=6"), 503)["error"]["code"] == "unavailable"
            get_json(client, "/compat/api/stake/records?pool_account_id=never-seen", 503)
        finally:
            close_app(app)
