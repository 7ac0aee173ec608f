"""The configuration reference, docs/configuration.md, generated (`make config-reference`).

Names, defaults and which are required come from the settings module itself: every
`env.<kind>("NAME", default)` read in it (`settings_definitions`, the one function that
knows where that module lives). What each does and who reads it comes from EXPLAINED below;
variables read outside the settings module (gunicorn's, the Procfile's, compose's) are
listed in PROCESS_VARIABLES. tests/unit/test_config_reference.py fails when the page,
.env.example or docker-compose.yml misses a variable, or names one that no longer exists.
"""
from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The settings module, read as source (nothing is executed): moving it is this one line.
SETTINGS_SOURCE = ROOT / "service" / "config" / "settings.py"
PAGE = ROOT / "docs" / "configuration.md"

APP = "web, workers, beat, CLI"  # every process that calls Settings.from_env
ALL_APP = "all"  # compose: the x-app-env block every app service gets


@dataclass(frozen=True)
class Variable:
    name: str
    default: str  # as written in the environment; "" for none
    required: str  # "yes", "no", or the condition under which it is
    readers: str  # which processes read it
    text: str  # what it does
    compose: str  # ALL_APP, one compose service, "command" (in a command line) or "" (not passed: why in text)


def settings_definitions(source: Path = SETTINGS_SOURCE) -> dict[str, tuple[str, str, bool]]:
    """Every variable the settings module reads: name -> (kind, default as text, required).

    Found in the source (`env.url("REDIS_URL", "redis://...")`), in the order it reads them, so
    a setting added there shows up here with no other change."""
    tree = ast.parse(source.read_text())
    found: dict[str, tuple[str, str, bool]] = {}
    calls = sorted((n for n in ast.walk(tree) if isinstance(n, ast.Call)), key=lambda n: (n.lineno, n.col_offset))
    for node in calls:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "env"
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
                and node.args[0].value.isupper() and node.func.attr not in _ITEM_READS):
            continue
        name, kind = node.args[0].value, node.func.attr
        default = _default_text(node.args[1]) if len(node.args) > 1 else ""
        required = kind == "fernet_keys" or (kind == "url" and default == "None")
        if name not in found or (found[name][1] == "" and default):
            found[name] = (kind, "" if default == "None" else default, required)
    return found


# Reads of one item of a variable already read whole (REMINDER_STAGES_DAYS's days).
_ITEM_READS = ("positive_int_item",)


def _default_text(node: ast.expr) -> str:
    """The default as one would write it in .env: 86400, not 24 * 3600; "on" for a True flag."""
    try:
        value = eval(compile(ast.Expression(node), "<default>", "eval"), {"__builtins__": {}})  # our own literals
    except Exception:  # another setting's value (redis_url): name its variable
        return ast.unparse(node).upper()
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "None" if value is None else str(value)


