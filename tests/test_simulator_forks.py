"""Forks and the /ws blockTrigger feed of the simulator, against real subprocesses.

- `forky`: paused, busy with tracked stake ops; forks are forced with POST /sim/fork.
- `streaming`: paused, for the WebSocket feed (blocks made with /sim/produce, forks forced).
- `wild`: produces fast with a random fork rate, to check the feed replays into the real chain.

The WebSocket client is the `websocket-client` package, not the simulator's own code.
"""

from __future__ import annotations

import json
import time
import urllib.error
from collections.abc import Iterator
from typing import Any

import pytest
import websocket

from simulator.config import parse_config
from simulator.node import SimNode
from simulator.replay import reexecute
from tests.test_simulator import STAKE_TYPES, START, Sim, _expected_rows, _num, _start, _txs, assert_linked, whole_chain

TRIGGER_KEYS = [
    "timeStamp",
    "triggerName",
    "blockNumber",
    "blockHash",
    "parentHash",
    "transactionSize",
    "latestSolidifiedBlockNumber",
    "removed",
    "transactionList",
]


@pytest.fixture(scope="module")
def forky() -> Iterator[Sim]:
    yield from _start(
        paused=True, seed=21, history_blocks=40, ops_per_block=6, failure_rate=0.05,
        solid_lag=8, unfreeze_delay_seconds=30,
    )  # fmt: skip


@pytest.fixture(scope="module")
def streaming() -> Iterator[Sim]:
    yield from _start(paused=True, seed=4, history_blocks=30, solid_lag=6, ops_per_block=2)


@pytest.fixture(scope="module")
def wild() -> Iterator[Sim]:
    yield from _start(
        seed=9, history_blocks=20, solid_lag=6, block_interval=0.05, ops_per_block=1, noise_per_block=1,
        fork_rate=0.3, fork_depth=4,
    )  # fmt: skip


def connect(sim: Sim) -> websocket.WebSocket:
    return websocket.create_connection(sim.url.replace("http://", "ws://") + "/ws", timeout=5)


def receive(ws: websocket.WebSocket, count: int) -> list[dict[str, Any]]:
    return [json.loads(ws.recv()) for _ in range(count)]


# -- forks ------------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", [1, 5])
def test_fork_relinks_chain_and_truth_orphans_dropped_ops(forky: Sim, depth: int) -> None:
    before = forky.get("/sim/status")
    head = before["head"]
    old_blocks = forky.post("/wallet/getblockbylimitnext", {"startNum": head - depth + 1, "endNum": head + 1})["block"]
    old_truth = forky.get("/sim/truth")["operations"]
    old_txs = {tx["txID"]: tx for _, tx in _txs(old_blocks)}

    result = forky.post("/sim/fork", {"depth": depth})
    assert result["depth"] == depth and result["replaced"] == list(range(head - depth + 1, head + 1))
    assert result["head"] == head + 1 and result["forks"] == before["forks"] + 1
    status = forky.get("/sim/status")
    assert (status["head"], status["forks"]) == (head + 1, before["forks"] + 1)

    blocks = whole_chain(forky)
    assert_linked(blocks)
    for old in old_blocks:  # every replaced block is gone, by hash and by number
        assert forky.post("/wallet/getblock", {"id_or_num": old["blockID"]}) == {}
        assert forky.post("/wallet/getblockbynum", {"num": _num(old)})["blockID"] != old["blockID"]

    truth = forky.get("/sim/truth")["operations"]
    assert len({(r["tx_id"], r["op_index"]) for r in truth}) == len(truth)
    by_tx: dict[str, list[dict[str, Any]]] = {}
    for row in truth:
        by_tx.setdefault(row["tx_id"], []).append(row)
    reincluded = orphaned = 0
    for old_row in old_truth:
        rows = by_tx[old_row["tx_id"]]
        if old_row["tx_id"] not in old_txs:  # outside the fork: the same, though it may have solidified
            assert {**old_row, "status": ""} in [{**row, "status": ""} for row in rows]
            continue
        found = forky.post("/wallet/gettransactionbyid", {"value": old_row["tx_id"]})
        if found:
            # Re-executed in a later block: same txID and raw_data (its amounts may differ, e.g.
            # more unfreeze lots have matured by the new block time, so rows are matched by tx).
            info = forky.post("/wallet/gettransactioninfobyid", {"value": old_row["tx_id"]})
            assert info["blockNumber"] == old_row["block_num"] + 1
            assert all(r["status"] != "orphaned" and r["block_num"] == info["blockNumber"] for r in rows)
            assert found["raw_data_hex"] == old_txs[old_row["tx_id"]]["raw_data_hex"]
            reincluded += 1
        else:
            assert forky.post("/wallet/gettransactioninfobyid", {"value": old_row["tx_id"]}) == {}
            assert {**old_row, "status": "orphaned"} in rows
            orphaned += 1
    if depth == 5:
        assert reincluded and orphaned, "a deep fork both re-packs and loses tracked operations"

    # The canonical part of the truth is exactly what the canonical blocks and infos say.
    tracked, solid = set(status["accounts"]), status["solid"]
    expected = []
    infos = {}
    for block in blocks:
        infos.update({i["id"]: i for i in forky.post("/wallet/gettransactioninfobyblocknum", {"num": _num(block)})})
    for block, tx in _txs(blocks):
        if tx["raw_data"]["contract"][0]["type"] not in STAKE_TYPES:
            continue
        for row in _expected_rows(tx, infos[tx["txID"]], block):
            if row["owner_address"] in tracked or row["receiver_address"] in tracked:
                ok = tx["ret"][0]["contractRet"] == "SUCCESS"
                row["status"] = ("confirmed" if row["block_num"] <= solid else "pending") if ok else "failed"
                expected.append(row)
    assert [r for r in truth if r["status"] != "orphaned"] == expected


