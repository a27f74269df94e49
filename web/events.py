"""GET /api/events (the event log in pages) and GET /api/events/stream (the same as Server-Sent Events).

Both read events after a cursor, oldest first, optionally of one account and some types
(ledger/store/events.py says why the cursor, the event id, never skips one). A page's
`meta.next_cursor` is the id of its last event (the request's own cursor when the page is empty),
so a client that polls with it sees every event once.

The stream sends what is there after the cursor (`after`, or the `Last-Event-ID` header a
reconnecting EventSource sends), then new events as they are numbered, each as `id:` (the event
id), `event:` (its type) and `data:` (the event's JSON). It ends after EVENTS_STREAM_SECONDS, so
that a stream holds one of the web's request threads only that long; EventSource reconnects by
itself with the last id it saw, so nothing is skipped or sent twice across reconnections. At most
`STREAMS_PER_PROCESS` streams run at once in a web process (a 429 with Retry-After beyond), which
keeps threads for the other routes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping

from flask import Blueprint, Response, current_app, request
from psycopg_pool import ConnectionPool

from ledger.clocks import Clock
from ledger.store.events import EVENT_TYPES, read_events
from web.params import int_param, resolve_account
from web.pg import read_connection
from web.resources import resources
from web.responses import bad_request, dumps, error_response, json_response, shown

bp = Blueprint("events", __name__)

MAX_PAGE = 1_000
DEFAULT_PAGE = 100
STREAMS_PER_PROCESS = 2
STREAM_POLL_SECONDS = 0.5  # how often a stream looks for new events
STREAM_BATCH = 500
KEEPALIVE_SECONDS = 15.0  # a comment line now and then, so proxies do not close an idle stream
RETRY_MS = 1_000  # EventSource's reconnection delay, sent at the start of each stream
_ID_LIMIT = 2**63 - 1


def _filters(args: Mapping[str, str]) -> tuple[str | None, list[str]]:
    res = resources()
    key = args.get("account")
    account = None if key is None else resolve_account(res.accounts, key, "account").address
    types: list[str] = []
    raw = args.get("types")
    if raw is not None:
        types = sorted({t.strip() for t in raw.split(",") if t.strip()})
        unknown = [t for t in types if t not in EVENT_TYPES]
        if unknown or not types:
            raise bad_request(f"types must be a comma-separated list of {', '.join(EVENT_TYPES)} (got {shown(raw)})")
    return account, types


@bp.get("/api/events")
def events() -> Response:
    args = request.args
    after = int_param(args, "after", 0, 0, _ID_LIMIT)
    limit = int_param(args, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
    account, types = _filters(args)
    with read_connection(resources().pool) as conn:
        rows = read_events(conn, after=after, limit=limit, account=account, types=types)
    meta = {"after": after, "limit": limit, "next_cursor": rows[-1]["id"] if rows else after}
    response = json_response({"success": True, "data": rows, "meta": meta})
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/api/events/stream")
def stream() -> Response:
    args = request.args
    after = int_param(args, "after", 0, 0, _ID_LIMIT)
    header = request.headers.get("Last-Event-ID")
    if header is not None:
        after = int_param({"Last-Event-ID": header}, "Last-Event-ID", 0, 0, _ID_LIMIT)
    account, types = _filters(args)
    slots: threading.BoundedSemaphore = current_app.extensions["event_streams"]
    if not slots.acquire(blocking=False):
        busy = error_response(
            429, "too_many_streams", f"at most {STREAMS_PER_PROCESS} event streams per web process; retry shortly"
        )
        busy.headers["Retry-After"] = "1"
        return busy
    res = resources()
    body = _Stream(res.pool, res.settings.events_stream_seconds, after, account, types, slots, res.clock, res.sleep)
    response = Response(body, mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass each event on as it comes
    return response


class _Stream:
    """The stream's body. Its slot is given back when the events end, and by `close()`, which a WSGI
    server calls however the response ends (a client gone, or never started)."""

    def __init__(
        self,
        pool: ConnectionPool,
        seconds: float,
        after: int,
        account: str | None,
        types: list[str],
        slots: threading.BoundedSemaphore,
        clock: Clock,
        sleep: Callable[[float], object],
    ) -> None:
        self.pool = pool
        self._clock = clock
        self._sleep = sleep
        self.seconds = seconds
        self.cursor = after
        self.account = account
        self.types = types
        self._slots: threading.BoundedSemaphore | None = slots

    def __iter__(self) -> Iterator[bytes]:
        try:
            yield from self._events()
        finally:
            self.close()

    def _events(self) -> Iterator[bytes]:
        yield f"retry: {RETRY_MS}\n\n".encode()
        end = self._clock() + self.seconds
        quiet_since = self._clock()
        while True:
            with read_connection(self.pool) as conn:
                rows = read_events(conn, after=self.cursor, limit=STREAM_BATCH, account=self.account, types=self.types)
            for event in rows:
                self.cursor = event["id"]
                yield b"id: %d\nevent: %s\ndata: %s\n\n" % (self.cursor, event["type"].encode(), dumps(event))
            now = self._clock()
            if rows:
                quiet_since = now
                if len(rows) == STREAM_BATCH and now < end:
                    continue
            elif now - quiet_since >= KEEPALIVE_SECONDS:
                yield b": keepalive\n\n"
                quiet_since = now
            if now >= end:
                return
            self._sleep(min(STREAM_POLL_SECONDS, max(0.0, end - now)))

    def close(self) -> None:
        slots, self._slots = self._slots, None
        if slots is not None:
            slots.release()


def install(app_extensions: dict[str, object]) -> None:
    """The per-process stream slots (called by web.app.create_app)."""
    app_extensions["event_streams"] = threading.BoundedSemaphore(STREAMS_PER_PROCESS)