# What each variable of the settings module does. A new one fails the drift test until it is
# explained here. Required-when conditions are spelled out; readers default to APP.
EXPLAINED: dict[str, str] = {
    "REDIS_URL": "The service's state. Unset under `make run`: it starts an embedded Redis and writes its URL to .env.",
    "REDIS_CLUSTER": "1: REDIS_URL is one node of a Redis Cluster (database 0 only); CELERY_BROKER_URL is then required.",
    "SALLA_WEBHOOK_STRATEGY": "How Salla's webhooks are verified: signature, token, or none (no verification, on purpose only).",
    "SALLA_WEBHOOK_SECRET": "The webhook secret of the app in Salla Partners.",
    "REMINDER_CHANNELS": "Default channels, in order, of stores that set none: log, webhook, whatsapp, sms, email.",
    "REMINDER_WEBHOOK_URL": "The merchant-side webhook reminders are posted to (default of stores that set none).",
    "REMINDER_WEBHOOK_SECRET": "Signs the reminder webhook's body.",
    "REMINDER_STAGES_DAYS": "Days before expiry at which a reminder goes out.",
    "CELERY_BROKER_URL": "Celery's broker: redis://, rediss://, unix:// or RabbitMQ's amqp://. Defaults to REDIS_URL.",
    "REDIS_KEY_PREFIX": "Prefix of every Redis key: keeps deployments sharing a Redis apart.",
    "WEBHOOK_MAX_BODY_BYTES": "Larger webhook bodies are refused with 413.",
    "WEBHOOK_DEDUPE_TTL_SECONDS": "How long a webhook's id is remembered to drop Salla's retries.",
    "SALLA_API_BASE_URL": "Salla's Merchant API.",
    "SALLA_ACCESS_TOKEN": "Single-store mode: one store's access token, used for every merchant (no refresh).",
    "SALLA_HTTP_TIMEOUT_SECONDS": "Timeout of one request to Salla or to a channel's provider (SMTP: of the whole send), at most 30; a delivery's claims and lease follow it.",
    "SALLA_PAGE_SIZE": "Customers per page when listing (Salla's most is 60).",
    "STORE_TIMEZONE": "The stores' zone (IANA) for quiet hours and dates in messages.",
    "REMINDER_MIN_POINTS": "A stage with fewer points expiring sends nothing.",
    "REMINDER_LANGUAGE": "ar or en: for customers whose language Salla does not give.",
    "LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR.",
    "LOG_FORMAT": "json (one object a line, for collectors; the default) or text (one short line for a person; `make run` sets it).",
    "TOKEN_ENCRYPTION_KEY": "Fernet key(s) that encrypt stored Salla tokens; two comma-separated while rotating (the first encrypts). "
                            "Make one: `python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'`.",
    "SALLA_ACCOUNTS_URL": "Salla's OAuth server (token refresh).",
    "SALLA_CLIENT_ID": "The app's OAuth client id (Salla Partners).",
    "SALLA_CLIENT_SECRET": "The app's OAuth client secret.",
    "TOKEN_REFRESH_AHEAD_SECONDS": "Tokens are refreshed this long before they expire.",
    "SALLA_PLAN_LIMIT": "Requests per plan window allowed per store (Salla's plan).",
    "SALLA_PLAN_WINDOW_SECONDS": "The plan limit's window.",
    "SALLA_CUSTOMER_LIMIT": "Requests to customer endpoints per customer window, per store.",
    "SALLA_CUSTOMER_WINDOW_SECONDS": "The customer limit's window.",
    "LOYALTY_MISSING_RETRY_SECONDS": "A store without the loyalty feature is asked again after this long.",
    "SYNC_MAX_ATTEMPTS": "Attempts to read a customer before giving up.",
    "SYNC_DEBOUNCE_SECONDS": "Wait after a customer's first event so a burst of events costs one read.",
    "ADMIN_TOKEN": "Bearer token for /admin/*, 32 characters or more; unset: /admin/* answers 404.",
    "QUIET_HOURS": "HH:MM-HH:MM in the store's zone when nothing is sent; off: any time.",
    "REMINDER_RECHECK_MAX_AGE": "Lots are re-checked against a read no older than this (seconds, at least 900).",
    "REMINDER_EXCLUDED_STATUSES": "Comma list of loyalty statuses that never get reminders.",
    "POINT_VALUE_SAR": "What one point is worth in SAR; 0: not shown.",
    "SWEEP_INTERVAL_SECONDS": "How often beat sweeps the due set.",
    "REMINDER_LOOKAHEAD": "A stage's reminder also names lots entering it within this long (90m, 12h, 1d).",
    "REMINDER_CHANNEL_POLICY": "all (every channel) or first (the next only when one fails for good).",
    "WHATSAPP_API_URL": "WhatsApp Business Cloud API.",
    "WHATSAPP_PHONE_NUMBER_ID": "The sending number's id.",
    "WHATSAPP_ACCESS_TOKEN": "WhatsApp API token.",
    "WHATSAPP_TEMPLATE_NAME": "The approved template (5 body parameters).",
    "WHATSAPP_APP_SECRET": "Verifies WhatsApp status webhooks.",
    "WHATSAPP_VERIFY_TOKEN": "Answers Meta's hub.challenge.",
    "SMS_PROVIDER": "unifonic or taqnyat.",
    "SMS_API_URL": "Defaults to the provider's own.",
    "SMS_API_KEY": "Unifonic's AppSid or Taqnyat's bearer token.",
    "SMS_SENDER": "The SMS sender name.",
    "SMTP_URL": "smtp://user:password@host:587 (STARTTLS when offered) or smtps://...:465.",
    "EMAIL_FROM": "The reminders' From address.",
    "PUBLIC_BASE_URL": "Where shoppers and providers reach this service (unsubscribe links, SMS reports).",
    "ADMIN_PORT": "Serve /admin/* only on this port (bound on ADMIN_ADDRESS); unset: on the public port.",
    "ADMIN_AUTH_FAILURES_PER_MINUTE": "Failed admin logins per client address per minute, then 429.",
    "ADMIN_AUDIT_KEEP": "Changes kept in the audit list (GET /admin/audit).",
    "METRICS_PORT": "This process serves its Prometheus metrics on this port; unset: none.",
    "SALLA_APP_ID": "The app's id in Salla Partners (the store's settings form is read through it); empty: not read.",
    "RESYNC_AFTER_DAYS": "Customers not read for this many days are read again, at low priority.",
    "DATA_RETENTION_DAYS": "Personal data of a customer not seen for this many days expires (PDPL).",
    "PUBLIC_WEBHOOK_URL": "Where Salla sends a store's events (`subscribe-webhooks`).",
    "BACKFILL_ON_AUTHORIZE": "on or off: read a store's existing customers after app.store.authorize.",
    "BACKFILL_MAX_STORES": "Stores backfilling at once, fleet-wide (1..100000); the others wait in install order, shown by `backfill-status`.",
    "BACKFILL_MAX_READS": "Backfill reads in flight at once, fleet-wide (1..10000): about half the reads workers' processes, so event-driven reads always find one free.",
    "DUE_SET_SHARDS": "Shards of the due set (1..1024); after a change run `reshard-due-set --from OLD`.",
    "HOLDOUT_PERCENT": "Share of a store's customers (0-50) who get no reminder, to measure what reminders cause; a store may set its own.",
    "SALLA_INTROSPECT_URL": "Salla's Token Introspect: verifies the token of the app's page in the merchant's dashboard.",
    "SALLA_EMBEDDED_SDK_URL": "Salla's Embedded SDK script, the one thing the merchant's page loads from outside (none: no script).",
    "EMBEDDED_DEV_ORIGIN": "With ALLOW_PRIVATE_URLS=1 only: another origin allowed to frame the merchant's page (the devkit's dashboard).",
    "ALLOW_PRIVATE_URLS": "1: stores' channel addresses may be http://, loopback or private (local development only).",
}

