"""A skipping decoder for block ranges: Python objects only for the transactions that can matter.

A mainnet block holds about 300 transactions and 300 KB of JSON, and nearly all of them are TRC20
calls and TRX transfers that can never give a stake operation. Decoding a whole
`getblockbylimitnext` reply with `orjson.loads` builds every signature, `raw_data_hex` and call
data string of every one of them, only for the parser to look at each transaction's contract type
and drop it. Here msgspec decodes each block's transactions against a schema naming just the fields
the parser reads first (txID, ret, and raw_data.contract's type, type_url and value, the value kept
as raw JSON): everything else is skipped in C without building an object. A transaction is dropped
when that first look shows the parser would drop it silently: exactly one contract, a non-empty
contract type that is not a stake contract, and a type_url that does not claim one
(`parser._read_stake`'s own rules). The rest become the same dicts `orjson.loads` would have made
for the fields the parser reads, and `parser.parse_block` receives their positions in the block, so
operations keep their `tx_index`.

Whatever does not fit the schema exactly (a field of another type, a missing contract list, a
transaction that is not an object, a block with a key java-tron does not print: what the parser
reports as an issue or an error) sends the whole reply back to `orjson.loads` and the ordinary
path: one pass of msgspec over the reply decides, so a reply the node got right costs a single
scan. A skimmed block therefore parses to exactly what the full block parses to, operations and
issues alike, for any tracked set: tests/test_skim.py checks that property over generated blocks
and the real samples.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, cast

import msgspec
import orjson

from ledger.chain.parser import STAKE_CONTRACTS, SkimmedBlock, parse_transaction_infos
from ledger.chain.values import ChainDataError, hex_id

_STAKE_URLS = frozenset(f"protocol.{name}" for name in STAKE_CONTRACTS) | STAKE_CONTRACTS


class _Ret(msgspec.Struct, gc=False):
    contractRet: str | msgspec.UnsetType = msgspec.UNSET  # noqa: N815 - java-tron's field name


class _Parameter(msgspec.Struct, gc=False):
    type_url: str | msgspec.UnsetType = msgspec.UNSET
    value: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET


class _Contract(msgspec.Struct, gc=False):
    type: str | msgspec.UnsetType = msgspec.UNSET
    parameter: _Parameter | msgspec.UnsetType = msgspec.UNSET


class _RawData(msgspec.Struct, gc=False):
    contract: list[_Contract]


class _Tx(msgspec.Struct, kw_only=True, gc=False):
    txID: str | msgspec.UnsetType = msgspec.UNSET  # noqa: N815 - java-tron's field name
    ret: list[_Ret] | msgspec.UnsetType = msgspec.UNSET
    raw_data: _RawData


class _Block(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    blockID: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET  # noqa: N815 - java-tron's field name
    block_header: msgspec.Raw | msgspec.UnsetType = msgspec.UNSET
    transactions: list[_Tx] | msgspec.UnsetType = msgspec.UNSET


class _Reply(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    block: list[_Block] | msgspec.UnsetType = msgspec.UNSET


# One pass over the whole reply: a block with any other key (an `Error`...) is not skimmed.
_REPLY = msgspec.json.Decoder(_Reply)
_LIST = msgspec.json.Decoder(list[msgspec.Raw])


class _Misfit(Exception):
    """Something the skim does not read exactly like the parser: decode that part in full."""


def skim_block_range(raw: bytes) -> Any:
    """A `getblockbylimitnext` reply as `orjson.loads` would return it, except that each block is a
    SkimmedBlock. Whatever does not fit the skim's schema exactly is decoded by `orjson.loads` in
    full instead, which raises orjson.JSONDecodeError for malformed JSON."""
    try:
        reply = _REPLY.decode(raw)
        if isinstance(reply.block, msgspec.UnsetType):
            return {}
        return {"block": [_block(block) for block in reply.block]}
    except (msgspec.MsgspecError, _Misfit):
        return orjson.loads(raw)


def _block(block: _Block) -> SkimmedBlock:
    if isinstance(block.transactions, msgspec.UnsetType):
        out = SkimmedBlock([])
    else:
        kept, indices = _keep(block.transactions)
        out = SkimmedBlock(indices)
    # The keys in java-tron's order; the parser reads them by name.
    if isinstance(block.blockID, msgspec.Raw):
        out["blockID"] = _load(block.blockID)
    if isinstance(block.block_header, msgspec.Raw):
        out["block_header"] = _load(block.block_header)
    if not isinstance(block.transactions, msgspec.UnsetType):
        out["transactions"] = kept
    return out


def _keep(txs: list[_Tx]) -> tuple[list[dict[str, Any]], list[int]]:
    kept: list[dict[str, Any]] = []
    indices: list[int] = []
    plain = _PLAIN_URLS
    for index, tx in enumerate(txs):
        contracts = tx.raw_data.contract
        if len(contracts) != 1:
            raise _Misfit
        contract = contracts[0]
        ctype = contract.type
        if not isinstance(ctype, str) or not ctype:
            raise _Misfit
        parameter = contract.parameter
        url = parameter.type_url if isinstance(parameter, _Parameter) else msgspec.UNSET
        # The usual case first: a non-stake type under its own type_url (one dict lookup and one
        # comparison, where the parser's test splits the URL).
        expected = plain.get(ctype)
        if expected is None:
            expected = _plain_url(ctype)
        if expected == url or (ctype not in STAKE_CONTRACTS and not _claims_stake(url)):
            continue  # the parser's silent skip
        kept.append(_as_dict(tx, ctype, parameter, url))
        indices.append(index)
    return kept, indices


# type -> `type.googleapis.com/protocol.<type>` for the non-stake types seen, False for stake types
# (which no type_url equals). Contract types are a few dozen; a node inventing more fills no more.
_PLAIN_URLS: dict[str, object] = {}


def _plain_url(ctype: str) -> object:
    url: object = False if ctype in STAKE_CONTRACTS else f"type.googleapis.com/protocol.{ctype}"
    if len(_PLAIN_URLS) < 1024:
        _PLAIN_URLS[ctype] = url
    return url


def _claims_stake(url: str | msgspec.UnsetType) -> bool:
    return isinstance(url, str) and url.rsplit("/", 1)[-1] in _STAKE_URLS


def _as_dict(
    tx: _Tx, ctype: str, parameter: _Parameter | msgspec.UnsetType, url: str | msgspec.UnsetType
) -> dict[str, Any]:
    """The fields of `tx` the parser reads, as orjson.loads gives them."""
    contract: dict[str, Any] = {"type": ctype}
    if isinstance(parameter, _Parameter):
        param: dict[str, Any] = {}
        if isinstance(url, str):
            param["type_url"] = url
        if isinstance(parameter.value, msgspec.Raw):
            param["value"] = _load(parameter.value)
        contract["parameter"] = param
    out: dict[str, Any] = {"raw_data": {"contract": [contract]}}
    if isinstance(tx.txID, str):
        out["txID"] = tx.txID
    if isinstance(tx.ret, list):
        out["ret"] = [
            {} if isinstance(r.contractRet, msgspec.UnsetType) else {"contractRet": r.contractRet} for r in tx.ret
        ]
    return out


class _Info(msgspec.Struct, gc=False):
    id: str | msgspec.UnsetType = msgspec.UNSET


_INFOS = msgspec.json.Decoder(list[_Info])


class SkimmedInfos:
    """A `gettransactioninfobyblocknum` reply (a bare array) read only as far as each item's id;
    `index_infos` turns it into the mapping `parse_transaction_infos` gives, each info decoded when
    it is looked up. A block's infos are as large as the block, and the parser wants one or two."""

    def __init__(self, ids: list[str | msgspec.UnsetType], items: list[msgspec.Raw]) -> None:
        self.ids = ids
        self.items = items


