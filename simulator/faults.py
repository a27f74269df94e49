"""The fault-injection seam: every response passes through one `ResponseFilter` before it is sent.

`FaultInjector` makes the node misbehave the ways TronGrid and java-tron do (TronGrid rate limits:
developers.tron.network/reference/rate-limits; errors as HTTP 200 `{"Error": ...}`: java-tron
framework/src/main/java/org/tron/core/services/http/Util.java),
with probability `rate` per node request, one kind drawn from `kinds` among those that fit (or,
deterministically, on every `every`-th request that a kind fits):

- rate_limit: HTTP 403, 429 or 503 with TronGrid's "suspended for N s" body. While suspended,
  EVERY node request gets the same refusal, and each one extends the suspension (TronGrid's
  documented behaviour), so a client that keeps polling never gets through;
- server_error: HTTP 500/502 with an HTML body (a proxy or Jetty error page, not JSON);
- error_key: HTTP 200 {"Error": "class org.tron.core.exception.BadItemException : ..."};
- timeout: answer only after `timeout_seconds` (longer than a client timeout), or close the
  connection without answering;
- truncated: HTTP 200, the JSON cut in half;
- empty_block: {} for a block that exists (getblockbynum, getnowblock, getblock, getblockbylimitnext);
- head_backwards: getnowblock answers a block 1-5 below the real head, like a lagging node
  behind a load balancer.

Faults touch only responses: never the chain, the truth, /sim/* or the WebSocket feed.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from .chain import ChainStore
from .httpio import Request, Response, raw_json
from .render import Renderer, dumps

FAULT_KINDS = ("rate_limit", "server_error", "error_key", "timeout", "truncated", "empty_block", "head_backwards")
BLOCK_ENDPOINTS = frozenset({"getblockbynum", "getnowblock", "getblock", "getblockbylimitnext"})
HTML_TYPE = "text/html; charset=utf-8"
BAD_GATEWAY = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1>"
    b"</center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)
SERVER_ERROR = (
    b'<html>\n<head>\n<meta http-equiv="Content-Type" content="text/html;charset=utf-8"/>\n'
    b"<title>Error 500 Server Error</title>\n</head>\n<body><h2>HTTP ERROR 500</h2>\n"
    b"<p>Problem accessing /wallet. Reason:\n<pre>    Server Error</pre></p>\n</body>\n</html>\n"
)
BAD_ITEM_ERRORS = (
    "class org.tron.core.exception.BadItemException : Block number is not continuous",
    "class org.tron.core.exception.BadItemException : transaction info is not found",
    "class org.tron.core.exception.BadItemException : java.io.IOException: mismatched block hash",
)


class ResponseFilter(Protocol):
    def __call__(self, request: Request, response: Response) -> Response: ...


class PassThrough:
    """No faults: the response goes out as the API produced it."""

    def __call__(self, request: Request, response: Response) -> Response:
        return response


def _endpoint(request: Request) -> str:
    prefix, _, name = request.path.strip("/").partition("/")
    return name if prefix in ("wallet", "walletsolidity") else ""


def _is_block(response: Response) -> bool:
    return response.status == 200 and response.body.startswith((b'{"blockID"', b'{"block":['))


class FaultInjector:
    """Thread-safe; settings change at runtime through `update` (POST /sim/faults)."""

    def __init__(
        self,
        store: ChainStore,
        renderer: Renderer,
        *,
        rate: float,
        kinds: Sequence[str],
        every: int = 0,
        suspend_seconds: float,
        timeout_seconds: float,
        seed: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._renderer = renderer
        self._clock = clock
        self._lock = threading.Lock()
        self._rng = random.Random(f"sim:{seed}:faults")
        self._rate = 0.0
        self._every = 0  # > 0: a fault on every Nth request that some kind fits, instead of `rate`
        self._fitting = 0
        self._kinds: tuple[str, ...] = FAULT_KINDS
        self._suspend_seconds = 2.0
        self._timeout_seconds = 12.0
        self._suspended_until = 0.0
        self._refusal = (403, b"")
        self._requests = 0
        self._suspensions = 0
        self._counts = dict.fromkeys(FAULT_KINDS, 0)
        self.update(
            rate=rate, every=every, kinds=list(kinds), suspend_seconds=suspend_seconds, timeout_seconds=timeout_seconds
        )

    # -- settings ------------------------------------------------------------------------------

    def update(self, **settings: object) -> dict[str, object]:
        """Keys: rate, every, kinds, suspend_seconds, timeout_seconds, suspended (true starts a
        suspension now, false lifts it), reset_counts. Raises ValueError on a bad value.

        `every` N > 0 makes faults deterministic: every Nth request that one of `kinds` fits gets
        a fault, the kinds taking turns, so a test sees each kind however slow the machine is."""
        known = {"rate", "every", "kinds", "suspend_seconds", "timeout_seconds", "suspended", "reset_counts"}
        unknown = set(settings) - known
        if unknown:
            raise ValueError(f"unknown fault setting(s) {sorted(unknown)}")
        rate = _number(settings, "rate", 0, 1)
        every = _number(settings, "every", 0, None)
        if every is not None and every != int(every):
            raise ValueError("every must be a whole number")
        suspend = _number(settings, "suspend_seconds", 0.001, None)
        timeout = _number(settings, "timeout_seconds", 0, None)
        kinds = settings.get("kinds")
        if kinds is not None and (not isinstance(kinds, list) or not all(k in FAULT_KINDS for k in kinds)):
            raise ValueError(f"kinds must be a list drawn from {list(FAULT_KINDS)}")
        with self._lock:
            if rate is not None:
                self._rate = rate
            if every is not None:
                self._every, self._fitting = int(every), 0
            if suspend is not None:
                self._suspend_seconds = suspend
            if timeout is not None:
                self._timeout_seconds = timeout
            if kinds is not None:
                self._kinds = tuple(dict.fromkeys(kinds))
            if settings.get("suspended") is True:
                self._start_suspension()
            elif settings.get("suspended") is False:
                self._suspended_until = 0.0
            if settings.get("reset_counts"):
                self._requests, self._suspensions = 0, 0
                self._counts = dict.fromkeys(FAULT_KINDS, 0)
        return self.view()

    def view(self) -> dict[str, object]:
        with self._lock:
            remaining = max(0.0, self._suspended_until - self._clock())
            return {
                "rate": self._rate,
                "every": self._every,
                "kinds": list(self._kinds),
                "suspend_seconds": self._suspend_seconds,
                "timeout_seconds": self._timeout_seconds,
                "suspended": remaining > 0,
                "suspended_remaining": round(remaining, 3),
                "requests": self._requests,
                "suspensions": self._suspensions,
                "counts": dict(self._counts),
            }

    # -- the filter ----------------------------------------------------------------------------

    def __call__(self, request: Request, response: Response) -> Response:
        if request.path == "/sim" or request.path.startswith("/sim/"):
            return response  # the control API is ours, not the node's: never faulty
        with self._lock:
            self._requests += 1
            if self._clock() < self._suspended_until:
                self._suspend()  # a request during the suspension extends it
                self._counts["rate_limit"] += 1
                return self._refused()
            if self._every > 0:
                kinds = [kind for kind in self._kinds if self._fits(kind, request, response)]
                if not kinds:
                    return response
                self._fitting += 1
                if self._fitting % self._every:
                    return response
                kind = kinds[(self._fitting // self._every - 1) % len(kinds)]
            else:
                if self._rate <= 0 or self._rng.random() >= self._rate:
                    return response
                kinds = [kind for kind in self._kinds if self._fits(kind, request, response)]
                if not kinds:
                    return response
                kind = self._rng.choice(kinds)
            self._counts[kind] += 1
            if kind == "rate_limit":
                self._start_suspension()
                return self._refused()
            roll = self._rng.random()
            lag = self._rng.randint(1, 5)
            timeout = self._timeout_seconds
        return self._inject(kind, request, response, roll, lag, timeout)

    @staticmethod
    def _fits(kind: str, request: Request, response: Response) -> bool:
        if kind == "truncated":
            return response.status == 200 and len(response.body) >= 2
        if kind == "empty_block":
            return _endpoint(request) in BLOCK_ENDPOINTS and _is_block(response)
        if kind == "head_backwards":
            return _endpoint(request) == "getnowblock" and _is_block(response)
        return True

    def _start_suspension(self) -> None:
        self._suspensions += 1
        self._refusal = self._new_refusal()
        self._suspend()

    def _suspend(self) -> None:
        self._suspended_until = self._clock() + self._suspend_seconds

    def _new_refusal(self) -> tuple[int, bytes]:
        status = self._rng.choice((403, 429, 503))
        seconds = max(1, math.ceil(self._suspend_seconds))
        if status == 429:  # as reported by users (iexbase/tron-api#171), "N s" with a space
            text = f"request rate exceeded the allowed_rps(15), and the query server is suspended for {seconds} s"
            return status, dumps({"Error": text})
        text = f"The key exceeds the frequency limit(15), and the query server is suspended for {seconds}s"
        return status, dumps({"Success": False, "Error": text, "StatusCode": status})

    def _refused(self) -> Response:
        status, body = self._refusal
        return Response(status, body)

    def _inject(
        self, kind: str, request: Request, response: Response, roll: float, lag: int, timeout: float
    ) -> Response:
        if kind == "server_error":
            return Response(502, BAD_GATEWAY, HTML_TYPE) if roll < 0.5 else Response(500, SERVER_ERROR, HTML_TYPE)
        if kind == "error_key":
            return raw_json(dumps({"Error": BAD_ITEM_ERRORS[int(roll * len(BAD_ITEM_ERRORS))]}))
        if kind == "timeout":
            if roll < 0.5:
                response.delay_seconds, response.close = timeout, True
                return response
            return Response(200, b"", drop=True)
        if kind == "truncated":
            return Response(200, response.body[: len(response.body) // 2], response.content_type)
        if kind == "empty_block":
            return raw_json(b"{}")
        # head_backwards: the blockID starts with the block number (8 bytes, hex).
        number = int(response.body[12:28], 16)
        block = self._store.block(max(number - lag, self._store.start_block))
        if block is None or block.number == number:
            return response
        visible = request.query.get("visible", "").strip().lower() == "true"
        return raw_json(self._renderer.block_bytes(block, visible))


def _number(settings: dict[str, object], key: str, low: float, high: float | None) -> float | None:
    value = settings.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number")
    if value < low or (high is not None and value > high):
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ValueError(f"{key} must be a number {bound}")
    return float(value)
