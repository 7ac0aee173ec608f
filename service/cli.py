"""Operator commands: `salla-reminders --help` (or `python -m service.cli --help`); each
command's help is its function's docstring below.

  stores                      every store: state, counters, token expiry (never the token)
  store M                     one store
  set-store M --plan-limit N  per-store settings (also --point-value-sar, --paused/--resumed,
                              --language ar|en, --store-name NAME, --timezone, --quiet-hours,
                              --stages-days, --min-points, --excluded-statuses, --holdout-percent)
  reset-store M               mark a store active again (after fixing SALLA_CLIENT_ID, say)
  stats [M]                   reminders sent, points reminded, saved and lost, per store and stage
  holdout [M]                 what reminders cause: the holdout's effect, interval, points saved
  reminder M ID               one reminder's ledger record (state, attempts, channels)
  dead-letters list [M]       reminders that could not be delivered
  dead-letters replay M ID    send one again (the next sweep publishes it)
  dead-letters drop M ID      give up on one (its lots count as handled, not as reminded)
  alarms                      what only an operator can fix (e.g. Salla refuses our client secret)
  clear-alarm NAME            after fixing it
  rotate-token-keys           re-encrypt stored tokens (channel settings, deployment secrets) under the first key
  channels M                  the store's channels, policy and provider settings (secrets masked)
  set-channels M [--order whatsapp,sms,email] [--policy first|all] [--set sms.provider=taqnyat ...]
                              [--json FILE|-]   change them (checked first; --set X.Y= resets a field)
  templates M                 the store's message templates (overridden or shipped)
  set-template M NAME FILE    override one (checked now: a bad one is refused naming the line);
                              --reset instead of FILE goes back to the shipped one
  preview M C [--channel X] [--lang ar|en]   exactly what the store's channels would send to C
  send-test M --to ADDRESS [--channel X] [--lang ar|en]   send one sample reminder now
  statuses [M]                sent, delivered, read and failed by reason, per channel
  backfill M                  read every existing customer of the store (low priority, resumable)
  backfill-status [M]         customers listed, read, reminders scheduled, time left at its budget;
                              without M: the stores backfilling and those queued (BACKFILL_MAX_STORES)
  export-customer M C         everything held about one customer, as JSON (PDPL)
  forget-customer M C         erase it (a tombstone that names nobody stays)
  subscribe-webhooks M        subscribe the store's events to PUBLIC_WEBHOOK_URL; list what is missing
  due-set                     the due set's shards (DUE_SET_SHARDS): entries waiting and leased in each
  reshard-due-set --from N    after changing DUE_SET_SHARDS from N: move every entry to its new shard
                              (safe to run again, and while the service runs)

It reads .env from the current directory as `make run` does (a variable already set wins), and
`make run` writes its embedded Redis's URL there, so a second shell finds the same Redis.
Answers are tables; --json prints them as JSON for scripts. Exit status: 0 done, 1 failed (the
command ran and what it did failed: Salla or a provider refused), 2 usage or configuration (a
bad value, an unknown store, customer or reminder), 3 Redis or the broker unavailable (one
line, no traceback).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import redis
from cryptography.fernet import InvalidToken

from service.ops.admin_views import (channels_view, dead_letters, outcome_stats, start_backfill,  # the same views as /admin/*
                           store_summary, templates_view)
from service.state.channel_settings import ChannelSettings
from service.cli_output import progress_bar, show
from service.state.alarms import Alarms
from service.state import deployment_secrets, holdout
from service.state.keys import Keys
from service.state.redis_client import connect
from service.config.settings import Settings, SettingsError
from service.state.stores import ACTIVE, ConfigError, StoreRegistry
from service.state.tokens import TokenStore
from service.ops import dead_letters as dead_letter_actions
from service.ops import preview as previews
from service.clients.channels import ChannelDirectory, DeliveryPermanentError, DeliveryTransientError
from service.state.due_set import MAX_SHARDS, DueSet
from service.state.ledger import Ledger, status_counts


class CommandError(Exception):
    """Usage: a bad value, or a store, customer or reminder that does not exist (exit 2)."""


class CommandFailed(Exception):
    """The command ran and what it did failed: Salla or a provider refused (exit 1)."""


class Unavailable(Exception):
    """Redis or the broker did not answer (exit 3)."""


EXIT_DONE, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3
COMMANDS: dict = {}


def command(name: str):
    """Register a command; its docstring is its help (first line) and description (all)."""
    def register(function):
        COMMANDS[name] = function
        return function
    return register


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="salla-reminders", description="Operate the reminder service.",
                                     epilog="Exit status: 0 done, 1 failed, 2 usage or configuration, "
                                            "3 Redis or the broker unavailable.")
    parser.add_argument("--json", dest="json_output", action="store_true", help="JSON for scripts instead of tables")
    # --json after the command too (`stores --json`), except set-channels, whose --json reads a file.
    as_json = argparse.ArgumentParser(add_help=False)
    as_json.add_argument("--json", dest="json_output", action="store_true", default=argparse.SUPPRESS,
                         help="JSON for scripts instead of tables")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, json_option: bool = True) -> argparse.ArgumentParser:
        doc = (COMMANDS[name].__doc__ or "").strip()
        return commands.add_parser(name, help=doc.splitlines()[0] if doc else None, description=doc,
                                   parents=[as_json] if json_option else [],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)

    add("stores")
    add("store").add_argument("merchant_id", type=int)
    configure = add("set-store")
    configure.add_argument("merchant_id", type=int)
    configure.add_argument("--plan-limit", help="Salla plan requests per minute (120, 360, 720)")
    configure.add_argument("--point-value-sar", help="what one point is worth in SAR")
    configure.add_argument("--language", help="ar or en: for customers whose language Salla does not give")
    configure.add_argument("--store-name", help="the store's name as the shopper's messages say it")
    configure.add_argument("--timezone", help="IANA zone of the store, e.g. Asia/Riyadh")
    configure.add_argument("--quiet-hours", help="HH:MM-HH:MM in the store's zone, or off")
    configure.add_argument("--stages-days", help="reminder stages in days before expiry, e.g. 30,7,1")
    configure.add_argument("--min-points", help="a stage with fewer points expiring sends nothing")
    configure.add_argument("--excluded-statuses", help="comma list of loyalty statuses never reminded")
    configure.add_argument("--holdout-percent", help="0-50: customers who get no reminder (to measure the effect)")
    pause = configure.add_mutually_exclusive_group()
    pause.add_argument("--paused", dest="paused", action="store_const", const=1, help="hold all reminders")
    pause.add_argument("--resumed", dest="paused", action="store_const", const=0, help="send reminders again")
    add("reset-store").add_argument("merchant_id", type=int)
    add("stats").add_argument("merchant_id", type=int, nargs="?")
    add("holdout").add_argument("merchant_id", type=int, nargs="?")
    reminder = add("reminder")
    reminder.add_argument("merchant_id", type=int)
    reminder.add_argument("reminder_id")
    dead = add("dead-letters")
    dead.add_argument("action", choices=["list", "replay", "drop"])
    dead.add_argument("merchant_id", type=int, nargs="?")
    dead.add_argument("reminder_id", nargs="?")
    add("alarms")
    add("clear-alarm").add_argument("name")
    add("rotate-token-keys").add_argument("--dry-run", action="store_true", help="check every record decrypts; change nothing")
    add("channels").add_argument("merchant_id", type=int)
    chan = add("set-channels", json_option=False)
    chan.add_argument("merchant_id", type=int)
    chan.add_argument("--order", help="comma list in the order to try: whatsapp,sms,email,webhook,log")
    chan.add_argument("--policy", choices=["first", "all"])
    chan.add_argument("--set", action="append", default=[], metavar="CHANNEL.FIELD=VALUE",
                      help="a provider setting, e.g. whatsapp.access_token=...; empty value: back to the default")
    chan.add_argument("--json", metavar="FILE", help="a JSON object of settings ('-' reads standard input)")
    add("templates").add_argument("merchant_id", type=int)
    tpl = add("set-template")
    tpl.add_argument("merchant_id", type=int)
    tpl.add_argument("name")
    source = tpl.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="the template's file ('-' reads standard input)")
    source.add_argument("--reset", action="store_true", help="go back to the shipped template")
    prev = add("preview")
    prev.add_argument("merchant_id", type=int)
    prev.add_argument("customer_id", type=int)
    prev.add_argument("--channel")
    prev.add_argument("--lang", choices=["ar", "en"])
    test = add("send-test")
    test.add_argument("merchant_id", type=int)
    test.add_argument("--to", required=True, help="an e-mail address or a mobile number (+9665...)")
    test.add_argument("--channel")
    test.add_argument("--lang", choices=["ar", "en"])
    add("statuses").add_argument("merchant_id", type=int, nargs="?")
    backfill = add("backfill")
    backfill.add_argument("merchant_id", type=int)
    backfill.add_argument("--watch", action="store_true", help="show its progress until it ends (Ctrl-C leaves it running)")
    add("backfill-status").add_argument("merchant_id", type=int, nargs="?")
    add("subscribe-webhooks").add_argument("merchant_id", type=int)
    for name in ("export-customer", "forget-customer"):
        one = add(name)
        one.add_argument("merchant_id", type=int)
        one.add_argument("customer_id", type=int)
        if name == "forget-customer":
            one.add_argument("--dry-run", action="store_true", help="count what would be erased; erase nothing")
    add("due-set")
    reshard = add("reshard-due-set")
    reshard.add_argument("--from", dest="from_shards", type=int, required=True, metavar="N",
                         help="the DUE_SET_SHARDS the entries were written under (1 if it was never set)")
    reshard.add_argument("--dry-run", action="store_true", help="count what would move; move nothing")
    return parser


def load_env_file(path: Path) -> None:
    """.env as `make run` reads it: a variable already set in the environment wins."""
    if path.is_file():
        from dotenv import load_dotenv
        load_dotenv(path, override=False)


def _where(url: str) -> str:
    """A Redis or broker URL without its password, for an error line."""
    parts = urlparse(url)
    host = parts.hostname or parts.path
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # run as a program (tests call main with their own argv and environment)
        load_env_file(Path.cwd() / ".env")
    args = _parser().parse_args(argv)  # a usage error exits 2 (argparse)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        output = run(args, settings)
    except (CommandError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CommandFailed as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except (redis.ConnectionError, redis.TimeoutError, redis.exceptions.RedisClusterException) as exc:
        print(f"unavailable: Redis at {_where(settings.redis_url)} did not answer ({_reason(exc)})", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except Unavailable as exc:
        print(f"unavailable: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    show(output, getattr(args, "json_output", False))
    return EXIT_DONE


def _reason(exc: Exception) -> str:
    """redis-py's message, first line only, without the URL it may quote."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text.split(". ")[-1].rstrip(".") if "connecting to" in text else text


