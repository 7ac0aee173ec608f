"""Settings from the environment, parsed strictly at start-up.

Every variable is listed in `.env.example` and in the README table. A wrong or
missing value raises SettingsError naming the variable, and the process stops
before it serves anything (fail fast, not at the first webhook).
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Mapping
from urllib.parse import urlparse
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEBHOOK_STRATEGIES = ("signature", "token", "none")
REDIS_SCHEMES = ("redis", "rediss", "unix")
# The broker may be Redis or RabbitMQ (AMQP 0-9-1 through py-amqp: amqp, amqps and pyamqp are
# kombu's names for the same transport); Redis stays the store for everything else.
BROKER_SCHEMES = REDIS_SCHEMES + ("amqp", "amqps", "pyamqp")
CHANNELS = ("log", "webhook", "whatsapp", "sms", "email")
CHANNEL_POLICIES = ("first", "all")
# SALLA_HTTP_TIMEOUT_SECONDS is also every channel's timeout. Bounded, so that the time a send
# can take is bounded, and with it the ledger's channel claim and a delivery's lease (issue 15):
# a claim or a lease that runs out while a send is still going lets another attempt send again.
MAX_HTTP_TIMEOUT_SECONDS = 30.0
# A channel's send at its worst: an HTTP channel makes one request, whose connect and read each
# take up to the timeout; SMTP's steps share one deadline of the same length (providers/email.py).
SEND_TIMEOUTS_PER_CHANNEL = 2
CLAIM_MARGIN_SECONDS = 10.0  # the Redis round trips around a send, and clocks a little apart
LEASE_MARGIN_SECONDS = 10.0


def channel_send_seconds(timeout: float) -> float:
    """The longest one channel's send can take with this timeout."""
    return SEND_TIMEOUTS_PER_CHANNEL * timeout


def channel_claim_seconds(timeout: float) -> float:
    """How long a channel stays claimed for one attempt (service/state/ledger.py): longer than
    its send can take, so that no other attempt takes the claim over while it sends."""
    return channel_send_seconds(timeout) + CLAIM_MARGIN_SECONDS


def delivery_lease_seconds(timeout: float) -> float:
    """How long a delivery attempt may run before the sweep takes it for lost (workers/delivery.py):
    longer than every channel's send in a row (one of each kind at most), and than a claim."""
    return max(len(CHANNELS) * channel_send_seconds(timeout), channel_claim_seconds(timeout)) + LEASE_MARGIN_SECONDS
SMS_PROVIDERS = ("unifonic", "taqnyat")
LANGUAGES = ("ar", "en")
LOG_FORMATS = ("json", "text")
# A sweep claims from every shard each tick (one pipelined script per shard): past a thousand
# or so shards that fan-out costs more than the shards save.
MAX_DUE_SET_SHARDS = 1024
# A held reminder that asks for a fresh read comes back this long after, in case the read never
# came (workers/reminding.py); REMINDER_RECHECK_MAX_AGE is at least this, so that the read it
# asked for still counts as fresh then.
RECHECK_WAIT_SECONDS = 900
# Salla's Embedded SDK as a script tag (docs.salla.dev, Embedded SDK > Installation, "Using CDN");
# it defines window.salla.embedded. SALLA_EMBEDDED_SDK_URL=none loads no script at all.
DEFAULT_EMBEDDED_SDK_URL = "https://unpkg.com/@salla.sa/embedded-sdk"


class SettingsError(ValueError):
    """A configuration value is missing or wrong; the message names the variable."""


