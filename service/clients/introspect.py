"""Salla's Token Introspect: is this embedded page's token real, and whose is it?

Salla opens the app's page with `?token=` (short-lived, about 5 minutes, a bootstrap credential
only). `POST SALLA_INTROSPECT_URL`, header `S-Source: SALLA_APP_ID`, JSON `{"token": ...}`:
200 `{"status": 200, "success": true, "data": {"merchant_id", "user_id", "exp"}}`, 401 when the
token is invalid or expired (shared/salla/REFERENCE.md "Embedded pages"; the documented answers
are tests/fixtures/salla/introspect.json). The token is never logged.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone

import requests

log = logging.getLogger(__name__)
MAX_TOKEN_LENGTH = 4096  # a token longer than this is not Salla's; never sent on


class TokenRefused(Exception):
    """Salla says the token is not (or no longer) valid: ask the dashboard for a fresh one."""


class IntrospectUnavailable(Exception):
    """Salla could not be asked (network, 5xx, an answer we cannot read): try again later."""


@dataclass(frozen=True)
class Introspection:
    merchant_id: int
    user_id: int | None
    expires_at: float


def _positive_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int) and value > 0:
        return value
    if isinstance(value, str) and value.isdigit() and int(value) > 0:
        return int(value)
    return None


def parse_answer(status: int, body, now: float) -> Introspection:
    """Salla's answer, read strictly: only a 200 with success and a merchant id is a yes."""
    if status in (400, 401, 403, 404, 422):
        raise TokenRefused(f"Salla refused the token ({status})")
    if status != 200:
        raise IntrospectUnavailable(f"Salla's introspect answered {status}")
    data = body.get("data") if isinstance(body, dict) and body.get("success") is True else None
    merchant = _positive_int(data.get("merchant_id")) if isinstance(data, dict) else None
    if merchant is None:
        raise IntrospectUnavailable("Salla's introspect answer has no merchant_id")
    expires_at = now + 300  # Salla's tokens live about 5 minutes when `exp` cannot be read
    exp = data.get("exp")
    if isinstance(exp, str):
        try:
            parsed = datetime.fromisoformat(exp.replace("Z", "+00:00"))
            expires_at = (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).timestamp()
        except ValueError:
            pass
    if expires_at <= now:
        raise TokenRefused("the token has expired")
    return Introspection(merchant, _positive_int(data.get("user_id")), expires_at)


def introspect(session: requests.Session, url: str, app_id: str, token: str, timeout: float,
               now: float) -> Introspection:
    if not token or len(token) > MAX_TOKEN_LENGTH or not token.isascii() or not token.isprintable():
        raise TokenRefused("no token, or not one Salla issues")
    try:
        response = session.post(url, json={"token": token}, headers={"S-Source": app_id, "Accept": "application/json"},
                                timeout=timeout, allow_redirects=False)
    except requests.RequestException as exc:
        raise IntrospectUnavailable(f"Salla's introspect cannot be reached ({type(exc).__name__})") from None
    try:
        body = response.json()
    except ValueError:
        body = None
    return parse_answer(response.status_code, body, now)