class Context:
    """What every command works with: the settings, Redis and the stores' registry."""

    def __init__(self, args, settings: Settings):
        self.args, self.settings = args, settings
        self.store = connect(settings)
        self.prefix = settings.redis_key_prefix
        self.registry = StoreRegistry(self.store, self.prefix)
        self.tokens = TokenStore(self.store, self.prefix, settings.token_encryption_keys)
        self.ledger = Ledger(self.store, self.prefix)
        self.json_output = getattr(args, "json_output", False)


# Commands that change what the service holds or does, audited as the admin API's changes are
# (`GET /admin/audit`); dead-letters only for replay and drop, and a --dry-run (it changes nothing) not.
CHANGES = {"set-store", "reset-store", "dead-letters", "clear-alarm", "rotate-token-keys", "set-channels",
           "set-template", "send-test", "backfill", "subscribe-webhooks", "forget-customer", "reshard-due-set"}
# What names the thing a command acts on: ids, shown in the audit's path.
_TARGETS = ("action", "merchant_id", "customer_id", "reminder_id", "name")
_NOT_OPTIONS = {"command", "json_output", *_TARGETS}


def run(args, settings: Settings):
    ctx = Context(args, settings)
    merchant_id = getattr(args, "merchant_id", None)
    if merchant_id is not None and not ctx.store.sismember(ctx.registry.keys.stores, merchant_id):
        # Never a phantom: `store 999` used to print an empty summary, `set-store 999` to add it.
        raise CommandError(f"no store {merchant_id}: it never installed the app (see `stores`)")
    if args.command not in CHANGES or getattr(args, "action", None) == "list" or getattr(args, "dry_run", False):
        return COMMANDS[args.command](args, ctx)
    status = EXIT_FAILED
    try:
        result = COMMANDS[args.command](args, ctx)
        status = EXIT_DONE
        return result
    except (CommandError, ConfigError):
        status = EXIT_USAGE
        raise
    finally:
        _audit_change(ctx, args, status)


