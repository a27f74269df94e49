"""Property tests on every parameter of every route: any bad value is a 400 that names the parameter
and shows at most a short prefix of the value; a forged cursor is a 400.

"Bad" is defined here from the contract (web/openapi.py: an integer in a range, an account id or
address, a cursor this server issued), not from the parsing code. Runs in-process (Flask's test
client) on the seeded database of the contract tests; `PROPERTY_EXAMPLES` examples a property.
"""

from __future__ import annotations

import base64
import os
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.contract_stack import ONE, seed_api_data
from ledger.config import DEVELOPMENT_CURSOR_SECRET, load_settings
from ledger.domain import INT64_MAX
from tests.conftest import settings_for
from web.app import close_app, create_app
from web.cursor import Cursor, CursorError, decode_cursor
from web.responses import ECHO_LIMIT

EXAMPLES = int(os.environ.get("PROPERTY_EXAMPLES", "60"))
SECRET = "property-test-secret"
ADMIN_TOKEN = "property-admin-token"
PROPERTY = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

RECORDS = ["/api/stake/records", "/api/delegate/records", "/api/unfreeze/records"]

# Anything a client can send (lone surrogates cannot be encoded in a URL, so no client can).
TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=200)
LONG = st.text(st.characters(exclude_categories=["Cs"]), min_size=ECHO_LIMIT + 1, max_size=10_000)
_BASE58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
# Past Python's 4,300-digit limit for int(str) (sys.int_info.str_digits_check_threshold): int()
# raises a plain ValueError there, which a parser must not let through as a 500.
HUGE_NUMBER = st.integers(4_000, 6_000).map(lambda n: "9" * n)


def _int_in(text: str, low: int, high: int) -> bool:
    t = text.strip()
    return re.fullmatch(r"[0-9]+", t) is not None and low <= int(t) <= high


def bad_int(low: int, high: int) -> st.SearchStrategy[str]:
    """Text that is not a decimal integer from low to high: words, signs, fractions, out of range."""
    return st.one_of(
        TEXT.filter(lambda s: not _int_in(s, low, high)),
        st.integers().filter(lambda n: not low <= n <= high).map(str),
        st.floats(allow_nan=True).map(str),
        st.integers(high + 1, high * 10**6).map(lambda n: f"{n:,}"),
        HUGE_NUMBER,
    )


def _account_form(text: str) -> bool:
    t = text.strip()
    return re.fullmatch(r"[0-9]+|T[1-9A-HJ-NP-Za-km-z]{33}|41[0-9a-fA-F]{40}", t) is not None and (
        not t.isdigit() or 1 <= int(t) <= INT64_MAX
    )


BAD_ACCOUNT = st.one_of(
    TEXT.filter(lambda s: not _account_form(s)),
    st.sampled_from(["0", str(INT64_MAX + 1), "-1", "1.0", "0x41", " ", "\t"]),
    HUGE_NUMBER,
    # Address-shaped but with a checksum that fails (2**-32 odds of passing by chance: none here).
    st.text(st.sampled_from(_BASE58), min_size=33, max_size=33).map(lambda s: "T" + s),
    st.text(st.sampled_from("0123456789abcdef"), min_size=40, max_size=40).map(lambda s: "42" + s),
)


def _external_form(text: str) -> bool:
    """The platform's external id (sql/011_external_ids.sql): 1-64 printable ASCII, no spaces."""
    return re.fullmatch(r"[!-~]{1,64}", text.strip()) is not None


BAD_EXTERNAL = st.one_of(
    TEXT.filter(lambda s: not _external_form(s)),
    st.sampled_from(["", " ", "a b", "x" * 65, "é", "42\x00"]),
    LONG.filter(lambda s: not _external_form(s)),
)
# Every place an external id is given: (route, parameter).
EXTERNAL_PARAMS = [
    *[(url, "external_id") for url in RECORDS],
    *[("/compat" + url, name) for url in RECORDS for name in ("pool_account_id", "external_id")],
    ("/api/summary", "external_id"),
    ("/api/drift", "external_id"),
]


