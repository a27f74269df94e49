"""Command line and environment: every flag --some-name may also be given as SIM_SOME_NAME.

A flag on the command line wins over the environment, which wins over the built-in default.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from .addresses import base58_to_hex, derive_address, hex_to_base58
from .faults import FAULT_KINDS
from .opening import parse_opening
from .ops import LOCK_PERIODS
from .traffic import MAINNET_NOISE_PER_BLOCK, MAINNET_OTHER_STAKE_PER_BLOCK

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


@dataclass(frozen=True, slots=True)
class SimConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    block_interval: float = 3.0
    accounts: tuple[str, ...] = ()  # base58, as given or derived
    seed: int = 1
    start_block: int = 60_000_000
    history_blocks: int = 0
    ops_per_block: float = 2.0
    noise_per_block: float = 4.0
    # java-tron never packs a system contract that fails (RuntimeImpl rejects it before), so
    # stake REVERTs exist only when asked for, to test that consumers skip them.
    failure_rate: float = 0.0
    solid_lag: int = 19
    unfreeze_delay_seconds: int = 1_209_600  # 14 days, the mainnet value
    paused: bool = False
    log_requests: bool = False
    fault_rate: float = 0.0
    fault_every: int = 0
    faults: tuple[str, ...] = FAULT_KINDS
    suspend_seconds: float = 2.0
    timeout_seconds: float = 12.0
    fork_rate: float = 0.0
    fork_depth: int = 1
    ws_drop_every: float = 0.0
    opening_state: str = ""  # "", "random", JSON or @file (see simulator.opening)
    lock_periods: tuple[int, ...] = LOCK_PERIODS
    hide_rate: float = 0.0
    render_cache_mb: int = 96  # rendered replies kept (simulator.render.ByteCache)
    prerender: bool = False  # render every history block (and its infos) into that cache at start
    traffic: str = "light"  # simulator.traffic's mix of unrelated transactions
    other_stake_per_block: float | None = None  # untracked stakers' ops; None = half of ops_per_block

    @property
    def tracked_hex(self) -> tuple[str, ...]:
        return tuple(base58_to_hex(address) for address in self.accounts)


def demo_accounts(seed: int, count: int) -> tuple[str, ...]:
    """Deterministic per seed, so a harness can know them before the simulator starts."""
    return tuple(hex_to_base58(derive_address(f"sim:{seed}:demo-account:{i}")) for i in range(count))


def _bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"not a boolean: {text!r}")


def _ranged(kind: Callable[[str], float | int], low: float, high: float | None = None) -> Callable[[str], object]:
    def parse(text: str) -> object:
        try:
            number = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
        if number < low or (high is not None and number > high):
            bound = f"between {low} and {high}" if high is not None else f">= {low}"
            raise argparse.ArgumentTypeError(f"{text} must be {bound}")
        return number

    return parse


def _accounts(text: str) -> tuple[str, ...]:
    accounts = tuple(part.strip() for part in text.split(",") if part.strip())
    for address in accounts:
        try:
            base58_to_hex(address)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(f"{address}: {exc}") from None
    return accounts


def _fault_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [kind for kind in kinds if kind not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown fault kind(s) {unknown}; known: {','.join(FAULT_KINDS)}")
    return kinds


def _opening(text: str) -> str:
    try:
        parse_opening(text)
    except (ValueError, OSError) as exc:
        raise argparse.ArgumentTypeError(f"invalid opening state: {exc}") from None
    return text


def _lock_periods(text: str) -> tuple[int, ...]:
    try:
        periods = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of block counts: {text!r}") from None
    if not periods or any(period < 0 for period in periods):
        raise argparse.ArgumentTypeError("lock periods must be block counts >= 0 (0 = the 86400 default)")
    return periods


def build_parser(environ: Mapping[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m simulator",
        description="Local TRON node simulator serving the java-tron HTTP API for an in-memory chain. "
        "Every flag can also be set as SIM_<NAME> (e.g. SIM_PORT, SIM_BLOCK_INTERVAL).",
    )
    defaults = SimConfig()

    def option(flag: str, kind: Callable[[str], object], default: object, help_text: str) -> None:
        env_name = "SIM_" + flag.lstrip("-").replace("-", "_").upper()
        env_value = environ.get(env_name)
        extra: dict[str, object] = {}
        if kind is _bool:
            # A bare `--paused` means true; `--paused false` is accepted too.
            extra = {"nargs": "?", "const": True}
        # argparse converts a string default with `type`, so an env value is validated like a flag.
        parser.add_argument(
            flag,
            type=kind,
            default=env_value if env_value is not None else default,
            help=f"{help_text} (env {env_name}; default: %(default)s)",
            **extra,  # type: ignore[arg-type]
        )

    option("--host", str, defaults.host, "address to listen on")
    option("--port", _ranged(int, 0, 65535), defaults.port, "port; 0 picks a free one")
    option("--block-interval", _ranged(float, 0.001), defaults.block_interval, "seconds between live blocks")
    option("--accounts", _accounts, None, "comma-separated base58 tracked accounts (default: derived demo ones)")
    option("--num-accounts", _ranged(int, 1), 3, "how many demo accounts to derive when --accounts is not given")
    option("--seed", int, defaults.seed, "RNG seed for chain content and demo accounts")
    option("--start-block", _ranged(int, 1), defaults.start_block, "number of the first block")
    option("--history-blocks", _ranged(int, 0), defaults.history_blocks, "blocks generated at start, back-dated")
    option("--ops-per-block", _ranged(float, 0), defaults.ops_per_block, "mean tracked stake ops per block")
    option("--noise-per-block", _ranged(float, 0), defaults.noise_per_block, "mean unrelated txs per block")
    option(
        "--render-cache-mb",
        _ranged(int, 1),
        defaults.render_cache_mb,
        "MB of rendered block and TransactionInfo replies kept for re-reads",
    )
    option(
        "--prerender",
        _bool,
        defaults.prerender,
        "render the history blocks and their infos (hex addresses) into that cache before serving, so a "
        "benchmark's catch-up measures its client, not the simulator's rendering (size the cache to fit)",
    )
    option(
        "--mainnet-density",
        _bool,
        False,
        f"mainnet-sized blocks: unrelated traffic in mainnet's mix (simulator/traffic.py) at "
        f"{MAINNET_NOISE_PER_BLOCK:g} per block, and {MAINNET_OTHER_STAKE_PER_BLOCK:g} untracked stake ops per block "
        f"(overrides --noise-per-block)",
    )
    option(
        "--failure-rate",
        _ranged(float, 0, 1),
        defaults.failure_rate,
        "share of tracked stake txs that REVERT (not real: java-tron never packs a failing system contract)",
    )
    option("--solid-lag", _ranged(int, 0), defaults.solid_lag, "solidified head = head - this")
    option(
        "--unfreeze-delay-seconds",
        _ranged(int, 0),
        defaults.unfreeze_delay_seconds,
        "chain-time delay before an unfreeze lot can be withdrawn",
    )
    option("--paused", _bool, defaults.paused, "start paused (true/false)")
    option("--log-requests", _bool, defaults.log_requests, "log every HTTP request to stderr (true/false)")
    option("--fault-rate", _ranged(float, 0, 1), defaults.fault_rate, "probability of a fault per node request")
    option(
        "--fault-every",
        _ranged(int, 0),
        defaults.fault_every,
        "deterministic faults: every Nth request that a fault kind fits (overrides --fault-rate; 0 = off)",
    )
    option("--faults", _fault_kinds, ",".join(defaults.faults), "comma-separated fault kinds to draw from")
    option("--suspend-seconds", _ranged(float, 0.001), defaults.suspend_seconds, "rate-limit suspension length")
    option("--timeout-seconds", _ranged(float, 0), defaults.timeout_seconds, "how late a 'timeout' fault answers")
    option("--fork-rate", _ranged(float, 0, 1), defaults.fork_rate, "probability per live block of a reorg")
    option("--fork-depth", _ranged(int, 1), defaults.fork_depth, "max blocks a random reorg replaces (< solid lag)")
    option("--ws-drop-every", _ranged(float, 0), defaults.ws_drop_every, "close all /ws connections every N s")
    option(
        "--opening-state",
        _opening,
        defaults.opening_state,
        "stake held before the first block: 'random' (all tracked accounts), inline JSON or @file "
        "(see simulator/opening.py); empty = none",
    )
    option(
        "--lock-periods",
        _lock_periods,
        ",".join(map(str, defaults.lock_periods)),
        "comma-separated lock_period values (blocks) generated delegations draw from",
    )
    option(
        "--hide-rate",
        _ranged(float, 0, 1),
        defaults.hide_rate,
        "share of stake txs left out of the block feed, served only by /v1/accounts (see simulator.requests)",
    )
    return parser


def parse_config(argv: Sequence[str], environ: Mapping[str, str]) -> SimConfig:
    args = build_parser(environ).parse_args(list(argv))
    accounts = args.accounts or demo_accounts(args.seed, args.num_accounts)
    mainnet = bool(args.mainnet_density)
    return SimConfig(
        host=args.host,
        port=args.port,
        block_interval=args.block_interval,
        accounts=tuple(accounts),
        seed=args.seed,
        start_block=args.start_block,
        history_blocks=args.history_blocks,
        ops_per_block=args.ops_per_block,
        noise_per_block=MAINNET_NOISE_PER_BLOCK if mainnet else args.noise_per_block,
        failure_rate=args.failure_rate,
        solid_lag=args.solid_lag,
        unfreeze_delay_seconds=args.unfreeze_delay_seconds,
        paused=args.paused,
        log_requests=args.log_requests,
        fault_rate=args.fault_rate,
        fault_every=args.fault_every,
        faults=tuple(args.faults),
        suspend_seconds=args.suspend_seconds,
        timeout_seconds=args.timeout_seconds,
        fork_rate=args.fork_rate,
        fork_depth=args.fork_depth,
        ws_drop_every=args.ws_drop_every,
        opening_state=args.opening_state,
        lock_periods=tuple(args.lock_periods),
        hide_rate=args.hide_rate,
        render_cache_mb=args.render_cache_mb,
        prerender=bool(args.prerender),
        traffic="mainnet" if mainnet else "light",
        other_stake_per_block=MAINNET_OTHER_STAKE_PER_BLOCK if mainnet else None,
    )