def audited_path(args) -> str:
    """`set-store 7`, `dead-letters replay 7 r-1`: the command and its ids."""
    return " ".join([args.command] + [str(getattr(args, name)) for name in _TARGETS
                                      if getattr(args, name, None) is not None])


def option_names(args) -> list[str]:
    """The options a command was given, by name; `--set whatsapp.access_token=...` as
    `whatsapp.access_token`. Never a value: a token, a mobile number or a template's source."""
    names = []
    for name, value in vars(args).items():
        if name in _NOT_OPTIONS or value is None or value is False or value == []:
            continue
        if name == "set":
            names.extend(item.split("=", 1)[0].strip() for item in value)
        else:
            names.append(name)
    return names


def _audit_change(ctx, args, status: int) -> None:
    """One audit entry for a change, whatever its outcome. With Redis gone the command has
    already failed on it; the entry is then lost, said on standard error, and the command's own
    error is the one reported."""
    from service.ops.admin_guard import AuditLog, cli_entry
    entry = cli_entry(audited_path(args), status, time.time(), option_names(args), access=None)
    try:
        AuditLog(ctx.store, ctx.prefix, ctx.settings.admin_audit_keep).record(entry)
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        print(f"warning: `{entry['path']}` was not audited: Redis did not answer ({_reason(exc)})", file=sys.stderr)