# Required only under a condition the settings module checks in code.
REQUIRED_WHEN = {
    "SALLA_WEBHOOK_SECRET": "unless SALLA_WEBHOOK_STRATEGY=none",
    "REMINDER_WEBHOOK_URL": "when REMINDER_CHANNELS has webhook",
    "REMINDER_WEBHOOK_SECRET": "when REMINDER_CHANNELS has webhook",
    "CELERY_BROKER_URL": "when REDIS_CLUSTER=1",
}

# Read outside the settings module: (default, readers, compose, what it does).
PROCESS_VARIABLES: dict[str, tuple[str, str, str, str]] = {
    "LOG_PROCESS_NAME": ("guessed from the command", "all", ALL_APP,
                         "The `process` field of each log line; compose sets it per service."),
    "PORT": ("8000", "web", "web", "The web's public port."),
    "BIND_ADDRESS": ("0.0.0.0", "web", "web", "The address the public port binds."),
    "WEB_CONCURRENCY": ("2", "web", "web", "gunicorn worker processes (never empty: gunicorn fails on \"\")."),
    "WEB_ACCESS_LOG": ("", "web", ALL_APP, "1: gunicorn logs each request (scrubbed)."),
    "ADMIN_ADDRESS": ("127.0.0.1", "web", ALL_APP, "The address ADMIN_PORT binds."),
    "METRICS_ADDRESS": ("0.0.0.0", "all", ALL_APP, "The address METRICS_PORT binds."),
    "PROMETHEUS_MULTIPROC_DIR": ("$TMPDIR/lpr-metrics-<port>", "all", "",
                                 "Metrics files of prefork processes; emptied at each start. Not in compose: the default suits a container."),
    "INTAKE_CONCURRENCY": ("2", "intake", "command", "Processes of the intake worker."),
    "READS_CONCURRENCY": ("8", "reads", "command", "Processes of the reads worker."),
    "DELIVERIES_CONCURRENCY": ("4", "deliveries", "command", "Processes of the deliveries worker."),
    "CELERY_BEAT_SCHEDULE": ("/tmp/celerybeat-schedule", "beat", "",
                             "Beat's schedule file (Procfile). Not in compose: fixed there, a .env path is a host path."),
    "FLOWER_PORT": ("5555", "flower", "flower", "Flower's port (compose fixes 5555)."),
    "FLOWER_ADDRESS": ("all addresses", "flower", "flower",
                       "Flower's address (`make run` sets 127.0.0.1; compose fixes 0.0.0.0 behind a port published on loopback only)."),
    "FLOWER_BASIC_AUTH": ("", "flower", "flower",
                          "user:password for Flower. Required unless FLOWER_ADDRESS is loopback (127.0.0.1, ::1, localhost)."),
    "WEB_METRICS_PORT": ("", "web (make run)", "", "METRICS_PORT of the Procfile's web. Not in compose: each container has METRICS_PORT."),
    "INTAKE_METRICS_PORT": ("", "intake (make run)", "", "METRICS_PORT of the Procfile's intake."),
    "READS_METRICS_PORT": ("", "reads (make run)", "", "METRICS_PORT of the Procfile's reads."),
    "DELIVERIES_METRICS_PORT": ("", "deliveries (make run)", "", "METRICS_PORT of the Procfile's deliveries."),
    "SWEEPER_METRICS_PORT": ("", "sweeper (make run)", "", "METRICS_PORT of the Procfile's sweeper."),
    "EMBEDDED_REDIS_PORT": ("6389", "make run", "", "Port of `make run`'s embedded Redis."),
    "RABBITMQ_DEFAULT_USER": ("guest", "rabbitmq (compose)", "rabbitmq", "The user RabbitMQ creates on its first start."),
    "RABBITMQ_DEFAULT_PASS": ("guest", "rabbitmq (compose)", "rabbitmq", "Its password (then use both in CELERY_BROKER_URL)."),
}