class LazyInfos(Mapping[str, Mapping[str, Any]]):
    def __init__(self, items: dict[str, msgspec.Raw]) -> None:
        self._items = items

    def __getitem__(self, tx_id: str) -> Mapping[str, Any]:
        value: Mapping[str, Any] = _load(self._items[tx_id])
        return value

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


def skim_infos(raw: bytes) -> Any:
    """A `gettransactioninfobyblocknum` reply: a SkimmedInfos when every item is an object whose id
    (if any) is a string, else what `orjson.loads` returns. Raises orjson.JSONDecodeError for
    malformed JSON."""
    try:
        ids = [item.id for item in _INFOS.decode(raw)]
        items = _LIST.decode(raw)
    except msgspec.MsgspecError:
        return orjson.loads(raw)
    return SkimmedInfos(ids, items)


def index_infos(reply: Any) -> Mapping[str, Mapping[str, Any]]:
    """`parse_transaction_infos` for any reply, a SkimmedInfos included (same ids, same errors)."""
    if not isinstance(reply, SkimmedInfos):
        return parse_transaction_infos(reply)
    fast = _index_well_formed(reply)
    if fast is not None:
        return LazyInfos(fast)
    by_id: dict[str, msgspec.Raw] = {}
    for i, (item_id, item) in enumerate(zip(reply.ids, reply.items, strict=True)):
        tx_id = hex_id(None if isinstance(item_id, msgspec.UnsetType) else item_id, f"transaction info [{i}].id")
        if tx_id in by_id:
            raise ChainDataError(f"transaction info {tx_id} appears twice")
        by_id[tx_id] = item
    return LazyInfos(by_id)


def _index_well_formed(reply: SkimmedInfos) -> dict[str, msgspec.Raw] | None:
    """The infos by id when every id is 64 hex characters and none repeats, checked over all the
    ids at once: a block holds hundreds of infos, and checking them one at a time costs several
    times the rest of `index_infos`. None otherwise: `index_infos` checks them one by one for its
    error."""
    if set(map(type, reply.ids)) != {str}:
        return None
    ids = cast(list[str], reply.ids)
    if set(map(len, ids)) != {64}:
        return None
    joined = "".join(ids)
    try:
        if len(bytes.fromhex(joined)) * 2 != len(joined):  # fromhex skips whitespace between pairs
            return None
    except ValueError:
        return None
    if joined.lower() != joined:
        ids = [item_id.lower() for item_id in ids]
    by_id = dict(zip(ids, reply.items, strict=True))
    return by_id if len(by_id) == len(ids) else None


def _load(raw: bytes | msgspec.Raw) -> Any:
    return orjson.loads(memoryview(raw))  # a Raw is a buffer, which orjson takes without a copy