@command("stores")
def _stores(args, ctx):
    """Every store: state, counters, token expiry (never the token)."""
    return [store_summary(ctx.registry, ctx.tokens, m, ctx.settings) for m in ctx.registry.merchants()]


@command("store")
def _store(args, ctx):
    """One store: state, counters, settings, token expiry."""
    return store_summary(ctx.registry, ctx.tokens, args.merchant_id, ctx.settings)


@command("reset-store")
def _reset_store(args, ctx):
    """Mark a store active again (after fixing SALLA_CLIENT_ID, say)."""
    ctx.registry.set_state(args.merchant_id, ACTIVE, "reset by an operator")
    return store_summary(ctx.registry, ctx.tokens, args.merchant_id, ctx.settings)


@command("stats")
def _stats(args, ctx):
    """Reminders sent, points reminded, saved and lost, per store and stage."""
    merchants = [args.merchant_id] if args.merchant_id else ctx.registry.merchants()
    return {str(m): outcome_stats(ctx.store, Keys(ctx.prefix), m) for m in merchants}


@command("holdout")
def _holdout(args, ctx):
    """What reminders cause, measured against the store's holdout: the effect, its 95-percent interval, points saved."""
    merchants = [args.merchant_id] if args.merchant_id else ctx.registry.merchants()
    return {str(m): holdout.store_report(ctx.store, ctx.prefix, m, ctx.settings, time.time()) for m in merchants}


