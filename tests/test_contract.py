"""The API contract (web/openapi.py) against the app.

- every Flask route is described and every described operation is served;
- response bodies of real requests (every route, success and error) validate against the schemas;
- schemathesis against a live granian server (harness/stack.py `start_web`) on seeded data: no 5xx,
  no body, status, header or content type outside the contract. `CONTRACT_EXAMPLES` (default 30)
  examples an operation here; bench/contract.py runs the same with many more.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import jsonschema_rs
import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from harness.contract_stack import ADMIN_TOKEN, ONE, READ_TOKEN, run_schemathesis, seed_api_data, start_contract_web
from harness.servers import free_port
from ledger.config import Settings
from ledger.store.webhooks import add_subscription
from tests.conftest import settings_for
from web.app import close_app, create_app
from web.openapi import build_spec

SPEC = build_spec(admin=True, read_token=True)
AUTH = {"Authorization": f"Bearer {READ_TOKEN}"}
CONTRACT_EXAMPLES = int(os.environ.get("CONTRACT_EXAMPLES", "30"))
_METHODS = ("get", "put", "post", "delete", "patch", "head", "options", "trace")


# -- routes ------------------------------------------------------------------------------------------


def openapi_paths(rule: str) -> list[str]:
    """The OpenAPI paths of a Flask rule: `<any(a, b):x>` gives one path per alternative."""
    match = re.search(r"<any\(([^)]*)\):\w+>", rule)
    if match:
        alternatives = [a.strip().strip("'\"") for a in match.group(1).split(",")]
        return [p for a in alternatives for p in openapi_paths(rule[: match.start()] + a + rule[match.end() :])]
    return [re.sub(r"<(?:\w+(?:\([^)]*\))?:)?(\w+)>", r"{\1}", rule)]


def _shape(path: str) -> str:
    """Parameter names differ freely between Flask and the document; their places must not."""
    return re.sub(r"\{[^}]+\}", "{}", path)


@pytest.fixture(scope="module")
def seeded(database_url: str) -> Iterator[str]:
    seed_api_data(database_url)
    yield database_url
    seed_api_data(database_url, rows=0)


@pytest.fixture(scope="module")
def module_settings(seeded: str) -> Settings:
    return settings_for(
        seeded, cursor_secrets=("contract-test-secret",), admin_token=ADMIN_TOKEN, read_token=READ_TOKEN
    )


@pytest.fixture(scope="module")
def client(module_settings: Settings) -> Iterator[FlaskClient]:
    app = create_app(module_settings)
    yield app.test_client()
    close_app(app)


def test_every_route_is_described_and_every_description_is_served(client: FlaskClient) -> None:
    app: Flask = client.application
    served = {
        (_shape(path), method.lower())
        for rule in app.url_map.iter_rules()
        for path in openapi_paths(rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}
    }
    described = {
        (_shape(path), method) for path, item in SPEC["paths"].items() for method in item if method in _METHODS
    }
    assert served - described == set(), "routes without a description in web/openapi.py"
    assert described - served == set(), "described in web/openapi.py but not served"


def test_the_document_is_served_and_parameter_names_match_the_paths(client: FlaskClient) -> None:
    assert client.get("/openapi.json").get_json() == SPEC
    admin_routes = {(p, m) for p, item in SPEC["paths"].items() if p.startswith("/admin/") for m in item}
    assert len(admin_routes) == 16, sorted(admin_routes)
    for path, item in SPEC["paths"].items():
        for operation in item.values():
            in_path = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert in_path == set(re.findall(r"\{(\w+)\}", path)), path
    # Every $ref points at something.
    text = str(SPEC)
    for ref in set(re.findall(r"#/components/(\w+)/(\w+)", text)):
        assert ref[1] in SPEC["components"][ref[0]], ref


# -- bodies ------------------------------------------------------------------------------------------


def body_schema(path: str, status: int, method: str = "get") -> dict[str, Any]:
    responses = SPEC["paths"][path][method]["responses"]
    assert str(status) in responses, f"{path} answered {status}, which the contract does not list"
    response = responses[str(status)]
    if "$ref" in response:
        response = SPEC["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    schema: dict[str, Any] = response["content"]["application/json"]["schema"]
    return schema


def check(
    client: FlaskClient, path: str, url: str, status: int, method: str = "get", headers: dict[str, str] | None = None
) -> Any:
    response = client.open(url, method=method.upper(), headers=AUTH if headers is None else headers)
    assert response.status_code == status, (url, response.data[:300])
    assert response.mimetype == "application/json"
    body = response.get_json()
    validator = jsonschema_rs.Draft202012Validator(
        {**body_schema(path, status, method), "components": SPEC["components"]}, validate_formats=True
    )
    errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(body)]
    assert errors == [], (url, errors[:5])
    return body


@pytest.mark.parametrize("kind", ["stake", "delegate", "unfreeze"])
def test_record_bodies_follow_the_contract(client: FlaskClient, kind: str) -> None:
    path = f"/api/{kind}/records"
    body = check(client, path, f"{path}?pool_account_id=1&limit=7", 200)
    assert len(body["data"]) == 7
    for _ in range(3):  # cursor pages
        body = check(client, path, f"{path}?pool_account_id=1&limit=7&cursor={body['meta']['next_cursor']}", 200)
    check(client, path, f"{path}?pool_account_id={ONE}&page=3&limit=5", 200)
    assert check(client, path, f"{path}?pool_account_id=2", 200)["data"] == []
    check(client, path, f"{path}?pool_account_id=99", 404)
    check(client, path, f"{path}?pool_account_id=1&limit=0", 400)
    check(client, path, f"{path}", 400)


@pytest.mark.parametrize("kind", ["stake", "delegate", "unfreeze"])
def test_compat_and_external_id_bodies_follow_the_contract(client: FlaskClient, kind: str) -> None:
    path = f"/compat/api/{kind}/records"
    body = check(client, path, f"{path}?pool_account_id=42&limit=7", 200)
    assert len(body["data"]) == 7
    body = check(client, path, f"{path}?pool_account_id=42&limit=7&cursor={body['meta']['next_cursor']}", 200)
    check(client, path, f"{path}?external_id=42&page=3&limit=5", 200)
    assert check(client, path, f"{path}?pool_account_id=43", 200)["data"] == []
    check(client, path, f"{path}?pool_account_id=1", 404)  # this ledger's id means nothing there
    check(client, path, f"{path}?pool_account_id=a%20b", 400)
    check(client, path, path, 400)
    native = f"/api/{kind}/records"
    assert len(check(client, native, f"{native}?external_id=42&limit=7", 200)["data"]) == 7
    check(client, native, f"{native}?external_id=42&pool_account_id=1", 400)
    check(client, native, f"{native}?external_id=99", 404)
    check(client, "/api/summary", "/api/summary?external_id=42", 200)
    check(client, "/api/summary", f"/api/summary?pool_account_id={ONE}", 200)
    check(client, "/api/summary", "/api/summary", 400)
    check(client, "/api/drift", "/api/drift?external_id=43", 200)


def test_summary_and_operations_bodies_follow_the_contract(client: FlaskClient) -> None:
    summary = "/api/accounts/{account}/summary"
    body = check(client, summary, "/api/accounts/1/summary", 200)
    figures = body["data"]["resources"].values()
    assert any(r["delegated"]["receivers"] for r in figures)
    assert any(r["unstaking"]["lots"] or r["withdrawable"] for r in figures)
    check(client, summary, f"/api/accounts/{ONE}/summary", 200)  # from the cache this time
    check(client, summary, "/api/accounts/2/summary", 200)
    check(client, summary, "/api/accounts/99/summary", 404)
    check(client, summary, "/api/accounts/nope/summary", 400)
    reclaim = "/api/accounts/{account}/reclaimable"
    assert check(client, reclaim, "/api/accounts/1/reclaimable", 200)["data"]["reclaimable"]
    check(client, reclaim, "/api/accounts/2/reclaimable", 200)
    check(client, reclaim, "/api/accounts/99/reclaimable", 404)
    check(client, reclaim, "/api/accounts/nope/reclaimable", 400)
    body = check(client, "/api/dead-letters", "/api/dead-letters", 200)
    assert body["data"]["total"] > 0  # counts only: the messages are under the admin API
    check(client, "/health/tron-data-health", "/health/tron-data-health", 200)
    check(client, "/api/monitor", "/api/monitor", 200)
    check(client, "/health/live", "/health/live", 200)
    check(client, "/health/ready", "/health/ready", 200)
    check(client, "/api/cache/stats", "/api/cache/stats", 200)
    check(client, "/api/ingest", "/api/ingest", 200)
    check(client, "/openapi.json", "/openapi.json", 200)


def test_admin_bodies_follow_the_contract(client: FlaskClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    listed = "/admin/dead-letters"
    rows = check(client, listed, f"{listed}?limit=2", 200, headers=admin)
    assert len(rows["data"]) == 2 and rows["meta"]["next_before_id"] is not None
    check(client, listed, f"{listed}?limit=0", 400, headers=admin)
    check(client, listed, listed, 401, headers=AUTH)  # the read token does not open the admin API
    one = "/admin/dead-letters/{id}"
    first = rows["data"][0]["id"]
    assert "traceback" in check(client, one, f"/admin/dead-letters/{first}", 200, headers=admin)["data"]
    check(client, one, "/admin/dead-letters/x", 400, headers=admin)
    check(client, one, "/admin/dead-letters/999", 404, headers=admin)
    check(client, one, "/admin/dead-letters/999", 404, "delete", admin)
    requeue = "/admin/dead-letters/{id}/requeue"
    check(client, requeue, f"/admin/dead-letters/{first}/requeue", 200, "post", admin)
    check(client, requeue, "/admin/dead-letters/999/requeue", 404, "post", admin)
    for bulk in ("/admin/dead-letters/requeue", "/admin/dead-letters/purge"):
        check(client, bulk, f"{bulk}?actor=", 400, "post", admin)
        check(client, bulk, f"{bulk}?actor=nobody", 200, "post", admin)
    check(client, "/admin/dead-letters/purge", "/admin/dead-letters/purge?all=true", 200, "post", admin)
    check(client, "/admin/in-flight", "/admin/in-flight", 200, headers=admin)
    check(client, "/admin/recover", "/admin/recover", 200, "post", admin)
    check(client, "/admin/rollout", "/admin/rollout", 200, headers=admin)
    response = client.put("/admin/rollout", json={"shadow_percent": 0}, headers=admin)
    assert response.status_code == 200, response.data


def test_read_routes_need_the_read_token_as_documented(client: FlaskClient) -> None:
    for path, item in SPEC["paths"].items():
        if "{" in path or "get" not in item:
            continue
        protected = path.startswith(("/api/", "/compat/"))
        assert ("security" in item["get"]) is protected or path.startswith("/admin/"), path
        if protected:
            check(client, path, path, 401, headers={})


def test_event_bodies_follow_the_contract(client: FlaskClient) -> None:
    path = "/api/events"
    body = check(client, path, f"{path}?limit=50", 200)
    assert len(body["data"]) == 50
    assert {e["type"] for e in body["data"]} >= {"operation.confirmed", "operation.pending"}
    after = body["meta"]["next_cursor"]
    body = check(client, path, f"{path}?after={after}&account=1&types=operation.orphaned,operation.failed", 200)
    assert body["data"] and {e["type"] for e in body["data"]} <= {"operation.orphaned", "operation.failed"}
    assert all(e["account"] == ONE and e["id"] > after for e in body["data"])
    assert check(client, path, f"{path}?account=2", 200)["data"] == []
    check(client, path, f"{path}?account=99", 404)
    check(client, path, f"{path}?types=nope", 400)
    check(client, path, f"{path}?after=-1", 400)


# -- schemathesis against the live server ------------------------------------------------------------


@pytest.mark.slow
def test_live_server_keeps_the_contract(module_settings: Settings) -> None:
    """schemathesis's generated requests (valid and invalid, every operation) against granian: no
    5xx, and every status, content type and body is the contract's."""
    port = free_port()
    proc = start_contract_web(module_settings, port)
    try:
        code, output = run_schemathesis(f"http://127.0.0.1:{port}", CONTRACT_EXAMPLES, timeout=280, seed=12)
    finally:
        proc.stop()
    assert code == 0, output[-6000:]
    assert "Traceback" not in proc.output(), proc.output()[-3000:]  # no unhandled error on the way