@dataclass(frozen=True)
class Settings:
    redis_url: str
    broker_url: str
    redis_key_prefix: str
    webhook_strategy: str
    webhook_secret: str
    webhook_max_body_bytes: int
    webhook_dedupe_ttl_seconds: int
    salla_api_base_url: str
    salla_access_token: str
    salla_http_timeout_seconds: float
    salla_page_size: int
    store_timezone: str
    reminder_stages_days: tuple[int, ...]
    reminder_min_points: int
    reminder_channels: tuple[str, ...]
    reminder_webhook_url: str
    reminder_webhook_secret: str
    reminder_language: str
    log_level: str
    token_encryption_keys: tuple[str, ...]
    salla_accounts_url: str
    salla_client_id: str
    salla_client_secret: str
    token_refresh_ahead_seconds: int
    plan_limit: int
    plan_window_seconds: int
    customer_limit: int
    customer_window_seconds: int
    loyalty_missing_retry_seconds: int
    sync_max_attempts: int
    sync_debounce_seconds: float
    admin_token: str
    quiet_hours: object  # service.domain.send_window.QuietHours | None
    reminder_recheck_max_age_seconds: int
    reminder_excluded_statuses: tuple[str, ...]
    point_value_sar: float
    sweep_interval_seconds: float
    reminder_lookahead_seconds: int
    # The share of customers of stores that set none who get no reminder, to measure what
    # reminders cause (issue 17; service/state/holdout.py). 0: no holdout.
    holdout_percent: int = 0
    # Channel defaults for stores that set nothing of their own (service/state/channel_settings.py).
    reminder_channel_policy: str = "all"
    whatsapp_api_url: str = "https://graph.facebook.com/v21.0"
    whatsapp_phone_number_id: str = ""
    whatsapp_access_token: str = ""
    whatsapp_template_name: str = "points_expiry_reminder"
    whatsapp_app_secret: str = ""
    whatsapp_verify_token: str = ""
    sms_provider: str = "unifonic"
    sms_api_url: str = ""
    sms_api_key: str = ""
    sms_sender: str = ""
    smtp_url: str = ""
    email_from: str = ""
    public_base_url: str = "http://127.0.0.1:8000"
    # REDIS_URL is a seed node of a Redis Cluster (service/state/redis_client.py); the broker is then
    # CELERY_BROKER_URL, required, since kombu cannot use a cluster as a broker.
    redis_cluster: bool = False
    # Operations (README: Operator's guide).
    admin_port: int | None = None
    admin_auth_failures_per_minute: int = 10
    admin_audit_keep: int = 1000
    metrics_port: int | None = None
    # Operations: the App API's app id (the store's settings form), the low-priority refresh of
    # customers not read for a while, how long personal data of a customer not seen is kept,
    # and where Salla should send a store's events (subscribe-webhooks).
    salla_app_id: str = ""
    resync_after_days: int = 30
    data_retention_days: int = 400
    public_webhook_url: str = ""
    backfill_on_authorize: bool = True
    # Stores backfilling at once, fleet-wide; the others wait in install order (service/ops/backfill.py).
    backfill_max_stores: int = 100
    # Backfill reads in flight at once, fleet-wide (service/state/budget.py): the rest of the reads
    # workers' processes stay free for event-driven reads.
    backfill_max_reads: int = 4
    # Shards of the due set, by merchant id (service/state/due_set.py); see README "Redis Cluster".
    due_set_shards: int = 1
    # Stores' channel addresses may be loopback or private (service/domain/public_address.py): local
    # development only, where the providers' fakes and receivers listen on 127.0.0.1.
    allow_private_urls: bool = False
    # The app's page inside the merchant's Salla dashboard (service/web/embedded.py): where its
    # short-lived token is verified, the one script it loads from outside (empty: none), and
    # the devkit dashboard's origin, allowed to frame it only with ALLOW_PRIVATE_URLS=1.
    salla_introspect_url: str = "https://api.salla.dev/exchange-authority/v1/introspect"
    salla_embedded_sdk_url: str = ""
    embedded_dev_origin: str = ""
    # json for collectors (the default, containers); text for a person reading a terminal (make run).
    log_format: str = "json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "Settings":
        env = _Env(os.environ if environ is None else environ)
        redis_url = env.url("REDIS_URL", "redis://127.0.0.1:6379/0", schemes=REDIS_SCHEMES)
        redis_cluster = env.flag("REDIS_CLUSTER", False)
        if redis_cluster:
            _check_cluster(redis_url, env)
        strategy = env.choice("SALLA_WEBHOOK_STRATEGY", "signature", WEBHOOK_STRATEGIES)
        secret = env.str("SALLA_WEBHOOK_SECRET", "")
        if strategy != "none" and not secret:
            raise SettingsError(
                f"SALLA_WEBHOOK_SECRET is required when SALLA_WEBHOOK_STRATEGY={strategy} "
                "(set SALLA_WEBHOOK_STRATEGY=none only to opt out of verification on purpose)"
            )
        channels = env.list("REMINDER_CHANNELS", "log")
        for channel in channels:
            if channel not in CHANNELS:
                raise SettingsError(f"REMINDER_CHANNELS: unknown channel {channel!r} (known: {', '.join(CHANNELS)})")
        if not channels:
            raise SettingsError("REMINDER_CHANNELS must name at least one channel")
        # The global webhook is the default of stores that set no URL of their own.
        webhook_url = env.url("REMINDER_WEBHOOK_URL", "", schemes=("http", "https"))
        webhook_secret = env.str("REMINDER_WEBHOOK_SECRET", "")
        if "webhook" in channels:
            if not webhook_url:
                raise SettingsError("REMINDER_WEBHOOK_URL is required when REMINDER_CHANNELS includes webhook")
            if not webhook_secret:
                raise SettingsError("REMINDER_WEBHOOK_SECRET is required when REMINDER_CHANNELS includes webhook")
        stages = tuple(sorted({env.positive_int_item("REMINDER_STAGES_DAYS", s) for s in env.list("REMINDER_STAGES_DAYS", "30,7,1")}, reverse=True))
        if not stages:
            raise SettingsError("REMINDER_STAGES_DAYS must list at least one number of days, e.g. 30,7,1")
        return cls(
            redis_url=redis_url,
            broker_url=env.url("CELERY_BROKER_URL", redis_url, schemes=BROKER_SCHEMES),
            redis_key_prefix=env.str("REDIS_KEY_PREFIX", "lpr:"),
            webhook_strategy=strategy,
            webhook_secret=secret,
            webhook_max_body_bytes=env.int("WEBHOOK_MAX_BODY_BYTES", 1024 * 1024, minimum=1024),
            webhook_dedupe_ttl_seconds=env.int("WEBHOOK_DEDUPE_TTL_SECONDS", 24 * 3600, minimum=60),
            salla_api_base_url=env.url("SALLA_API_BASE_URL", "https://api.salla.dev/admin/v2", schemes=("http", "https")).rstrip("/"),
            salla_access_token=env.str("SALLA_ACCESS_TOKEN", ""),
            salla_http_timeout_seconds=env.float("SALLA_HTTP_TIMEOUT_SECONDS", 10.0, minimum=0.1,
                                                 maximum=MAX_HTTP_TIMEOUT_SECONDS),
            salla_page_size=env.int("SALLA_PAGE_SIZE", 60, minimum=1, maximum=60),
            store_timezone=env.timezone("STORE_TIMEZONE", "Asia/Riyadh"),
            reminder_stages_days=stages,
            reminder_min_points=env.int("REMINDER_MIN_POINTS", 1, minimum=1),
            reminder_channels=tuple(channels),
            reminder_webhook_url=webhook_url,
            reminder_webhook_secret=webhook_secret,
            reminder_language=env.choice("REMINDER_LANGUAGE", "ar", LANGUAGES),
            log_level=env.choice("LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            token_encryption_keys=env.fernet_keys("TOKEN_ENCRYPTION_KEY"),
            salla_accounts_url=env.url("SALLA_ACCOUNTS_URL", "https://accounts.salla.sa", schemes=("http", "https")).rstrip("/"),
            salla_client_id=env.str("SALLA_CLIENT_ID", ""),
            salla_client_secret=env.str("SALLA_CLIENT_SECRET", ""),
            token_refresh_ahead_seconds=env.int("TOKEN_REFRESH_AHEAD_SECONDS", 24 * 3600, minimum=0),
            # Salla's smallest plan allows 120 requests a minute; customer endpoints 500 per
            # 10 minutes on top. The windows are settings so a benchmark can shrink time.
            plan_limit=env.int("SALLA_PLAN_LIMIT", 120, minimum=1),
            plan_window_seconds=env.int("SALLA_PLAN_WINDOW_SECONDS", 60, minimum=1),
            customer_limit=env.int("SALLA_CUSTOMER_LIMIT", 500, minimum=1),
            customer_window_seconds=env.int("SALLA_CUSTOMER_WINDOW_SECONDS", 600, minimum=1),
            loyalty_missing_retry_seconds=env.int("LOYALTY_MISSING_RETRY_SECONDS", 6 * 3600, minimum=60),
            sync_max_attempts=env.int("SYNC_MAX_ATTEMPTS", 12, minimum=1),
            # Salla sends bursts (order.created, .updated, .status.updated, .payment.updated):
            # wait this long after a customer's first event so the burst costs one read.
            sync_debounce_seconds=env.float("SYNC_DEBOUNCE_SECONDS", 3.0, minimum=0.0),
            admin_token=env.str("ADMIN_TOKEN", ""),
            quiet_hours=env.quiet_hours("QUIET_HOURS", "21:00-09:00"),
            reminder_recheck_max_age_seconds=_recheck_max_age(env),
            reminder_excluded_statuses=tuple(s.strip() for s in env.str("REMINDER_EXCLUDED_STATUSES", "").split(",") if s.strip()),
            point_value_sar=env.float("POINT_VALUE_SAR", 0.0, minimum=0.0),
            # Past half, the held-out group would be the larger: a measurement, not a default.
            holdout_percent=env.int("HOLDOUT_PERCENT", 0, minimum=0, maximum=50),
            # Delivery retries and held reminders wait in the due set for the sweep, so it ticks often.
            sweep_interval_seconds=env.float("SWEEP_INTERVAL_SECONDS", 10.0, minimum=0.5),
            reminder_lookahead_seconds=env.duration("REMINDER_LOOKAHEAD", "1d", maximum=7 * 86400),
            reminder_channel_policy=env.choice("REMINDER_CHANNEL_POLICY", "all", CHANNEL_POLICIES),
            whatsapp_api_url=env.url("WHATSAPP_API_URL", "https://graph.facebook.com/v21.0", schemes=("http", "https")).rstrip("/"),
            whatsapp_phone_number_id=env.str("WHATSAPP_PHONE_NUMBER_ID", ""),
            whatsapp_access_token=env.str("WHATSAPP_ACCESS_TOKEN", ""),
            whatsapp_template_name=env.str("WHATSAPP_TEMPLATE_NAME", "points_expiry_reminder"),
            whatsapp_app_secret=env.str("WHATSAPP_APP_SECRET", ""),
            whatsapp_verify_token=env.str("WHATSAPP_VERIFY_TOKEN", ""),
            sms_provider=env.choice("SMS_PROVIDER", "unifonic", SMS_PROVIDERS),
            sms_api_url=env.url("SMS_API_URL", "", schemes=("http", "https")).rstrip("/"),
            sms_api_key=env.str("SMS_API_KEY", ""),
            sms_sender=env.str("SMS_SENDER", ""),
            smtp_url=env.url("SMTP_URL", "", schemes=("smtp", "smtps")),
            email_from=env.str("EMAIL_FROM", ""),
            public_base_url=env.url("PUBLIC_BASE_URL", "http://127.0.0.1:8000", schemes=("http", "https")).rstrip("/"),
            redis_cluster=redis_cluster,
            admin_port=env.port("ADMIN_PORT"),
            admin_auth_failures_per_minute=env.int("ADMIN_AUTH_FAILURES_PER_MINUTE", 10, minimum=1),
            admin_audit_keep=env.int("ADMIN_AUDIT_KEEP", 1000, minimum=10),
            metrics_port=env.port("METRICS_PORT"),
            salla_app_id=env.digits("SALLA_APP_ID"),
            resync_after_days=env.int("RESYNC_AFTER_DAYS", 30, minimum=1, maximum=3650),
            # A day at least (a read must outlive its own reminders' planning), ten years at most.
            data_retention_days=env.int("DATA_RETENTION_DAYS", 400, minimum=1, maximum=3650),
            public_webhook_url=env.url("PUBLIC_WEBHOOK_URL", "", schemes=("https", "http")),
            backfill_on_authorize=env.choice("BACKFILL_ON_AUTHORIZE", "on", ("on", "off")) == "on",
            # Each backfilling store asks its whole budget (0.83 reads/s at Salla's 500 per 10
            # minutes): 100 of them are about 83 reads/s, one or two cores of reads
            # (docs/CAPACITY.md), so an install storm queues instead of starving event reads.
            backfill_max_stores=env.int("BACKFILL_MAX_STORES", 100, minimum=1, maximum=100_000),
            # At most this many reads processes read for backfills at once, however many stores
            # backfill: an event-driven read waits behind at most this many backfill reads (half
            # of one reads worker's 8 processes by default; raise it with the reads workers).
            backfill_max_reads=env.int("BACKFILL_MAX_READS", 4, minimum=1, maximum=10_000),
            due_set_shards=env.int("DUE_SET_SHARDS", 1, minimum=1, maximum=MAX_DUE_SET_SHARDS),
            allow_private_urls=env.flag("ALLOW_PRIVATE_URLS", False),
            salla_introspect_url=env.url("SALLA_INTROSPECT_URL", "https://api.salla.dev/exchange-authority/v1/introspect",
                                         schemes=("https", "http")),
            salla_embedded_sdk_url="" if env.str("SALLA_EMBEDDED_SDK_URL", "").lower() == "none" else
            env.url("SALLA_EMBEDDED_SDK_URL", DEFAULT_EMBEDDED_SDK_URL, schemes=("https",)),
            embedded_dev_origin=env.url("EMBEDDED_DEV_ORIGIN", "", schemes=("http", "https")).rstrip("/"),
            log_format=env.choice("LOG_FORMAT", "json", LOG_FORMATS),
        )


def _recheck_max_age(env: "_Env") -> int:
    seconds = env.int("REMINDER_RECHECK_MAX_AGE", 3600)
    if seconds < RECHECK_WAIT_SECONDS:
        raise SettingsError(f"REMINDER_RECHECK_MAX_AGE={seconds} is below the minimum {RECHECK_WAIT_SECONDS}: a held "
                            f"reminder that asked for a fresh read comes back {RECHECK_WAIT_SECONDS} s later, and that "
                            "read must still count as fresh then (or it asks again, every time)")
    return seconds


def _check_cluster(redis_url: str, env: "_Env") -> None:
    """REDIS_CLUSTER=1: what a Redis Cluster cannot do is refused here, before anything starts."""
    parts = urlparse(redis_url)
    if parts.scheme not in ("redis", "rediss"):
        raise SettingsError("REDIS_CLUSTER=1 needs REDIS_URL=redis://host:port (or rediss://) of one cluster node, "
                            f"not {parts.scheme}://")
    if parts.path.strip("/") not in ("", "0"):
        raise SettingsError(f"REDIS_CLUSTER=1: a Redis Cluster has only database 0, but REDIS_URL names database "
                            f"{parts.path.strip('/')!r}; keep deployments apart with REDIS_KEY_PREFIX instead")
    broker = env.str("CELERY_BROKER_URL", "")
    if not broker:
        raise SettingsError("REDIS_CLUSTER=1 needs CELERY_BROKER_URL: Celery's broker (kombu) cannot use a Redis "
                            "Cluster, so give it RabbitMQ (amqp://...) or a plain, non-cluster Redis (redis://...)")
    seed, queue = parts, urlparse(broker)
    if queue.scheme in ("redis", "rediss") and (queue.hostname, queue.port or 6379) == (seed.hostname, seed.port or 6379):
        raise SettingsError("REDIS_CLUSTER=1: CELERY_BROKER_URL is the cluster's own node (REDIS_URL); kombu cannot "
                            "use a Redis Cluster as its broker: give it RabbitMQ or a separate, plain Redis")


def settings_or_exit() -> Settings:
    """Settings.from_env for a process's start (web, workers, beat): a wrong or missing value is
    one line on stderr and exit status 2, not a traceback, so `docker-compose logs` says at once
    what to set (e.g. TOKEN_ENCRYPTION_KEY, empty in a fresh copy of .env.example)."""
    try:
        return Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


class _Env:
    """Typed reads of environment variables; every error names the variable."""

    def __init__(self, environ: Mapping[str, str]):
        self._environ = environ

    def _raw(self, name: str) -> str | None:
        value = self._environ.get(name)
        if value is None or value.strip() == "":
            return None
        return value.strip()

    def str(self, name: str, default: str) -> str:
        value = self._raw(name)
        return default if value is None else value

    def digits(self, name: str) -> str:
        value = self.str(name, "")
        if value and not value.isdigit():
            raise SettingsError(f"{name}={value!r} must be the app's numeric id (Salla Partners > My Apps)")
        return value

    def choice(self, name: str, default: str, allowed: tuple[str, ...]) -> str:
        value = self.str(name, default)
        normalised = value.upper() if allowed[0].isupper() else value.lower()
        if normalised not in allowed:
            raise SettingsError(f"{name}={value!r} is not one of: {', '.join(allowed)}")
        return normalised

    def int(self, name: str, default: int, minimum: int | None = None, maximum: int | None = None) -> int:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = int(value)
        except ValueError:
            raise SettingsError(f"{name}={value!r} is not a whole number") from None
        if minimum is not None and number < minimum:
            raise SettingsError(f"{name}={number} is below the minimum {minimum}")
        if maximum is not None and number > maximum:
            raise SettingsError(f"{name}={number} is above the maximum {maximum}")
        return number

    def float(self, name: str, default: float, minimum: float, maximum: float | None = None) -> float:
        value = self._raw(name)
        if value is None:
            return default
        try:
            number = float(value)
        except ValueError:
            raise SettingsError(f"{name}={value!r} is not a number") from None
        if number < minimum:
            raise SettingsError(f"{name}={number} is below the minimum {minimum}")
        if maximum is not None and number > maximum:
            raise SettingsError(f"{name}={number} is above the maximum {maximum}")
        return number

    def port(self, name: str) -> int | None:
        """A TCP port, or None when unset."""
        value = self._raw(name)
        if value is None:
            return None
        if not value.isdigit() or not 0 < int(value) < 65536:
            raise SettingsError(f"{name}={value!r} is not a TCP port number (1-65535)")
        return int(value)

    def duration(self, name: str, default: str, maximum: int) -> int:
        """Seconds, written as a number of seconds or with a unit: 90m, 12h, 1d."""
        text = self.str(name, default).lower()
        units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
        number, unit = (text[:-1], units[text[-1]]) if text[-1:] in units else (text, 1)
        try:
            seconds = int(float(number) * unit)
        except ValueError:
            raise SettingsError(f"{name}={text!r} is not a duration (seconds, or with a unit: 90m, 12h, 1d)") from None
        if not 0 <= seconds <= maximum:
            raise SettingsError(f"{name}={text!r} must be between 0 and {maximum} seconds")
        return seconds

    def flag(self, name: str, default: bool) -> bool:
        value = self._raw(name)
        if value is None:
            return default
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise SettingsError(f"{name}={value!r} must be 1 or 0 (true or false)")

    def list(self, name: str, default: str) -> list[str]:
        return [item.strip().lower() for item in self.str(name, default).split(",") if item.strip()]

    def positive_int_item(self, name: str, item: str) -> int:
        try:
            number = int(item)
        except ValueError:
            raise SettingsError(f"{name}: {item!r} is not a whole number of days") from None
        if number < 1:
            raise SettingsError(f"{name}: {number} must be at least 1 day")
        return number

    def url(self, name: str, default: str | None, schemes: tuple[str, ...]) -> str:
        value = self._raw(name)
        if value is None:
            if default is None:
                raise SettingsError(f"{name} is required")
            return default
        parsed = urlparse(value)
        if parsed.scheme not in schemes or (parsed.scheme != "unix" and not parsed.netloc):
            raise SettingsError(f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return value

    def quiet_hours(self, name: str, default: str):
        from service.domain.send_window import parse_quiet_hours

        try:
            return parse_quiet_hours(self.str(name, default))
        except ValueError as exc:
            raise SettingsError(f"{name}: {exc}") from None

    def fernet_keys(self, name: str) -> tuple[str, ...]:
        """Comma-separated Fernet keys: the first encrypts, all decrypt (rotation)."""
        from cryptography.fernet import Fernet

        keys = tuple(k.strip() for k in self.str(name, "").split(",") if k.strip())
        if not keys:
            raise SettingsError(
                f"{name} is required: Salla tokens are stored encrypted. Generate one with "
                "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
            )
        for index, key in enumerate(keys):
            try:
                Fernet(key)
            except (ValueError, TypeError):
                raise SettingsError(f"{name}: key #{index + 1} is not a Fernet key (32 url-safe base64-encoded bytes)") from None
        return keys

    def timezone(self, name: str, default: str) -> str:
        value = self.str(name, default)
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise SettingsError(f"{name}={value!r} is not an IANA time zone such as Asia/Riyadh") from None
        return value