@command("set-store")
def _set_store(args, ctx):
    """Per-store settings: plan limit, point value, pause, language, name, zone, quiet hours, stages.

Each is checked first; a bad value changes nothing."""
    return ctx.registry.set_config(args.merchant_id, plan_limit=args.plan_limit,
                                   point_value_sar=args.point_value_sar, paused=args.paused,
                                   language=args.language, store_name=args.store_name, timezone=args.timezone,
                                   quiet_hours=args.quiet_hours, stages_days=args.stages_days,
                                   min_points=args.min_points, excluded_statuses=args.excluded_statuses,
                                   holdout_percent=args.holdout_percent)


@command("reminder")
def _reminder(args, ctx):
    """One reminder's ledger record (state, attempts, channels)."""
    record = ctx.ledger.get(args.merchant_id, args.reminder_id)
    if record is None:
        raise CommandError(f"no reminder {args.reminder_id} for merchant {args.merchant_id} in the ledger")
    return record.view()


@command("dead-letters")
def _dead_letters(args, ctx):
    """Reminders that could not be delivered: list [M], replay M ID (the next sweep sends it), drop M ID."""
    if args.action == "list":
        merchants = [args.merchant_id] if args.merchant_id else ctx.registry.merchants()
        return {m: letters for m, letters in dead_letters(ctx.ledger, merchants).items() if letters}
    if args.merchant_id is None or not args.reminder_id:
        raise CommandError(f"dead-letters {args.action} needs a merchant id and a reminder id")
    act = dead_letter_actions.replay if args.action == "replay" else dead_letter_actions.drop
    due = DueSet(ctx.store, ctx.prefix, shards=ctx.settings.due_set_shards)
    if not act(ctx.ledger, due, args.merchant_id, args.reminder_id, time.time()):
        raise CommandError(f"no dead letter {args.reminder_id} for merchant {args.merchant_id}")
    return {"merchant_id": args.merchant_id, "reminder_id": args.reminder_id, "done": args.action}


@command("due-set")
def _due_set(args, ctx):
    """The due set's shards (DUE_SET_SHARDS): entries waiting and leased in each."""
    due = DueSet(ctx.store, ctx.prefix, shards=ctx.settings.due_set_shards)
    return {"shards": due.shards, "pending": due.pending_count(), "processing": due.processing_count(),
            "by_shard": due.counts()}


@command("reshard-due-set")
def _reshard_due_set(args, ctx):
    """After changing DUE_SET_SHARDS from N: move every entry to its new shard.

Safe to run again, and while the service runs. --dry-run counts what would move."""
    if not 1 <= args.from_shards <= MAX_SHARDS:
        raise CommandError(f"--from {args.from_shards}: give the old DUE_SET_SHARDS, 1 to {MAX_SHARDS}")
    due = DueSet(ctx.store, ctx.prefix, shards=ctx.settings.due_set_shards)
    with progress_bar("shards", max(args.from_shards, due.shards), _bars(ctx)) as bar:
        return due.reshard(args.from_shards, progress=lambda done, total: bar.update(done, total),
                           dry_run=args.dry_run)


@command("alarms")
def _alarms(args, ctx):
    """What only an operator can fix (e.g. Salla refuses our client secret)."""
    return Alarms(ctx.store, ctx.prefix).active()


@command("clear-alarm")
def _clear_alarm(args, ctx):
    """Clear an alarm after fixing its cause."""
    if not Alarms(ctx.store, ctx.prefix).clear(args.name):
        raise CommandError(f"no alarm named {args.name}")
    return {"cleared": args.name}