def test_admin_webhook_bodies_follow_the_contract(client: FlaskClient) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    def sent(path: str, url: str, status: int, method: str, body: object = None) -> Any:
        response = client.open(url, method=method.upper(), headers=admin, json=body)
        assert response.status_code == status, (url, response.data[:300])
        validator = jsonschema_rs.Draft202012Validator(
            {**body_schema(path, status, method), "components": SPEC["components"]}, validate_formats=True
        )
        errors = [f"{e.instance_path}: {e.message}" for e in validator.iter_errors(response.get_json())]
        assert errors == [], (url, errors[:5])
        return response.get_json()

    listed = "/admin/webhooks"
    # The contract server refuses loopback receivers (WEBHOOK_ALLOW_PRIVATE is off): a 400 saying so.
    assert (
        "not a public address" in sent(listed, listed, 400, "post", {"url": "http://127.0.0.1:9/h"})["error"]["message"]
    )
    sent(listed, listed, 400, "post", {"url": "http://h.example/", "types": ["nope"]})
    with psycopg.connect(client.application.extensions["ledger"].settings.database_url, autocommit=True) as conn:
        sub, _ = add_subscription(conn, "http://127.0.0.1:9/h", types=["operation.confirmed"], allow_private=True)
    try:
        assert sent(listed, listed, 200, "get")["data"][0]["id"] == sub.id
        for action in ("disable", "enable"):
            sent(f"/admin/webhooks/{{id}}/{action}", f"/admin/webhooks/{sub.id}/{action}", 200, "post")
            sent(f"/admin/webhooks/{{id}}/{action}", f"/admin/webhooks/999/{action}", 404, "post")
        rotate = "/admin/webhooks/{id}/rotate-secret"
        sent(rotate, f"/admin/webhooks/{sub.id}/rotate-secret", 200, "post", {"overlap_hours": 1})
        sent(rotate, f"/admin/webhooks/{sub.id}/rotate-secret", 400, "post", {"overlap_hours": -1})
        one = "/admin/webhooks/{id}"
        sent(one, f"/admin/webhooks/{sub.id}", 200, "delete")
        sent(one, f"/admin/webhooks/{sub.id}", 404, "delete")
        sent(one, "/admin/webhooks/x", 400, "delete")
    finally:
        with psycopg.connect(client.application.extensions["ledger"].settings.database_url, autocommit=True) as conn:
            conn.execute("DELETE FROM webhook_subscriptions")
