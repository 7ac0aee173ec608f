"""What every channel raises, and the small helpers they share."""
from __future__ import annotations

import re

# Reasons a channel fails for good: the store's policy and the failed-by-reason counts read them.
NO_ADDRESS = "no_address"  # the shopper has no mobile / e-mail for this channel
UNDELIVERABLE = "undeliverable"  # the provider says the address cannot receive it
TEMPLATE = "template"  # WhatsApp refused the template (not approved, paused, wrong parameters)
CREDENTIALS = "credentials"  # the store's provider credentials or sender are refused
SETUP = "setup"  # the provider refuses the store's set-up (an invalid parameter, a locked account)
REFUSED = "refused"  # any other refusal (filtered, 4xx)
NOT_CONFIGURED = "not_configured"  # the store lists a channel it has no settings for
RETRIES_USED_UP = "retries_used_up"
RATE_LIMITED = "rate_limited"  # reported failed later for a rate or quality limit (never retried by the provider)
OPTED_OUT = "opted_out"  # reported failed later because the shopper stopped the business's messages there
NON_PUBLIC_ADDRESS = "non_public_address"  # the store's channel address is not public (service/clients/providers/public_only.py)


class DeliveryTransientError(Exception):
    """Worth retrying: connection trouble, a timeout, a rate limit, 5xx."""

    def __init__(self, message: str, retry_after: float | None = None, alarm: tuple[str, str] | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.alarm = alarm  # (name, message) of an alarm to raise (service/state/alarms.py)


class DeliveryPermanentError(Exception):
    """The provider refused the reminder; retrying will not help. `reason` is one of the above."""

    def __init__(self, message: str, reason: str = REFUSED, alarm: tuple[str, str] | None = None):
        super().__init__(message)
        self.reason = reason
        self.alarm = alarm


_NUMBERS = re.compile(r"\+?\d[\d \-]{6,}\d")
_ADDRESSES = re.compile(r"[^\s<>\"']+@[^\s<>\"']+")


def scrub(text) -> str:
    """A provider's own words, safe for logs and the ledger: phone numbers and e-mail addresses
    a provider may echo back are cut out, and the length is bounded."""
    return _ADDRESSES.sub("<address>", _NUMBERS.sub("<number>", str(text or "")))[:160]


def mobile_digits(reminder: dict) -> str:
    """The shopper's mobile as providers want it: E.164 digits without '+' (9665...)."""
    mobile = (reminder.get("customer") or {}).get("mobile") or ""
    digits = re.sub(r"\D", "", mobile)
    if not digits:
        raise DeliveryPermanentError("the customer has no mobile number", NO_ADDRESS)
    return digits


def email_address(reminder: dict) -> str:
    email = ((reminder.get("customer") or {}).get("email") or "").strip()
    if "@" not in email:
        raise DeliveryPermanentError("the customer has no e-mail address", NO_ADDRESS)
    address = single_address(email)
    if address is None:
        # Permanent: a line break would make EmailMessage raise (and be retried as if transient),
        # a comma or a display name would add recipients. The address itself is not logged.
        raise DeliveryPermanentError("the customer's e-mail address is not one plain address (local@domain)",
                                     UNDELIVERABLE)
    return address


_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LOCAL_PART = re.compile(rf"{_ATOM}(?:\.{_ATOM})*")  # RFC 5322 dot-atom: no quotes, spaces or specials
_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def single_address(text: str) -> str | None:
    """`text` as exactly one addr-spec (local@domain, the domain in ASCII: IDNA), or None. No
    display name, comma, semicolon, angle bracket, quote, space or line break, no [IP] literal."""
    local, at, domain = text.rpartition("@")
    if not at or len(local) > 64 or not _LOCAL_PART.fullmatch(local):
        return None
    try:
        domain = domain.encode("idna").decode("ascii")  # an Arabic domain name, as SMTP carries it
    except UnicodeError:
        return None
    labels = domain.split(".")
    if len(labels) < 2 or labels[-1].isdigit() or not all(_LABEL.fullmatch(label) for label in labels):
        return None
    address = f"{local}@{domain}"
    return address if len(address) <= 254 else None


def retry_after(response) -> float | None:
    value = response.headers.get("Retry-After", "")
    return float(value) if value.strip().isdigit() else None
