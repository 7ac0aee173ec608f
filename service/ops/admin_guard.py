"""Who may use /admin/*, from where, how often they may get it wrong, and the record of what they changed.

- The token: ADMIN_TOKEN of at least MIN_TOKEN_LENGTH characters. Shorter (or unset), the
  admin API is off (404 for every /admin/* path), and the web logs why once at start; the
  webhooks keep working, since a weak admin token is no reason to lose Salla's events.
- The port: with ADMIN_PORT set, /admin/* answers only on that port (gunicorn binds it,
  service/web/gunicorn_conf.py; keep it off the public network) and 404 on the public one.
- Failed attempts: per client address, in Redis (a sorted set per address, a sliding minute);
  ADMIN_AUTH_FAILURES_PER_MINUTE of them and every /admin/* request from that address answers
  429 with Retry-After until the oldest falls out of the minute, right token or not.
- The audit: every change (POST, PUT, PATCH, DELETE that passed the token check) is one log line
  and one entry of the Redis list `admin:audit` (the newest ADMIN_AUDIT_KEEP), shown by
  GET /admin/audit: when, the token's id (a hash prefix, never the token), the client address,
  method, path, the answer's status, and the names of the fields sent, never their values
  (they may be provider credentials or template text).
- Reads of personal data (a customer's export; the CLI's export-customer and preview) are
  audited the same way, marked `"access": "personal data read"`: who read whose data (the path
  names the store and the customer), never the data. A read that cannot be audited is not
  answered (503): no unaudited read.
"""
from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import time
import uuid

from flask import Request

from service.state.keys import Keys

log = logging.getLogger(__name__)
MIN_TOKEN_LENGTH = 32
WINDOW_SECONDS = 60
CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
PERSONAL_DATA_READ = "personal data read"


def reads_personal_data(view):
    """Marks an admin view whose answer holds a shopper's contact details or message bodies:
    each call is audited, and not answered when the audit cannot be written."""
    view.reads_personal_data = True
    return view


def admin_off_reason(token: str) -> str | None:
    """Why the admin API is off, or None when it is on."""
    if not token:
        return "ADMIN_TOKEN is not set"
    if len(token) < MIN_TOKEN_LENGTH:
        return (f"ADMIN_TOKEN is {len(token)} characters; at least {MIN_TOKEN_LENGTH} are required "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')")
    return None


def token_id(token: str) -> str:
    """Names the token in the audit without revealing it (the first 12 hex of its SHA-256)."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()[:12]


def field_names(body, prefix: str = "") -> list[str]:
    """The names of the fields of a JSON body, nested ones dotted (`whatsapp.access_token`); values never."""
    if not isinstance(body, dict):
        return []
    names = []
    for key, value in body.items():
        name = f"{prefix}{key}"
        nested = field_names(value, name + ".") if isinstance(value, dict) else []
        names.extend(nested or [name])
    return sorted(names)


def audit_entry(request: Request, status: int, who: str, now: float) -> dict:
    body = request.get_json(silent=True) if request.is_json else None
    entry = {"at": round(now, 3), "token": who, "ip": request.remote_addr, "method": request.method,
             "path": request.path, "status": status, "fields": field_names(body)}
    if request.mimetype == "text/plain" and request.content_length:
        entry["body"] = f"text ({request.content_length} bytes)"  # a template's source: its size only
    return entry


class FailedAttempts:
    """Failed admin logins per client address, in a sliding minute (one sorted set each)."""

    def __init__(self, store, prefix: str, limit: int, window: float = WINDOW_SECONDS):
        self.redis = store
        self.keys = Keys(prefix)
        self.limit = limit
        self.window = window

    def blocked_for(self, ip: str, now: float) -> float:
        """Seconds until this address may try again (0: it may now)."""
        key = self.keys.admin_auth_failures(ip)
        pipe = self.redis.pipeline()
        pipe.zremrangebyscore(key, "-inf", now - self.window)
        pipe.zcard(key)
        pipe.zrange(key, 0, 0, withscores=True)
        _, count, oldest = pipe.execute()
        if count < self.limit:
            return 0.0
        return max(1.0, oldest[0][1] + self.window - now) if oldest else 1.0

    def record(self, ip: str, now: float) -> None:
        key = self.keys.admin_auth_failures(ip)
        pipe = self.redis.pipeline()
        pipe.zadd(key, {uuid.uuid4().hex[:12]: now})
        pipe.expire(key, int(self.window) + 1)
        pipe.execute()


def cli_entry(command: str, status: int, now: float, fields: list[str] | None = None,
              access: str | None = PERSONAL_DATA_READ) -> dict:
    """An operator command (`export-customer 7 5`, `set-store 7`) with its exit status and the
    names of the options it was given: ids and names, never the data or the values. `access`
    None: a change (as the admin API's entries without an access)."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no name for this uid (a container)
        user = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    entry = {"at": round(now, 3), "token": f"cli:{user}", "ip": "local", "method": "CLI", "path": command,
             "status": status, "fields": sorted(fields or [])}
    if access:
        entry["access"] = access
    return entry


class AuditLog:
    def __init__(self, store, prefix: str, keep: int):
        self.redis = store
        self.key = Keys(prefix).admin_audit
        self.keep = keep

    def record(self, entry: dict) -> None:
        pipe = self.redis.pipeline()
        pipe.lpush(self.key, json.dumps(entry, ensure_ascii=False, sort_keys=True))
        pipe.ltrim(self.key, 0, self.keep - 1)
        pipe.execute()
        log.info("admin %s: %s %s -> %s by %s from %s", entry.get("access", "change"), entry["method"], entry["path"],
                 entry["status"], entry["token"], entry["ip"], extra={"lpr_data": {"audit": entry}})

    def latest(self, limit: int = 100) -> list[dict]:
        return [json.loads(raw) for raw in self.redis.lrange(self.key, 0, max(0, limit - 1))]


def now() -> float:
    return time.time()
