"""The embedded page's own short session, after Salla's introspection said whose token it was.

A signed cookie (itsdangerous, which Flask already brings) holding the merchant id Salla named,
the dashboard user and a random session id; nothing else. Its key is derived from the first
TOKEN_ENCRYPTION_KEY with HMAC under its own label, so no new secret is needed and a key that
signs a session can never decrypt a token. `Secure; SameSite=None; HttpOnly`: the page lives in
a third-party iframe (Salla's dashboard), which only such a cookie reaches; `__Host-` pins it to
this host and path `/`. Every read of data uses the session's merchant, never a request's.

The CSRF token of a write is an HMAC of the session id: a form posted from anywhere else has
no way to know it, and it needs no storage.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeTimedSerializer

COOKIE = "__Host-lpr-embedded"
SESSION_SECONDS = 3600  # an hour: the page is reopened from Salla (a fresh token) after that


@dataclass(frozen=True)
class Session:
    merchant_id: int
    user_id: int | None
    sid: str


def _key(secret: str, label: bytes) -> bytes:
    return hmac.new(secret.encode(), b"salla-embedded-page:" + label, hashlib.sha256).digest()


class Sessions:
    def __init__(self, secret: str, max_age: int = SESSION_SECONDS):
        self._signer = URLSafeTimedSerializer(_key(secret, b"session"), salt="embedded-session")
        self._csrf_key = _key(secret, b"csrf")
        self.max_age = max_age

    def issue(self, merchant_id: int, user_id: int | None) -> tuple[Session, str]:
        session = Session(int(merchant_id), user_id, secrets.token_urlsafe(16))
        return session, self._signer.dumps({"m": session.merchant_id, "u": user_id, "s": session.sid})

    def read(self, cookie: str | None) -> Session | None:
        """The session the cookie carries, or None (none, forged, tampered or too old)."""
        if not cookie or len(cookie) > 1024:
            return None
        try:
            data = self._signer.loads(cookie, max_age=self.max_age)
        except BadSignature:  # SignatureExpired is one too
            return None
        if not isinstance(data, dict) or not isinstance(data.get("m"), int) or not isinstance(data.get("s"), str):
            return None
        return Session(data["m"], data.get("u") if isinstance(data.get("u"), int) else None, data["s"])

    def csrf_token(self, session: Session) -> str:
        return hmac.new(self._csrf_key, session.sid.encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, session: Session, given: str | None) -> bool:
        return bool(given) and hmac.compare_digest(self.csrf_token(session).encode(), given.encode())
