"""Per-client request counts, as TronGrid keeps them for its quota, and hidden transactions.

Counting: every node request (`/wallet/*`, `/walletsolidity/*`, `/v1/*`; never `/sim/*` or the
WebSocket) is counted for its client: the API key sent in `TRON-PRO-API-KEY` (shown as
`key:<first 12 hex of its sha256>`, so no key is ever echoed) or, without a key, the remote
address (`ip:<address>`). Counts are kept per second (the last 10 minutes, by this machine's wall
clock), per UTC day, and per path, so a test can assert a budget by the node's own count.

GET  /sim/requests[?client=label] -> {"clients": {label: {"total","today","max_per_second",
                                      "per_second": {"<unix second>": n, ...}, "paths": {...}}}}
POST /sim/requests/reset          -> forget every count

Hiding: a share of the stake transactions of the tracked accounts (those the truth lists) is left out of the block feed
(`getblockbynum`, `getblock`, `getblockbylimitnext`, `getnowblock`, `gettransactioninfobyblocknum`)
and stays visible only through TronGrid's account index (`/v1/accounts/{a}/transactions`) and
the by-id lookups, the way a node that served an incomplete block would lose them: only
reconciliation can find them. The choice is a hash of the txID against the rate in force for the
block's number, so it is the same for every request, thread and fork replay, and a rate set at run
time applies only to blocks after the current head (a block a client has read never changes).

GET  /sim/hidden                  -> {"rates": [[after_block, rate], ...], "hidden": [{"txID","block"}...]}
POST /sim/hidden {"rate": r}      -> hide share r (0..1) of the stake transactions after the head
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable

from .chain import ChainStore
from .httpio import Request, Response, json_response
from .model import Block, Tx

KEEP_SECONDS = 600
COUNTED_PREFIXES = ("wallet", "walletsolidity", "v1")


def client_label(api_key: str | None, address: str) -> str:
    if api_key:
        return "key:" + hashlib.sha256(api_key.encode()).hexdigest()[:12]
    return f"ip:{address}"


class RequestCounter:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._seconds: dict[str, Counter[int]] = defaultdict(Counter)
        self._days: dict[str, Counter[int]] = defaultdict(Counter)
        self._paths: dict[str, Counter[str]] = defaultdict(Counter)
        self._totals: Counter[str] = Counter()

    def record(self, request: Request, address: str) -> None:
        if request.path.strip("/").partition("/")[0] not in COUNTED_PREFIXES:
            return
        label = client_label(request.headers.get("tron-pro-api-key"), address)
        now = self._clock()
        second = int(now)
        with self._lock:
            seconds = self._seconds[label]
            seconds[second] += 1
            if len(seconds) > KEEP_SECONDS:
                for old in [s for s in seconds if s <= second - KEEP_SECONDS]:
                    del seconds[old]
            self._days[label][second // 86_400] += 1
            self._paths[label][request.path] += 1
            self._totals[label] += 1

    def view(self, client: str | None = None) -> dict[str, object]:
        today = int(self._clock()) // 86_400
        with self._lock:
            labels = [client] if client else sorted(self._totals)
            clients = {
                label: {
                    "total": self._totals[label],
                    "today": self._days[label][today],
                    "max_per_second": max(self._seconds[label].values(), default=0),
                    "per_second": {str(s): n for s, n in sorted(self._seconds[label].items())},
                    "paths": dict(self._paths[label]),
                }
                for label in labels
                if label in self._totals
            }
        return {"clients": clients}

    def reset(self) -> None:
        with self._lock:
            self._seconds.clear()
            self._days.clear()
            self._paths.clear()
            self._totals.clear()


class HiddenTransactions:
    def __init__(self, store: ChainStore, tracked_hex: Iterable[str], rate: float = 0.0) -> None:
        self._store = store
        self._tracked = frozenset(tracked_hex)
        self._lock = threading.Lock()
        # (after block, rate), ascending: the rate for block n is the last entry with after < n.
        self._rates: list[tuple[int, float]] = [(-1, _check_rate(rate))]

    def set_rate(self, rate: float) -> None:
        rate = _check_rate(rate)
        head = self._store.heights().head
        with self._lock:
            self._rates.append((-1 if head is None else head, rate))

    def is_hidden(self, block: Block, tx: Tx) -> bool:
        # Only what the truth lists (the tracked accounts' rows): other transactions are left alone.
        if not any(r.owner in self._tracked or r.receiver in self._tracked for r in tx.rows):
            return False
        with self._lock:
            rate = next(r for after, r in reversed(self._rates) if after < block.number)
        if rate <= 0:
            return False
        draw = int.from_bytes(hashlib.sha256(b"hide" + tx.tx_id.encode()).digest()[:8], "big") / 2**64
        return draw < rate

    def view(self) -> dict[str, object]:
        _, stake, _ = self._store.stake_snapshot()
        with self._lock:
            rates = [[after, rate] for after, rate in self._rates]
        hidden = [{"txID": tx.tx_id, "block": block.number} for block, tx in stake if self.is_hidden(block, tx)]
        return {"rates": rates, "hidden": hidden}


def _check_rate(rate: object) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
        raise ValueError("rate must be a number in 0..1")
    return float(rate)


class RequestsApi:
    """The /sim/requests and /sim/hidden routes."""

    def __init__(self, counter: RequestCounter, hidden: HiddenTransactions) -> None:
        self._counter = counter
        self._hidden = hidden

    def handle(self, request: Request) -> Response | None:
        path = request.path.strip("/")
        try:
            if path == "sim/requests" and request.method == "GET":
                return json_response(self._counter.view(request.query.get("client") or None))
            if path == "sim/requests/reset" and request.method == "POST":
                self._counter.reset()
                return json_response({"reset": True})
            if path == "sim/hidden" and request.method == "GET":
                return json_response(self._hidden.view())
            if path == "sim/hidden" and request.method == "POST":
                body = json.loads(request.body or b"{}")
                if not isinstance(body, dict) or "rate" not in body:
                    raise ValueError('the body must be {"rate": r}')
                self._hidden.set_rate(body["rate"])
                return json_response(self._hidden.view())
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        return None
