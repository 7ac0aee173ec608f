"""Who must get no reminder, remembered without remembering who they are. Pure functions.

A shopper who opted out (our unsubscribe link, or Salla's notifications flag) stays opted out
after their profile is gone: forgotten on request (PDPL), expired after DATA_RETENTION_DAYS, or
erased at uninstall. Each store keeps a suppression hash (service/state/keys.py `suppressed`) whose
fields are keyed hashes, HMAC-SHA256 under the deployment's suppression key (below), of
  - the store and the customer id, and
  - the store and the customer's mobile (E.164 digits) and e-mail (trimmed, lower case).
The contacts are in it so that a customer Salla re-creates under a new id, with the same mobile
or e-mail, stays suppressed: a suppression list is about addresses, as e-mail services keep
theirs; and the address is what received the reminder the shopper refused. Without the key
the hashes cannot be tested against a list of numbers; with the store id in each, the same
shopper in two stores gives two unrelated hashes.

The value says why and since when: `link:<unix time>` (our unsubscribe link: for good) or
`flag:<unix time>` (Salla's flag: a newer event turning notifications on lifts it).
The key is the deployment's `suppression` secret (service/state/deployment_secrets.py): random,
kept wrapped by TOKEN_ENCRYPTION_KEY and re-wrapped by `rotate-token-keys`, never changed, so
an opt-out holds after the old token key is dropped (a key derived from TOKEN_ENCRYPTION_KEY
would lose every entry at a rotation).
"""
from __future__ import annotations

import hashlib
import hmac
import re

_CONTEXT = b"salla-points-reminder/suppression/v1"
LINK, FLAG = "link", "flag"


def _key(secret: str) -> bytes:
    return hmac.new(secret.encode(), _CONTEXT, hashlib.sha256).digest()


def _normal(merchant_id: int, customer_id: int, mobile: str | None, email: str | None) -> list[str]:
    items = [f"customer:{int(merchant_id)}:{int(customer_id)}"]
    digits = re.sub(r"\D", "", mobile or "")
    if digits:
        items.append(f"mobile:{int(merchant_id)}:{digits}")
    address = (email or "").strip().lower()
    if address:
        items.append(f"email:{int(merchant_id)}:{address}")
    return items


def digests(secret: str, merchant_id: int, customer_id: int, mobile: str | None, email: str | None) -> list[str]:
    """The customer's entries under one key: their id first, then each contact they have."""
    key = _key(secret)
    return [hmac.new(key, item.encode(), hashlib.sha256).hexdigest()[:32]
            for item in _normal(merchant_id, customer_id, mobile, email)]


def lookups(secrets: tuple[str, ...], merchant_id: int, customer_id: int, mobile: str | None,
            email: str | None) -> list[str]:
    """Every entry that would name this customer, under every listed key (the first key's first)."""
    found: list[str] = []
    for secret in secrets:
        found += [d for d in digests(secret, merchant_id, customer_id, mobile, email) if d not in found]
    return found


def entry(kind: str, at: float) -> str:
    return f"{kind}:{at:.3f}"


def blocks(values, flag: str | None, flag_at: float | None) -> bool:
    """Whether the entries found (None where none) keep the customer from any reminder: a link
    opt-out always; a Salla opt-out unless the profile holds a newer opt-in."""
    for value in values:
        if not value:
            continue
        kind, _, at = value.partition(":")
        if kind == LINK:
            return True
        try:
            since = float(at)
        except ValueError:
            return True  # unreadable: the safe side
        if not (flag == "1" and flag_at is not None and flag_at > since):
            return True
    return False
