"""Per-customer unsubscribe links, `{PUBLIC_BASE_URL}/unsubscribe/<token>`, and the secret part of a
store's SMS delivery-report URL. Pure functions.

The token is `<merchant>.<customer>.<mac>` in url-safe base64, the mac an HMAC-SHA256 (first 16
bytes): nobody can make a link for another customer by changing the ids.

`keys`, in every function here, is the key material the caller fetched: the first one signs,
every one verifies. Each is either
  - bytes: the deployment's `links` secret (service/state/deployment_secrets.py, random,
    kept wrapped by TOKEN_ENCRYPTION_KEY, never changed). Callers list it first: it signs
    every link and report URL made now, and these keep working after any rotation of
    TOKEN_ENCRYPTION_KEY (links sit in sent messages; report URLs in providers' consoles).
  - str: a TOKEN_ENCRYPTION_KEY key (Fernet). Links made before the deployment key existed
    were signed under one; they verify while that key is listed (`link_keys` there).
No new secret needs configuring.
"""
from __future__ import annotations

import base64
import hashlib
import hmac

_CONTEXT = b"salla-points-reminder/unsubscribe/v1"


def _key(material: bytes | str) -> bytes:
    """The MAC key of one piece of key material: a deployment secret (bytes) or a token key (str)."""
    raw = material if isinstance(material, bytes) else material.encode()
    return hmac.new(raw, _CONTEXT, hashlib.sha256).digest()


def _mac(key: bytes, merchant_id: int, customer_id: int) -> bytes:
    return hmac.new(key, f"{merchant_id}.{customer_id}".encode(), hashlib.sha256).digest()[:16]


def make_token(keys: tuple[bytes | str, ...], merchant_id: int, customer_id: int) -> str:
    raw = f"{merchant_id}.{customer_id}.".encode() + _mac(_key(keys[0]), merchant_id, customer_id)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(keys: tuple[bytes | str, ...], token: str) -> tuple[int, int] | None:
    """(merchant, customer) of a genuine token, else None."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        merchant, customer, mac = raw.split(b".", 2)
        merchant_id, customer_id = int(merchant), int(customer)
    except (ValueError, TypeError):
        return None
    for key in keys:
        if hmac.compare_digest(mac, _mac(_key(key), merchant_id, customer_id)):
            return merchant_id, customer_id
    return None


def unsubscribe_url(base_url: str, keys: tuple[bytes | str, ...], merchant_id: int, customer_id: int) -> str:
    return f"{base_url.rstrip('/')}/unsubscribe/{make_token(keys, merchant_id, customer_id)}"


def callback_token(keys: tuple[bytes | str, ...], merchant_id: int, purpose: str = "sms-dlr") -> str:
    """The secret part of a store's delivery-report URL (SMS providers sign nothing)."""
    return hmac.new(_key(keys[0]), f"{purpose}:{merchant_id}".encode(), hashlib.sha256).hexdigest()[:32]


def callback_token_valid(keys: tuple[bytes | str, ...], merchant_id: int, token: str, purpose: str = "sms-dlr") -> bool:
    return any(hmac.compare_digest(token.encode(), hmac.new(_key(key), f"{purpose}:{merchant_id}".encode(),
                                                            hashlib.sha256).hexdigest()[:32].encode())
               for key in keys)


def dlr_url(base_url: str, keys: tuple[bytes | str, ...], merchant_id: int) -> str:
    return f"{base_url.rstrip('/')}/channels/sms/{merchant_id}/dlr/{callback_token(keys, merchant_id)}"


SHARED_DLR = "sms-dlr-shared"  # the purpose of the shared SMS account's one report URL (merchant 0)


def shared_dlr_url(base_url: str, keys: tuple[bytes | str, ...]) -> str:
    """The report URL to set in the environment's shared SMS account's console (one per account)."""
    return f"{base_url.rstrip('/')}/channels/sms/dlr/{callback_token(keys, 0, SHARED_DLR)}"
