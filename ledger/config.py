"""All configuration, mapped from environment variables in one function.

Every process calls `load_settings()` once at start and passes the result down; nothing else reads
the environment. The README lists every variable with its default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

DEVELOPMENT_CURSOR_SECRET = b"ledger-development-cursor-secret"


class ConfigError(ValueError):
    """A configuration value that cannot be used; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/ledger"
    # The broker and the cache live in different Redis databases, so the broker's maintenance
    # (KEYS) never walks cache keys and a cache flush never touches queues.
    redis_url: str = "redis://127.0.0.1:6379/0"
    cache_redis_url: str = "redis://127.0.0.1:6379/1"
    # Empty: the Redis broker at redis_url. amqp://user:pass@host:5672/vhost: RabbitMQ (durable
    # queues, publisher confirms; see ledger/coordination/queue.py and docs/RELIABILITY.md).
    broker_url: str = ""
    broker_require_persistence: bool = False  # refuse to start on a broker Redis seen without AOF
    # Seconds an operation recorded at the checkpoint may stay unpersisted before the listener
    # enqueues it again (ledger/store/accounting.py); short in tests.
    repair_grace_seconds: float = 30.0
    tron_node_url: str = ""  # empty: the run script starts the simulator
    tron_solidity_url: str = ""  # empty: same as tron_node_url (TronGrid serves both)
    tron_api_key: str = field(default="", repr=False)  # a secret: never in a log line or error
    # One budget for every process (ledger/coordination/budget.py); the defaults fit a free TronGrid key
    # (100,000 requests a day, "frequency limit(15)" a second). 0 = no limit of that kind.
    tron_requests_per_second: float = 10.0
    tron_requests_burst: float = 5.0
    tron_requests_per_day: int = 100_000
    tron_budget_redis_url: str = ""  # empty: CACHE_REDIS_URL (see ledger/coordination/budget.py for why)
    # The live path's (the listener's) reserves (ledger/coordination/budget.py): background callers leave this
    # share of the burst in the bucket, and stop at (1 - daily share) of the daily cap.
    tron_budget_reserve_fraction: float = 0.4
    tron_budget_daily_reserve_fraction: float = 0.4
    tron_timeout_seconds: float = 10.0
    tron_ws_url: str = ""  # empty: no push; a blockTrigger feed here only wakes the poller early
    pool_accounts: tuple[str, ...] = ()
    start_block: int | None = None  # None: the current head
    poll_interval: float = 1.0
    listener_batch_blocks: int = 100
    listener_solid_every_blocks: int = 20  # ask for the solidified head once per this many blocks
    port: int = 8000
    queue_name: str = "ledger"
    unfreeze_delay_seconds: int = 14 * 86_400
    retry_min_backoff_ms: int = 1_000
    retry_max_backoff_ms: int = 60_000
    retry_max_retries: int = 10
    db_pool_size: int = 8
    # A worker silent this long is dead: the messages it held go back to the queue (ledger.coordination.recovery).
    worker_heartbeat_timeout: float = 5.0
    # Background-lane messages (reconciliation jobs, backfill) one worker process holds at once;
    # 0 = half its threads. The rest stay free for live messages (workers/main.py, _BackgroundLane).
    worker_background_threads: int = 0
    web_db_timeout: float = 0.3  # seconds a request waits for a PostgreSQL connection before its 503
    cache_ttl_realtime: int = 300
    cache_ttl_summary: int = 1_800
    cache_ttl_historical: int = 3_600
    cache_socket_timeout: float = 0.05
    cache_local_ttl: float = 0.25  # seconds a web process reuses a page it just read from Redis
    # The scheduler (scheduler/): seconds between runs of each job, 0 = off. Each run costs node
    # requests from the shared budget: gap 1 per pool account (a page) when nothing is new, state
    # ~3 + one per delegation receiver per account, lifecycle none.
    schedule_gap_seconds: int = 600
    schedule_state_seconds: int = 3_600
    schedule_lifecycle_seconds: int = 300
    schedule_totals_seconds: int = 600  # getaccountresource's network totals (resource units): 2 requests a run
    gap_lookback_seconds: int = 86_400  # how far back the first gap run of an account reads
    gap_settle_seconds: int = 120  # records younger than this may still be in the listener's queue
    log_level: str = "INFO"
    log_format: str = "text"  # or "json": one JSON object per line
    admin_token: str = field(default="", repr=False)  # empty: the /admin API is off (404)
    # Empty: /api and /compat are open (behind the platform). Set: they need this Bearer token
    # (or ADMIN_TOKEN); health and /metrics stay open unless METRICS_TOKEN is set (web/guards.py).
    read_token: str = field(default="", repr=False)
    metrics_token: str = field(default="", repr=False)
    listener_heartbeat_seconds: float = 5.0
    # Leases of the single-active processes (ledger/coordination/lease.py): a standby takes over
    # lease_seconds after the holder's last renewal; the holder renews every lease_retry_seconds
    # and stops acting lease_renew_deadline_seconds after its last renewal it sent that succeeded.
    lease_seconds: float = 6.0
    lease_renew_deadline_seconds: float = 4.0
    lease_retry_seconds: float = 1.0
    listener_stale_seconds: float = 30.0  # no heartbeat for this long: stale
    listener_offline_seconds: float = 120.0  # ... and for this long: offline
    monitor_window_seconds: int = 900  # recent window of hit rate and sync success rate
    # A web process makes the monitor's figures (health, /metrics, /api/monitor) at most this often.
    monitor_cache_seconds: float = 2.0
    # The data health check judges the hit rate only over at least this many cache reads in the
    # window: fewer (one every 4.5 s at the default window) miss on entries that expired between them.
    hit_rate_min_reads: int = 200
    bench_routes: bool = False  # serve /bench/constant (bench/api.py's ceiling); never in production
    # HMAC keys of the record lists' cursors (web.cursor): the first signs, all verify (rotation).
    # Empty: a development key written in this file, which anyone can read; set it in production.
    cursor_secrets: tuple[str, ...] = ()
    # Legacy path, fallback and gray release (web/legacy.py, web/paths.py, ledger/store/rollout.py).
    legacy_max_pages: int = 3  # TronGrid pages (200 transactions each) one legacy records page may read
    legacy_timeout_seconds: float = 5.0  # per TronGrid request made while a client waits
    # Records answers from TronGrid per minute when PostgreSQL and the cache both fail, all web
    # processes together (0 = no fallback: a 503); each costs <= legacy_max_pages requests.
    fallback_requests_per_minute: float = 30.0
    fallback_redis_url: str = ""  # empty: REDIS_URL (not the cache Redis, which is down in that case)
    rollout_refresh_seconds: float = 2.0  # how often each web process re-reads the rollout row
    # Share of accounts the new path answers until an operator sets one (`ledger rollout set`): 100
    # on a fresh install (no legacy path to keep); a platform cutting over starts where its plan does.
    rollout_start_new_percent: int = 100
    # Events and webhooks (ledger/store/events.py, workers/relay.py, workers/webhooks.py).
    events_relay_seconds: float = 0.25  # how often a worker process runs the event relay's pass
    events_stream_seconds: float = 30.0  # how long one GET /api/events/stream response lasts (EventSource reconnects)
    webhook_allow_private: bool = False  # deliver to private / loopback addresses (tests, a closed network)
    webhook_timeout_seconds: float = 10.0  # per delivery request
    webhook_retry_hours: float = 24.0  # a failing delivery is retried for at least this long, then dead
    webhook_min_backoff_ms: int = 10_000  # the first retry's delay; each next one doubles ...
    webhook_max_backoff_ms: int = 3_600_000  # ... up to this

    @property
    def cursor_keys(self) -> tuple[bytes, ...]:
        return tuple(s.encode() for s in self.cursor_secrets) or (DEVELOPMENT_CURSOR_SECRET,)

    @property
    def solidity_url(self) -> str:
        return self.tron_solidity_url or self.tron_node_url

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def budget_redis_url(self) -> str:
        return self.tron_budget_redis_url or self.cache_redis_url

    @property
    def fallback_limiter_url(self) -> str:
        return self.fallback_redis_url or self.redis_url


