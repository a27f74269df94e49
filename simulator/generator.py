"""Block generation: realistic transaction mixes on top of consistent per-account stake state.

Each block holds (all Poisson-distributed, in random order):
- stake operations of the tracked accounts (`ops_per_block`), a `failure_rate` share of them
  REVERTed, plus now and then a delegation TO a tracked account from an untracked one;
- stake operations of other, untracked accounts, so the product's account filter is exercised;
- unrelated traffic (`noise_per_block`) of one of simulator.traffic's mixes: `light` (TRX transfers
  and TRC20 transfers) or `mainnet` (mainnet's kinds, shares and sizes, cited there).

Everything is drawn from one seeded RNG, so a seed reproduces the same chain content.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Callable, Sequence

from .addresses import derive_address
from .model import Block, Tx, TxInfo
from .ops import LOCK_PERIODS, OpPlan, StakePlanner
from .protobuf import encode_raw
from .replay import StateJournal, reexecute
from .stake_state import BLOCK_MS, Effects, Rejected, StakeAccount, StakeBook
from .traffic import REVERT_MESSAGE, Parties, light_traffic, mainnet_traffic
from .truth import decompose

# The opening state: accounts as they stood before the first block, given the time "now" of that
# block's transactions (its parent's timestamp), so relative expire times can be resolved.
Opening = Callable[[int], dict[str, StakeAccount]]

WITNESS_COUNT = 27  # MAX_ACTIVE_WITNESS_NUM
OTHER_STAKERS = 40
INBOUND_DELEGATORS = 8  # the first few "other" stakers also delegate to tracked accounts
CUSTOMERS = 80  # receivers of delegations (energy-rental customers)
USERS = 300  # senders/receivers of unrelated traffic
TOKENS = 4  # TRC20 contracts
INBOUND_SHARE = 0.08  # share of tracked ops that are delegations from an untracked account
TRACKED_TO_TRACKED = 0.1  # share of tracked delegations whose receiver is another tracked account
MAINNET_USERS = 5_000  # the mainnet mix: many more parties, so blocks do not repeat a few addresses
ROUTERS = 2  # DEX routers (the mainnet mix's swaps and approvals)
PAIRS = 6  # DEX pairs
MULTISIG_SHARE = 0.15  # rental operators sign with an active permission (Permission_id 2)
LARGE_MEAN = 100.0
EMPTY_HASH = "0" * 64  # txTrieRoot of a block without transactions
TRAFFIC_MIXES = {"light": light_traffic, "mainnet": mainnet_traffic}


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method for the small means of stake operations; a normal approximation for the
    hundreds of transactions of a mainnet-sized block (Knuth's loop would run that many times,
    and exp(-mean) underflows past about 700)."""
    if mean <= 0:
        return 0
    if mean > LARGE_MEAN:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, count, product = math.exp(-mean), 0, rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class ChainGenerator:
    def __init__(
        self,
        *,
        seed: int,
        tracked: Sequence[str],
        ops_per_block: float,
        noise_per_block: float,
        failure_rate: float,
        unfreeze_delay_ms: int,
        journal_blocks: int = 32,
        opening: Opening | None = None,
        lock_periods: Sequence[int] = LOCK_PERIODS,
        traffic: str = "light",
        other_stake_per_block: float | None = None,
    ) -> None:
        self._rng = random.Random(seed)
        self._planner = StakePlanner(self._rng, lock_periods)
        self._tracked = list(tracked)
        self._ops_per_block = ops_per_block
        self._noise_per_block = noise_per_block
        self._failure_rate = failure_rate
        self._traffic = TRAFFIC_MIXES[traffic]
        # Untracked stakers' operations: half the tracked rate (at least 0.5) unless given.
        self._other_per_block = max(0.5, ops_per_block / 2) if other_stake_per_block is None else other_stake_per_block

        def pool(kind: str, size: int) -> list[str]:
            return [derive_address(f"sim:{seed}:{kind}:{index}") for index in range(size)]

        self._witnesses = pool("witness", WITNESS_COUNT)
        self._others = pool("staker", OTHER_STAKERS)
        self._customers = pool("customer", CUSTOMERS)
        self._users = pool("user", USERS)
        self._tokens = pool("token", TOKENS)
        self._parties = Parties(
            users=self._users if traffic == "light" else pool("user", MAINNET_USERS),
            tokens=self._tokens,
            routers=pool("router", ROUTERS),
            pairs=pool("pair", PAIRS),
            witnesses=self._witnesses,
            tracked=self._tracked,
        )
        self.book = StakeBook(unfreeze_delay_ms)
        self._accounts = self.book.accounts  # the live state, changed block by block
        self._tx_ids: set[str] = set()
        self._opening = opening
        # Set when the first block is built: the time "now" of its transactions, and the state
        # before it (the opening state), which simulator.state_view replays from.
        self.first_parent_ms: int | None = None
        self.opening_book = StakeBook(unfreeze_delay_ms)
        # Undo records for the newest blocks, so a fork can roll the stake state back.
        self.journal = StateJournal(self._accounts, journal_blocks)

    def _account(self, address: str) -> StakeAccount:
        return self.book.account(address)

    def parent_time(self, timestamp: int, parent_id: str, recent: Sequence[Block]) -> int:
        """The actuators' "now" for a block: its parent's timestamp. The first block's parent
        lies before the simulated window; it is fixed once, 3 s before the first block."""
        if recent and recent[-1].block_id == parent_id:
            return recent[-1].timestamp
        if self.first_parent_ms is None:
            self.first_parent_ms = timestamp - BLOCK_MS
            if self._opening is not None:
                self._accounts.update(self._opening(self.first_parent_ms))
            self.opening_book = self.book.clone()
        return self.first_parent_ms

    # -- blocks --------------------------------------------------------------------------------

    def build_block(
        self,
        number: int,
        timestamp: int,
        parent_id: str,
        recent: Sequence[Block],
        carried: Sequence[Tx] = (),
        witness_shift: int = 0,
    ) -> Block:
        """The next block. `recent` are the last few blocks (oldest first), for ref_block_*.
        `carried` are transactions from blocks a fork replaced: re-executed first, in order, and
        left out if they no longer validate. `witness_shift` gives a fork branch other producers."""
        rng = self._rng
        now = self.parent_time(timestamp, parent_id, recent)
        self.journal.begin(number)
        txs: list[Tx] = [again for tx in carried if (again := self._reexecute(tx, now)) is not None]
        slots = (
            ["tracked"] * (poisson(rng, self._ops_per_block) if self._tracked else 0)
            + ["other"] * poisson(rng, self._other_per_block)
            + ["noise"] * poisson(rng, self._noise_per_block)
        )
        # Shuffle before building: state changes apply in block order, so an op built later may
        # depend on one built earlier in the same block, exactly as on chain.
        rng.shuffle(slots)
        refs = list(recent[-20:])
        for slot in slots:
            if slot == "tracked":
                txs.append(self._tracked_tx(now, timestamp, number, parent_id, refs))
            elif slot == "other":
                owner = self._account(rng.choice(self._others))
                plan = self._planner.plan_own(owner, now, self._customers)
                txs.append(self._stake_tx(plan, now, timestamp, number, parent_id, refs, failed=False))
            else:
                txs.append(self._noise_tx(timestamp, number, parent_id, refs))
        return self._seal(number, timestamp, parent_id, txs, witness_shift)

    def build_scripted_block(
        self,
        number: int,
        timestamp: int,
        parent_id: str,
        recent: Sequence[Block],
        contracts: Sequence[tuple[str, dict[str, object]]],
    ) -> Block:
        """A block holding exactly `contracts` ((type, value) pairs, hex addresses), executed in
        order at the parent block's time. Raises Rejected (state unchanged, nothing built) if one
        would not validate, naming its index."""
        now = self.parent_time(timestamp, parent_id, recent)
        self.journal.begin(number)
        refs = list(recent[-20:])
        txs: list[Tx] = []
        try:
            for index, (contract_type, value) in enumerate(contracts):
                try:
                    txs.append(self._stake_tx(OpPlan(contract_type, value), now, timestamp, number, parent_id, refs))
                except Rejected as exc:
                    raise Rejected(f"transaction {index} ({contract_type}): {exc}") from None
        except Rejected:
            self.journal.rollback(number)
            raise
        return self._seal(number, timestamp, parent_id, txs, 0)

    def _seal(self, number: int, timestamp: int, parent_id: str, txs: list[Tx], witness_shift: int) -> Block:
        witness = self._witnesses[(number + witness_shift) % WITNESS_COUNT]
        trie = hashlib.sha256(b"".join(bytes.fromhex(t.tx_id) for t in txs)).hexdigest() if txs else EMPTY_HASH
        digest = hashlib.sha256(f"{parent_id}:{number}:{timestamp}:{trie}:{witness}".encode()).hexdigest()
        # blockID = 8-byte big-endian block number, then the last 24 bytes of the block hash.
        block_id = f"{number:016x}" + digest[16:]
        return Block(number, block_id, parent_id, timestamp, witness, trie, tuple(txs))

    def rollback(self, number: int) -> None:
        """The stake state as it was before block `number` (for a fork replacing it)."""
        self.journal.rollback(number)

    def _reexecute(self, tx: Tx, now_ms: int) -> Tx | None:
        if not tx.success or not tx.rows:
            return tx  # changes no stake state, so it is packed again as it was
        for address in StakeBook.touched(tx.value):
            self.journal.touch(address)
        return reexecute(tx, self.book, now_ms)

    # -- transactions --------------------------------------------------------------------------

    def _tracked_tx(self, now_ms: int, timestamp: int, number: int, parent_id: str, refs: list[Block]) -> Tx:
        rng = self._rng
        plan: OpPlan | None = None
        if rng.random() < INBOUND_SHARE:
            delegator = self._account(rng.choice(self._others[:INBOUND_DELEGATORS]))
            plan = self._planner.plan_inbound(delegator, rng.choice(self._tracked), now_ms)
        if plan is None:
            owner = rng.choice(self._tracked)
            receivers = self._customers
            if len(self._tracked) > 1 and rng.random() < TRACKED_TO_TRACKED:
                receivers = [a for a in self._tracked if a != owner]
            plan = self._planner.plan_own(self._account(owner), now_ms, receivers)
        failed = rng.random() < self._failure_rate
        return self._stake_tx(plan, now_ms, timestamp, number, parent_id, refs, failed=failed)

    def _stake_tx(
        self,
        plan: OpPlan,
        now_ms: int,
        timestamp: int,
        number: int,
        parent_id: str,
        refs: list[Block],
        *,
        failed: bool | None = None,
    ) -> Tx:
        """`failed` None = a scripted transaction: executed, Rejected propagates. False = a
        generated one: a plan the rules reject (none should be) becomes a freeze, which always
        validates. True = a REVERT that changes nothing."""
        rng = self._rng
        effects = Effects()
        if not failed:
            for address in StakeBook.touched(plan.value):
                self.journal.touch(address)
            try:
                effects = self.book.execute(plan.contract_type, plan.value, now_ms)
            except Rejected:
                if failed is None:
                    raise
                owner = self._account(str(plan.value["owner_address"]))
                plan = self._planner.freeze(owner)
                effects = self.book.execute(plan.contract_type, plan.value, now_ms)
        if rng.random() < 0.8:
            receipt: dict[str, int | str] = {"net_usage": rng.randint(240, 320)}
            fee = 0
        else:
            fee = rng.randint(240, 320) * 1000  # bandwidth burned as TRX: 1000 sun per byte
            receipt = {"net_fee": fee}
        if failed:
            receipt["result"] = "REVERT"
        info = TxInfo(
            fee=fee,
            receipt=receipt,
            unfreeze_amount=effects.unfreeze_amount,
            withdraw_expire_amount=effects.withdraw_expire_amount,
            cancel_unfreeze=effects.cancel_unfreeze,
            res_message=REVERT_MESSAGE if failed else "",
        )
        multisig = rng.random() < MULTISIG_SHARE
        tx = self._envelope(
            plan.contract_type,
            plan.value,
            timestamp,
            number,
            parent_id,
            refs,
            success=not failed,
            info=info,
            permission_id=2 if multisig else 0,
            fee_limit=rng.choice((30_000_000, 100_000_000)) if rng.random() < 0.2 else None,
        )
        tx.rows = decompose(tx)
        return tx

    def _noise_tx(self, now_ms: int, number: int, parent_id: str, refs: list[Block]) -> Tx:
        traffic = self._traffic(self._rng, self._parties)
        return self._envelope(
            traffic.contract_type,
            traffic.value,
            now_ms,
            number,
            parent_id,
            refs,
            success=traffic.success,
            info=traffic.info,
            permission_id=0,
            fee_limit=traffic.fee_limit,
        )

    def _envelope(
        self,
        contract_type: str,
        value: dict[str, object],
        now_ms: int,
        number: int,
        parent_id: str,
        refs: list[Block],
        *,
        success: bool,
        info: TxInfo,
        permission_id: int,
        fee_limit: int | None,
    ) -> Tx:
        rng = self._rng
        # ref_block_bytes/hash point at a recent block: its number's low 2 bytes, hash bytes 8..16.
        if refs:
            ref = rng.choice(refs)
            ref_bytes, ref_hash = f"{ref.number & 0xFFFF:04x}", ref.block_id[16:32]
        else:
            ref_bytes, ref_hash = f"{(number - 1) & 0xFFFF:04x}", (parent_id[16:32] or "0" * 16)
        client_ms = now_ms - rng.randint(200, 9_000)  # signed a little before it was packed
        roll = rng.random()
        if roll < 0.7:
            expiration = client_ms + 60_000  # tronweb's default
        elif roll < 0.85:
            expiration = client_ms + 86_400_000  # rental platforms sign 24 h ahead
        else:
            expiration = client_ms + 21_600_000  # wallet-cli moves it ~6 h ahead when signing
        timestamp = client_ms if rng.random() < 0.9 else None  # the client timestamp is optional
        while True:
            raw = encode_raw(
                contract_type=contract_type,
                value=value,
                permission_id=permission_id,
                ref_block_bytes=ref_bytes,
                ref_block_hash=ref_hash,
                expiration=expiration,
                timestamp=timestamp,
                fee_limit=fee_limit,
            )
            tx_id = hashlib.sha256(raw).hexdigest()
            if tx_id not in self._tx_ids:
                break
            # Identical raw data (e.g. two withdraws by one owner without a client timestamp)
            # would repeat a txID; a real client would differ in expiration, so nudge it.
            expiration += 1
        self._tx_ids.add(tx_id)
        signatures = rng.choice((1, 2, 2, 3)) if permission_id else 1
        return Tx(
            tx_id=tx_id,
            contract_type=contract_type,
            value=value,
            raw=raw,
            ref_block_bytes=ref_bytes,
            ref_block_hash=ref_hash,
            expiration=expiration,
            timestamp=timestamp,
            fee_limit=fee_limit,
            permission_id=permission_id,
            signatures=signatures,
            success=success,
            info=info,
        )
