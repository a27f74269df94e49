"""java-tron's account-state endpoints, answered from the replayed state (simulator.state_view).

/wallet/* answer at the head block, /walletsolidity/* at the solidified head, GET and POST alike
(docs/api/http/account/getaccount.md and docs/api/http/stake-v2/*.md in
tronprotocol/documentation-en):

- getaccount {address}: the Account message (protocol/src/main/protos/core/Tron.proto) with
  only the stake fields simulated (no TRX balance, permissions or usage). JsonFormat prints set
  fields in field-number order and omits proto3 defaults; `frozenV2` lists BANDWIDTH, ENERGY and
  TRON_POWER (BANDWIDTH without `type`, a zero amount omitted, so `{}` can appear), `unfrozenV2`
  every lot until it is withdrawn, matured or not. `{}` for an account the chain never saw (here:
  one that neither had opening stake nor took part in a stake transaction).
- getdelegatedresourcev2 {fromAddress, toAddress}: the unlocked record, then the locked one
  (framework/.../core/Wallet.java getDelegatedResourceV2), each only if one of its balances is
  non-zero (nonEmptyResource: unLockExpireResource can store an empty unlocked record); an
  expired lock not yet merged is still listed. `{}` if none.
- getdelegatedresourceaccountindexv2 {value}: `account`, `fromAccounts`, `toAccounts` ordered
  by the time of the last delegate (DelegatedResourceAccountIndexStore.getV2Index).
- getcandelegatedmaxsize {owner_address, type 0|1}: `max_size` = frozenV2 of that resource.
  java-tron also subtracts the resource already used (net/energy usage); the simulator has no
  usage, so the full frozenV2 is delegatable. `{}` when 0.
- getavailableunfreezecount {owner_address}: 32 - pending lots; getcanwithdrawunfreezeamount
  {owner_address, timestamp}: lots with expire time <= timestamp (0 = the head's time).
- getaccountresource {address}: the network's totals and the account's stake limits, by
  framework/.../core/Wallet.java getAccountResource: TotalEnergyLimit / TotalNetLimit are
  mainnet's (the sample in tests/fixtures/tron/mainnet_getaccountresource_TL24LCps.json), the
  weights that sample's plus every simulated account's floor(stake with delegated-out / 1 TRX)
  (FreezeBalanceV2Actuator: addTotalEnergyWeight(newWeight - oldWeight)); EnergyLimit / NetLimit
  are EnergyProcessor.calculateGlobalEnergyLimitV2 / BandwidthProcessor.calculateGlobalNetLimitV2
  of the account's V1 + V2 stake + what it acquired: (long) (stake / 1e6 * ((double) limit /
  weight)). No usage is simulated (no *Used fields).

Addresses follow `visible`: base58 in and out when true, 41-prefixed hex otherwise. An input in
the other form does not decode to a known account, so it answers like an unknown one.
"""

from __future__ import annotations

from typing import Any

from .addresses import AddressBook, base58_to_hex
from .api import NodeError, _int_param, request_params
from .chain import ChainStore
from .httpio import Request, Response, json_response
from .stake_state import MAX_UNFREEZE_LOTS, RESOURCES, StakeAccount
from .state_view import StateView

ROUTES = (
    "getaccount",
    "getdelegatedresourcev2",
    "getdelegatedresourceaccountindexv2",
    "getcandelegatedmaxsize",
    "getavailableunfreezecount",
    "getcanwithdrawunfreezeamount",
    "getaccountresource",
)

# Mainnet's getaccountresource sample (tests/fixtures/tron/mainnet_getaccountresource_TL24LCps.json):
# the network totals the simulated accounts' weights are added to.
TOTAL_ENERGY_LIMIT = 180_000_000_000
TOTAL_NET_LIMIT = 43_200_000_000
BASE_ENERGY_WEIGHT = 16_307_698_552
BASE_NET_WEIGHT = 27_908_390_830
FREE_NET_LIMIT = 600
TRX_PRECISION = 1_000_000


