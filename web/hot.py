"""Read answers kept per process in front of the views, for exactly as long as their page is.

A cached page answered from this process's memory (ledger.store.cache.PageCache's `local_ttl`)
still cost its view the whole walk to the lookup: the query string parsed into a MultiDict, the
limit, page and cursor checked, the account resolved, the rollout asked, the cache key built. The
same request asked again within the page's local lifetime gets the same bytes, so the answer is
kept here by its path and query string, until the page's own local expiry: a before-request hook
answers it, after the guards (web.guards) and before the view. What the view would still have
done on such a hit is done here too: an account the rollout now sends the legacy way is not
answered from here, a first records page is offered to the shadow comparison, the hit counts as
a local one and as a read of its route, and the after-request hooks (headers) run as for any answer.

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
from web.paths import NATIVE, READ_SAMPLES, Paths, answers_legacy, shadow_sample

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
    read: str  # the sample name the answer counts under (web.paths.READ_SAMPLES)
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

    def answer(self) -> Response | None:
        """The before-request hook: the kept answer to this request, or None to go on to the view."""
        environ = request.environ
        if environ.get("REQUEST_METHOD") != "GET":
            return None
        answer = self.get(_key(environ), self.pages.clock())
        if answer is None:
            return None
        paths = self.paths
        if answers_legacy(paths, answer.address):
            return None  # the view answers it the legacy way
        self.pages.note_local_hit()
        paths.counters.inc(answer.read)
        shadow = answer.shadow
        if shadow is not None and paths.shadow is not None:
            shadow_sample(shadow.kind, answer.address, shadow.page, shadow.limit, shadow.cursor)
        return Response(answer.body, mimetype="application/json")

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
    answers = HotAnswers(app.extensions["ledger"].pages, app.extensions["paths"])
    app.extensions["hot"] = answers
    app.before_request(answers.answer)


def _key(environ: dict[str, Any]) -> Key:
    # The raw path and query string as the server gave them: the same request, the same key.
    return environ.get("PATH_INFO", ""), environ.get("QUERY_STRING", "")


def remember(address: str, suffix: str, body: bytes, route: str, shadow: Shadow | None = None) -> None:
    """Keep this request's answer of `route` while its page (`address`, `suffix`) stays in local memory."""
    hot: HotAnswers = current_app.extensions["hot"]
    expires = hot.pages.local_expiry(address, suffix)
    if expires is not None:
        answer = HotAnswer(expires, body, address, READ_SAMPLES[route, NATIVE], shadow)
        hot.put(_key(request.environ), answer, hot.pages.clock())
