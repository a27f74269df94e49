"""The chain adapter: fetches blocks (and TransactionInfo where amounts live only there) from a
java-tron HTTP node and parses them into operations. Block ranges and TransactionInfos are
decoded by ledger.chain.skim, which builds Python objects only for the transactions the parser may
not drop (a mainnet block is ~300 transactions, nearly all of them TRC20 calls and transfers). The
checkpoint loop (streamer.py) knows nothing of HTTP or JSON, so it is tested with a stub adapter.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Container
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from ledger.chain.node import MAX_BLOCKS_PER_REQUEST, NodeUnavailable, TronNode, block_number
from ledger.chain.parser import (
    BlockParse,
    MissingTransactionInfo,
    needs_transaction_info,
    parse_block,
)
from ledger.chain.skim import index_infos
from ledger.coordination.backoff import backoff
from ledger.domain import CONFIRMED, PENDING

log = logging.getLogger(__name__)

_NOT_NEEDED = object()  # a block read by follow that needs no TransactionInfo
_Read = tuple[list[dict[str, Any]], dict[int, Any]]  # raw blocks, TransactionInfo replies by block number


@dataclass(frozen=True)
class _Prefetch:
    start: int
    end: int
    tracked: Container[str]
    future: Future[_Read]


class ChainAdapter(Protocol):
    def head_number(self) -> int: ...

    def solid_number(self) -> int: ...

    def block_id(self, num: int) -> str | None:
        """The id of block `num` on the node's current chain (None if it has no such block)."""
        ...

    def export(self, start: int, end: int, tracked: Container[str], solid: int) -> list[BlockParse]:
        """Parsed blocks start..end-1, in order, none missing; operations filtered to `tracked`."""
        ...

    def follow(self, start: int, limit: int, tracked: Container[str], solid: int) -> list[BlockParse]:
        """Parsed blocks from `start` as far as the node has them (at most `limit`), in order,
        none missing; [] when `start` is past the node's head."""
        ...


