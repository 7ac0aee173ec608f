"""The Procfile's (and compose's) flower: Flower, but never open to anyone on the network.

Flower shows task arguments (customer ids, reminder contents) and can shut workers down. It
reads FLOWER_ADDRESS, FLOWER_PORT and FLOWER_BASIC_AUTH itself, and with no address it
listens on every interface. So it starts only with basic auth (user:password), or bound to
loopback (127.0.0.1, ::1 or localhost: `make run` sets FLOWER_ADDRESS=127.0.0.1); otherwise
it says so in one line and exits 2 (a configuration error), before Flower starts.
"""
from __future__ import annotations

import os
import sys
from typing import Mapping

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def refusal(env: Mapping[str, str]) -> str | None:
    """Why Flower must not start with this environment, or None when it may."""
    user, colon, password = env.get("FLOWER_BASIC_AUTH", "").strip().partition(",")[0].partition(":")
    if user and colon and password:
        return None
    address = env.get("FLOWER_ADDRESS", "").strip()
    if address in LOOPBACK:
        return None
    where = f"FLOWER_ADDRESS={address}" if address else "every address (FLOWER_ADDRESS unset)"
    return (f"flower: not starting on {where} without basic auth: set FLOWER_BASIC_AUTH=user:password, "
            "or FLOWER_ADDRESS=127.0.0.1 to reach it on this machine only")


def main(argv: list[str] | None = None) -> int:
    problem = refusal(os.environ)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    args = ["celery", "-A", "workers", "flower", *(sys.argv[1:] if argv is None else argv)]
    os.execvp(args[0], args)  # Flower becomes this process: it gets the supervisor's SIGTERM itself
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
