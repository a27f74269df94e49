"""A client for the java-tron HTTP API (a self-run node, TronGrid, or the project's simulator).

Requests go over urllib3 (ledger/chain/transport.py says why), through the proxy the environment
names if any (`HTTPS_PROXY`, `NO_PROXY`..., see there); the seam: tests and tools may pass any
`httpx.BaseTransport` instead. Everything the node can do wrong is turned into one of two
exceptions, so callers have exactly two cases to handle: `NodeUnavailable` (transient: retry
later, maybe after `retry_after`) and `NodeError` (the node answered HTTP 200 with an `Error`
key, e.g. a bad parameter).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import orjson

from ledger.chain.skim import skim_block_range, skim_infos
from ledger.chain.transport import HttpxSender, Proxies, Sender, TransportFailure, TransportTimeout, Urllib3Sender
from ledger.chain.values import NodeError
from ledger.config import Settings
from ledger.coordination.backoff import announced_wait, backoff
from ledger.coordination.budget import BudgetExhausted, BudgetLimits, Priority, RequestBudget, create_budget
from ledger.ops.logs import Redactor
from ledger.ops.metrics import Counters

log = logging.getLogger(__name__)

# TronGrid's rate limiting answers 403, 429 or 503 with "suspended for N s" in the body.
_RATE_LIMIT_STATUSES = frozenset({403, 429, 503})
_SUSPENDED = re.compile(r"suspended for\s*(\d+)\s*s", re.IGNORECASE)
MAX_BLOCKS_PER_REQUEST = 100  # getblockbylimitnext: 0 < end - start <= 100


class NodeUnavailable(RuntimeError):
    """A transient failure: timeout, connection error, 5xx, rate limiting, unparseable reply."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RateLimited(NodeUnavailable):
    """The node refused the request for its rate limit (HTTP 429, or TronGrid's 403 suspension)."""


class RouteMissing(NodeUnavailable):
    """HTTP 404: the node does not serve this route (e.g. no solidity API); asking again won't help."""


class BudgetUnavailable(NodeUnavailable):
    """The shared request budget will not allow a request soon (day used up, long suspension):
    not retried here, the caller's backoff waits `retry_after`."""


