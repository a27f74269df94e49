"""Stake made by smart contracts (TIP-467): changes account state with no stake transaction in
the block feed, so only state reconciliation can see it (it is drift, by design).

In java-tron a contract's freezeBalanceV2/delegateResource opcodes (actuator/src/main/java/org/tron/
core/vm/program/Program.java) appear only as `internal_transactions` of a TriggerSmartContract's
TransactionInfo; an indexer reading `raw_data.contract[0]` never sees them. Here the effect is
attached to a block: the state view (simulator.state_view) executes it after the block's own
transactions, by the same actuator rules, and nothing else (blocks, truth, TronGrid records)
shows it.

POST /sim/contract-stake {"account": T..., "resource": "ENERGY", "amount": sun}
    -> produce one block now (even when paused) carrying that freeze for `account`
       -> {"block", "blockID", "account", "resource", "amount"}
GET  /sim/contract-stake -> {"stakes": [{"block", "blockID", "account", "resource", "amount"}, ...]}

An effect is bound to its block's id: a fork that replaces the block drops it, like any state
change of a block that left the chain.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable

from .addresses import base58_to_hex
from .httpio import Request, Response, json_response
from .model import Block

Effect = tuple[str, dict[str, object]]  # (contract type, contract value with hex addresses)


class ContractStakes:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_block: dict[str, list[Effect]] = {}
        self._pending: tuple[int, list[Effect]] | None = None  # for the block about to be made

    def effects(self, block: Block) -> list[Effect]:
        """What the state view executes after `block`'s transactions."""
        with self._lock:
            found = self._by_block.get(block.block_id)
            if found is None and self._pending is not None and self._pending[0] == block.number:
                return list(self._pending[1])
            return list(found or ())

    def add(self, produce: Callable[[], Block | None], number: int, effect: Effect) -> Block:
        """Produce block `number` (via `produce`) with `effect` attached."""
        with self._lock:
            self._pending = (number, [effect])
        try:
            block = produce()
        finally:
            with self._lock:
                pending, self._pending = self._pending, None
        if block is None or block.number != number or pending is None:
            raise ValueError("the block for the contract stake was not produced as expected")
        with self._lock:
            self._by_block.setdefault(block.block_id, []).append(effect)
        return block


class ContractStakeApi:
    def __init__(
        self,
        stakes: ContractStakes,
        produce: Callable[[], Block | None],
        head: Callable[[], int | None],
    ) -> None:
        self._stakes = stakes
        self._produce = produce
        self._head = head
        self._made: list[dict[str, object]] = []

    def handle(self, request: Request) -> Response | None:
        if request.path.strip("/") != "sim/contract-stake":
            return None
        if request.method == "GET":
            return json_response({"stakes": self._made})
        if request.method != "POST":
            return json_response({"error": "GET or POST"}, 405)
        try:
            body = json.loads(request.body or b"{}")
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            account = str(body.get("account", ""))
            resource = body.get("resource", "ENERGY")
            amount = body.get("amount")
            if resource not in ("BANDWIDTH", "ENERGY", "TRON_POWER"):
                raise ValueError("resource must be BANDWIDTH, ENERGY or TRON_POWER")
            if isinstance(amount, bool) or not isinstance(amount, int) or amount < 1_000_000:
                raise ValueError("amount must be an integer >= 1000000 (1 TRX, the chain's minimum)")
            owner = base58_to_hex(account)
        except ValueError as exc:
            return json_response({"error": str(exc)}, 400)
        head = self._head()
        value: dict[str, object] = {"owner_address": owner, "frozen_balance": amount, "resource": resource}
        block = self._stakes.add(self._produce, (head or 0) + 1, ("FreezeBalanceV2Contract", value))
        made = {
            "block": block.number,
            "blockID": block.block_id,
            "account": account,
            "resource": resource,
            "amount": amount,
        }
        self._made.append(made)
        return json_response(made)