# Settings of the settings module that compose sets per service rather than in x-app-env.
_COMPOSE_OVERRIDES = {"REDIS_URL": ALL_APP}


def reference() -> list[Variable]:
    """Every variable, settings module first (in its order), then the processes' own."""
    variables = []
    for name, (kind, default, required) in settings_definitions().items():
        variables.append(Variable(name, default, "yes" if required else REQUIRED_WHEN.get(name, "no"), APP,
                                  EXPLAINED.get(name, ""), _COMPOSE_OVERRIDES.get(name, ALL_APP)))
    for name, (default, readers, compose, text) in PROCESS_VARIABLES.items():
        variables.append(Variable(name, default, "no" if name != "FLOWER_BASIC_AUTH" else "unless Flower binds loopback",
                                  readers, text, compose))
    return variables


def render(variables: list[Variable]) -> str:
    lines = [
        "# Configuration",
        "",
        "<!-- Generated by `make config-reference` from service/config/settings.py and service/config/reference.py: do not edit. -->",
        "",
        "Every setting is an environment variable. `make run` and the CLI read `.env` (copy `.env.example`);",
        "docker compose passes each one below to its containers. An empty value counts as unset.",
        "",
        "| Name | Required | Default | Read by | What it does |",
        "| --- | --- | --- | --- | --- |",
    ]
    for v in variables:
        default = f"`{v.default}`" if v.default else ""
        text = v.text.replace("|", "\\|")  # a | inside a cell would end it
        lines.append(f"| `{v.name}` | {v.required} | {default} | {v.readers} | {text} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """`python -m service.config.reference [PATH]`: write the page (docs/configuration.md)."""
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(reference()))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
