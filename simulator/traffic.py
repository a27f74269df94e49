"""Unrelated traffic: the transactions of a block that are not stake operations.

Two mixes. `light` is a handful of TRX transfers and TRC20 transfers per block, enough to exercise
a consumer's filter in functional tests. `mainnet` follows mainnet's kinds, shares and sizes, so a
benchmark sees blocks the size and shape a catching-up listener meets on the real chain.

How `mainnet` is calibrated (public figures; the shares inside each kind are this module's
estimates within those bounds, named as such):
- Volume. Messari, "State of TRON Q2 2023": about 9.1 million transactions a day on average. A
  block every 3 s (java-tron `BLOCK_PRODUCED_INTERVAL` = 3000 ms) is 28,800 blocks a day, so about
  316 transactions a block; `MAINNET_TX_PER_BLOCK` rounds that down to 300, of which the stake
  operations of tracked and untracked stakers are a few and the rest is this traffic.
- Kinds. The same report: transactions calling smart contracts and TRX transfers together are 83 %
  of all transactions, "other transactions" (account creation, permission updates and the like)
  about 8 %; Messari's "State of TRON Q4 2022" puts the first two at 90 %. Contract calls are the
  larger part and USDT's contract drives most of them (both reports); Dune's TRON data catalog
  (USDT on Tron) says Tether is over 90 % of activity on Tron. Estimates used here: contract calls
  64 % and TRX transfers 27 % of this traffic (91 %, about 86 % of a block once stake operations are
  counted), TRC10 transfers 5 %, votes for witnesses 4 %; 90 % of contract calls go to one dominant
  token (USDT's role), the rest to a few others.
- Shapes: the real samples in tests/fixtures/tron/ (TransferContract and TriggerSmartContract
  transactions, TransactionInfo with `receipt`, `log`, `contractResult`, `internal_transactions`).
  A TRC20 transfer carries `a9059cbb` + two 32-byte words of call data and one Transfer log; a swap
  through a router carries a longer call (a path of two tokens) and four logs (two Transfers, Sync,
  Swap); 3 % of contract calls fail (REVERT, no logs). About 1 KB of block JSON per transaction, as
  on mainnet (roughly 300 KB per block).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from .model import Log, TxInfo, contract_value

MAINNET_TX_PER_BLOCK = 300
# The mainnet preset's mean of unrelated transactions per block, and of untracked stake operations
# (energy rental: delegations and their freezes by other accounts) beside them.
MAINNET_NOISE_PER_BLOCK = 280.0
MAINNET_OTHER_STAKE_PER_BLOCK = 10.0

# Shares of the mainnet mix (see the module docstring for their sources).
CONTRACT_CALL_SHARE = 0.64
TRX_TRANSFER_SHARE = 0.27
TRC10_SHARE = 0.05  # the rest (0.04) are votes for witnesses
DOMINANT_TOKEN_SHARE = 0.9
# Among contract calls: transfer, transferFrom, approve; the rest are router swaps.
TRC20_METHOD_SHARES = (0.86, 0.04, 0.04)
CALL_FAILURE_SHARE = 0.03
# How often a tracked account shows up in traffic that is not a stake operation (paying, being paid).
TRACKED_PARTY_SHARE = 0.03

# keccak256 of the event signatures, the topics java-tron prints without 0x.
TRANSFER_TOPIC = "ddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"
APPROVAL_TOPIC = "8c5be1e5ebec7d5bd14f71427d1e84f3dd0314c0f7b2291e5b200ac8c7c3b925"
SYNC_TOPIC = "1c411e9a96e071241c2f21f7726b17ae89e3cab4c78be50e062b03a9fffbbad1"
SWAP_TOPIC = "d78ad95fa46c994b6551d0da85fc275fe613ce37657fb8d5e3d130840159d822"
REVERT_MESSAGE = b"REVERT opcode executed".hex()
CALL_NOTE = b"call".hex()  # internal_transactions[].note of a plain call
TRC10_TOKENS = ("1002000", "1000001", "1002357", "1004031")


@dataclass(slots=True)
class Traffic:
    """One unrelated transaction before its envelope (ref block, expiration, signatures)."""

    contract_type: str
    value: dict[str, object]
    info: TxInfo
    success: bool
    fee_limit: int | None


@dataclass(frozen=True, slots=True)
class Parties:
    users: Sequence[str]
    tokens: Sequence[str]  # TRC20 contracts; the first one is the dominant token
    routers: Sequence[str]
    pairs: Sequence[str]
    witnesses: Sequence[str]
    tracked: Sequence[str]


def word(hex_address: str) -> str:
    """An address as a 32-byte ABI word: its 20 bytes, without the 41 prefix, left-padded."""
    return hex_address[2:].rjust(64, "0")


def amount_word(amount: int) -> str:
    return f"{amount:064x}"


def light_traffic(rng: random.Random, parties: Parties) -> Traffic:
    """A TRX transfer (60 %) or a TRC20 transfer between users; now and then a tracked owner."""
    owner = rng.choice(parties.users)
    if parties.tracked and rng.random() < 0.05:
        owner = rng.choice(parties.tracked)  # tracked accounts also do things that are not stake
    receiver = rng.choice(parties.users)
    if rng.random() < 0.6:
        return _trx_transfer(rng, owner, receiver)
    token = rng.choice(parties.tokens)
    amount = int(10 ** rng.uniform(4, 11))
    data = "a9059cbb" + word(receiver) + amount_word(amount)
    value = contract_value("TriggerSmartContract", owner_address=owner, contract_address=token, data=data)
    success = rng.random() >= 0.03  # TVM calls do fail in blocks, unlike system contracts
    energy = rng.choice((14_650, 29_650, 64_285, 130_285))
    energy_fee = energy * 210 if rng.random() < 0.6 else 0  # 0 when paid with staked energy
    receipt: dict[str, int | str] = {"energy_usage_total": energy, "net_usage": rng.randint(340, 350)}
    if energy_fee:
        receipt = {"energy_fee": energy_fee, **receipt}
    receipt["result"] = "SUCCESS" if success else "REVERT"
    logs: tuple[Log, ...] = ()
    if success:
        logs = (Log(token[2:], (TRANSFER_TOPIC, word(owner), word(receiver)), amount_word(amount)),)
    info = TxInfo(
        fee=energy_fee,
        receipt=receipt,
        contract_result=f"{1:064x}" if success else "",
        contract_address=token,
        logs=logs,
        res_message="" if success else REVERT_MESSAGE,
    )
    fee_limit = rng.choice((100_000_000, 150_000_000, 225_000_000))
    return Traffic("TriggerSmartContract", value, info, success, fee_limit)


def mainnet_traffic(rng: random.Random, parties: Parties) -> Traffic:
    """One transaction of the mainnet mix (shares in the module docstring)."""
    roll = rng.random()
    owner = _party(rng, parties)
    if roll < CONTRACT_CALL_SHARE:
        return _contract_call(rng, parties, owner)
    receiver = _party(rng, parties)
    if roll < CONTRACT_CALL_SHARE + TRX_TRANSFER_SHARE:
        return _trx_transfer(rng, owner, receiver)
    if roll < CONTRACT_CALL_SHARE + TRX_TRANSFER_SHARE + TRC10_SHARE:
        token = rng.choice(TRC10_TOKENS)
        value = contract_value(
            "TransferAssetContract",
            asset_name=token.encode().hex(),
            owner_address=owner,
            to_address=receiver,
            amount=int(10 ** rng.uniform(0, 9)),
        )
        info = TxInfo(receipt={"net_usage": rng.randint(280, 290)})
        return Traffic("TransferAssetContract", value, info, True, None)
    witnesses = rng.sample(list(parties.witnesses), rng.randint(1, 3))
    votes = [{"vote_address": w, "vote_count": rng.randint(1, 10**6)} for w in witnesses]
    value = contract_value("VoteWitnessContract", owner_address=owner, votes=votes)
    info = TxInfo(receipt={"net_usage": rng.randint(230, 330)})
    return Traffic("VoteWitnessContract", value, info, True, None)


def _party(rng: random.Random, parties: Parties) -> str:
    if parties.tracked and rng.random() < TRACKED_PARTY_SHARE:
        return rng.choice(parties.tracked)
    return rng.choice(parties.users)


def _trx_transfer(rng: random.Random, owner: str, receiver: str) -> Traffic:
    value = contract_value(
        "TransferContract", owner_address=owner, to_address=receiver, amount=int(10 ** rng.uniform(0, 10))
    )
    if rng.random() < 0.7:
        info = TxInfo(receipt={"net_usage": rng.randint(265, 270)})
    else:
        info = TxInfo(fee=267_000, receipt={"net_fee": 267_000})  # bandwidth paid in TRX
    return Traffic("TransferContract", value, info, True, None)


def _contract_call(rng: random.Random, parties: Parties, owner: str) -> Traffic:
    tokens = parties.tokens
    token = tokens[0] if rng.random() < DOMINANT_TOKEN_SHARE else rng.choice(tokens[1:] or tokens)
    receiver = _party(rng, parties)
    amount = int(10 ** rng.uniform(4, 11))
    success = rng.random() >= CALL_FAILURE_SHARE
    method = rng.random()
    transfer, transfer_from, approve = TRC20_METHOD_SHARES
    internal: tuple[dict[str, object], ...] = ()
    if method < transfer:
        data = "a9059cbb" + word(receiver) + amount_word(amount)
        logs = [Log(token[2:], (TRANSFER_TOPIC, word(owner), word(receiver)), amount_word(amount))]
        energy = rng.choice((14_650, 29_650, 64_285, 130_285))
        contract = token
    elif method < transfer + transfer_from:
        payer = _party(rng, parties)
        data = "23b872dd" + word(payer) + word(receiver) + amount_word(amount)
        logs = [Log(token[2:], (TRANSFER_TOPIC, word(payer), word(receiver)), amount_word(amount))]
        energy = rng.choice((30_000, 65_000, 131_000))
        contract = token
    elif method < transfer + transfer_from + approve:
        spender = rng.choice(parties.routers)
        allowance = (1 << 256) - 1 if rng.random() < 0.7 else amount  # "unlimited" or the amount
        data = "095ea7b3" + word(spender) + amount_word(allowance)
        logs = [Log(token[2:], (APPROVAL_TOPIC, word(owner), word(spender)), amount_word(allowance))]
        energy = rng.choice((22_000, 46_000))
        contract = token
    else:
        # swapExactTokensForTokens(amountIn, amountOutMin, path[2], to, deadline) on a router.
        router = rng.choice(parties.routers)
        pair = rng.choice(parties.pairs)
        other = rng.choice(tokens[1:] or tokens)
        out = amount * rng.randint(90, 110) // 100
        deadline = rng.randint(1_700_000_000, 1_900_000_000)
        data = (
            "38ed1739"
            + amount_word(amount)
            + amount_word(out * 99 // 100)
            + amount_word(0xA0)
            + word(owner)
            + amount_word(deadline)
            + amount_word(2)
            + word(token)
            + word(other)
        )
        logs = [
            Log(token[2:], (TRANSFER_TOPIC, word(owner), word(pair)), amount_word(amount)),
            Log(other[2:], (TRANSFER_TOPIC, word(pair), word(owner)), amount_word(out)),
            Log(pair[2:], (SYNC_TOPIC,), amount_word(rng.getrandbits(96)) + amount_word(rng.getrandbits(96))),
            Log(
                pair[2:],
                (SWAP_TOPIC, word(router), word(owner)),
                amount_word(amount) + amount_word(0) + amount_word(0) + amount_word(out),
            ),
        ]
        internal = (
            {
                "hash": rng.randbytes(32).hex(),
                "caller_address": router,
                "transferTo_address": pair,
                "callValueInfo": [{}],
                "note": CALL_NOTE,
            },
        )
        energy = rng.choice((180_000, 250_000, 320_000))
        contract = router
    value = contract_value("TriggerSmartContract", owner_address=owner, contract_address=contract, data=data)
    energy_fee = energy * 210 if rng.random() < 0.55 else 0  # 0 when paid with staked or rented energy
    receipt: dict[str, int | str] = {}
    if energy_fee:
        receipt["energy_fee"] = energy_fee
    else:
        receipt["energy_usage"] = energy
    receipt["energy_usage_total"] = energy
    receipt["net_usage"] = rng.randint(340, 420) if len(data) < 300 else rng.randint(560, 600)
    receipt["result"] = "SUCCESS" if success else "REVERT"
    info = TxInfo(
        fee=energy_fee,
        receipt=receipt,
        contract_result=f"{1:064x}" if success else "",
        contract_address=contract,
        logs=tuple(logs) if success else (),
        res_message="" if success else REVERT_MESSAGE,
        internal=internal if success else (),
    )
    fee_limit = rng.choice((30_000_000, 100_000_000, 150_000_000, 225_000_000))
    return Traffic("TriggerSmartContract", value, info, success, fee_limit)
