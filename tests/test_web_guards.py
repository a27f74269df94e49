"""Hostile input to the web: what every request passes (web/guards.py) and the admin API's bulk actions.

Each test names the answer a hostile request must get: a NUL is a 400 (not a database error), an
empty actor does not mean "every dead letter", a long value is not echoed whole, `//` with a foreign
Host is not redirected there, a large body is a 413, and responses carry the headers that stop a
browser sniffing or framing them; with READ_TOKEN the read API needs it.
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from dataclasses import replace

import psycopg
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient

from ledger.config import Settings
from ledger.store import deadletters as dl
from web.app import close_app, create_app
from web.guards import MAX_BODY_BYTES

ADMIN = "guards-admin-token-0123456789"
READ = "guards-read-token-0123456789"
METRICS = "guards-metrics-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture
def pg(clean_db: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(clean_db, autocommit=True) as conn:
        yield conn


@pytest.fixture
def app(settings: Settings, clean_db: str, redis_clean: tuple[redis.Redis, redis.Redis]) -> Iterator[Flask]:
    application = create_app(replace(settings, admin_token=ADMIN))
    yield application
    close_app(application)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def dead_letters(pg: psycopg.Connection, *actors: str) -> None:
    for n, actor in enumerate(actors):
        dl.record_dead_letter(
            pg, message_id=f"m{n}", queue_name="ledger", actor_name=actor, args=[n], error_type="E", error="e"
        )


def error(response: object, status: int) -> str:
    assert getattr(response, "status_code") == status, getattr(response, "data")[:300]  # noqa: B009
    body = getattr(response, "get_json")()  # noqa: B009
    assert body["success"] is False
    return str(body["error"]["message"])


@pytest.mark.parametrize(
    ("method", "url"),
    [
        ("GET", "/admin/dead-letters?actor=%00"),
        ("GET", "/admin/dead-letters?error=a%00b"),
        ("POST", "/admin/dead-letters/purge?actor=x%00"),
        ("POST", "/admin/dead-letters/requeue?actor=%00"),
        ("GET", "/api/drift?state=%00"),
        ("GET", "/api/stake/records?pool_account_id=1&cursor=%00"),
    ],
)
def test_a_nul_in_a_parameter_is_a_400(client: FlaskClient, pg: psycopg.Connection, method: str, url: str) -> None:
    dead_letters(pg, "persist_operation")
    message = error(client.open(url, method=method, headers=AUTH), 400)
    assert "NUL" in message
    assert dl.dead_letter_counts(pg)["total"] == 1  # nothing purged or requeued


def test_bulk_requeue_and_purge_need_an_actor_or_all_true(client: FlaskClient, pg: psycopg.Connection) -> None:
    dead_letters(pg, "persist_operation", "confirm_blocks")
    for action in ("requeue", "purge"):
        for query in ("", "?actor=", "?actor=%20", "?all=", "?all=yes", "?all=false", "?actor=x&all=true"):
            error(client.post(f"/admin/dead-letters/{action}{query}", headers=AUTH), 400)
    assert dl.dead_letter_counts(pg)["total"] == 2  # none of those touched a dead letter
    purged = client.post("/admin/dead-letters/purge?actor=confirm_blocks", headers=AUTH).get_json()["data"]
    assert purged == {"purged": 1}
    purged = client.post("/admin/dead-letters/purge?all=true", headers=AUTH).get_json()["data"]
    assert purged == {"purged": 1} and dl.dead_letter_counts(pg)["total"] == 0


def test_a_long_drift_state_is_not_echoed_whole(client: FlaskClient) -> None:
    state = "7" * 5000
    message = error(client.get(f"/api/drift?state={state}"), 400)
    assert "state" in message and len(message) < 200 and state[:100] not in message


# (A path starting with `//` cannot be given to Flask's test client, which reads it as a host: the
# live server's test in test_web_limits.py sends one.)
@pytest.mark.parametrize("path", ["/api//monitor", "/api//stake//records?pool_account_id=1", "/health//live"])
def test_slashes_with_a_foreign_host_are_never_redirected_there(client: FlaskClient, path: str) -> None:
    response = client.get(path, headers={"Host": "evil.example"})
    assert "Location" not in response.headers, response.headers["Location"]
    assert response.status_code == 404, response.status_code


def test_a_body_over_the_limit_is_413_before_it_is_read(client: FlaskClient) -> None:
    big = b'{"legacy_percent": 0, "pad": "' + b"x" * (MAX_BODY_BYTES + 1) + b'"}'
    for url in ("/admin/rollout", "/api/monitor"):
        response = client.open(
            url, method="PUT", data=big, headers={**AUTH, "Content-Type": "application/json"}, buffered=True
        )
        error(response, 413)
    # A small body still works.
    ok = client.put("/admin/rollout", json={"shadow_percent": 0}, headers=AUTH)
    assert ok.status_code == 200, ok.data


def test_responses_carry_nosniff_and_frame_and_content_policies(client: FlaskClient) -> None:
    for url in ("/api/monitor", "/health/live", "/api/nothing", "/metrics", "/openapi.json"):
        response = client.get(url)
        assert response.headers["X-Content-Type-Options"] == "nosniff", url
        assert response.headers["X-Frame-Options"] == "DENY", url
        assert "default-src 'none'" in response.headers["Content-Security-Policy"], url
    page = client.get("/status")
    policy = page.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "unsafe-eval" not in policy
    # The page's own script is allowed by its hash, and no other script.
    scripts = re.findall(rb"<script>(.*?)</script>", page.data, re.DOTALL)
    assert scripts
    for script in scripts:
        assert f"'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'" in policy
    assert re.search(r"script-src[^;]*'unsafe-inline'", policy) is None


def test_read_token_protects_api_and_compat_but_not_health(
    settings: Settings, clean_db: str, redis_clean: object
) -> None:
    application = create_app(replace(settings, read_token=READ, admin_token=ADMIN))
    client = application.test_client()
    try:
        for url in ("/api/monitor", "/api/drift", "/api/stake/records?pool_account_id=1", "/api/ingest",
                    "/compat/api/stake/records?pool_account_id=42", "/api/accounts/1/summary"):  # fmt: skip
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": READ},
                {"Authorization": "Basic " + READ},
            ):
                response = client.get(url, headers=headers)
                assert response.status_code == 401, (url, headers)
                assert response.headers["WWW-Authenticate"].startswith("Bearer")
            for token in (READ, ADMIN):
                response = client.get(url, headers={"Authorization": f"Bearer {token}"})
                assert response.status_code in (200, 404), (url, response.data[:200])
        for url in ("/health/live", "/health/ready", "/health/tron-data-health", "/metrics", "/openapi.json",
                    "/status"):  # fmt: skip
            assert client.get(url).status_code == 200, url
    finally:
        close_app(application)


def test_metrics_token_protects_health_and_metrics_only(settings: Settings, clean_db: str, redis_clean: object) -> None:
    application = create_app(replace(settings, metrics_token=METRICS))
    client = application.test_client()
    try:
        for url in ("/metrics", "/health/tron-data-health"):
            assert client.get(url).status_code == 401, url
            assert client.get(url, headers={"Authorization": f"Bearer {METRICS}"}).status_code == 200, url
        for url in ("/health/live", "/health/ready"):  # a load balancer's probes carry no token
            assert client.get(url).status_code == 200, url
        assert client.get("/api/monitor").status_code == 200  # no READ_TOKEN: the read API is open
    finally:
        close_app(application)
