"""The skipping decoder (ledger/chain/skim.py) never loses what the full decode finds.

Property: for any block, a skimmed decode parses to exactly what `orjson.loads` of the same bytes
parses to (operations and issues, or the same error), for every tracked set, and asks for the same
TransactionInfos. The blocks are mainnet-density simulator blocks (the simulator's own generator,
which shares no code with the product) mixed with the real samples' stake transactions, mutated
(values replaced, keys dropped, items repeated or wrapped) and written compactly or with
whitespace and \\u escapes, so both the skim and its fallbacks are exercised.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.chain.parser import (
    STAKE_CONTRACTS,
    BlockParse,
    SkimmedBlock,
    needs_transaction_info,
    parse_block,
    parse_transaction_infos,
)
from ledger.chain.skim import SkimmedInfos, index_infos, skim_block_range, skim_infos
from simulator.addresses import hex_to_base58
from simulator.config import parse_config
from simulator.node import SimNode
from simulator.render import Renderer
from tests.test_parser_properties import JSON, PROPERTY, _mutate, _paths

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tron"
SAMPLE_BLOCKS = (
    "mainnet_getblockbynum_67674988_trimmed_undelegateresource.json",
    "privatenet_getblockbynum_165_cancelallunfreezev2.json",
)


def _sim_chain() -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]], list[str]]:
    node = SimNode(parse_config(["--mainnet-density", "--paused", "--seed", "11", "--ops-per-block", "8"], {}))
    node.generate_history(4)
    renderer = Renderer(node.book)
    blocks = node.store.blocks(node.store.start_block, node.store.start_block + 4)
    raw = [orjson.loads(renderer.block_bytes(block, False)) for block in blocks]
    infos = {i["id"]: i for block in blocks for i in orjson.loads(renderer.infos_bytes(block, False))}
    return raw, infos, list(node.config.accounts)


SIM_BLOCKS, SIM_INFOS, SIM_ACCOUNTS = _sim_chain()
SAMPLE_TXS = [tx for name in SAMPLE_BLOCKS for tx in json.loads((FIXTURES / name).read_text())["transactions"]]
SAMPLE_OWNERS = [
    hex_to_base58(tx["raw_data"]["contract"][0]["parameter"]["value"]["owner_address"]) for tx in SAMPLE_TXS
]
TRACKED_SETS: list[frozenset[str] | None] = [
    None,
    frozenset(SIM_ACCOUNTS + SAMPLE_OWNERS),
    frozenset(SIM_ACCOUNTS[:1]),
    frozenset(),
]


def _outcome(call: Any) -> Any:
    try:
        result = call()
    except Exception as exc:  # noqa: BLE001 - the two decodes must fail alike, whatever the error
        return ("raised", type(exc).__name__, str(exc))
    if isinstance(result, BlockParse):
        return (result.number, result.block_id, result.parent_hash, result.operations, result.issues)
    return result


def assert_same_parse(raw: bytes, infos: dict[str, Any] | None) -> Any:
    """Both decodes of a one-block reply parse alike; returns the skimmed block."""
    full = orjson.loads(raw)["block"][0]
    skimmed = skim_block_range(raw)["block"][0]
    for tracked in TRACKED_SETS:
        assert _outcome(lambda t=tracked: needs_transaction_info(skimmed, t)) == _outcome(
            lambda t=tracked: needs_transaction_info(full, t)
        )
        for known in (infos, {}):
            assert _outcome(lambda t=tracked, i=known: parse_block(skimmed, tracked=t, infos=i)) == _outcome(
                lambda t=tracked, i=known: parse_block(full, tracked=t, infos=i)
            )
    return skimmed


def _is_stake(tx: dict[str, Any]) -> bool:
    return str(tx["raw_data"]["contract"][0]["type"]) in STAKE_CONTRACTS


def _reply(block: Any, style: str) -> bytes:
    doc = {"block": [block]}
    if style == "compact":  # as java-tron writes it (json, not orjson: mutations put in 2**64 and more)
        return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    if style == "spaced":
        return json.dumps(doc, indent=1).encode()
    return json.dumps(doc, ensure_ascii=True).replace('"type"', '"\\u0074ype"').encode()  # an escaped key


def test_simulator_blocks_skim_to_the_same_operations() -> None:
    kept = total = 0
    for block in SIM_BLOCKS:
        skimmed = assert_same_parse(_reply(block, "compact"), SIM_INFOS)
        assert isinstance(skimmed, SkimmedBlock)
        kept += len(skimmed["transactions"])
        total += len(block["transactions"])
    # Most of a mainnet block is dropped before any Python object is built for it.
    assert kept < total / 10
    assert any(parse_block(b, tracked=frozenset(SIM_ACCOUNTS), infos=SIM_INFOS).operations for b in SIM_BLOCKS)


@pytest.mark.parametrize("name", SAMPLE_BLOCKS)
def test_real_samples_skim_exactly(name: str) -> None:
    raw = (FIXTURES / name).read_bytes()
    block = json.loads(raw)
    for style in ("compact", "spaced", "escaped"):
        assert_same_parse(_reply(block, style), None)
    skimmed = skim_block_range(_reply(block, "compact"))["block"][0]
    assert [tx["txID"] for tx in skimmed["transactions"]] == [
        tx["txID"] for tx in block["transactions"] if _is_stake(tx)
    ]


@PROPERTY
@given(data=st.data())
def test_skimmed_blocks_parse_like_full_ones(data: st.DataObject) -> None:
    source = data.draw(st.sampled_from(SIM_BLOCKS), label="block")
    start = data.draw(st.integers(0, len(source["transactions"]) - 1), label="start")
    block = {key: value for key, value in source.items() if key != "transactions"}
    txs = copy.deepcopy(source["transactions"][start : start + data.draw(st.integers(0, 12), label="count")])
    block = copy.deepcopy(block)
    for tx in data.draw(st.lists(st.sampled_from(SAMPLE_TXS), max_size=3), label="samples"):
        txs.insert(data.draw(st.integers(0, len(txs)), label="at"), copy.deepcopy(tx))
    block["transactions"] = txs
    for _ in range(data.draw(st.integers(0, 3), label="mutations")):
        path = data.draw(st.sampled_from(_paths(block)), label="path")
        how = data.draw(st.sampled_from(["replace", "replace", "drop", "repeat", "wrap"]), label="how")
        block = _mutate(block, path, how, data.draw(JSON, label="value") if how == "replace" else None)
    style = data.draw(st.sampled_from(["compact", "compact", "spaced", "escaped"]), label="style")
    assert_same_parse(_reply(block, style), SIM_INFOS)


@PROPERTY
@given(data=st.data())
def test_skimmed_infos_index_like_full_ones(data: st.DataObject) -> None:
    items = copy.deepcopy(list(SIM_INFOS.values())[: data.draw(st.integers(0, 12), label="count")])
    doc: Any = items
    for _ in range(data.draw(st.integers(0, 2), label="mutations")):
        path = data.draw(st.sampled_from(_paths(doc)), label="path")
        how = data.draw(st.sampled_from(["replace", "drop", "repeat", "wrap"]), label="how")
        doc = _mutate(doc, path, how, data.draw(JSON, label="value") if how == "replace" else None)
    raw = json.dumps(doc).encode()

    def full() -> Any:
        return {k: dict(v) for k, v in parse_transaction_infos(orjson.loads(raw)).items()}

    def skimmed() -> Any:
        return {k: dict(v) for k, v in index_infos(skim_infos(raw)).items()}

    assert _outcome(skimmed) == _outcome(full)


def test_infos_are_decoded_only_when_looked_up() -> None:
    raw = orjson.dumps(list(SIM_INFOS.values()))
    reply = skim_infos(raw)
    assert isinstance(reply, SkimmedInfos)
    infos = index_infos(reply)
    some = next(iter(SIM_INFOS))
    assert dict(infos[some]) == SIM_INFOS[some] and len(infos) == len(SIM_INFOS)
    assert not isinstance(skim_infos(b'{"Error":"busy"}'), SkimmedInfos)  # the node client raises on it