class TronNode:
    def __init__(
        self,
        base_url: str,
        *,
        solidity_url: str = "",
        api_key: str = "",
        timeout: float = 10.0,
        requests_per_second: float = 0.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        proxies: Proxies | None = None,
        counters: Counters | None = None,
        budget: RequestBudget | None = None,
        priority: Priority = Priority.BACKGROUND,
        caller: str = "",
    ) -> None:
        """`caller` labels this client's requests in the counters (ingest, jobs, legacy, fallback,
        shadow, ...): the monitor tells the requests reads cause from the listener's.

        `budget` is the request budget shared by every process (ledger/coordination/budget.py), spent as a
        caller of class `priority` (background unless told: a client that forgot to say must not
        take the live path's reserve; without one, a budget of this process alone, which still
        makes every thread wait out a rate limit); `requests_per_second` is an extra cap for this
        client alone (e.g. a backfill's --rate), a second budget of this process. The budgets are
        the only throttle: the client adds none of its own. `proxies` (scheme -> proxy URL, "no" ->
        the NO_PROXY list) says which base URLs the urllib3 path reaches through a proxy; default:
        the environment's."""
        if not base_url:
            raise ValueError("TRON_NODE_URL is not set")
        headers = {"Content-Type": "application/json"}
        if api_key:
            headers["TRON-PRO-API-KEY"] = api_key
        self._base = base_url.rstrip("/")
        self._solidity = (solidity_url or base_url).rstrip("/")
        self._sender: Sender = (
            Urllib3Sender(headers, timeout, (self._base, self._solidity), proxies)
            if transport is None
            else HttpxSender(headers, timeout, transport)
        )
        self._retries = retries
        self._failures = 0
        self._lock = threading.Lock()
        self._counters = counters  # requests per endpoint and outcome, for /metrics
        self._caller = caller
        self._budget = budget or create_budget("", BudgetLimits(per_second=0, per_day=0))
        self._cap = (
            create_budget("", BudgetLimits(per_second=requests_per_second, burst=1, per_day=0, reserve_fraction=0))
            if requests_per_second > 0
            else None
        )
        self.priority = priority
        # The key must never reach a log line, an error or an API body, whatever a proxy echoes,
        # escaped or not.
        self.redact = Redactor((api_key,))

    def close(self) -> None:
        self._sender.close()
        self._budget.close()

    # -- endpoints -----------------------------------------------------------------------------

    def head_header(self) -> dict[str, Any]:
        """The head block's header only: `getblock` with `detail` false (its default) and an empty
        `id_or_num` answers the latest block without `transactions` (java-tron docs:
        docs/api/http/block-and-tx-query/getblock.md), a few hundred bytes where `getnowblock`
        sends the whole block."""
        return self._object(self._call(self._base, "/wallet/getblock", {"detail": False}), "getblock")

    def block_header(self, num: int) -> dict[str, Any] | None:
        """Block `num`'s header only (getblock, detail false); None if the node has no such block."""
        reply = self._object(self._call(self._base, "/wallet/getblock", {"id_or_num": str(num)}), "getblock")
        return reply or None

    def solid_block_number(self) -> int:
        """The solidified head; -1 when the node has none to show (`{}`: a young chain, or a
        solidity node catching up). Records then stay pending until it answers."""
        block = self._object(
            self._call(self._solidity, "/walletsolidity/getblock", {"detail": False}), "solid getblock"
        )
        return block_number(block) if block else -1

    def block(self, num: int) -> dict[str, Any] | None:
        """The block, or None if the node has no such block (it answers `{}`)."""
        reply = self._object(self._call(self._base, "/wallet/getblockbynum", {"num": num}), "getblockbynum")
        return reply or None

    def blocks(self, start: int, end: int, *, skim: bool = False) -> list[dict[str, Any]]:
        """Blocks start..end-1 (end exclusive, at most 100), as the node returns them; `skim`: as
        ledger.chain.skim decodes them (only the transactions the parser may not drop)."""
        if not 0 < end - start <= MAX_BLOCKS_PER_REQUEST:
            raise ValueError(f"block range {start}..{end} must hold 1..{MAX_BLOCKS_PER_REQUEST} blocks")
        body = {"startNum": start, "endNum": end}
        decode = skim_block_range if skim else orjson.loads
        reply = self._object(
            self._call(self._base, "/wallet/getblockbylimitnext", body, decode=decode), "getblockbylimitnext"
        )
        blocks = reply.get("block", [])
        if not isinstance(blocks, list):
            raise NodeUnavailable("getblockbylimitnext: 'block' is not a list")
        return blocks

    def transaction_infos(self, num: int, *, skim: bool = False) -> Any:
        """The raw reply of gettransactioninfobyblocknum (a bare JSON array); `skim`: read as far as
        the ids (ledger.chain.skim.skim_infos; `index_infos` reads either)."""
        decode = skim_infos if skim else orjson.loads
        return self._call(self._base, "/wallet/gettransactioninfobyblocknum", {"num": num}, decode=decode)

    # -- account state (opening positions; java-tron docs/api/http/stake-v2 and account/getaccount.md) ---

    def account(self, address: str, *, solid: bool = True) -> dict[str, Any]:
        """getaccount (`{}` when the account does not exist); `solid`: as of the solidified head."""
        return self._object(self._state_call("getaccount", {"address": address, "visible": True}, solid), "getaccount")

    def delegated_index(self, address: str, *, solid: bool = True) -> dict[str, Any]:
        """getdelegatedresourceaccountindexv2: `toAccounts` are the receivers of its delegations."""
        return self._object(
            self._state_call("getdelegatedresourceaccountindexv2", {"value": address, "visible": True}, solid),
            "getdelegatedresourceaccountindexv2",
        )

    def delegated_resources(self, from_address: str, to_address: str, *, solid: bool = True) -> dict[str, Any]:
        """getdelegatedresourcev2 of one pair: up to two records, the unlocked and the locked one."""
        body = {"fromAddress": from_address, "toAddress": to_address, "visible": True}  # camelCase, as java-tron
        return self._object(self._state_call("getdelegatedresourcev2", body, solid), "getdelegatedresourcev2")

    def account_resource(self, address: str, *, solid: bool = True) -> dict[str, Any]:
        """getaccountresource: the account's resource limits and the network's totals
        (TotalEnergyLimit / TotalEnergyWeight / TotalNetLimit / TotalNetWeight)."""
        return self._object(
            self._state_call("getaccountresource", {"address": address, "visible": True}, solid), "getaccountresource"
        )

    def account_transactions(self, address: str, params: dict[str, str]) -> dict[str, Any]:
        """One page of TronGrid's `GET /v1/accounts/{address}/transactions` (the key header goes
        with every request, the `next` link would not carry it; rate limits as for every call)."""
        reply = self._call(self._base, f"/v1/accounts/{address}/transactions", None, params=params)
        return self._object(reply, "v1/accounts/transactions")

    def _state_call(self, name: str, body: dict[str, Any], solid: bool) -> Any:
        if solid:
            return self._call(self._solidity, f"/walletsolidity/{name}", body)
        return self._call(self._base, f"/wallet/{name}", body)

    # -- plumbing ------------------------------------------------------------------------------

    def _object(self, reply: Any, what: str) -> dict[str, Any]:
        if not isinstance(reply, dict):
            raise NodeUnavailable(f"{what}: expected a JSON object, got {type(reply).__name__}")
        return reply

    def _acquire(self) -> None:
        if self._cap is not None:
            self._cap.acquire(Priority.LIVE)  # this client's own cap: no classes to keep apart
        try:
            self._budget.acquire(self.priority)
        except BudgetExhausted as exc:
            raise BudgetUnavailable(str(exc), exc.retry_after) from None

    def _call(
        self,
        base: str,
        path: str,
        body: dict[str, Any] | None,
        params: dict[str, str] | None = None,
        decode: Callable[[bytes], Any] = orjson.loads,
    ) -> Any:
        """One request, retried a few times on transient failures (every call here is a read).

        Retrying here, per request, matters: a catch-up batch makes dozens of requests, and with a
        flaky node the chance that all of them succeed at once can be nil.
        """
        for attempt in range(self._retries + 1):
            try:
                reply = self._call_once(base, path, body, params, decode)
            except (RouteMissing, BudgetUnavailable):
                raise
            except (NodeUnavailable, NodeError) as exc:
                self._note_failure(exc)
                # An `Error` reply to a well-formed read is the node's trouble (java-tron answers
                # BadItemException and the like while it is busy): worth another try as well.
                if attempt == self._retries:
                    raise
                announced = announced_wait(exc)
                # Rate limited: TronGrid extends the suspension for every request made during it,
                # so every thread of every process waits it out (plus a margin, as the announced
                # seconds are rounded), not just this one: the budget holds them all.
                delay = backoff(
                    attempt + 1, base=0.2, cap=5.0, jitter=(0.5, 1.5), at_least=announced + 0.5 if announced else 0.0
                )
                if announced:
                    self._budget.suspend(delay)
                time.sleep(delay)
            else:
                self._note_success()
                return reply
        raise AssertionError("unreachable")

    def _note_failure(self, exc: Exception) -> None:
        # One line per burst of failures, and one when it ends: a flaky node must not flood the log.
        with self._lock:
            self._failures += 1
            first = self._failures == 1
        if first:
            log.warning("node: %s; retrying (more failures in this burst are not logged)", exc)

    def _note_success(self) -> None:
        if not self._failures:
            return
        with self._lock:
            failures, self._failures = self._failures, 0
        if failures:
            log.warning("node: answering again after %d failed request(s)", failures)

    def _call_once(
        self,
        base: str,
        path: str,
        body: dict[str, Any] | None,
        params: dict[str, str] | None,
        decode: Callable[[bytes], Any],
    ) -> Any:
        self._acquire()
        with self._measured(path):
            # TronGrid's v1 REST routes are GETs (params); the wallet API takes a JSON body.
            method = "GET" if params is not None else "POST"
            content = orjson.dumps(body) if body is not None else None
            try:
                status, raw = self._sender.send(method, base, path, content, params)
            except TransportTimeout as exc:
                raise NodeUnavailable(f"{path}: timed out ({exc})") from None
            except TransportFailure as exc:
                raise NodeUnavailable(self.redact(f"{path}: {exc}")) from None
            if status == 200:
                try:
                    reply = decode(raw)
                except orjson.JSONDecodeError as exc:
                    shown = self.redact(raw.decode("utf-8", "replace"))[
                        :120
                    ]  # redacted whole: a cut could split the key
                    raise NodeUnavailable(self.redact(f"{path}: malformed JSON ({exc}): {shown!r}")) from None
                if isinstance(reply, dict) and "Error" in reply:
                    raise NodeError(self.redact(f"{path}: {reply['Error']}"))
                return reply
            # Only an error reply is read as text (a block range is up to megabytes: no copy of it).
            text = self.redact(raw.decode("utf-8", "replace"))
            if status in _RATE_LIMIT_STATUSES:
                match = _SUSPENDED.search(text)
                retry_after = float(match.group(1)) if match else None
                # A 503 without TronGrid's "suspended" is an overloaded node, not a rate limit.
                kind = RateLimited if status != 503 or match else NodeUnavailable
                raise kind(f"{path}: rate limited (HTTP {status}): {text[:200]}", retry_after)
            if status == 404:
                raise RouteMissing(f"{path}: HTTP 404: {text[:200]}")
            raise NodeUnavailable(f"{path}: HTTP {status}: {text[:200]}")

    @contextmanager
    def _measured(self, path: str) -> Iterator[None]:
        """Count the request and time it, by endpoint and outcome (ok: a reply was returned)."""
        if self._counters is None:
            yield
            return
        start = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            labels = {"endpoint": _endpoint(path), "outcome": outcome}
            counted = {**labels, "caller": self._caller} if self._caller else labels
            self._counters.inc("ledger_node_requests_total", counted)
            self._counters.observe("ledger_node_request_duration_seconds", time.perf_counter() - start, labels)


