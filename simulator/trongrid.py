"""TronGrid's v1 account routes over the simulated chain (GET only, like TronGrid).

GET /v1/accounts/{address}/transactions (TRON-US/trongrid README; developers.tron.network
"Get transaction info by account address"): the canonical transactions whose owner, receiver
or `to` address is the account (base58 or hex in the path), as TronGrid records: the node's
transaction with `ret[{contractRet, fee}]`, the TransactionInfo amounts at the top level
(`unfreeze_amount`, `withdraw_expire_amount`, `cancel_unfreezeV2_amount`), `net_usage`,
`net_fee`, `energy_usage`, `energy_fee`, `energy_usage_total`, `blockNumber`,
`block_timestamp`, `internal_transactions`; raw_data addresses in hex, and V1 freeze/unfreeze
with the numeric `resource` plus `resource_type`/`resource_value` TronGrid adds. Parameters:
- `limit` (default 20, at most 200; more -> HTTP 400 with an empty body, as probed on TronGrid),
- `order_by=block_timestamp,desc` (default) or `block_timestamp,asc`,
- `min_timestamp` / `max_timestamp` (ms, inclusive; `min_block_timestamp` / `max_block_timestamp`
  are aliases), `only_confirmed` (blocks <= the solidified head) / `only_unconfirmed`,
- `fingerprint`: the cursor from `meta.fingerprint`; `meta.links.next` repeats the request with
  it. Both are absent on the last page. The other parameters must stay the same between pages
  (the cursor carries the order and the filters; a changed one is answered with HTTP 400).
`only_to` / `only_from` / `search_internal` are accepted and ignored. The TRON-PRO-API-KEY header
is accepted and not checked, as on the rest of the simulator; fault injection applies here too.

GET /v1/accounts/{address}: `{"data": [account], "success": true, "meta": {...}}` with the
getaccount rendering in hex (`data` empty for an unknown account).
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import urlencode

from .account_api import AccountApi
from .addresses import base58_to_hex
from .chain import ChainStore
from .httpio import Request, Response, json_response
from .model import RESOURCE_CODES, Block, Tx
from .render import Renderer
from .state_view import StateView

MAX_LIMIT = 200
DEFAULT_LIMIT = 20
PARTY_FIELDS = ("owner_address", "receiver_address", "to_address")
FILTERS = ("only_confirmed", "only_unconfirmed", "min_timestamp", "max_timestamp")


class TronGridApi:
    def __init__(self, store: ChainStore, view: StateView, renderer: Renderer, accounts: AccountApi) -> None:
        self._store = store
        self._view = view
        self._render = renderer
        self._accounts = accounts

    def handle(self, request: Request) -> Response | None:
        parts = request.path.strip("/").split("/")
        if len(parts) < 3 or parts[:2] != ["v1", "accounts"] or len(parts) > 4:
            return None
        if len(parts) == 4 and parts[3] != "transactions":
            return None
        if request.method != "GET":
            return Response(405, b"", "text/plain")
        try:
            address = parts[2].lower() if parts[2].lower().startswith("41") else base58_to_hex(parts[2])
            bytes.fromhex(address)
        except ValueError:
            return json_response({"success": False, "error": f"invalid address {parts[2]}", "statusCode": 400}, 400)
        if len(parts) == 3:
            return self._account(address)
        try:
            return self._transactions(request, address, parts[2])
        except _BadRequest as exc:
            return Response(400, exc.body, "application/json; charset=utf-8")

    def _account(self, address: str) -> Response:
        head = self._store.heights().head
        state = self._view.account(address, head) if head is not None else None
        known = state is not None and self._view.known(address, head)
        data = [self._accounts.account(state, visible=False)] if known and state is not None else []
        return json_response({"data": data, "success": True, "meta": {"at": _now_ms(), "page_size": len(data)}})

    def _transactions(self, request: Request, address: str, shown: str) -> Response:
        query = request.query
        limit = _int(query, "limit", DEFAULT_LIMIT)
        if not 0 < limit <= MAX_LIMIT:
            raise _BadRequest(b"")
        order = query.get("order_by", "block_timestamp,desc").replace(" ", "")
        if order not in ("block_timestamp,desc", "block_timestamp,asc"):
            raise _BadRequest(_error(f"unsupported order_by {order}"))
        descending = order.endswith("desc")
        low = _int(query, "min_timestamp", _int(query, "min_block_timestamp", 0))
        high = _int(query, "max_timestamp", _int(query, "max_block_timestamp", 2**63 - 1))
        confirmed, unconfirmed = _bool(query, "only_confirmed"), _bool(query, "only_unconfirmed")
        signature = [order, low, high, confirmed, unconfirmed]
        after: tuple[int, int] | None = None
        if query.get("fingerprint"):
            position = _decode_cursor(query["fingerprint"])
            if position[2:] != signature:
                raise _BadRequest(_error("fingerprint does not match the other parameters"))
            after = (int(position[0]), int(position[1]))
        heights = self._store.heights()
        if heights.head is None:
            return self._page([], None, request, shown, query, limit)
        solid = heights.solid if heights.solid is not None else self._store.start_block - 1
        blocks = self._store.blocks(self._store.start_block, heights.head + 1)
        if confirmed:
            blocks = [b for b in blocks if b.number <= solid]
        if unconfirmed:
            blocks = [b for b in blocks if b.number > solid]
        found: list[tuple[Block, int, Tx]] = []
        for block in reversed(blocks) if descending else blocks:
            if not low <= block.timestamp <= high:
                continue
            indexed = list(enumerate(block.txs))
            for index, tx in reversed(indexed) if descending else indexed:
                if not any(tx.value.get(key) == address for key in PARTY_FIELDS):
                    continue
                if after is not None and (
                    (block.number, index) >= after if descending else (block.number, index) <= after
                ):
                    continue
                found.append((block, index, tx))
                if len(found) > limit:
                    break
            if len(found) > limit:
                break
        more = len(found) > limit
        page = found[:limit]
        cursor = None
        if more:
            last_block, last_index, _ = page[-1]
            cursor = _encode_cursor([last_block.number, last_index, *signature])
        return self._page([self.record(b, tx) for b, _, tx in page], cursor, request, shown, query, limit)

    def _page(
        self,
        data: list[dict[str, object]],
        cursor: str | None,
        request: Request,
        shown: str,
        query: dict[str, str],
        limit: int,
    ) -> Response:
        meta: dict[str, object] = {"at": _now_ms()}
        if cursor is not None:
            meta["fingerprint"] = cursor
            host = request.headers.get("host", "127.0.0.1")
            params = {**query, "fingerprint": cursor, "limit": str(limit)}
            meta["links"] = {"next": f"http://{host}/v1/accounts/{shown}/transactions?{urlencode(params)}"}
        meta["page_size"] = len(data)
        return json_response({"data": data, "success": True, "meta": meta})

    def record(self, block: Block, tx: Tx) -> dict[str, object]:
        """One TronGrid transaction record (see the mainnet_trongrid_v1_tx_* samples)."""
        node = self._render.tx(tx, visible=False)
        raw = dict(node["raw_data"])  # type: ignore[call-overload]
        if tx.contract_type in ("FreezeBalanceContract", "UnfreezeBalanceContract"):
            contract = dict(raw["contract"][0])
            parameter = dict(contract["parameter"])
            value = dict(parameter["value"])
            name = str(value.get("resource", "BANDWIDTH"))
            # TronGrid prints the V1 resource as a number and adds its name and value.
            value = {
                "resource": RESOURCE_CODES[name],
                "resource_type": name,
                "resource_value": RESOURCE_CODES[name],
            } | {k: v for k, v in value.items() if k != "resource"}
            parameter["value"] = value
            contract["parameter"] = parameter
            raw["contract"] = [contract]
        info, receipt = tx.info, tx.info.receipt
        out: dict[str, object] = {"ret": [{"contractRet": tx.contract_ret, "fee": info.fee}]}
        if info.unfreeze_amount:
            out["unfreeze_amount"] = info.unfreeze_amount
        if info.withdraw_expire_amount:
            out["withdraw_expire_amount"] = info.withdraw_expire_amount
        if info.cancel_unfreeze is not None:
            out["cancel_unfreezeV2_amount"] = [{"key": k, "value": v} for k, v in info.cancel_unfreeze]
        out["signature"] = node["signature"]
        out["txID"] = tx.tx_id
        out["net_usage"] = receipt.get("net_usage", 0)
        out["raw_data_hex"] = node["raw_data_hex"]
        out["net_fee"] = receipt.get("net_fee", 0)
        out["energy_usage"] = receipt.get("energy_usage", 0)
        out["blockNumber"] = block.number
        out["block_timestamp"] = block.timestamp
        out["energy_fee"] = receipt.get("energy_fee", 0)
        out["energy_usage_total"] = receipt.get("energy_usage_total", 0)
        out["raw_data"] = raw
        out["internal_transactions"] = []
        return out


class _BadRequest(Exception):
    def __init__(self, body: bytes) -> None:
        super().__init__(body)
        self.body = body


def _error(text: str) -> bytes:
    return json.dumps({"success": False, "error": text, "statusCode": 400}).encode()


def _int(query: dict[str, str], name: str, default: int) -> int:
    text = query.get(name)
    if text is None or text == "":
        return default
    try:
        return int(text)
    except ValueError:
        raise _BadRequest(_error(f"{name} must be an integer")) from None


def _bool(query: dict[str, str], name: str) -> bool:
    return query.get(name, "").strip().lower() == "true"


def _encode_cursor(items: list[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(items, separators=(",", ":")).encode()).decode().rstrip("=")


def _decode_cursor(text: str) -> list[Any]:
    try:
        items = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    except ValueError:
        raise _BadRequest(_error("invalid fingerprint")) from None
    if not isinstance(items, list) or len(items) != 7:
        raise _BadRequest(_error("invalid fingerprint"))
    return items


def _now_ms() -> int:
    return int(time.time() * 1000)