@command("rotate-token-keys")
def _rotate_token_keys(args, ctx):
    """Re-encrypt stored tokens, channel settings and deployment secrets under the first TOKEN_ENCRYPTION_KEY.

Then the old key can go. --dry-run only checks that every record decrypts."""
    try:  # first: the holdout's (and other keyed hashes') keys are re-wrapped, never changed
        secrets = deployment_secrets.rotate_all(ctx.store, ctx.prefix, ctx.settings.token_encryption_keys,
                                                dry_run=args.dry_run)
    except deployment_secrets.SecretError as exc:
        raise CommandError(str(exc)) from None
    channel_settings = ChannelSettings(ctx.store, ctx.prefix, ctx.settings)
    merchants = ctx.registry.merchants()
    tokens = channels = 0
    unreadable = []
    with progress_bar("stores", len(merchants), _bars(ctx)) as bar:
        for merchant_id in merchants:
            try:
                tokens += ctx.tokens.rotate(merchant_id, dry_run=args.dry_run)
                channels += channel_settings.rotate(merchant_id, dry_run=args.dry_run)
            except InvalidToken:
                unreadable.append(merchant_id)
            bar.advance()
    if unreadable and not args.dry_run:
        raise CommandFailed(f"no key in TOKEN_ENCRYPTION_KEY decrypts the records of stores {unreadable}; "
                            f"the others were re-encrypted ({tokens} tokens, {channels} channel settings)")
    answer = {"re_encrypted": tokens, "channel_settings_re_encrypted": channels,
              "deployment_secrets_re_encrypted": secrets}
    return {**answer, "dry_run": True, "undecryptable_stores": unreadable} if args.dry_run else answer


def _bars(ctx) -> bool:
    """Progress bars for a person at a terminal only: never under --json or into a pipe."""
    return not ctx.json_output and sys.stderr.isatty()


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None


def _set_channels(args, settings, store, registry):
    """A store's channels, policy and provider settings (checked first; --set X.Y= resets a field).

  set-channels M [--order whatsapp,sms,email] [--policy first|all] [--set sms.provider=taqnyat ...]
                 [--json FILE|-]
For JSON output, put --json before the command: `salla-reminders --json set-channels ...`."""
    changes: dict = {}
    if args.json:
        try:
            changes = json.loads(_read(args.json))
        except ValueError as exc:
            raise CommandError(f"--json: not JSON ({exc})") from None
        if not isinstance(changes, dict):
            raise CommandError("--json: give a JSON object")
    if args.order:
        changes["channels"] = [name.strip() for name in args.order.split(",") if name.strip()]
    if args.policy:
        changes["policy"] = args.policy
    for item in args.set:
        target, sep, value = item.partition("=")
        channel, dot, name = target.partition(".")
        if not sep or not dot:
            raise CommandError(f"--set {item!r}: write CHANNEL.FIELD=VALUE, e.g. sms.provider=taqnyat")
        if name == "max_segments" and value.isdigit():
            value = int(value)
        changes.setdefault(channel, {})
        if not isinstance(changes[channel], dict):
            raise CommandError(f"--set {item!r}: {channel} is not a channel with settings")
        changes[channel][name] = value if value != "" else None
    if not changes:
        raise CommandError("nothing to change: give --order, --policy, --set or --json")
    channel_settings = ChannelSettings(store, settings.redis_key_prefix, settings)
    channel_settings.update(args.merchant_id, changes)
    return channels_view(channel_settings, settings, args.merchant_id)


def _channels(args, settings, store, registry):
    """The store's channels, policy and provider settings (secrets masked)."""
    return channels_view(ChannelSettings(store, settings.redis_key_prefix, settings), settings, args.merchant_id)


def _templates(args, settings, store, registry):
    """The store's message templates (overridden or shipped)."""
    return templates_view(ChannelSettings(store, settings.redis_key_prefix, settings), args.merchant_id)


