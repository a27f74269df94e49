"""Read answers kept per process in front of the views, for exactly as long as their page is.

A cached page answered from this process's memory (ledger.store.cache.PageCache's `local_ttl`)
still cost its view the whole walk to the lookup: the query string parsed into a MultiDict, the
limit, page and cursor checked, the account resolved, the rollout asked, the cache key built. The
same request asked again within the page's local lifetime gets the same bytes, so the answer is
kept here by its path and query string, until the page's own local expiry: a before-request hook
answers it, after the guards (web.guards) and before the view. What the view would still have
done on such a hit is done here too: an account the rollout now sends the legacy way is not
answered from here, a first records page is offered to the shadow comparison, the hit counts as
a local one, and the after-request hooks (headers, the read counter) run as for any answer.

Staleness is the page cache's own: an invalidation reaches this process at most `local_ttl` late,
whether the answer comes from here or from the view. Only answers that came from that memory are
kept, so with `CACHE_LOCAL_TTL=0` nothing is.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, current_app, request

from ledger.store.cache import PageCache
from web.paths import Paths, answers_legacy, shadow_sample

# A sweep when this many answers are kept; past the cap, all are dropped (hot ones come back at once).
SWEEP_AT = 256
MAX_ANSWERS = 4096

Key = tuple[str, str]


@dataclass(frozen=True, slots=True)
class Shadow:
    """What a records view offers the shadow comparison (web.paths.shadow_sample)."""

    kind: str
    page: int
    limit: int
    cursor: bool


@dataclass(frozen=True, slots=True)
class HotAnswer:
    expires: float  # on the page cache's clock: the page's local expiry
    body: bytes
    address: str
    shadow: Shadow | None


class HotAnswers:
    def __init__(self, pages: PageCache, paths: Paths) -> None:
        self.pages = pages
        self.paths = paths
        self._answers: dict[Key, HotAnswer] = {}
        self._lock = threading.Lock()

    def get(self, key: Key, now: float) -> HotAnswer | None:
        answer = self._answers.get(key)
        return answer if answer is not None and answer.expires > now else None

    def put(self, key: Key, answer: HotAnswer, now: float) -> None:
        with self._lock:
            answers = self._answers
            if len(answers) >= SWEEP_AT:
                # A new dict swapped in whole: request threads read the old one meanwhile, safely.
                answers = {k: a for k, a in list(answers.items()) if a.expires > now}
                if len(answers) >= MAX_ANSWERS:
                    answers = {}
                self._answers = answers
            answers[key] = answer


def install(app: Flask) -> None:
    """After web.guards.install (its checks run first) and web.paths.install."""
    app.extensions["hot"] = HotAnswers(app.extensions["ledger"].pages, app.extensions["paths"])
    app.before_request(_answer)


def _key(environ: dict[str, Any]) -> Key:
    # The raw path and query string as the server gave them: the same request, the same key.
    return environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")


def _answer() -> Response | None:
    environ = request.environ
    if environ.get("REQUEST_METHOD") != "GET":
        return None
    hot: HotAnswers = current_app.extensions["hot"]
    answer = hot.get(_key(environ), hot.pages.clock())
    if answer is None:
        return None
    if answers_legacy(hot.paths, answer.address):
        return None  # the view answers it the legacy way
    hot.pages.note_local_hit()
    shadow = answer.shadow
    if shadow is not None and hot.paths.shadow is not None:
        shadow_sample(shadow.kind, answer.address, shadow.page, shadow.limit, shadow.cursor)
    return Response(answer.body, mimetype="application/json")


def remember(address: str, suffix: str, body: bytes, shadow: Shadow | None = None) -> None:
    """Keep this request's answer while its page (`address`, `suffix`) stays in local memory."""
    hot: HotAnswers = current_app.extensions["hot"]
    expires = hot.pages.local_expiry(address, suffix)
    if expires is not None:
        hot.put(_key(request.environ), HotAnswer(expires, body, address, shadow), hot.pages.clock())
