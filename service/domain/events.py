"""Reads Salla's webhook envelope and the customer it concerns. Pure functions.

Shapes (see tests/fixtures/salla/samples and the README's notes on Salla):
- envelope: {"event", "merchant" (top level, a number), "created_at" (free text), "data"}
- full-order events: customer at data.customer, first/last name, numeric mobile + mobile_code
- order.status.updated: customer at data.order.customer, one `name`, mobile "+9665..."
- order.shipment.*: data.customer with `name` and a mobile string with country code
- customer.*: the customer is data itself
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

# customer.otp.request says nothing about points; the others are moments a shopper's
# balance may have changed or they are paying attention.
CUSTOMER_EVENTS = frozenset({"customer.created", "customer.updated", "customer.login"})


class EventError(ValueError):
    """The delivery is not a Salla event we can read; the message says what is wrong."""


@dataclass(frozen=True)
class Envelope:
    event: str
    merchant_id: int
    created_at: str
    data: dict


@dataclass(frozen=True)
class Customer:
    id: int
    name: str
    mobile: str | None  # E.164, e.g. +966501806978, or None when it cannot be told
    email: str | None
    notifications_enabled: bool | None
    lang: str | None = None  # "ar" or "en" when Salla gives the customer's language, else None

    def to_dict(self) -> dict:
        # Spelled out rather than dataclasses.asdict: this runs once per webhook (bench/ingest.py).
        raw = {"id": self.id, "name": self.name, "mobile": self.mobile, "email": self.email,
               "notifications_enabled": self.notifications_enabled}
        if self.lang is not None:  # the stored event stays as it was for customers without a language
            raw["lang"] = self.lang
        return raw

    @classmethod
    def from_dict(cls, raw: dict) -> "Customer":
        # Messages queued before `lang` existed have none: None (the store's default applies).
        return cls(**{k: raw.get(k) for k in ("id", "name", "mobile", "email", "notifications_enabled")},
                   lang=language(raw.get("lang")))


def parse_envelope(body: bytes) -> Envelope:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EventError(f"body is not valid JSON: {exc}") from None
    except (ValueError, RecursionError):
        # Integers past Python's digit limit, or nesting deeper than the parser goes.
        raise EventError("body is not JSON we can read (number too long or nesting too deep)") from None
    if not isinstance(payload, dict):
        raise EventError("body must be a JSON object")
    # Only a \uD800-\uDFFF escape makes a surrogate (UTF-8 bytes cannot hold one): a body
    # without one, nearly every body, is not walked (about 10 µs a webhook: as long as json.loads).
    if not isinstance(body, (bytes, bytearray)) or _SURROGATE_ESCAPE.search(body):
        payload = without_lone_surrogates(payload)
    missing = [key for key in ("event", "merchant", "data") if key not in payload]
    if missing:
        raise EventError(f"envelope is missing {', '.join(missing)}")
    event = payload["event"]
    if not isinstance(event, str) or not event.strip():
        raise EventError("envelope field 'event' must be a non-empty string")
    data = payload["data"]
    if not isinstance(data, dict):
        raise EventError("envelope field 'data' must be an object")
    created_at = payload.get("created_at")
    return Envelope(
        event=event.strip(),
        merchant_id=_as_id(payload["merchant"], "merchant"),
        # Salla's created_at has no fixed format: kept as text, never parsed.
        created_at=created_at if isinstance(created_at, str) else "",
        data=data,
    )


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # the escape of one, in the raw body


def without_lone_surrogates(payload: dict) -> dict:
    """`"\ud800"` is valid JSON, but no UTF-8 text can hold a lone surrogate: Redis, the broker
    and every log line would refuse the event (a 500, and Salla drops it after its retries).
    Each one, in any value or key, becomes U+FFFD, as a UTF-8 decoder does with a bad byte.
    Changes the parsed payload in place; a loop, not recursion: it is as deep as the parser let it be."""
    stack: list = [payload]
    while stack:
        node = stack.pop()
        items = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        for key, value in items:
            if isinstance(value, (dict, list)):
                stack.append(value)
            elif isinstance(value, str) and not value.isascii() and _LONE_SURROGATE.search(value):
                node[key] = _LONE_SURROGATE.sub("\ufffd", value)
            if isinstance(key, str) and not key.isascii() and _LONE_SURROGATE.search(key):
                node[_LONE_SURROGATE.sub("\ufffd", key)] = node.pop(key)
    return payload


def is_handled(event: str) -> bool:
    """Events that can change a customer's points or bring them back: re-read their history."""
    return event.startswith("order.") or event in CUSTOMER_EVENTS