def _set_template(args, settings, store, registry):
    """Override one of a store's message templates (checked now: a bad one is refused naming the line).

--reset instead of FILE goes back to the shipped one."""
    channel_settings = ChannelSettings(store, settings.redis_key_prefix, settings)
    if args.reset:
        return {"template": args.name, "overridden": False,
                "removed": channel_settings.delete_template(args.merchant_id, args.name)}
    channel_settings.set_template(args.merchant_id, args.name, _read(args.file))
    return {"template": args.name, "overridden": True}


def _directory(settings, store, registry):
    import requests
    return ChannelDirectory(settings, store, requests.Session(), registry)


def _audited_read(settings, store, command: str, read):
    """A read of a customer's personal data, audited as the admin API's are (admin_guard) before
    anything is printed (Redis down: nothing is shown); a failed read is recorded with status 2."""
    from service.ops.admin_guard import AuditLog, cli_entry
    audit = AuditLog(store, settings.redis_key_prefix, settings.admin_audit_keep)
    try:
        result = read()
    except CommandError:
        audit.record(cli_entry(command, 2, time.time()))
        raise
    audit.record(cli_entry(command, 0, time.time()))
    return result


def _preview(args, settings, store, registry):
    """Exactly what the store's channels would send to customer C (audited: personal data)."""
    return _audited_read(settings, store, f"preview {args.merchant_id} {args.customer_id}", lambda: previews.preview(
        store, settings, _directory(settings, store, registry), args.merchant_id, args.customer_id, args.channel,
        args.lang))


def _send_test(args, settings, store, registry):
    """Send one sample reminder to an address now (fails with exit 1 when the channel refuses it)."""
    try:
        return previews.send_test(_directory(settings, store, registry), args.merchant_id, args.to, args.channel,
                                  args.lang)
    except (DeliveryPermanentError, DeliveryTransientError) as exc:
        raise CommandFailed(f"not sent: {exc}") from None


def _statuses(args, settings, store, registry):
    """Sent, delivered, read and failed by reason, per store and channel."""
    merchants = [args.merchant_id] if args.merchant_id else registry.merchants()
    return {str(m): status_counts(store, Keys(settings.redis_key_prefix), m) for m in merchants}


CHANNEL_COMMANDS = {"set-channels": _set_channels, "channels": _channels, "templates": _templates,
                    "set-template": _set_template, "preview": _preview, "send-test": _send_test,
                    "statuses": _statuses}


def _backfill(args, settings, store, registry):
    """Read every existing customer of the store (low priority, resumable); --watch shows its progress.

At most BACKFILL_MAX_STORES stores backfill at once: past that, the store waits queued for a slot,
in install order (backfill-status shows its place)."""
    from service.config.celery_config import PUMP_TASK
    from service.clients.queue import EventQueue, QueueUnavailable
    started = start_backfill(registry, args.merchant_id, time.time(), settings.backfill_max_stores)
    note = ("started" if started.get("state") == "running" else "queued for a slot") \
        if started.get("started") == "1" else f"already {started.get('state')}"
    try:
        if started.get("state") == "running":  # a queued store is pumped when it gets its slot
            EventQueue(settings).publish(PUMP_TASK, [args.merchant_id, True])
    except QueueUnavailable:
        note += " (the broker did not answer: beat's pump-backlog starts it within 15 s)"
    if args.watch:
        _watch(settings, registry, args.merchant_id, shown=not getattr(args, "json_output", False))
    return {"merchant_id": args.merchant_id, "backfill": note,
            "progress": _progress(settings, registry, args.merchant_id)}


def _watch(settings, registry, merchant_id, shown: bool, every: float = 2.0) -> None:
    """Customers read out of customers listed, while the run waits for a slot or runs (Ctrl-C stops
    watching, not the backfill)."""
    with progress_bar("customers read", None, shown) as bar:
        try:
            while True:
                now = _progress(settings, registry, merchant_id)
                bar.update(now.get("customers_read", 0) + now.get("covered_by_events", 0),
                           now.get("customers_listed") or None)
                if now.get("state") not in ("running", "queued"):  # done, failed or never: nothing more to watch
                    return
                time.sleep(every)
        except KeyboardInterrupt:
            return


