"""Checks that a webhook delivery really comes from Salla, and signs what we send out.

Salla signs the raw request body: lowercase hex HMAC-SHA256 keyed with the app's webhook
secret, no prefix, no timestamp. We verify the bytes as received, before any JSON parsing,
because re-serialised JSON (Arabic text, escaping, key order) would not reproduce them.
"""
from __future__ import annotations

import hashlib
import hmac


def sign(body: bytes, secret: str) -> str:
    """Lowercase hex HMAC-SHA256 of `body` under `secret` (Salla's scheme, and ours outbound)."""
    return hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_matches(body: bytes, secret: str, signature: str | None) -> bool:
    if not signature or not secret:
        return False
    # Constant-time compare of bytes (a str with non-ASCII characters would raise TypeError);
    # tolerate an uppercase hex header, nothing else.
    return hmac.compare_digest(sign(body, secret).encode(), signature.strip().lower().encode("utf-8", "replace"))


def token_matches(secret: str, header: str | None) -> bool:
    """Salla's Token strategy: the Authorization header is the secret, bare (Salla's starter kits)
    or as `Bearer <secret>` (its partner kit); shared/salla/REFERENCE.md. Both are compared, so a
    secret that itself begins with "Bearer " still passes verbatim."""
    if not header or not secret:
        return False
    scheme, _, rest = header.strip().partition(" ")
    bearer = rest.strip() if scheme.lower() == "bearer" else ""
    expected = secret.encode("utf-8")
    verbatim = hmac.compare_digest(expected, header.encode("utf-8"))
    return verbatim | (bool(bearer) and hmac.compare_digest(expected, bearer.encode("utf-8")))


def verify_delivery(strategy: str, secret: str, body: bytes, headers) -> bool:
    """True when the delivery passes the configured strategy.

    The strategy comes from configuration, never from the X-Salla-Security-Strategy
    header: an attacker chooses headers.
    """
    if strategy == "signature":
        return signature_matches(body, secret, headers.get("X-Salla-Signature"))
    if strategy == "token":
        return token_matches(secret, headers.get("Authorization"))
    if strategy == "none":
        return True
    raise ValueError(f"unknown webhook strategy {strategy!r}")
