"""An account's history from TronGrid's account index (listener.history), against pages built
from the real TronGrid records in tests/fixtures/tron: fingerprint paging with the other
parameters unchanged, the key header on every page, a rate-limit suspension waited out, resume."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.chain.node import NodeUnavailable, TronNode
from ledger.chain.parser import parse_trongrid_record
from ledger.coordination.queue import BrokerLoss
from ledger.domain import Operation
from ledger.ops.logs import ProgressLine
from listener.history import AccountHistory, history_checkpoint_name
from listener.store import BackfillStore

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "tron"
KEY = "00000000-1111-2222-3333-444444444444"


def record(name: str, block: int) -> dict[str, Any]:
    rec: dict[str, Any] = copy.deepcopy(json.loads((FIXTURES / name).read_text()))
    rec["blockNumber"], rec["block_timestamp"] = block, 1_700_000_000_000 + 3000 * block
    return rec


class ListSink:
    def __init__(self, failures: int = 0) -> None:
        self.operations: list[Operation] = []
        self.failures = failures  # the next publishes that fail (a broker away for a moment)

    def publish(self, operations: Iterable[Operation]) -> int:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker away")
        ops = list(operations)
        self.operations.extend(ops)
        return len(ops)

    def confirm(self, solid_block: int) -> None:
        pass

    def revert(self, blocks: list[tuple[int, str]]) -> None:
        pass

    def backlog(self) -> int:
        return 0

    def lost(self) -> BrokerLoss | None:
        return None

    def mark_kept(self, loss: BrokerLoss) -> None:
        pass


class Pages:
    """Three pages of the same records' copies; the second is rate limited once first."""

    def __init__(self, records: list[dict[str, Any]], limited: int = 1) -> None:
        self.records = records
        self.requests: list[httpx.Request] = []
        self.limited = limited

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        fingerprint = request.url.params.get("fingerprint")
        index = 0 if fingerprint is None else int(fingerprint.removeprefix("fp"))
        if index == 1 and self.limited:
            self.limited -= 1
            return httpx.Response(
                429,
                json={"Error": "request rate exceeded the allowed_rps(10), and the query server is suspended for 1 s"},
            )
        page = self.records[index : index + 1]
        meta: dict[str, Any] = {"at": 1, "page_size": len(page)}
        if index + 1 < len(self.records):
            meta["fingerprint"] = f"fp{index + 1}"
        return httpx.Response(200, json={"data": page, "success": True, "meta": meta})


def run(
    clean_db: str, pages: Pages, owner: str, since_ms: int = 0, sink: ListSink | None = None
) -> tuple[ListSink, Any]:
    node = TronNode("http://trongrid.test", api_key=KEY, transport=httpx.MockTransport(pages), retries=2)
    store = BackfillStore(clean_db, name=history_checkpoint_name(owner, since_ms), term=0)
    sink = sink or ListSink()
    try:
        history = AccountHistory(
            node, sink, store, account=owner, since_ms=since_ms, tracked={owner}, progress=ProgressLine(every=0)
        )
        history.stop.wait = no_backoff  # type: ignore[method-assign]  # no real backoff in the test
        result = history.run()
    finally:
        store.close()
        node.close()
    return sink, result


def no_backoff(timeout: float | None = None) -> bool:
    return False


def owner_of(rec: dict[str, Any]) -> str:
    return parse_trongrid_record(rec)[0].owner_address


def test_pages_follow_the_fingerprint_with_the_same_parameters_and_the_key(clean_db: str) -> None:
    recs = [
        record("mainnet_trongrid_v1_tx_freezebalancev2_energy_37a8a1cf.json", 10),
        record("mainnet_trongrid_v1_tx_freezebalancev2_energy_422f92d9.json", 11),
        record("mainnet_trongrid_v1_tx_unfreezebalance_v1_bandwidth_56eddcf4.json", 12),
    ]
    owner = owner_of(recs[0])
    for rec in recs:  # one account's history: the same owner on every record
        rec["raw_data"]["contract"][0]["parameter"]["value"]["owner_address"] = recs[0]["raw_data"]["contract"][0][
            "parameter"
        ]["value"]["owner_address"]
    pages = Pages(recs)
    sink, result = run(clean_db, pages, owner, since_ms=1234)
    assert result.completed and result.pages == 3 and result.records == 3
    assert [op.block_num for op in sink.operations] == [10, 11, 12]
    # Parent time: one slot before the block (TronGrid does not give it).
    assert all(op.parent_time_ms == op.block_time_ms - 3000 for op in sink.operations)
    assert len(pages.requests) == 4  # the rate-limited page was asked again after its suspension
    first = dict(pages.requests[0].url.params)
    assert first == {
        "only_confirmed": "true",
        "limit": "200",
        "order_by": "block_timestamp,asc",
        "min_timestamp": "1234",
    }
    for request in pages.requests:
        assert request.headers["TRON-PRO-API-KEY"] == KEY
        assert request.url.path == f"/v1/accounts/{owner}/transactions"
        params = dict(request.url.params)
        params.pop("fingerprint", None)
        assert params == first
    assert [r.url.params.get("fingerprint") for r in pages.requests] == [None, "fp1", "fp1", "fp2"]


def test_a_page_the_sink_failed_to_take_is_read_again(clean_db: str) -> None:
    recs = [record("mainnet_trongrid_v1_tx_freezebalancev2_energy_37a8a1cf.json", b) for b in (10, 11, 12)]
    for n, rec in enumerate(recs):
        rec["txID"] = f"{n:02x}" * 32
    owner = owner_of(recs[0])
    # The broker refuses the first page's operations once: that page is asked for again, not skipped
    pages = Pages(recs, limited=0)
    sink, result = run(clean_db, pages, owner, sink=ListSink(failures=1))
    assert result.completed and result.pages == 3
    assert [op.block_num for op in sink.operations] == [10, 11, 12]
    assert [r.url.params.get("fingerprint") for r in pages.requests] == [None, None, "fp1", "fp2"]


def test_a_rerun_resumes_from_the_last_complete_block(clean_db: str) -> None:
    recs = [record("mainnet_trongrid_v1_tx_freezebalancev2_energy_37a8a1cf.json", b) for b in (10, 11)]
    recs[1]["txID"] = "ab" * 32
    owner = owner_of(recs[0])
    run(clean_db, Pages(recs, limited=0), owner)
    again = Pages(recs, limited=0)
    run(clean_db, again, owner)
    # Done up to block 11: the rerun starts at block 11's time (its records are sent again).
    assert again.requests[0].url.params["min_timestamp"] == str(recs[1]["block_timestamp"])


def test_a_malformed_page_is_retried_then_given_up(clean_db: str) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"data": [{"no": "blockNumber"}], "success": True, "meta": {}})

    node = TronNode("http://trongrid.test", transport=httpx.MockTransport(broken), retries=0)
    store = BackfillStore(clean_db, name="history:test", term=0)
    history = AccountHistory(node, ListSink(), store, account="T" * 34, since_ms=0, tracked=set(), max_failures=2)
    history.stop.wait = no_backoff  # type: ignore[method-assign]  # no real backoff in the test
    with pytest.raises(NodeUnavailable, match="blockNumber"):
        history.run()
    store.close()
    node.close()