@pytest.fixture(scope="module")
def client(database_url: str) -> Iterator[FlaskClient]:
    seed_api_data(database_url)
    # With the admin token: the dead-letter parameters are the admin API's.
    app = create_app(settings_for(database_url, cursor_secrets=(SECRET,), admin_token=ADMIN_TOKEN))
    yield app.test_client()
    close_app(app)
    seed_api_data(database_url, rows=0)


def assert_bad_request(client: FlaskClient, url: str, query: dict[str, str], name: str, value: str) -> None:
    response = client.get(url, query_string=query, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert response.status_code == 400, (url, query, response.data[:300])
    body: dict[str, Any] = response.get_json()
    assert body["success"] is False and body["error"]["code"] == "bad_request"
    message = body["error"]["message"]
    assert name in message, (name, message)
    assert len(message) < 400, message  # a short message whatever was sent
    if len(value) > ECHO_LIMIT:
        assert value not in message


# -- record lists ------------------------------------------------------------------------------------


@pytest.mark.parametrize("url", RECORDS)
@PROPERTY
@given(value=bad_int(1, 100))
def test_bad_limit(client: FlaskClient, url: str, value: str) -> None:
    assert_bad_request(client, url, {"pool_account_id": "1", "limit": value}, "limit", value)


@pytest.mark.parametrize("url", RECORDS)
@PROPERTY
@given(value=st.one_of(bad_int(1, 10**17), st.integers(10_001, 10**15).map(str)))
def test_bad_page(client: FlaskClient, url: str, value: str) -> None:
    # With limit=1, a page past 10,000 is past the page x limit cap: also a 400 naming page.
    assert_bad_request(client, url, {"pool_account_id": "1", "limit": "1", "page": value}, "page", value)


@pytest.mark.parametrize("url", RECORDS)
@PROPERTY
@given(value=BAD_ACCOUNT)
def test_bad_pool_account_id(client: FlaskClient, url: str, value: str) -> None:
    assert_bad_request(client, url, {"pool_account_id": value}, "pool_account_id", value)


@pytest.mark.parametrize(("url", "name"), EXTERNAL_PARAMS)
@PROPERTY
@given(value=BAD_EXTERNAL)
def test_bad_external_id(client: FlaskClient, url: str, name: str, value: str) -> None:
    assert_bad_request(client, url, {name: value}, name, value)


@pytest.mark.parametrize("url", RECORDS)
@PROPERTY
@given(value=TEXT)
def test_any_text_is_not_a_cursor(client: FlaskClient, url: str, value: str) -> None:
    assert_bad_request(client, url, {"pool_account_id": "1", "cursor": value}, "cursor", value)


@pytest.mark.parametrize("kind", ["stake", "delegate", "unfreeze"])
@PROPERTY
@given(
    page=st.integers(2, 10**12),
    key=st.tuples(st.integers(0, 2**40), st.integers(0, 2**31 - 1), st.integers(0, 2**15 - 1), st.integers(1, 2**40)),
    secret=st.binary(min_size=1, max_size=64).filter(lambda b: b != SECRET.encode()),
)
def test_a_cursor_signed_with_another_key_is_refused(
    client: FlaskClient, kind: str, page: int, key: tuple[int, int, int, int], secret: bytes
) -> None:
    """A well-formed cursor for this very list, for any page, is a 400 unless the server signed it."""
    token = Cursor(kind, 1, page, key).encode(secret)
    assert_bad_request(client, f"/api/{kind}/records", {"pool_account_id": "1", "cursor": token}, "cursor", token)


@pytest.mark.parametrize("kind", ["stake", "delegate", "unfreeze"])
@PROPERTY
@given(page=st.integers(3, 10**12))
def test_a_real_cursor_with_another_page_number_is_refused(client: FlaskClient, kind: str, page: int) -> None:
    url = f"/api/{kind}/records"
    real = client.get(url, query_string={"pool_account_id": "1", "limit": "5"}).get_json()["meta"]["next_cursor"]
    body, signature = real.split(".")
    fields = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)).decode().split(".")
    fields[3] = str(page)  # the page this cursor leads to: 2 as issued
    forged_body = base64.urlsafe_b64encode(".".join(fields).encode()).rstrip(b"=").decode()
    forged = f"{forged_body}.{signature}"
    assert_bad_request(client, url, {"pool_account_id": "1", "cursor": forged}, "cursor", forged)


