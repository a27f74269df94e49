"""The /sim/* control endpoints for tests and benchmarks (not part of java-tron).

GET  /sim/status                -> {"head","solid","paused","accounts","block_interval",...}
POST /sim/pause, /sim/resume    -> {"paused": bool}
POST /sim/produce {"count": N}  -> produce N blocks now, even when paused -> {"produced","head","solid"}
GET  /sim/truth[?account=T...]  -> {"head","solid","operations":[...]} (see simulator.truth);
                                   rows a fork removed for good have "status": "orphaned"
GET  /sim/faults                -> settings, suspension state and injected-fault counts by kind
POST /sim/faults {"rate","kinds","suspend_seconds","timeout_seconds","suspended","reset_counts"}
                                -> change any of them (see simulator.faults); answers as GET
GET  /sim/fork                  -> {"rate","max_depth","forks","possible_depth"}
POST /sim/fork {"depth": d}     -> reorganise now, even when paused -> {"depth","replaced","head",...}
POST /sim/fork {"rate","max_depth"} -> change the random fork settings (no fork unless "depth")
GET  /sim/account-state?account=T...[&block=N]
                                -> the account's stake state after block N (default: head), by
                                   java-tron's rules (see `account_state` below for the shape)
POST /sim/submit {"transactions": [{"type": "DelegateResourceContract", "owner_address": "T...",
                  ...contract fields...}, ...], "timestamp": ms (optional)}
                                -> one block with exactly these transactions, even when paused;
                                   400 (nothing produced) if one would be rejected by the chain
GET  /sim/ws                    -> {"clients","drop_every","connections","messages_sent","dropped"}
POST /sim/ws {"drop_every": s}  -> close every /ws connection every s seconds (0 = never)
POST /sim/ws/drop               -> close every /ws connection now -> {"dropped": n}

Errors here are plain HTTP 4xx with {"error": "..."}: this is our API, not java-tron's.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from .addresses import AddressBook, base58_to_hex
from .faults import FaultInjector
from .feed import BlockFeed
from .httpio import Request, Response, json_response
from .model import ADDRESS_FIELDS, CONTRACT_SCHEMAS, contract_value
from .node import SimNode
from .stake_state import DELEGATABLE, RESOURCES, STAKE_CONTRACTS, StakeAccount

MAX_PRODUCE = 100_000


class ControlApi:
    def __init__(self, node: SimNode, faults: FaultInjector | None = None, feed: BlockFeed | None = None) -> None:
        self._node = node
        self._faults = faults
        self._feed = feed
        self._routes: dict[tuple[str, str], Callable[[Request], Response]] = {
            ("GET", "status"): self._status,
            ("POST", "pause"): self._pause,
            ("POST", "resume"): self._resume,
            ("POST", "produce"): self._produce,
            ("GET", "truth"): self._truth,
            ("GET", "fork"): self._fork_view,
            ("GET", "account-state"): self._account_state,
            ("POST", "submit"): self._submit,
            ("POST", "fork"): self._fork,
        }
        if faults is not None:
            self._routes[("GET", "faults")] = lambda request: json_response(faults.view())
            self._routes[("POST", "faults")] = lambda request: json_response(faults.update(**_body(request)))
        if feed is not None:
            self._routes[("GET", "ws")] = lambda request: json_response(feed.view())
            self._routes[("POST", "ws")] = self._ws
            self._routes[("POST", "ws/drop")] = lambda request: json_response({"dropped": feed.drop_all()})

    def handle(self, request: Request) -> Response | None:
        prefix, _, name = request.path.strip("/").partition("/")
        if prefix != "sim":
            return None
        route = self._routes.get((request.method, name))
        if route is None:
            if any(known == name for _, known in self._routes):
                return json_response({"error": f"{request.method} not allowed on /sim/{name}"}, 405)
            return json_response({"error": f"unknown control endpoint /sim/{name}"}, 404)
        try:
            return route(request)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)

    def _status(self, request: Request) -> Response:
        return json_response(self._node.status())

    def _pause(self, request: Request) -> Response:
        self._node.pause()
        return json_response({"paused": True})

    def _resume(self, request: Request) -> Response:
        self._node.resume()
        return json_response({"paused": False})

    def _produce(self, request: Request) -> Response:
        count = _body(request).get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_PRODUCE:
            raise ValueError(f"count must be an integer in 1..{MAX_PRODUCE}")
        self._node.produce(count)
        status = self._node.status()
        return json_response({"produced": count, "head": status["head"], "solid": status["solid"]})

    def _fork_view(self, request: Request) -> Response:
        return json_response(self._node.fork_settings())

    def _fork(self, request: Request) -> Response:
        body = _body(request)
        unknown = set(body) - {"depth", "rate", "max_depth"}
        if unknown:
            raise ValueError(f"unknown fork setting(s) {sorted(unknown)}")
        rate, max_depth, depth = body.get("rate"), body.get("max_depth"), body.get("depth")
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
                raise ValueError("rate must be a number in 0..1")
            self._node.fork_rate = float(rate)
        if max_depth is not None:
            if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
                raise ValueError("max_depth must be an integer >= 1")
            self._node.fork_max_depth = max_depth
        if depth is None:
            return json_response(self._node.fork_settings())
        if isinstance(depth, bool) or not isinstance(depth, int):
            raise ValueError("depth must be an integer")
        result = self._node.fork(depth)
        return json_response({**result, "forks": self._node.forks})

    def _ws(self, request: Request) -> Response:
        assert self._feed is not None  # the route exists only with a feed
        every = _body(request).get("drop_every")
        if isinstance(every, bool) or not isinstance(every, (int, float)):
            raise ValueError("drop_every must be a number of seconds (0 = never)")
        self._feed.set_drop_every(float(every))
        return json_response(self._feed.view())

    def _truth(self, request: Request) -> Response:
        account = request.query.get("account", "").strip()
        if not account:
            return json_response(self._node.truth())
        # Base58 is the documented form; the hex form is accepted for convenience.
        hex_address = account.lower() if len(account) == 42 else base58_to_hex(account)
        return json_response(self._node.truth([hex_address]))

    def _account_state(self, request: Request) -> Response:
        account = request.query.get("account", "").strip()
        if not account:
            raise ValueError("account is required")
        address = to_hex(account)
        heights = self._node.store.heights()
        number = int(request.query["block"]) if request.query.get("block") else heights.head
        block = None if number is None else self._node.store.block(number)
        state = None if number is None else self._node.view.account(address, number)
        if block is None or state is None or number is None:
            return json_response({"error": f"block {number} is not on the chain"}, 404)
        return json_response(account_state(state, number, block.timestamp, self._node.book))

    def _submit(self, request: Request) -> Response:
        body = _body(request)
        items = body.get("transactions")
        if not isinstance(items, list):
            raise ValueError("transactions must be a list of contract objects")
        timestamp = body.get("timestamp")
        if timestamp is not None and (isinstance(timestamp, bool) or not isinstance(timestamp, int)):
            raise ValueError("timestamp must be an integer (ms)")
        block = self._node.submit([contract_from_json(item) for item in items], timestamp)
        heights = self._node.store.heights()
        return json_response(
            {
                "block": block.number,
                "blockID": block.block_id,
                "timestamp": block.timestamp,
                "head": heights.head,
                "solid": heights.solid,
                "transactions": [
                    {
                        "txID": tx.tx_id,
                        "type": tx.contract_type,
                        "unfreeze_amount": tx.info.unfreeze_amount,
                        "withdraw_expire_amount": tx.info.withdraw_expire_amount,
                        "cancel_unfreezeV2_amount": dict(tx.info.cancel_unfreeze or ()),
                    }
                    for tx in block.txs
                ],
            }
        )


def to_hex(address: str) -> str:
    """Base58 (the documented form) or 41-prefixed hex to hex; ValueError otherwise."""
    if len(address) == 42 and address.lower().startswith("41"):
        bytes.fromhex(address)
        return address.lower()
    return base58_to_hex(address)


def contract_from_json(item: object) -> tuple[str, dict[str, object]]:
    """A scripted transaction {"type": ..., <contract fields>} as (type, value with hex addresses)."""
    if not isinstance(item, dict):
        raise ValueError("each transaction must be an object")
    fields = dict(item)
    kind = str(fields.pop("type", ""))
    if kind not in STAKE_CONTRACTS or kind not in CONTRACT_SCHEMAS:
        raise ValueError(f"type must be one of {sorted(STAKE_CONTRACTS)}")
    for key in ADDRESS_FIELDS & fields.keys():
        fields[key] = to_hex(str(fields[key]))
    if fields.get("resource") is not None and fields["resource"] not in RESOURCES:
        raise ValueError(f"resource must be one of {RESOURCES}")
    if not fields.get("owner_address"):
        raise ValueError("owner_address is required")
    return kind, contract_value(kind, **fields)


def account_state(state: StakeAccount, block: int, block_ms: int, book: AddressBook) -> dict[str, object]:
    """The truth for one account after `block` (base58 addresses, every figure present, zeros too).

    - frozenV2: the chain's frozenV2 (stake not delegated out); available = the same figure
      (what may be delegated or unstaked; usage is not simulated);
    - delegated / acquired: delegated_frozenV2_balance_for_* / acquired_delegated_frozenV2_balance_for_*;
    - delegations: the DelegatedResource records per receiver, unlocked and locked apart,
      exactly as getdelegatedresourcev2 lists them (empty records left out) (an expired lock stays until a merge);
      `effective_locked` / `effective_unlocked` treat a lock whose expire time < the next
      block's "now" (this block's timestamp) as unlocked, the way an undelegate would see it;
    - unfrozenV2: every lot; withdrawable = lots with expire time <= this block's timestamp
      (what a withdraw in the next block gets, since its "now" is this block's time);
    - frozenV1: V1 stake per resource with its expire time.
    """
    now = block_ms
    delegations: list[dict[str, object]] = []
    for receiver in state.receivers():
        for locked in (False, True):
            record = state.records.get((receiver, locked))
            if record is None or record.is_empty():
                continue  # stored by unLockExpireResource, but never listed by getdelegatedresourcev2
            delegations.append(
                {
                    "to": book.b58(receiver),
                    "locked": locked,
                    "BANDWIDTH": record.bandwidth,
                    "ENERGY": record.energy,
                    "expire_time_for_bandwidth": record.expire_bandwidth,
                    "expire_time_for_energy": record.expire_energy,
                }
            )
    effective_locked = {r: 0 for r in DELEGATABLE}
    for (_, locked), record in state.records.items():
        if locked:
            for resource in DELEGATABLE:
                if record.expire(resource) >= now:
                    effective_locked[resource] += record.balance(resource)
    delegated = {r: state.delegated_out.get(r, 0) for r in DELEGATABLE}
    return {
        "account": book.b58(state.address),
        "block": block,
        "block_timestamp": block_ms,
        "frozenV2": {r: state.frozen.get(r, 0) for r in RESOURCES},
        "available": {r: state.frozen.get(r, 0) for r in DELEGATABLE},
        "delegated": delegated,
        "effective_locked": effective_locked,
        "effective_unlocked": {r: delegated[r] - effective_locked[r] for r in DELEGATABLE},
        "acquired": {r: state.acquired.get(r, 0) for r in DELEGATABLE},
        "delegations": delegations,
        "to_accounts": [book.b58(a) for a in sorted(state.to_index, key=lambda a: (state.to_index[a], a))],
        "from_accounts": [book.b58(a) for a in sorted(state.from_index, key=lambda a: (state.from_index[a], a))],
        "unfrozenV2": [
            {"type": lot.resource, "unfreeze_amount": lot.amount, "unfreeze_expire_time": lot.expire_ms}
            for lot in state.lots
        ],
        "withdrawable": state.matured(now),
        "frozenV1": {
            r: {"frozen_balance": stake.amount, "expire_time": stake.expire_ms} for r, stake in state.legacy.items()
        },
    }


def _body(request: Request) -> dict[str, object]:
    """The JSON object body ({} when empty); ValueError (-> 400) for anything else."""
    if not request.body.strip():
        return {}
    body = json.loads(request.body)  # json.JSONDecodeError is a ValueError
    if not isinstance(body, dict):
        raise ValueError("the body must be a JSON object")
    return body