def decode_address(text: object, visible: bool) -> str | None:
    """The hex form of an input address, or None when it is not one in the expected form."""
    if not isinstance(text, str) or not text:
        return None
    if visible:
        try:
            return base58_to_hex(text)
        except ValueError:
            return None
    text = text.lower()
    return text if len(text) == 42 and text.startswith("41") and _is_hex(text) else None


def _is_hex(text: str) -> bool:
    try:
        bytes.fromhex(text)
    except ValueError:
        return False
    return True


class AccountApi:
    def __init__(self, store: ChainStore, view: StateView, book: AddressBook) -> None:
        self._store = store
        self._view = view
        self._book = book

    def handle(self, request: Request) -> Response | None:
        prefix, _, name = request.path.strip("/").partition("/")
        if prefix not in ("wallet", "walletsolidity") or name not in ROUTES:
            return None
        if request.method not in ("GET", "POST"):
            return Response(405, b"Method Not Allowed", "text/plain")
        heights = self._store.heights()
        at = heights.head if prefix == "wallet" else heights.solid
        try:
            params, visible = request_params(request, name)
            return json_response(self._answer(name, params, visible, at))
        except NodeError as exc:
            return json_response({"Error": exc.text})

    def _addr(self, hex_address: str, visible: bool) -> str:
        return self._book.b58(hex_address) if visible else hex_address

    def _state(self, address: str | None, at: int | None) -> StakeAccount | None:
        if address is None or at is None:
            return None
        return self._view.account(address, at)

    def _answer(self, name: str, params: dict[str, Any], visible: bool, at: int | None) -> dict[str, object]:
        if name == "getaccount":
            address = decode_address(params.get("address"), visible)
            state = self._state(address, at)
            return {} if state is None or not self._view.known(state.address, at) else self.account(state, visible)
        if name == "getdelegatedresourcev2":
            source = decode_address(params.get("fromAddress"), visible)
            target = decode_address(params.get("toAddress"), visible)
            state = self._state(source, at)
            if state is None or target is None:
                return {}
            return self.delegated_resources(state, target, visible)
        if name == "getaccountresource":
            return self.account_resource(decode_address(params.get("address"), visible), at)
        if name == "getdelegatedresourceaccountindexv2":
            address = decode_address(params.get("value"), visible)
            state = self._state(address, at)
            return {} if state is None else self.account_index(state, visible)
        state = self._state(decode_address(params.get("owner_address"), visible), at)
        if state is None:
            return {}
        if name == "getcandelegatedmaxsize":
            kind = _int_param(params, "type") if "type" in params else 0
            if kind not in (0, 1):
                raise NodeError("resource type is not BANDWIDTH or ENERGY")
            size = state.available(RESOURCES[kind])
            return {"max_size": size} if size else {}
        if name == "getavailableunfreezecount":
            now = self._head_time(at)
            count = MAX_UNFREEZE_LOTS - state.pending_lots(now)
            return {"count": count} if count else {}
        timestamp = _int_param(params, "timestamp") if "timestamp" in params else 0
        amount = state.matured(timestamp or self._head_time(at))
        return {"amount": amount} if amount else {}

    def _head_time(self, at: int | None) -> int:
        block = None if at is None else self._store.block(at)
        return block.timestamp if block is not None else 0

    def account_resource(self, address: str | None, at: int | None) -> dict[str, object]:
        weights = None if at is None else self._view.network_weights(at)
        if weights is None:
            return {}
        energy_weight = BASE_ENERGY_WEIGHT + weights["ENERGY"]
        net_weight = BASE_NET_WEIGHT + weights["BANDWIDTH"]
        out: dict[str, object] = {"freeNetLimit": FREE_NET_LIMIT}
        state = self._state(address, at)
        if state is not None and self._view.known(state.address, at):
            for resource, limit, weight, key in (
                ("BANDWIDTH", TOTAL_NET_LIMIT, net_weight, "NetLimit"),
                ("ENERGY", TOTAL_ENERGY_LIMIT, energy_weight, "EnergyLimit"),
            ):
                legacy = state.legacy.get(resource)
                stake = state.frozen.get(resource, 0) + state.acquired.get(resource, 0)
                stake += legacy.amount if legacy else 0
                # calculateGlobal*LimitV2: double stake weight times the double ratio, cast to long
                units = int((stake / TRX_PRECISION) * (limit / weight)) if weight else 0
                _put(out, key, units)
        out.update(
            {
                "TotalNetLimit": TOTAL_NET_LIMIT,
                "TotalNetWeight": net_weight,
                "TotalEnergyLimit": TOTAL_ENERGY_LIMIT,
                "TotalEnergyWeight": energy_weight,
            }
        )
        return out

    # -- renderings (also used by the TronGrid /v1/accounts/{a} route) ------------------------

    def account(self, state: StakeAccount, visible: bool) -> dict[str, object]:
        out: dict[str, object] = {"address": self._addr(state.address, visible)}
        v1_bandwidth = state.legacy.get("BANDWIDTH")
        if v1_bandwidth is not None:
            out["frozen"] = [{"frozen_balance": v1_bandwidth.amount, "expire_time": v1_bandwidth.expire_ms}]
        resource: dict[str, object] = {}
        v1_energy = state.legacy.get("ENERGY")
        if v1_energy is not None:
            resource["frozen_balance_for_energy"] = {
                "frozen_balance": v1_energy.amount,
                "expire_time": v1_energy.expire_ms,
            }
        _put(resource, "delegated_frozenV2_balance_for_energy", state.delegated_out.get("ENERGY", 0))
        _put(resource, "acquired_delegated_frozenV2_balance_for_energy", state.acquired.get("ENERGY", 0))
        if resource:
            out["account_resource"] = resource
        if state.frozen:
            entries: list[dict[str, object]] = []
            for name in RESOURCES:
                entry: dict[str, object] = {} if name == "BANDWIDTH" else {"type": name}
                _put(entry, "amount", state.frozen.get(name, 0))
                entries.append(entry)
            out["frozenV2"] = entries
        if state.lots:
            lots: list[dict[str, object]] = []
            for lot in state.lots:
                item: dict[str, object] = {} if lot.resource == "BANDWIDTH" else {"type": lot.resource}
                _put(item, "unfreeze_amount", lot.amount)
                _put(item, "unfreeze_expire_time", lot.expire_ms)
                lots.append(item)
            out["unfrozenV2"] = lots
        _put(out, "delegated_frozenV2_balance_for_bandwidth", state.delegated_out.get("BANDWIDTH", 0))
        _put(out, "acquired_delegated_frozenV2_balance_for_bandwidth", state.acquired.get("BANDWIDTH", 0))
        return out

    def delegated_resources(self, state: StakeAccount, target: str, visible: bool) -> dict[str, object]:
        items: list[dict[str, object]] = []
        for locked in (False, True):
            record = state.records.get((target, locked))
            if record is None or record.is_empty():
                continue  # Wallet.getDelegatedResourceV2 lists only nonEmptyResource records
            item: dict[str, object] = {"from": self._addr(state.address, visible), "to": self._addr(target, visible)}
            _put(item, "frozen_balance_for_bandwidth", record.bandwidth)
            _put(item, "frozen_balance_for_energy", record.energy)
            _put(item, "expire_time_for_bandwidth", record.expire_bandwidth)
            _put(item, "expire_time_for_energy", record.expire_energy)
            items.append(item)
        return {"delegatedResource": items} if items else {}

    def account_index(self, state: StakeAccount, visible: bool) -> dict[str, object]:
        out: dict[str, object] = {"account": self._addr(state.address, visible)}
        for key, index in (("fromAccounts", state.from_index), ("toAccounts", state.to_index)):
            ordered = sorted(index, key=lambda address: (index[address], address))
            if ordered:
                out[key] = [self._addr(address, visible) for address in ordered]
        return out


def _put(target: dict[str, object], key: str, value: int) -> None:
    if value:
        target[key] = value
