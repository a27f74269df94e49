"""The simulator's mainnet-density traffic (simulator/traffic.py): kinds, shares, sizes and shapes.

Built in-process (no server): the rendering is the same code the HTTP routes serve.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

import base58
import pytest

from simulator.addresses import base58_to_hex
from simulator.config import parse_config
from simulator.model import CONTRACT_SCHEMAS
from simulator.node import SimNode
from simulator.render import Renderer
from simulator.traffic import MAINNET_TX_PER_BLOCK, TRANSFER_TOPIC
from tests.test_simulator import STAKE_TYPES

BLOCKS = 40


# The module's chain at mainnet density takes seconds to generate and render (5-6.5 s measured
# on a loaded machine): the tests that read it are slow ones.
@pytest.fixture(scope="module")
def node() -> SimNode:
    sim = SimNode(parse_config(["--mainnet-density", "--history-blocks", str(BLOCKS), "--paused", "--seed", "5"], {}))
    sim.generate_history(BLOCKS)
    return sim


@pytest.fixture(scope="module")
def rendered(node: SimNode) -> dict[str, Any]:
    renderer = Renderer(node.book)
    blocks = node.store.blocks(node.store.start_block, node.store.heights().head + 1)  # type: ignore[operator]
    raw = [renderer.block_bytes(block, False) for block in blocks]
    return {
        "raw": raw,
        "blocks": [json.loads(item) for item in raw],
        "visible": [json.loads(renderer.block_bytes(block, True)) for block in blocks],
        "infos": {info["id"]: info for block in blocks for info in json.loads(renderer.infos_bytes(block, False))},
        "tracked": [base58_to_hex(a) for a in node.config.accounts],
    }


def _txs(blocks: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for block in blocks:
        yield from block.get("transactions", [])


def _contract(tx: dict[str, Any]) -> dict[str, Any]:
    contract: dict[str, Any] = tx["raw_data"]["contract"][0]
    return contract


def test_mainnet_density_preset() -> None:
    config = parse_config(["--mainnet-density"], {})
    assert (config.traffic, config.noise_per_block) == ("mainnet", 280.0)
    assert config.other_stake_per_block == 10.0
    light = parse_config([], {})
    assert (light.traffic, light.noise_per_block, light.other_stake_per_block) == ("light", 4.0, None)


@pytest.mark.slow
def test_blocks_are_mainnet_sized(rendered: dict[str, Any]) -> None:
    counts = [len(block.get("transactions", [])) for block in rendered["blocks"]]
    mean = sum(counts) / len(counts)
    assert 0.9 * MAINNET_TX_PER_BLOCK <= mean <= 1.1 * MAINNET_TX_PER_BLOCK
    kb = sum(len(item) for item in rendered["raw"]) / len(rendered["raw"]) / 1024
    assert 250 <= kb <= 400  # about 1 KB of JSON a transaction, as on mainnet


@pytest.mark.slow
def test_mix_is_contract_calls_then_trx_transfers(rendered: dict[str, Any]) -> None:
    kinds = Counter(_contract(tx)["type"] for tx in _txs(rendered["blocks"]))
    total = sum(kinds.values())
    ranked = [kind for kind, _ in kinds.most_common()]
    assert ranked[:2] == ["TriggerSmartContract", "TransferContract"]
    assert 0.55 <= kinds["TriggerSmartContract"] / total <= 0.68
    assert 0.22 <= kinds["TransferContract"] / total <= 0.30
    # Calls and TRX transfers together: within the 83-90 % the public figures give.
    assert 0.80 <= (kinds["TriggerSmartContract"] + kinds["TransferContract"]) / total <= 0.92
    assert {"TransferAssetContract", "VoteWitnessContract"} <= kinds.keys()
    assert 0.02 <= sum(kinds[t] for t in STAKE_TYPES) / total <= 0.08  # untracked stakers and the pool


@pytest.mark.slow
def test_every_transaction_is_consistent(rendered: dict[str, Any]) -> None:
    for tx in _txs(rendered["blocks"]):
        raw = bytes.fromhex(tx["raw_data_hex"])
        assert hashlib.sha256(raw).hexdigest() == tx["txID"]
        contract = _contract(tx)
        number = CONTRACT_SCHEMAS[contract["type"]][0]
        # Contract.type is field 1 of the contract message; proto3 omits it only for number 0.
        assert contract["parameter"]["type_url"] == f"type.googleapis.com/protocol.{contract['type']}"
        assert bytes.fromhex(contract["parameter"]["value"]["owner_address"]) in raw
        assert bytes((0x08, number)) in raw


@pytest.mark.slow
def test_contract_calls_carry_trc20_data_results_and_logs(rendered: dict[str, Any]) -> None:
    selectors: Counter[str] = Counter()
    for tx in _txs(rendered["blocks"]):
        contract = _contract(tx)
        if contract["type"] != "TriggerSmartContract":
            continue
        data = contract["parameter"]["value"]["data"]
        selectors[data[:8]] += 1
        assert (len(data) - 8) % 64 == 0  # ABI words after the selector
        info = rendered["infos"][tx["txID"]]
        assert info["contract_address"] == contract["parameter"]["value"]["contract_address"]
        assert info["receipt"]["energy_usage_total"] > 0
        if tx["ret"][0]["contractRet"] == "SUCCESS":
            assert info["contractResult"] == ["0" * 63 + "1"] and info["log"]
            if data.startswith("a9059cbb"):
                (log,) = info["log"]
                assert log["topics"][0] == TRANSFER_TOPIC and log["topics"][2][24:] == data[32:72]
        else:
            assert info["result"] == "FAILED" and "log" not in info
    assert selectors.most_common(1)[0][0] == "a9059cbb"  # transfer(address,uint256) dominates
    assert {"23b872dd", "095ea7b3", "38ed1739"} <= selectors.keys()
    swaps = [
        info
        for info in rendered["infos"].values()
        if len(info.get("log", [])) == 4 and info.get("internal_transactions")
    ]
    assert swaps and all(item["note"] == b"call".hex() for info in swaps for item in info["internal_transactions"])


@pytest.mark.slow
def test_tracked_accounts_appear_in_other_traffic(rendered: dict[str, Any]) -> None:
    """A consumer must not take every mention of a pool account for a stake operation."""
    tracked = set(rendered["tracked"])
    mentioned = Counter(
        _contract(tx)["type"]
        for tx in _txs(rendered["blocks"])
        if _contract(tx)["type"] not in STAKE_TYPES and any(address[2:] in json.dumps(tx) for address in tracked)
    )
    assert mentioned["TriggerSmartContract"] > 0 and mentioned["TransferContract"] > 0


@pytest.mark.slow
def test_visible_true_names_and_votes(rendered: dict[str, Any]) -> None:
    pairs = zip(_txs(rendered["blocks"]), _txs(rendered["visible"]), strict=True)
    seen = set()
    for tx, shown in pairs:
        kind = _contract(tx)["type"]
        value, shown_value = _contract(tx)["parameter"]["value"], _contract(shown)["parameter"]["value"]
        if kind == "TransferAssetContract":
            assert shown_value["asset_name"] == bytes.fromhex(value["asset_name"]).decode()
            assert shown_value["asset_name"].isdigit()  # TRC10 ids, e.g. 1002000
            seen.add(kind)
        elif kind == "VoteWitnessContract":
            for vote, shown_vote in zip(value["votes"], shown_value["votes"], strict=True):
                assert base58.b58decode_check(shown_vote["vote_address"]).hex() == vote["vote_address"]
                assert shown_vote["vote_count"] == vote["vote_count"] > 0
            seen.add(kind)
    assert seen == {"TransferAssetContract", "VoteWitnessContract"}


@pytest.mark.slow
def test_prerender_fills_the_cache(node: SimNode, monkeypatch: pytest.MonkeyPatch) -> None:
    renderer = Renderer(node.book, cache_bytes=64 * 2**20)
    blocks = node.store.blocks(node.store.start_block, node.store.start_block + 3)
    size = renderer.prerender(blocks)
    assert size > 3 * 250 * 1024

    def no_rendering(*args: object) -> None:
        raise AssertionError("rendered again")

    monkeypatch.setattr(renderer, "block", no_rendering)
    monkeypatch.setattr(renderer, "info", no_rendering)
    assert all(renderer.block_bytes(b, False) and renderer.infos_bytes(b, False) for b in blocks)
    assert parse_config(["--prerender", "--render-cache-mb", "512"], {}).render_cache_mb == 512