def test_fork_limits(forky: Sim) -> None:
    for depth in (0, 8, 20):  # solid lag is 8: a fork never reaches the solidified head
        with pytest.raises(urllib.error.HTTPError) as caught:
            forky.post("/sim/fork", {"depth": depth})
        assert caught.value.code == 400
    settings = forky.get("/sim/fork")
    assert settings["possible_depth"] == 7 and settings["rate"] == 0


def test_fork_rate_set_at_runtime(forky: Sim) -> None:
    forks, head = forky.get("/sim/status")["forks"], forky.get("/sim/status")["head"]
    assert forky.post("/sim/fork", {"rate": 1.0, "max_depth": 3})["rate"] == 1.0
    try:
        produced = forky.post("/sim/produce", {"count": 4})
    finally:
        forky.post("/sim/fork", {"rate": 0})
    assert produced["head"] == head + 4  # a fork of depth d adds d + 1 blocks for d removed
    assert forky.get("/sim/status")["forks"] == forks + 4
    assert_linked(whole_chain(forky))


def test_state_rolls_back_with_forks() -> None:
    """In process: after forks, replaying the canonical chain from the opening state (each block
    at its parent's time) gives the generator's own state and the same TransactionInfo amounts,
    so no fork left state of a lost block behind; the account-state view agrees too."""
    config = parse_config(
        ["--paused", "--seed", "5", "--ops-per-block", "6", "--solid-lag", "8", "--unfreeze-delay-seconds", "30"]
        + ["--opening-state", "random"],
        {},
    )
    node = SimNode(config)
    node.generate_history(60)
    for depth in (1, 5, 7, 3, 1, 2):
        node.fork(depth)
        node.produce(2)
    book = node._generator.opening_book.clone()
    blocks = node.store.blocks(START, START + 10_000)
    parent_ms = node._generator.first_parent_ms
    assert parent_ms is not None and parent_ms == blocks[0].timestamp - 3000
    for block in blocks:
        for tx in block.txs:
            if tx.rows and tx.success:
                again = reexecute(tx, book, parent_ms)
                assert again is not None and again.info == tx.info, (block.number, tx.contract_type)
        parent_ms = block.timestamp
    live = node.live_state().accounts
    assert {a: s for a, s in live.items() if not s.is_empty()} == {
        a: s for a, s in book.accounts.items() if not s.is_empty()
    }
    head = blocks[-1].number
    for address, state in live.items():
        assert node.view.account(address, head) == state


# -- the WebSocket feed -----------------------------------------------------------------------


def test_ws_sends_a_block_trigger_per_block_to_every_client(streaming: Sim) -> None:
    first, second = connect(streaming), connect(streaming)
    try:
        head = streaming.get("/sim/status")["head"]
        streaming.post("/sim/produce", {"count": 3})
        for ws in (first, second):
            messages = receive(ws, 3)
            assert [m["blockNumber"] for m in messages] == [head + 1, head + 2, head + 3]
            for message in messages:
                assert list(message) == TRIGGER_KEYS
                block = streaming.post("/wallet/getblockbynum", {"num": message["blockNumber"]})
                header = block["block_header"]["raw_data"]
                assert message["triggerName"] == "blockTrigger" and message["removed"] is False
                assert message["blockHash"] == block["blockID"] and message["parentHash"] == header["parentHash"]
                assert message["timeStamp"] == header["timestamp"]
                assert message["transactionList"] == [tx["txID"] for tx in block.get("transactions", [])]
                assert message["transactionSize"] == len(message["transactionList"])
                assert message["latestSolidifiedBlockNumber"] == message["blockNumber"] - 6
        assert streaming.get("/sim/ws")["clients"] == 2
    finally:
        first.close()
        second.close()