class NodeAdapter:
    def __init__(self, node: TronNode, threads: int = 8, *, prefetch: bool = True) -> None:
        self._node = node
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="fetch")
        # Catching up, the next batch is read while this one is enqueued and checkpointed (see
        # follow). Its own thread: the read itself fans out on the fetch pool.
        self._prefetch_enabled = prefetch
        self._prefetcher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
        self._prefetched: _Prefetch | None = None
        # The node's head as last seen (the heartbeat reports it: head_seen): the head's header
        # when it was asked for, else the newest block fetched; and when the node last showed it
        # was still its head (wall clock, ms).
        self._head: dict[str, Any] | None = None
        self._head_seen_ms: int | None = None
        # Block id -> header timestamp of the blocks seen lately: each block's operations carry
        # their parent's time (java-tron's "now" for them), and the first block of a batch has its
        # parent in the previous batch. Bounded: only the newest ones are kept.
        self._times: dict[str, int] = {}

    def close(self) -> None:
        """Wait for a read-ahead still running, then stop the threads."""
        self._prefetcher.shutdown(wait=True)
        self._pool.shutdown(wait=True)

    def head_number(self) -> int:
        header = self._node.head_header()
        number = block_number(header)
        # The node's own word: taken even when lower than a block fetched before (a resynced node).
        self._saw_head(header)
        return number

    def head_seen(self) -> tuple[int, int, int] | None:
        """(number, timestamp in ms, when seen in ms) of the node's head as last seen, for the
        heartbeat; None before any."""
        head, seen = self._head, self._head_seen_ms
        if head is None or seen is None:
            return None
        try:
            timestamp = int(head["block_header"]["raw_data"]["timestamp"])
        except (KeyError, TypeError, ValueError):
            return None
        return block_number(head), timestamp, seen

    def _saw_head(self, block: dict[str, Any]) -> None:
        self._head = block
        self._head_seen_ms = int(time.time() * 1000)

    def solid_number(self) -> int:
        return self._node.solid_block_number()

    def block_id(self, num: int) -> str | None:
        block = self._node.block(num)
        return str(block["blockID"]) if block and "blockID" in block else None

    def export(self, start: int, end: int, tracked: Container[str], solid: int) -> list[BlockParse]:
        raw = self._fetch(start, end)
        parents = self._parent_times(raw)
        # Blocks that need TransactionInfo cost one request each: make them side by side (the
        # node client's rate limit still applies), so a catch-up is not a chain of round trips.
        return list(
            self._pool.map(lambda pair: self._parse(pair[0], tracked, solid, pair[1]), zip(raw, parents, strict=True))
        )

    def _parent_times(self, raw: list[dict[str, Any]]) -> list[int | None]:
        """The parent block's timestamp of each block (None for the genesis block)."""
        parents: list[int | None] = []
        for block in raw:
            header = block.get("block_header", {}).get("raw_data", {})
            parent_id, num = header.get("parentHash"), block_number(block)
            parent = self._times.get(parent_id) if isinstance(parent_id, str) else None
            if parent is None and num > 0:
                parent = self._block_time(num - 1, parent_id)
            parents.append(parent)
            if isinstance(block.get("blockID"), str) and isinstance(header.get("timestamp"), int):
                self._times[block["blockID"]] = header["timestamp"]
        while len(self._times) > 1000:
            del self._times[next(iter(self._times))]  # insertion order: the oldest first
        return parents

    def _block_time(self, num: int, block_id: Any) -> int | None:
        """Block `num`'s timestamp, checked to be the parent we expect; None when the node has no
        such block (the first block it holds): the block's own time then stands in."""
        block = self._node.block(num)
        if block is None:
            log.info("block %s: the node has no parent block; its own time stands in for java-tron's now", num + 1)
            return None
        if block.get("blockID") != block_id:
            # The node changed branches between the two reads: the batch is read again.
            raise NodeUnavailable(f"block {num} is not the parent of block {num + 1} any more")
        timestamp = block.get("block_header", {}).get("raw_data", {}).get("timestamp")
        if not isinstance(timestamp, int):
            raise NodeUnavailable(f"block {num} has no timestamp")
        return timestamp

    def follow(self, start: int, limit: int, tracked: Container[str], solid: int) -> list[BlockParse]:
        # Following the head costs one request per cycle: getblockbylimitnext from the block after
        # the checkpoint answers both "is there a new block?" and "what is in it?" (java-tron
        # returns the blocks it has in the range, `{}` for none: BlockStore.getLimitNumber).
        end = start + max(1, min(limit, MAX_BLOCKS_PER_REQUEST))
        read = self._take_prefetched(start, end, tracked)
        if read is None:
            read = self._read(start, end, tracked)
        raw, infos = read
        if not raw:
            if self._head is not None and block_number(self._head) == start - 1:
                self._saw_head(self._head)  # nothing past it: it is still the node's head
            return []
        if len(raw) == end - start and self._prefetch_enabled:
            # A full batch: the chain goes on past it (catching up). Read the next one meanwhile,
            # so the node's time overlaps this batch's parse, enqueue and checkpoint instead of
            # adding to them. Only the raw replies: statuses depend on the solidified head the
            # next call passes, and parent times on this call's blocks. A request the next cycle
            # would make anyway; at the head (a short batch) none is made.
            nxt = end + (end - start)
            self._prefetched = _Prefetch(end, nxt, tracked, self._prefetcher.submit(self._read, end, nxt, tracked))
        if self._head is None or block_number(raw[-1]) >= block_number(self._head):
            self._saw_head(raw[-1])
        parents = self._parent_times(raw)
        return list(
            self._pool.map(
                lambda item: self._parse(
                    item[0], tracked, solid, item[1], infos.get(block_number(item[0]), _NOT_NEEDED)
                ),
                zip(raw, parents, strict=True),
            )
        )

    def _take_prefetched(self, start: int, end: int, tracked: Container[str]) -> _Read | None:
        """The prefetched read of exactly this range and tracked set, if one is waiting; any other
        is dropped (the checkpoint moved back after a fork, or accounts were added). A failed or
        empty prefetch is read again: an empty answer is only news when it is fresh."""
        prefetched, self._prefetched = self._prefetched, None
        if prefetched is None or (prefetched.start, prefetched.end, prefetched.tracked) != (start, end, tracked):
            return None
        try:
            read = prefetched.future.result()
        except Exception:  # noqa: BLE001 - read again now; that read's error is the one to report
            return None
        return read if read[0] else None

    def _read(self, start: int, end: int, tracked: Container[str]) -> _Read:
        """The raw blocks from `start` as far as the node has them (< end), and the
        TransactionInfo replies of those that need them, by block number."""
        by_number = {block_number(block): block for block in self._node.blocks(start, end, skim=True)}
        by_number = {num: block for num, block in by_number.items() if start <= num < end}
        if not by_number:
            return [], {}
        # Blocks missing *inside* the answer are a node behind a load balancer (fetched one by
        # one); missing after its last block only means they do not exist yet.
        raw = [by_number.get(num) or self._missing_block(num) for num in range(start, max(by_number) + 1)]
        # Blocks that need TransactionInfo cost one request each: side by side (the node client's
        # rate limit still applies), so a catch-up is not a chain of round trips.
        wanted = [block_number(block) for block in raw if needs_transaction_info(block, tracked)]
        return raw, dict(zip(wanted, self._pool.map(self._infos, wanted), strict=True))

    def _fetch(self, start: int, end: int) -> list[dict[str, Any]]:
        blocks: list[dict[str, Any]] = []
        for lo in range(start, end, MAX_BLOCKS_PER_REQUEST):
            hi = min(end, lo + MAX_BLOCKS_PER_REQUEST)
            by_number = {}
            for block in self._node.blocks(lo, hi, skim=True):
                by_number[block_number(block)] = block
            for num in range(lo, hi):
                if num not in by_number:
                    # A node behind a load balancer may return fewer blocks than asked: fetch the
                    # gap one by one rather than skipping it.
                    block = self._missing_block(num)
                    by_number[num] = block
                blocks.append(by_number[num])
        return blocks

    def _infos(self, num: int) -> Any:
        return self._node.transaction_infos(num, skim=True)

    def _missing_block(self, num: int) -> dict[str, Any]:
        # `{}` for a block below the head is a lagging or flaky node, not the end of the chain.
        for attempt in range(4):
            block = self._node.block(num)
            if block is not None:
                return block
            if attempt == 0:
                log.warning("block %s: the node answered {} for a block below its head; retrying", num)
            time.sleep(backoff(attempt + 1, base=0.2, cap=1.6))
        raise NodeUnavailable(f"block {num} is missing on the node (answered {{}})")

    def _parse(
        self,
        block: dict[str, Any],
        tracked: Container[str],
        solid: int,
        parent_ms: int | None,
        fetched_infos: Any = None,
    ) -> BlockParse:
        status = CONFIRMED if block_number(block) <= solid else PENDING
        # A read (follow) already decided which blocks need their infos: NOT_NEEDED, or the reply.
        needed = needs_transaction_info(block, tracked) if fetched_infos is None else fetched_infos is not _NOT_NEEDED
        if not needed:
            return parse_block(block, tracked=tracked, status=status, parent_time_ms=parent_ms)
        num = block_number(block)
        for attempt in range(2):
            # The infos read with the block first; a second attempt asks again.
            first = attempt == 0 and fetched_infos is not None
            reply = fetched_infos if first else self._infos(num)
            infos = index_infos(reply)
            try:
                return parse_block(block, tracked=tracked, infos=infos, status=status, parent_time_ms=parent_ms)
            except MissingTransactionInfo as exc:
                # The two calls are not atomic: the node may not have indexed the infos yet.
                log.warning("block %s: %s (attempt %d)", num, exc, attempt + 1)
        raise NodeUnavailable(f"block {num}: TransactionInfo incomplete")