def customer_of(envelope: Envelope) -> Customer | None:
    """The customer an event concerns, or None when it names none (a guest order)."""
    data = envelope.data
    if envelope.event.startswith("customer."):
        raw = data
    else:
        raw = data.get("customer")
        if not isinstance(raw, dict):
            order = data.get("order")
            raw = order.get("customer") if isinstance(order, dict) else None
    return customer_from(raw)


def customer_from(raw: Any) -> Customer | None:
    """A Salla customer object (a customer.* event's data, an order's customer, a row of
    GET /customers) as our Customer; None when it names no customer. EventError when its id
    is not a number."""
    if not isinstance(raw, dict) or raw.get("id") in (None, "", 0):
        return None
    return Customer(
        id=_as_id(raw["id"], "customer id"),
        name=_name(raw),
        mobile=e164(raw.get("mobile"), raw.get("mobile_code")),
        email=_text(raw.get("email")),
        notifications_enabled=raw["is_notifications_enabled"] if isinstance(raw.get("is_notifications_enabled"), bool) else None,
        lang=language(raw.get("lang")),
    )


def language(value: Any) -> str | None:
    """Salla's customer `lang` ("ar", "en", "ar-SA", "EN"...) as "ar" or "en"; None otherwise."""
    if not isinstance(value, str):
        return None
    code = value.strip().lower()[:2]
    return code if code in ("ar", "en") else None


_NOT_DIGITS = re.compile(r"\D")


def e164(mobile: Any, mobile_code: Any = None) -> str | None:
    """Normalise Salla's two mobile shapes to E.164.

    A number without country code plus mobile_code ("+966" or, seen once, "967"),
    or a string that already carries it ("+96652318526").
    """
    if mobile is None or isinstance(mobile, bool):
        return None
    text = str(mobile).strip()
    digits = _NOT_DIGITS.sub("", text)
    if not digits:
        return None
    if text.startswith("+"):
        number = digits
    elif digits.startswith("00"):
        number = digits[2:]
    else:
        code = _NOT_DIGITS.sub("", str(mobile_code or ""))
        if not code:
            return None
        local = digits.lstrip("0")
        number = local if local.startswith(code) and len(local) > len(code) + 8 else code + local
    # E.164 allows at most 15 digits; anything this short is not a mobile number.
    return "+" + number if 8 <= len(number) <= 15 else None


def _name(raw: dict) -> str:
    name = _text(raw.get("name"))
    if name:
        return name
    parts = [_text(raw.get("first_name")), _text(raw.get("last_name"))]
    return " ".join(p for p in parts if p)


def _text(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    return None


MAX_ID = 2 ** 63 - 1  # Salla's ids are 64-bit; past that, a number is no id of theirs


def _as_id(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise EventError(f"{what} must be a number")
    if isinstance(value, str):
        text = value.strip()
        # ASCII digits only: "²" is a digit to str.isdigit() and not to int().
        if text.isascii() and text.isdigit() and len(text) <= len(str(MAX_ID)):
            value = int(text)
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID:
        return value
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "..."
    raise EventError(f"{what} must be a positive whole number, got {shown}")


# Salla's created_at comes in several shapes (REFERENCE.md §1). A time without a zone is
# Salla's own (Riyadh, UTC+3, no daylight saving).
_SALLA_ZONE = timezone(timedelta(hours=3))
_JS_DATE = re.compile(r"^\w{3} (\w{3} \d{1,2} \d{4} \d{2}:\d{2}:\d{2}) GMT([+-]\d{4})")


def event_time(created_at: str) -> float | None:
    """Unix time of an envelope's created_at, or None when it is in no shape we know.

    App events use it, to apply them in order (an older app.uninstalled must not undo a
    newer app.store.authorize), and so do customer profiles (service/state/profiles.py: an older
    customer.updated must not undo a newer opt-out). The envelope keeps created_at as text.
    """
    text = (created_at or "").strip()
    if not text:
        return None
    match = _JS_DATE.match(text)  # "Sun Jun 26 2022 12:21:48 GMT+0300" (JavaScript's Date)
    if match:
        try:
            return datetime.strptime(f"{match.group(1)} {match.group(2)}", "%b %d %Y %H:%M:%S %z").timestamp()
        except ValueError:
            return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))  # ISO, or "2022-12-31 12:31:25"
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=_SALLA_ZONE)
    return moment.timestamp()
