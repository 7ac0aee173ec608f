"""Operator commands: `python -m service.cli --help`.

  stores                      every store: state, counters, token expiry (never the token)
  store M                     one store
  set-store M --plan-limit N  per-store settings (also --point-value-sar, --paused/--resumed,
                              --language ar|en, --store-name NAME, --timezone, --quiet-hours,
                              --stages-days, --min-points, --excluded-statuses)
  reset-store M               mark a store active again (after fixing SALLA_CLIENT_ID, say)
  stats [M]                   reminders sent, points reminded, saved and lost, per store and stage
  reminder M ID               one reminder's ledger record (state, attempts, channels)
  dead-letters list [M]       reminders that could not be delivered
  dead-letters replay M ID    send one again (the next sweep publishes it)
  dead-letters drop M ID      give up on one (its lots count as handled, not as reminded)
  alarms                      what only an operator can fix (e.g. Salla refuses our client secret)
  clear-alarm NAME            after fixing it
  rotate-token-keys           re-encrypt stored tokens (and channel settings) under the first key
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

Errors (a bad value, an unknown store or reminder) go to stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from service.admin import (channels_view, dead_letters, outcome_stats, start_backfill,  # the same views as /admin/*
                           store_summary, templates_view)
from service.channel_settings import ChannelSettings
from service.alarms import Alarms
from service.keys import Keys
from service.redis_client import connect
from service.settings import Settings, SettingsError
from service.stores import ACTIVE, ConfigError, StoreRegistry
from service.tokens import TokenStore
from workers import delivery, preview as previews
from workers.channels import ChannelDirectory, DeliveryPermanentError, DeliveryTransientError
from workers.due_set import MAX_SHARDS, DueSet
from workers.ledger import Ledger, status_counts


class CommandError(Exception):
    pass


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m service.cli", description="Operate the reminder service.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("stores", help="list every store")
    one = commands.add_parser("store", help="show one store")
    one.add_argument("merchant_id", type=int)
    configure = commands.add_parser("set-store", help="per-store settings")
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
    pause = configure.add_mutually_exclusive_group()
    pause.add_argument("--paused", dest="paused", action="store_const", const=1, help="hold all reminders")
    pause.add_argument("--resumed", dest="paused", action="store_const", const=0, help="send reminders again")
    reset = commands.add_parser("reset-store", help="mark a store active again")
    reset.add_argument("merchant_id", type=int)
    stats = commands.add_parser("stats", help="what the reminders achieved, per store and stage")
    stats.add_argument("merchant_id", type=int, nargs="?")
    reminder = commands.add_parser("reminder", help="one reminder's ledger record")
    reminder.add_argument("merchant_id", type=int)
    reminder.add_argument("reminder_id")
    dead = commands.add_parser("dead-letters", help="reminders that could not be delivered")
    dead.add_argument("action", choices=["list", "replay", "drop"])
    dead.add_argument("merchant_id", type=int, nargs="?")
    dead.add_argument("reminder_id", nargs="?")
    commands.add_parser("alarms", help="what only an operator can fix")
    clear = commands.add_parser("clear-alarm", help="clear an alarm after fixing its cause")
    clear.add_argument("name")
    commands.add_parser("rotate-token-keys", help="re-encrypt stored tokens under the first key")
    show = commands.add_parser("channels", help="a store's channels (secrets masked)")
    show.add_argument("merchant_id", type=int)
    chan = commands.add_parser("set-channels", help="a store's channels, policy and provider settings")
    chan.add_argument("merchant_id", type=int)
    chan.add_argument("--order", help="comma list in the order to try: whatsapp,sms,email,webhook,log")
    chan.add_argument("--policy", choices=["first", "all"])
    chan.add_argument("--set", action="append", default=[], metavar="CHANNEL.FIELD=VALUE",
                      help="a provider setting, e.g. whatsapp.access_token=...; empty value: back to the default")
    chan.add_argument("--json", metavar="FILE", help="a JSON object of settings ('-' reads standard input)")
    tpls = commands.add_parser("templates", help="a store's message templates")
    tpls.add_argument("merchant_id", type=int)
    tpl = commands.add_parser("set-template", help="override one of a store's message templates")
    tpl.add_argument("merchant_id", type=int)
    tpl.add_argument("name")
    source = tpl.add_mutually_exclusive_group(required=True)
    source.add_argument("file", nargs="?", help="the template's file ('-' reads standard input)")
    source.add_argument("--reset", action="store_true", help="go back to the shipped template")
    prev = commands.add_parser("preview", help="what would be sent to one customer")
    prev.add_argument("merchant_id", type=int)
    prev.add_argument("customer_id", type=int)
    prev.add_argument("--channel")
    prev.add_argument("--lang", choices=["ar", "en"])
    test = commands.add_parser("send-test", help="send one sample reminder to an address")
    test.add_argument("merchant_id", type=int)
    test.add_argument("--to", required=True, help="an e-mail address or a mobile number (+9665...)")
    test.add_argument("--channel")
    test.add_argument("--lang", choices=["ar", "en"])
    statuses = commands.add_parser("statuses", help="delivery statuses per store and channel")
    statuses.add_argument("merchant_id", type=int, nargs="?")
    for name, text in (("backfill", "read every existing customer of the store"),
                       ("subscribe-webhooks", "subscribe the store's events through Salla's API")):
        command = commands.add_parser(name, help=text)
        command.add_argument("merchant_id", type=int)
    status = commands.add_parser("backfill-status", help="a store's backfill progress; without M, every "
                                 "store backfilling and the queue")
    status.add_argument("merchant_id", type=int, nargs="?")
    for name, text in (("export-customer", "everything held about one customer (JSON)"),
                       ("forget-customer", "erase one customer's personal data")):
        command = commands.add_parser(name, help=text)
        command.add_argument("merchant_id", type=int)
        command.add_argument("customer_id", type=int)
    commands.add_parser("due-set", help="entries waiting and leased in each shard of the due set")
    reshard = commands.add_parser("reshard-due-set", help="move due-set entries to their shard under DUE_SET_SHARDS")
    reshard.add_argument("--from", dest="from_shards", type=int, required=True, metavar="N",
                         help="the DUE_SET_SHARDS the entries were written under (1 if it was never set)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        output = run(args, settings)
    except (CommandError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(output, ensure_ascii=False, indent=2))
    return 0


def run(args, settings: Settings):
    store = connect(settings)
    prefix = settings.redis_key_prefix
    registry = StoreRegistry(store, prefix)
    tokens = TokenStore(store, prefix, settings.token_encryption_keys)
    ledger = Ledger(store, prefix)
    if args.command == "stores":
        return [store_summary(registry, tokens, m, settings) for m in registry.merchants()]
    if args.command == "store":
        return store_summary(registry, tokens, args.merchant_id, settings)
    if args.command == "reset-store":
        registry.set_state(args.merchant_id, ACTIVE, "reset by an operator")
        return store_summary(registry, tokens, args.merchant_id, settings)
    if args.command == "stats":
        merchants = [args.merchant_id] if args.merchant_id else registry.merchants()
        return {str(m): outcome_stats(store, Keys(prefix), m) for m in merchants}
    if args.command == "set-store":
        return registry.set_config(args.merchant_id, plan_limit=args.plan_limit,
                                   point_value_sar=args.point_value_sar, paused=args.paused,
                                   language=args.language, store_name=args.store_name, timezone=args.timezone,
                                   quiet_hours=args.quiet_hours, stages_days=args.stages_days,
                                   min_points=args.min_points, excluded_statuses=args.excluded_statuses)
    if args.command == "reminder":
        record = ledger.get(args.merchant_id, args.reminder_id)
        if record is None:
            raise CommandError(f"no reminder {args.reminder_id} for merchant {args.merchant_id} in the ledger")
        return record.view()
    if args.command == "dead-letters":
        if args.action == "list":
            merchants = [args.merchant_id] if args.merchant_id else registry.merchants()
            return {m: letters for m, letters in dead_letters(ledger, merchants).items() if letters}
        if args.merchant_id is None or not args.reminder_id:
            raise CommandError(f"dead-letters {args.action} needs a merchant id and a reminder id")
        act = delivery.replay if args.action == "replay" else delivery.drop
        if not act(ledger, DueSet(store, prefix, shards=settings.due_set_shards), args.merchant_id, args.reminder_id, time.time()):
            raise CommandError(f"no dead letter {args.reminder_id} for merchant {args.merchant_id}")
        return {"merchant_id": args.merchant_id, "reminder_id": args.reminder_id, "done": args.action}
    if args.command == "due-set":
        due = DueSet(store, prefix, shards=settings.due_set_shards)
        return {"shards": due.shards, "pending": due.pending_count(), "processing": due.processing_count(),
                "by_shard": due.counts()}
    if args.command == "reshard-due-set":
        if not 1 <= args.from_shards <= MAX_SHARDS:
            raise CommandError(f"--from {args.from_shards}: give the old DUE_SET_SHARDS, 1 to {MAX_SHARDS}")
        return DueSet(store, prefix, shards=settings.due_set_shards).reshard(args.from_shards)
    if args.command == "alarms":
        return Alarms(store, prefix).active()
    if args.command == "clear-alarm":
        if not Alarms(store, prefix).clear(args.name):
            raise CommandError(f"no alarm named {args.name}")
        return {"cleared": args.name}
    if args.command in OPERATIONS_COMMANDS:
        return OPERATIONS_COMMANDS[args.command](args, settings, store, registry)
    if args.command in CHANNEL_COMMANDS:
        return CHANNEL_COMMANDS[args.command](args, settings, store, registry)
    channel_settings = ChannelSettings(store, prefix, settings)
    return {"re_encrypted": tokens.rotate_all(),
            "channel_settings_re_encrypted": sum(channel_settings.rotate(m) for m in registry.merchants())}


def _read(path: str) -> str:
    if path == "-":
        return sys.stdin.read()
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None


def _set_channels(args, settings, store, registry):
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
    return channels_view(ChannelSettings(store, settings.redis_key_prefix, settings), settings, args.merchant_id)


def _templates(args, settings, store, registry):
    return templates_view(ChannelSettings(store, settings.redis_key_prefix, settings), args.merchant_id)


def _set_template(args, settings, store, registry):
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
    from service.admin_guard import AuditLog, cli_entry
    audit = AuditLog(store, settings.redis_key_prefix, settings.admin_audit_keep)
    try:
        result = read()
    except CommandError:
        audit.record(cli_entry(command, 2, time.time()))
        raise
    audit.record(cli_entry(command, 0, time.time()))
    return result


def _preview(args, settings, store, registry):
    return _audited_read(settings, store, f"preview {args.merchant_id} {args.customer_id}", lambda: previews.preview(
        store, settings, _directory(settings, store, registry), args.merchant_id, args.customer_id, args.channel,
        args.lang))


def _send_test(args, settings, store, registry):
    try:
        return previews.send_test(_directory(settings, store, registry), args.merchant_id, args.to, args.channel,
                                  args.lang)
    except (DeliveryPermanentError, DeliveryTransientError) as exc:
        raise CommandError(f"not sent: {exc}") from None


def _statuses(args, settings, store, registry):
    merchants = [args.merchant_id] if args.merchant_id else registry.merchants()
    return {str(m): status_counts(store, Keys(settings.redis_key_prefix), m) for m in merchants}


CHANNEL_COMMANDS = {"set-channels": _set_channels, "channels": _channels, "templates": _templates,
                    "set-template": _set_template, "preview": _preview, "send-test": _send_test,
                    "statuses": _statuses}


def _backfill(args, settings, store, registry):
    from service.celery_config import BACKFILL_QUEUE, PUMP_TASK
    from service.queue import EventQueue, QueueUnavailable
    started = start_backfill(registry, args.merchant_id, time.time(), settings.backfill_max_stores)
    note = ("started" if started.get("state") == "running" else "queued for a slot") \
        if started.get("started") == "1" else f"already {started.get('state')}"
    try:
        if started.get("state") == "running":  # a queued store is pumped when it gets its slot
            EventQueue(settings).publish(PUMP_TASK, [args.merchant_id, True], queue=BACKFILL_QUEUE)
    except QueueUnavailable:
        note += " (the broker did not answer: beat's pump-backlog starts it within 15 s)"
    return {"merchant_id": args.merchant_id, "backfill": note,
            "progress": _progress(settings, registry, args.merchant_id)}


def _progress(settings, registry, merchant_id):
    from workers import backfill
    return backfill.progress(registry.redis, registry.keys, settings, registry.config(merchant_id), merchant_id)


def _backfill_status(args, settings, store, registry):
    if args.merchant_id is None:
        from workers import backfill
        return backfill.fleet(registry.redis, registry.keys, settings)
    return {"merchant_id": args.merchant_id, "backfill": _progress(settings, registry, args.merchant_id)}


def _export_customer(args, settings, store, registry):
    from workers import personal_data

    def read():
        try:
            return personal_data.export(store, settings.redis_key_prefix, args.merchant_id, args.customer_id,
                                        due_set_shards=settings.due_set_shards)
        except personal_data.UnknownCustomer as exc:
            raise CommandError(str(exc)) from None
    return _audited_read(settings, store, f"export-customer {args.merchant_id} {args.customer_id}", read)


def _forget_customer(args, settings, store, registry):
    from workers import personal_data
    try:
        return personal_data.forget(store, settings.redis_key_prefix, args.merchant_id, args.customer_id, time.time(),
                                    due_set_shards=settings.due_set_shards, secrets=settings.token_encryption_keys)
    except personal_data.UnknownCustomer as exc:
        raise CommandError(str(exc)) from None


def _subscribe_webhooks(args, settings, store, registry):
    import requests
    from workers.oauth import OperatorActionNeeded, StoreNotAuthorized
    from workers.runtime import build_runtime
    from workers.salla_client import SallaError, SallaUnauthorized
    from workers.webhook_subscriptions import SubscriptionError, subscribe
    rt = build_runtime(settings, store, requests.Session())
    try:
        token = rt.provider.access_token(args.merchant_id)
        try:
            return {"merchant_id": args.merchant_id, **subscribe(rt.client, token, settings)}
        except SallaUnauthorized:
            fresh = rt.provider.refresh(args.merchant_id, token)
            return {"merchant_id": args.merchant_id, **subscribe(rt.client, fresh.access_token, settings)}
    except (SubscriptionError, StoreNotAuthorized, OperatorActionNeeded, SallaError) as exc:
        raise CommandError(f"subscribe-webhooks: {exc}") from None


OPERATIONS_COMMANDS = {"backfill": _backfill, "backfill-status": _backfill_status,
                       "export-customer": _export_customer, "forget-customer": _forget_customer,
                       "subscribe-webhooks": _subscribe_webhooks}


if __name__ == "__main__":
    sys.exit(main())