def _flag(raw: str) -> bool:
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(raw)


def _secrets(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())


# Redis (redis-py URL forms) or RabbitMQ (pika URLParameters).
_BROKER_SCHEMES = ("redis", "rediss", "unix", "amqp", "amqps")


# name in Settings -> (environment variable, parser)
_ENV: dict[str, tuple[str, Callable[[str], object]]] = {
    "database_url": ("DATABASE_URL", str),
    "redis_url": ("REDIS_URL", str),
    "cache_redis_url": ("CACHE_REDIS_URL", str),
    "broker_url": ("BROKER_URL", str),
    "broker_require_persistence": ("BROKER_REQUIRE_PERSISTENCE", _flag),
    "repair_grace_seconds": ("REPAIR_GRACE_SECONDS", float),
    "tron_node_url": ("TRON_NODE_URL", str),
    "tron_solidity_url": ("TRON_SOLIDITY_URL", str),
    "tron_api_key": ("TRON_API_KEY", str),
    "tron_requests_per_second": ("TRON_REQUESTS_PER_SECOND", float),
    "tron_requests_burst": ("TRON_REQUESTS_BURST", float),
    "tron_requests_per_day": ("TRON_REQUESTS_PER_DAY", int),
    "tron_budget_redis_url": ("TRON_BUDGET_REDIS_URL", str),
    "tron_budget_reserve_fraction": ("TRON_BUDGET_RESERVE_FRACTION", float),
    "tron_budget_daily_reserve_fraction": ("TRON_BUDGET_DAILY_RESERVE_FRACTION", float),
    "tron_timeout_seconds": ("TRON_TIMEOUT_SECONDS", float),
    "tron_ws_url": ("TRON_WS_URL", str),
    "poll_interval": ("POLL_INTERVAL", float),
    "listener_batch_blocks": ("LISTENER_BATCH_BLOCKS", int),
    "listener_solid_every_blocks": ("LISTENER_SOLID_EVERY_BLOCKS", int),
    "port": ("PORT", int),
    "queue_name": ("QUEUE_NAME", str),
    "unfreeze_delay_seconds": ("UNFREEZE_DELAY_SECONDS", int),
    "retry_min_backoff_ms": ("RETRY_MIN_BACKOFF_MS", int),
    "retry_max_backoff_ms": ("RETRY_MAX_BACKOFF_MS", int),
    "retry_max_retries": ("RETRY_MAX_RETRIES", int),
    "db_pool_size": ("DB_POOL_SIZE", int),
    "worker_heartbeat_timeout": ("WORKER_HEARTBEAT_TIMEOUT", float),
    "worker_background_threads": ("WORKER_BACKGROUND_THREADS", int),
    "web_db_timeout": ("WEB_DB_TIMEOUT", float),
    "cache_ttl_realtime": ("CACHE_TTL_REALTIME", int),
    "cache_ttl_summary": ("CACHE_TTL_SUMMARY", int),
    "cache_ttl_historical": ("CACHE_TTL_HISTORICAL", int),
    "cache_socket_timeout": ("CACHE_SOCKET_TIMEOUT", float),
    "cache_local_ttl": ("CACHE_LOCAL_TTL", float),
    "schedule_gap_seconds": ("SCHEDULE_GAP_SECONDS", int),
    "schedule_state_seconds": ("SCHEDULE_STATE_SECONDS", int),
    "schedule_lifecycle_seconds": ("SCHEDULE_LIFECYCLE_SECONDS", int),
    "schedule_totals_seconds": ("SCHEDULE_TOTALS_SECONDS", int),
    "gap_lookback_seconds": ("GAP_LOOKBACK_SECONDS", int),
    "gap_settle_seconds": ("GAP_SETTLE_SECONDS", int),
    "log_level": ("LOG_LEVEL", str),
    "log_format": ("LOG_FORMAT", str),
    "admin_token": ("ADMIN_TOKEN", str),
    "read_token": ("READ_TOKEN", str),
    "metrics_token": ("METRICS_TOKEN", str),
    "listener_heartbeat_seconds": ("LISTENER_HEARTBEAT_SECONDS", float),
    "lease_seconds": ("LEASE_SECONDS", float),
    "lease_renew_deadline_seconds": ("LEASE_RENEW_DEADLINE_SECONDS", float),
    "lease_retry_seconds": ("LEASE_RETRY_SECONDS", float),
    "listener_stale_seconds": ("LISTENER_STALE_SECONDS", float),
    "listener_offline_seconds": ("LISTENER_OFFLINE_SECONDS", float),
    "monitor_window_seconds": ("MONITOR_WINDOW_SECONDS", int),
    "monitor_cache_seconds": ("MONITOR_CACHE_SECONDS", float),
    "hit_rate_min_reads": ("HIT_RATE_MIN_READS", int),
    "bench_routes": ("BENCH_ROUTES", _flag),
    "cursor_secrets": ("CURSOR_SECRET", _secrets),
    "legacy_max_pages": ("LEGACY_MAX_PAGES", int),
    "legacy_timeout_seconds": ("LEGACY_TIMEOUT_SECONDS", float),
    "fallback_requests_per_minute": ("FALLBACK_REQUESTS_PER_MINUTE", float),
    "fallback_redis_url": ("FALLBACK_REDIS_URL", str),
    "rollout_refresh_seconds": ("ROLLOUT_REFRESH_SECONDS", float),
    "rollout_start_new_percent": ("ROLLOUT_START_NEW_PERCENT", int),
    "events_relay_seconds": ("EVENTS_RELAY_SECONDS", float),
    "events_stream_seconds": ("EVENTS_STREAM_SECONDS", float),
    "webhook_allow_private": ("WEBHOOK_ALLOW_PRIVATE", _flag),
    "webhook_timeout_seconds": ("WEBHOOK_TIMEOUT_SECONDS", float),
    "webhook_retry_hours": ("WEBHOOK_RETRY_HOURS", float),
    "webhook_min_backoff_ms": ("WEBHOOK_MIN_BACKOFF_MS", int),
    "webhook_max_backoff_ms": ("WEBHOOK_MAX_BACKOFF_MS", int),
}


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Build Settings from the environment (or `environ`), then apply keyword overrides."""
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    for name, (var, kind) in _ENV.items():
        raw = env.get(var, "").strip()
        if raw == "":
            continue
        try:
            values[name] = kind(raw)
        except ValueError:
            raise ConfigError(
                f"{var}={raw!r} is not a valid {getattr(kind, '__name__', 'value').lstrip('_')}"
            ) from None
    accounts = env.get("POOL_ACCOUNTS", "")
    values["pool_accounts"] = tuple(a.strip() for a in accounts.split(",") if a.strip())
    start = env.get("START_BLOCK", "").strip()
    if start:
        if not start.isdigit():
            raise ConfigError(f"START_BLOCK={start!r} must be a block number")
        values["start_block"] = int(start)
    values.update(overrides)
    settings = Settings(**values)  # type: ignore[arg-type]
    scheme = settings.effective_broker_url.split("://", 1)[0].lower()
    if scheme not in _BROKER_SCHEMES:
        var = "BROKER_URL" if settings.broker_url else "REDIS_URL"
        raise ConfigError(f"{var}: broker scheme {scheme!r} is not one of {', '.join(_BROKER_SCHEMES)}")
    if not settings.repair_grace_seconds > 0:
        raise ConfigError(f"REPAIR_GRACE_SECONDS={settings.repair_grace_seconds!r} must be > 0")
    if settings.legacy_max_pages < 1:
        raise ConfigError(f"LEGACY_MAX_PAGES={settings.legacy_max_pages!r} must be >= 1")
    if settings.worker_background_threads < 0:
        raise ConfigError(f"WORKER_BACKGROUND_THREADS={settings.worker_background_threads!r} must be >= 0")
    if settings.fallback_requests_per_minute < 0:
        raise ConfigError(f"FALLBACK_REQUESTS_PER_MINUTE={settings.fallback_requests_per_minute!r} must be >= 0")
    if not settings.rollout_refresh_seconds > 0:
        raise ConfigError(f"ROLLOUT_REFRESH_SECONDS={settings.rollout_refresh_seconds!r} must be > 0")
    if not 0 <= settings.rollout_start_new_percent <= 100:
        raise ConfigError(f"ROLLOUT_START_NEW_PERCENT={settings.rollout_start_new_percent!r} must be 0 to 100")
    if not 0 < settings.lease_retry_seconds < settings.lease_renew_deadline_seconds < settings.lease_seconds:
        raise ConfigError(
            "LEASE_RETRY_SECONDS < LEASE_RENEW_DEADLINE_SECONDS < LEASE_SECONDS must hold (got "
            f"{settings.lease_retry_seconds!r}, {settings.lease_renew_deadline_seconds!r},"
            f" {settings.lease_seconds!r}):"
            " a holder renews several times per deadline, and stops acting before its lease can expire"
        )
    for name in ("events_relay_seconds", "events_stream_seconds", "webhook_timeout_seconds", "webhook_retry_hours"):
        if not getattr(settings, name) > 0:
            raise ConfigError(f"{_ENV[name][0]}={getattr(settings, name)!r} must be > 0")
    if not 0 < settings.webhook_min_backoff_ms <= settings.webhook_max_backoff_ms:
        raise ConfigError(
            f"WEBHOOK_MIN_BACKOFF_MS={settings.webhook_min_backoff_ms!r} must be > 0 and at most"
            f" WEBHOOK_MAX_BACKOFF_MS={settings.webhook_max_backoff_ms!r}"
        )
    for name in ("tron_budget_reserve_fraction", "tron_budget_daily_reserve_fraction"):
        value = getattr(settings, name)
        if not 0 <= value < 1:
            raise ConfigError(f"{_ENV[name][0]}={value!r} must be in [0, 1)")
    if settings.tron_node_url:
        object.__setattr__(settings, "tron_node_url", settings.tron_node_url.rstrip("/"))
    return settings