def _progress(settings, registry, merchant_id):
    from service.ops import backfill
    return backfill.progress(registry.redis, registry.keys, settings, registry.config(merchant_id), merchant_id)


def _backfill_status(args, settings, store, registry):
    """Customers listed, read, reminders scheduled, time left at the store's budget; without M, the queue.

Without M: the stores backfilling now and those queued for a slot (BACKFILL_MAX_STORES), in the
order they will start."""
    if args.merchant_id is None:
        from service.ops import backfill
        return backfill.fleet(registry.redis, registry.keys, settings)
    return {"merchant_id": args.merchant_id, "backfill": _progress(settings, registry, args.merchant_id)}


def _export_customer(args, settings, store, registry):
    """Everything held about one customer, as JSON (PDPL; audited)."""
    from service.ops import personal_data

    def read():
        try:
            return personal_data.export(store, settings.redis_key_prefix, args.merchant_id, args.customer_id,
                                        due_set_shards=settings.due_set_shards)
        except personal_data.UnknownCustomer as exc:
            raise CommandError(str(exc)) from None
    return _audited_read(settings, store, f"export-customer {args.merchant_id} {args.customer_id}", read)


def _forget_customer(args, settings, store, registry):
    """Erase one customer's personal data (a tombstone that names nobody stays); --dry-run counts it."""
    from service.ops import personal_data
    try:
        return personal_data.forget(store, settings.redis_key_prefix, args.merchant_id, args.customer_id, time.time(),
                                    due_set_shards=settings.due_set_shards, secrets=settings.token_encryption_keys,
                                    dry_run=args.dry_run)
    except personal_data.UnknownCustomer as exc:
        raise CommandError(str(exc)) from None


def _subscribe_webhooks(args, settings, store, registry):
    """Subscribe the store's events to PUBLIC_WEBHOOK_URL through Salla's API; list what is missing."""
    import requests
    from service.clients.oauth import OperatorActionNeeded, StoreNotAuthorized
    from service.ops.runtime import build_runtime
    from service.clients.salla_client import SallaError, SallaUnauthorized
    from service.clients.webhook_subscriptions import SubscriptionError, subscribe
    rt = build_runtime(settings, store, requests.Session())
    try:
        token = rt.provider.access_token(args.merchant_id)
        try:
            return {"merchant_id": args.merchant_id, **subscribe(rt.client, token, settings)}
        except SallaUnauthorized:
            fresh = rt.provider.refresh(args.merchant_id, token)
            return {"merchant_id": args.merchant_id, **subscribe(rt.client, fresh.access_token, settings)}
    except (SubscriptionError, StoreNotAuthorized, OperatorActionNeeded) as exc:  # ours to fix: settings, the store
        raise CommandError(f"subscribe-webhooks: {exc}") from None
    except SallaError as exc:  # Salla refused or failed
        raise CommandFailed(f"subscribe-webhooks: {exc}") from None


OPERATIONS_COMMANDS = {"backfill": _backfill, "backfill-status": _backfill_status,
                       "export-customer": _export_customer, "forget-customer": _forget_customer,
                       "subscribe-webhooks": _subscribe_webhooks}


def _parts(function):
    """The channel and operations commands take (args, settings, store, registry)."""
    def call(args, ctx):
        return function(args, ctx.settings, ctx.store, ctx.registry)
    call.__doc__ = function.__doc__
    return call


for _name, _function in {**CHANNEL_COMMANDS, **OPERATIONS_COMMANDS}.items():
    COMMANDS[_name] = _parts(_function)


if __name__ == "__main__":
    sys.exit(main())
