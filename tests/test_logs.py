"""What a client or a node sends cannot forge, flood or leak through a log line or a dead letter."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import psycopg
import pytest

from ledger.ops.logs import MAX_VALUE_CHARS, Redactor, configure_handler
from ledger.store import deadletters as dl

KEY = "5e0c1d2a-0b1d-4e11-9a8b-secretkey111"
FORMS = (
    KEY,
    "".join(f"\\u{ord(c):04X}" for c in KEY),  # JSON-escaped, as a node echoing it in JSON may write it
    "".join(f"\\u{ord(c):04x}" if i % 3 else c for i, c in enumerate(KEY)),  # partly escaped
    "".join(f"%{ord(c):02X}" for c in KEY),  # URL-encoded
    "".join(f"%{ord(c):02x}" for c in KEY),
)


def leaked(text: str) -> list[str]:
    return [form for form in FORMS if form.lower() in text.lower()]


@pytest.fixture(params=["text", "json"])
def logged(request: pytest.FixtureRequest) -> Iterator[tuple[logging.Logger, io.StringIO, str]]:
    out = io.StringIO()
    handler = configure_handler(logging.StreamHandler(out), request.param, Redactor((KEY,)))
    logger = logging.getLogger(f"test-logs-{request.param}")
    logger.propagate = False
    logger.addHandler(handler)
    yield logger, out, request.param
    logger.removeHandler(handler)


def test_a_forged_line_is_escaped_and_a_long_value_cut(logged: tuple[logging.Logger, io.StringIO, str]) -> None:
    logger, out, fmt = logged
    logger.warning("admin: purged %d dead letter(s) of %s", 2, "1\r\nX-Injected: 1")
    logger.warning("rejected %s", "7" * 5000)
    lines = out.getvalue().splitlines()
    assert len(lines) == 2, lines  # one line each, whatever the values held
    assert not any(line.startswith("X-Injected") for line in lines)
    if fmt == "json":
        entries = [json.loads(line) for line in lines]
        assert entries[0]["message"] == "admin: purged 2 dead letter(s) of 1\r\nX-Injected: 1"
        message = entries[1]["message"]
    else:
        assert lines[0].endswith("admin: purged 2 dead letter(s) of 1\\r\\nX-Injected: 1")
        message = lines[1]
    assert "7" * (MAX_VALUE_CHARS + 1) not in message and "(5,000 characters)" in message
    assert len(message) < MAX_VALUE_CHARS + 200


def test_the_key_is_redacted_in_every_form_from_lines_and_tracebacks(
    logged: tuple[logging.Logger, io.StringIO, str],
) -> None:
    logger, out, fmt = logged
    for form in FORMS:
        logger.warning("node said %s", f'{{"echo": "{form}"}}')
        try:
            raise RuntimeError(f"reply: {form}")
        except RuntimeError:
            logger.exception("failed")
    text = out.getvalue()
    if fmt == "json":  # what a log shipper reads: the decoded values
        text = "\n".join(str(v) for line in text.splitlines() for v in json.loads(line).values())
    assert leaked(text) == [] and text.count("***") == 2 * len(FORMS)


def test_a_dead_letter_never_stores_the_key(db: psycopg.Connection) -> None:
    for n, form in enumerate(FORMS):
        dl_id = dl.record_dead_letter(
            db,
            message_id=f"key-{n}",
            queue_name="ledger",
            actor_name="reconcile_state",
            args=[n],
            error_type="ledger.chain.values.NodeError",
            error=f'node replied with an error: {{"key": "{form}"}}',
            traceback=f"Traceback (most recent call last):\n  ...\nNodeError: {form}\n",
            secrets=(KEY,),
        )
        row = dl.get_dead_letter(db, dl_id)
        assert row is not None
        assert leaked(row["error"]) == [] and leaked(row["traceback"]) == [], row
        assert "***" in row["error"] and "***" in row["traceback"]
