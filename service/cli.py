"""Operator commands: `python -m service.cli --help`.

  stores                      every store: state, counters, token expiry (never the token)
  store M                     one store
  set-store M --plan-limit N  per-store settings (also --point-value-sar, --paused/--resumed)
  reset-store M               mark a store active again (after fixing SALLA_CLIENT_ID, say)
  stats [M]                   reminders sent, points reminded, saved and lost, per store and stage
  reminder M ID               one reminder's ledger record (state, attempts, channels)
  dead-letters list [M]       reminders that could not be delivered
  dead-letters replay M ID    send one again (the next sweep publishes it)
  dead-letters drop M ID      give up on one (its lots count as handled, not as reminded)
  alarms                      what only an operator can fix (e.g. Salla refuses our client secret)
  clear-alarm NAME            after fixing it
  rotate-token-keys           re-encrypt stored tokens under the first TOKEN_ENCRYPTION_KEY

Errors (a bad value, an unknown store or reminder) go to stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from service.admin import dead_letters, outcome_stats, store_summary  # the same views as /admin/*
from service.alarms import Alarms
from service.keys import Keys
from service.redis_client import connect
from service.settings import Settings, SettingsError
from service.stores import ACTIVE, ConfigError, StoreRegistry
from service.tokens import TokenStore
from workers import delivery
from workers.due_set import DueSet
from workers.ledger import Ledger


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
        return [store_summary(registry, tokens, m) for m in registry.merchants()]
    if args.command == "store":
        return store_summary(registry, tokens, args.merchant_id)
    if args.command == "reset-store":
        registry.set_state(args.merchant_id, ACTIVE, "reset by an operator")
        return store_summary(registry, tokens, args.merchant_id)
    if args.command == "stats":
        merchants = [args.merchant_id] if args.merchant_id else registry.merchants()
        return {str(m): outcome_stats(store, Keys(prefix), m) for m in merchants}
    if args.command == "set-store":
        return registry.set_config(args.merchant_id, plan_limit=args.plan_limit,
                                   point_value_sar=args.point_value_sar, paused=args.paused)
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
        if not act(ledger, DueSet(store, prefix), args.merchant_id, args.reminder_id, time.time()):
            raise CommandError(f"no dead letter {args.reminder_id} for merchant {args.merchant_id}")
        return {"merchant_id": args.merchant_id, "reminder_id": args.reminder_id, "done": args.action}
    if args.command == "alarms":
        return Alarms(store, prefix).active()
    if args.command == "clear-alarm":
        if not Alarms(store, prefix).clear(args.name):
            raise CommandError(f"no alarm named {args.name}")
        return {"cleared": args.name}
    return {"re_encrypted": tokens.rotate_all()}


if __name__ == "__main__":
    sys.exit(main())