def test_ws_fork_sends_removed_blocks_then_the_branch(streaming: Sim) -> None:
    ws = connect(streaming)
    try:
        head = streaming.get("/sim/status")["head"]
        old = streaming.post("/wallet/getblockbylimitnext", {"startNum": head - 2, "endNum": head + 1})["block"]
        streaming.post("/sim/fork", {"depth": 2})
        removed, added = receive(ws, 2), receive(ws, 3)
        assert [(m["blockNumber"], m["removed"]) for m in removed] == [(head, True), (head - 1, True)]
        assert [m["blockHash"] for m in removed] == [old[2]["blockID"], old[1]["blockID"]]
        assert [m["blockNumber"] for m in added] == [head - 1, head, head + 1]
        assert not any(m["removed"] for m in added)
        assert added[0]["parentHash"] == old[0]["blockID"]
        assert added[1]["parentHash"] == added[0]["blockHash"] and added[2]["parentHash"] == added[1]["blockHash"]
        assert all(m["latestSolidifiedBlockNumber"] >= head - 6 for m in removed + added)
    finally:
        ws.close()


def test_ws_answers_ping_and_rejects_plain_http(streaming: Sim) -> None:
    ws = connect(streaming)
    try:
        ws.ping("are you there")
        frame = ws.recv_data_frame(True)[1]
        assert frame.opcode == websocket.ABNF.OPCODE_PONG and frame.data == b"are you there"
    finally:
        ws.close()
    with pytest.raises(urllib.error.HTTPError) as caught:
        streaming.get("/ws")
    assert caught.value.code == 426


def test_ws_drop_now_and_periodically(streaming: Sim) -> None:
    ws = connect(streaming)
    deadline = time.monotonic() + 2
    while streaming.get("/sim/ws")["clients"] < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert streaming.post("/sim/ws/drop")["dropped"] >= 1
    with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
        ws.recv()
    ws = connect(streaming)  # reconnecting works at once
    streaming.post("/sim/produce", {"count": 1})
    assert receive(ws, 1)[0]["removed"] is False
    try:
        assert streaming.post("/sim/ws", {"drop_every": 0.3})["drop_every"] == 0.3
        started = time.monotonic()
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            ws.recv()
        assert time.monotonic() - started < 2
        ws = connect(streaming)
        with pytest.raises((websocket.WebSocketConnectionClosedException, ConnectionError)):
            ws.recv()
    finally:
        streaming.post("/sim/ws", {"drop_every": 0})
        ws.close()


def test_ws_is_never_faulty(streaming: Sim) -> None:
    streaming.post("/sim/faults", {"suspended": True, "suspend_seconds": 30})
    try:
        ws = connect(streaming)
        streaming.post("/sim/produce", {"count": 1})
        assert receive(ws, 1)[0]["triggerName"] == "blockTrigger"
        ws.close()
    finally:
        streaming.post("/sim/faults", {"suspended": False, "suspend_seconds": 2})


def test_ws_feed_replays_into_the_canonical_chain_under_random_forks(wild: Sim) -> None:
    """Applying the feed (removed pops, added pushes) rebuilds exactly the chain the node serves."""
    ws = connect(wild)
    stack: list[tuple[int, str]] = []
    removals = 0
    try:
        first = wild.get("/sim/status")["head"]
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            status = wild.get("/sim/status")
            if status["forks"] >= 3 and status["head"] >= first + 30:
                break
            time.sleep(0.1)
        wild.post("/sim/pause")
        head = wild.get("/sim/status")["head"]
        while not stack or stack[-1][0] != head:
            message = json.loads(ws.recv())
            if message["removed"]:
                removals += 1
                if stack:  # else a block from before we connected
                    assert stack[-1] == (message["blockNumber"], message["blockHash"])
                    stack.pop()
            else:
                if stack:
                    assert message["parentHash"] == stack[-1][1] and message["blockNumber"] == stack[-1][0] + 1
                stack.append((message["blockNumber"], message["blockHash"]))
    finally:
        ws.close()
    assert removals > 0 and wild.get("/sim/status")["forks"] >= 3
    blocks = whole_chain(wild)
    assert_linked(blocks)
    canonical = {_num(b): b["blockID"] for b in blocks}
    assert all(canonical[number] == block_id for number, block_id in stack)
