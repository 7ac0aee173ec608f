"""Operator commands: `python -m service.cli --help`.

  stores                      every store: state, counters, token expiry (never the token)
  store M                     one store
  set-store M --plan-limit N  per-store settings (also --point-value-sar, --paused/--resumed)
  reset-store M               mark a store active again (after fixing SALLA_CLIENT_ID, say)
  stats [M]                   reminders sent, points reminded, saved and lost, per store and stage
  rotate-token-keys           re-encrypt stored tokens under the first TOKEN_ENCRYPTION_KEY
"""
from __future__ import annotations

import argparse
import json
import sys

from service.admin import outcome_stats, store_summary  # the same views as /admin/*
from service.redis_client import connect
from service.settings import Settings, SettingsError
from service.stores import ACTIVE, StoreRegistry
from service.tokens import TokenStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.cli", description="Operate the reminder service.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("stores", help="list every store")
    one = commands.add_parser("store", help="show one store")
    one.add_argument("merchant_id", type=int)
    configure = commands.add_parser("set-store", help="per-store settings")
    configure.add_argument("merchant_id", type=int)
    configure.add_argument("--plan-limit", type=int, help="Salla plan requests per minute (120, 360, 720)")
    configure.add_argument("--point-value-sar", type=float, help="what one point is worth in SAR")
    pause = configure.add_mutually_exclusive_group()
    pause.add_argument("--paused", dest="paused", action="store_const", const=1, help="hold all reminders")
    pause.add_argument("--resumed", dest="paused", action="store_const", const=0, help="send reminders again")
    reset = commands.add_parser("reset-store", help="mark a store active again")
    reset.add_argument("merchant_id", type=int)
    stats = commands.add_parser("stats", help="what the reminders achieved, per store and stage")
    stats.add_argument("merchant_id", type=int, nargs="?")
    commands.add_parser("rotate-token-keys", help="re-encrypt stored tokens under the first key")
    args = parser.parse_args(argv)

    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    store = connect(settings)
    registry = StoreRegistry(store, settings.redis_key_prefix)
    tokens = TokenStore(store, settings.redis_key_prefix, settings.token_encryption_keys)

    if args.command == "stores":
        output = [store_summary(registry, tokens, m) for m in registry.merchants()]
    elif args.command == "store":
        output = store_summary(registry, tokens, args.merchant_id)
    elif args.command == "reset-store":
        registry.set_state(args.merchant_id, ACTIVE, "reset by an operator")
        output = store_summary(registry, tokens, args.merchant_id)
    elif args.command == "stats":
        merchants = [args.merchant_id] if args.merchant_id else registry.merchants()
        output = {str(m): outcome_stats(store, settings.redis_key_prefix, m) for m in merchants}
    elif args.command == "set-store":
        output = registry.set_config(args.merchant_id, plan_limit=args.plan_limit,
                                     point_value_sar=args.point_value_sar, paused=args.paused)
    else:
        output = {"re_encrypted": tokens.rotate_all()}
    print(json.dumps(output, ensure_ascii=False, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