def test_rotation_accepts_the_old_secret_until_it_is_dropped(database_url: str, client: FlaskClient) -> None:
    old = client.get(RECORDS[0], query_string={"pool_account_id": "1", "limit": "5"}).get_json()["meta"]
    for secrets, status in ((("new", SECRET), 200), (("new",), 400)):
        app = create_app(settings_for(database_url, cursor_secrets=secrets))
        try:
            query = {"pool_account_id": "1", "limit": "5", "cursor": old["next_cursor"]}
            response = app.test_client().get(RECORDS[0], query_string=query)
            assert response.status_code == status, (secrets, response.data[:300])
            if status == 200:  # the next cursor is signed with the new secret only
                nxt = response.get_json()["meta"]["next_cursor"]
                assert decode_cursor(nxt, (b"new",)).page == 3
                with pytest.raises(CursorError):
                    decode_cursor(nxt, (SECRET.encode(),))
        finally:
            close_app(app)


# -- summary and dead letters ------------------------------------------------------------------------


@PROPERTY
@given(value=BAD_ACCOUNT.filter(lambda s: "/" not in s and s.strip() not in ("", ".", "..")))
def test_bad_summary_account(client: FlaskClient, value: str) -> None:
    assert_bad_request(client, f"/api/accounts/{quote(value, safe='')}/summary", {}, "account", value)


@PROPERTY
@given(value=bad_int(1, 200))
def test_bad_dead_letters_limit(client: FlaskClient, value: str) -> None:
    assert_bad_request(client, "/admin/dead-letters", {"limit": value}, "limit", value)


@PROPERTY
@given(value=bad_int(1, INT64_MAX))
def test_bad_dead_letters_before_id(client: FlaskClient, value: str) -> None:
    assert_bad_request(client, "/admin/dead-letters", {"before_id": value}, "before_id", value)


@PROPERTY
@given(value=bad_int(1, INT64_MAX).filter(lambda s: "/" not in s and s.strip() not in ("", ".", "..")))
def test_bad_dead_letter_id(client: FlaskClient, value: str) -> None:
    assert_bad_request(client, f"/admin/dead-letters/{quote(value, safe='')}", {}, "dead letter id", value)


# -- echoes ------------------------------------------------------------------------------------------


@PROPERTY
@given(value=LONG)
def test_errors_show_only_a_prefix_of_long_input(client: FlaskClient, value: str) -> None:
    for url, query, name in [
        (RECORDS[0], {"pool_account_id": value}, "pool_account_id"),
        (RECORDS[1], {"pool_account_id": "1", "limit": value}, "limit"),
        (RECORDS[2], {"pool_account_id": "1", "cursor": value}, "cursor"),
        ("/admin/dead-letters", {"before_id": value}, "before_id"),
    ]:
        if name != "pool_account_id" or not _account_form(value):
            assert_bad_request(client, url, query, name, value)
    response = client.get("/" + quote(value, safe=""))  # a 404 for a path that is no endpoint
    assert response.status_code == 404 and len(response.get_json()["error"]["message"]) < 200


def test_an_unknown_account_is_a_404_showing_a_prefix(client: FlaskClient) -> None:
    unknown = "9" * 18  # a valid id form, not tracked
    body = client.get(RECORDS[0], query_string={"pool_account_id": unknown}).get_json()
    assert body["error"]["code"] == "not_found" and unknown in body["error"]["message"]
    assert client.get(RECORDS[0], query_string={"pool_account_id": ONE}).status_code == 200


def test_cursor_secret_setting() -> None:
    assert load_settings({"CURSOR_SECRET": " new , old ,"}).cursor_keys == (b"new", b"old")
    assert load_settings({}).cursor_keys == (DEVELOPMENT_CURSOR_SECRET,)