def _endpoint(path: str) -> str:
    """The metric label of a path: TronGrid's account routes without the address (one series, not one per account)."""
    if path.startswith("/v1/accounts/"):
        parts = path.split("/")
        parts[3] = "{address}"
        return "/".join(parts)
    return path


def block_number(block: dict[str, Any]) -> int:
    """The number in a block's header; NodeUnavailable if the block is `{}` or malformed."""
    try:
        number = block["block_header"]["raw_data"]["number"]
    except (KeyError, TypeError):
        raise NodeUnavailable("block without block_header.raw_data.number (empty reply?)") from None
    if not isinstance(number, int) or isinstance(number, bool):
        raise NodeUnavailable(f"block number {number!r} is not an integer")
    return number


# Who makes node requests, the `caller` label of ledger_node_requests_total: the listener following
# the chain (ingest) and its backfills, the workers' reconciliation jobs, the CLI, and the web's
# three paths that reads cause (legacy, fallback, shadow).
INGEST, BACKFILL, JOBS, CLI = "ingest", "backfill", "jobs", "cli"
LEGACY, FALLBACK, SHADOW = "legacy", "fallback", "shadow"
READ_CALLERS = (LEGACY, FALLBACK, SHADOW)


def budget_limits(settings: Settings) -> BudgetLimits:
    return BudgetLimits(
        per_second=settings.tron_requests_per_second,
        burst=settings.tron_requests_burst,
        per_day=settings.tron_requests_per_day,
        reserve_fraction=settings.tron_budget_reserve_fraction,
        daily_reserve_fraction=settings.tron_budget_daily_reserve_fraction,
    )


def node_from_settings(
    settings: Settings,
    rate: float | None = None,
    counters: Counters | None = None,
    *,
    priority: Priority,
    retries: int = 3,
    timeout: float | None = None,
    budget_wait: float = 30.0,
    caller: str = "",
) -> TronNode:
    """The node client as the settings describe it (`rate`: an extra per-process cap, e.g. a backfill's --rate;
    `counters` collects request metrics), drawing on the shared request budget as a caller of class
    `priority` (no default: each caller says whether it is the live path). A client waiting on the
    answer (the web's legacy path) passes fewer `retries`, a shorter `timeout` and `budget_wait`;
    `caller` labels its requests in the counters (NODE_CALLERS)."""
    limits = budget_limits(settings)
    return TronNode(
        settings.tron_node_url,
        solidity_url=settings.solidity_url,
        api_key=settings.tron_api_key,
        timeout=settings.tron_timeout_seconds if timeout is None else timeout,
        requests_per_second=rate or 0.0,
        retries=retries,
        counters=counters,
        budget=create_budget(settings.budget_redis_url, limits, max_wait=budget_wait),
        priority=priority,
        caller=caller,
    )
