"""A local stand-in for Salla's Merchant API (`GET /customers/loyalty/points`) and its OAuth
token endpoint, for tests, the demo and benchmarks: several stores with rotating tokens, Salla's
rate limits and injected faults.

Run it: `python -m devkit.sandbox --host 127.0.0.1 --port 8765 --token sandbox-token [--limits]`,
then point the service at it with SALLA_API_BASE_URL=SALLA_ACCOUNTS_URL=http://127.0.0.1:8765 (the
API is served at the root, as if the base URL were Salla's `https://api.salla.dev/admin/v2`).

Stores. `create_app(stores=[StoreSpec(...)])`; each store is a merchant id with its current access
token (and expiry), refresh token, scope, whether Salla's "Customer Loyalty" app is installed and
its rate limits. The loyalty endpoint finds the store by the bearer token. The `token` argument
also makes a default store, merchant `DEFAULT_MERCHANT_ID` (the merchant of Salla's samples),
whose token never expires and which has no refresh token, so single-token callers work unchanged;
it is left out when `token=None` or when `stores` has that merchant id. Customers' lots are shared
by customer id across stores (every store sees the same seeded customers): per-store histories
would add nothing the service can tell apart, since it keys customers by (merchant, id) anyway.
Tokens expire on the wall clock (`time.time()`); `now` only seeds the customers' lots.

`GET /customers/loyalty/points?customer_id=&page=&per_page=` (contract:
tests/fixtures/salla/loyalty-points.openapi.yaml). Checks in this order, each answering at once:
1. faults (below), if any are set for this store, or globally for everyone without their own;
2. 401 with Salla's `Invalid-token` envelope unless `Authorization` is exactly `Bearer <token>`
   with a store's current token that has not expired and has not been revoked;
3. rate limits, when enabled for the store: 429 over budget (see "Rate limits");
4. 401 with Salla's scope envelope when the store's scope lacks `customers.read`;
5. when the store lacks the loyalty app (undocumented by Salla, so both readings are offered):
   403 with Salla's "access is not allowed" reading (`LOYALTY_APP_MISSING`) or, with
   `missing_app_status=404`, Salla's generic 404 envelope;
6. 422 with Salla's validation envelope when customer_id is missing or blank;
7. 200 otherwise. `page` defaults to 1, `per_page` to 15 and is capped at 60; a value that is not
   a positive integer falls back to its default. A customer id the sandbox does not know (or that
   is not a number) gets an empty page rather than an error: Salla documents no "unknown customer"
   answer, and an empty history is what a customer without points has. Pagination numbers follow
   Laravel's paginator, which Salla runs on: `count` is the rows on this page, `totalPages` is at
   least 1 (so an empty history is one empty page), a page past the end is empty and still links
   back to page - 1.
- `links` are absolute `http://` URLs built from the request's Host, as in Salla's example, so a
  client that follows them instead of building its own (see REFERENCE.md §3) gets caught.

Two link shapes, a documented deviation. The contract requires both `links.next` and
`links.previous` as strings; Salla's example (and its paginator) sends only the links that exist,
and `[]` when there are none. Customers listed in `observed_links` (default: the quirks customer
1005, see devkit/sandbox_seed.py) get Salla's observed shape; everyone else gets the contract's
shape, with "" standing for a link that does not exist, so that their responses validate against
the contract as it is written.

`POST /oauth2/token` (Salla's accounts server, https://accounts.salla.sa/oauth2/token), form
`grant_type=refresh_token&refresh_token=&client_id=&client_secret=` (HTTP Basic client
credentials are accepted too). The client id and secret are app-wide (`create_app(client_id=,
client_secret=)`). Salla's tokens are Ory's (`ory_at_`/`ory_rt_`), so its accounts server is very
likely Ory Hydra and the answers follow Hydra's: 200 `{"access_token", "expires_in":
<access_expires_in>, "refresh_token", "scope", "token_type": "bearer"}` (`"expires": <unix time>`
instead of `expires_in` with `oauth_expires_as_timestamp`, since both are seen), with
`Cache-Control: no-store`. A refresh
rotates both tokens: the old access token stops working, the old refresh token becomes used.
Refusals, all `{"error", "error_description"}`: 401 `invalid_client` (wrong or missing client
credentials, checked first); 400 `unsupported_grant_type`; 400 `invalid_request` (no
refresh_token); 400 `invalid_grant` for an unknown refresh token, one from an earlier install, or
one of a revoked store; and 400 `invalid_grant` for a used refresh token, which also revokes the
store, as Salla (and Hydra's reuse detection) does: both current tokens stop working until the
store is installed again (`PUT /_sandbox/stores/<id>`). `oauth_latency_ms` delays every answer
(before it is decided) to widen the window in which two workers race to refresh.

Rate limits (REFERENCE.md §3), per store, when `limits_enabled` (app-wide, live via
`/_sandbox/settings`) or the store's own `limits` says so. Two budgets, a request needs both:
- plan: `plan_per_minute` requests per `plan_window_seconds` (60); once spent, one request per
  `plan_window_seconds / 60` (1 s at 60) until the window ends, Salla's "1 request per second
  until the minute ends". A fixed window that starts with the first request after the last one
  ended: a faithful-enough reading of Salla's leaky bucket.
- customer endpoints: `customer_limit` (500) per `customer_window_seconds` (600), a fixed window
  in the same way. Shrink both numbers (e.g. 50 per 10 s) to scale time down for a benchmark.
Every answer after the token check carries `X-RateLimit-Limit`, `X-RateLimit-Remaining` (after
this request) and `X-RateLimit-Reset` (UTC epoch seconds, rounded up) of the budget with fewer
requests remaining (the later reset on a tie). Over budget: 429, `Retry-After` = whole seconds
until a request would pass (at least 1), the refusing budget's headers with Remaining 0, and a
small Salla-style body `TOO_MANY_REQUESTS` (Salla documents none). Refused requests do not spend
budget; requests with a bad token, and injected faults, are not rate limited (no store to charge
or they never reached Salla). With limits off, no rate-limit headers are sent.

Faults, for the loyalty endpoint only (`Faults`; constructor `faults=`, `store_faults=`,
`fault_seed=`, or `PUT /_sandbox/faults`). A store with its own `Faults` uses only those; all other
requests (including those with an unknown token) use the global ones. Per request: `latency_ms`
is added to every answer; then the next entry of `fail_next` (a status 403, 429 or 500-599,
or "timeout") answers; else one draw of a random generator seeded with `fault_seed` picks a timeout
with probability `timeout_rate` or a `error_status` answer with probability `error_rate`. A
timeout sleeps `timeout_seconds` (make it longer than the client's timeout) and then answers 504.
Bodies: 502 and 504 are a gateway's HTML page (what a proxy in front of Salla sends, so a client
that assumes JSON gets caught), 429 is `TOO_MANY_REQUESTS` with `Retry-After: 1`, 403 Salla's
"blocked due to many errors" reading (`FORBIDDEN_BLOCKED`), any other status
Salla's envelope `{"status", "success": false, "error": {"code": <status>, "message"}}`. Sleeps
happen outside the lock; stats are counted before them.

Customers, app settings, webhooks (the Merchant API beyond the loyalty endpoint): `GET /customers`
(Salla's List Customers rows, `customer_row`, by id, paginated like the loyalty endpoint; scope
customers.read), `GET /apps/<app_id>/settings` (`{"status", "success", "data": {values}}`; 404 for
another app id than `create_app(app_id=)`), and the webhooks as documented (answers shaped as the
Register Webhook example in tests/fixtures/salla/webhooks-api.json): `POST /webhooks/subscribe`
takes only the documented fields (event and url required, name, version, rule, headers); 422 with
Salla's fields envelope without event/url, or for a localhost/test. URL; the same URL and event
update the subscription. A `security_strategy` or `secret` sent there is ignored, as Salla does: a
new subscription is signed with Signature and a secret of the sandbox's own. `PUT /webhooks/<id>`
(Update Webhook: name, url, version, rule, headers, security_strategy signature|token, secret, which
Signature requires) sets them; 404 for an id the store does not have. `GET /webhooks` lists them,
15 a page; under Token the secret shows as the `Authorization` header, a Signature secret never.
Each checks the token and the store's rate limits as the loyalty endpoint does;
`PUT /_sandbox/route-faults` `{"customers"|"app_settings"|"webhooks"|"subscribe"|"update": [status...]}`
answers those statuses first. `PUT /_sandbox/customers/seed` `{"count", "start_id", "lots_every"}`
adds customers (every lots_every-th with 100 points expiring in 7 days);
`PUT /_sandbox/stores/<id>/app-settings` sets the store's form values; `GET /_sandbox/merchant-api`
counts calls per route and list pages per store, and lists the subscriptions with their strategy and
secret (what Salla would sign the store's deliveries with).

Embedded pages: `POST /exchange-authority/v1/introspect` (Salla's Token Introspect) and
`POST /_sandbox/embedded-tokens`, with the dashboard that frames the page: devkit/sandbox_embedded.py.

Control endpoints (no auth; tests and benchmarks only; bad input answers 400 `{"error": "..."}`):
- `PUT /_sandbox/customers/<id>/lots`: JSON array of rows, replaces that customer's history as
  given, unvalidated so that tests can serve malformed rows.
- `GET /_sandbox/stores` → `{"stores": [<store>...]}`; `GET /_sandbox/stores/<merchant_id>` →
  `<store>` (404 `{"error"}` if unknown): `{"merchant_id", "access_token", "access_expires_at"
  (unix seconds, null = never), "refresh_token" (null = none), "scope", "token_type": "bearer",
  "revoked", "rotations" (refreshes since installed), "loyalty_app", "missing_app_status",
  "limits": {"enabled", "plan_per_minute", "plan_window_seconds", "customer_limit",
  "customer_window_seconds"}, "access_expires_in", "counts": <store counts>}`.
- `PUT /_sandbox/stores/<merchant_id>`: JSON object of `StoreSpec` fields (merchant_id optional,
  access_token required, the rest default) installs or reinstalls the store: new tokens, not
  revoked, fresh rate-limit budgets, counts kept. Answers `<store>`. Tokens another store has
  ever held are refused.
- `POST /_sandbox/stores/<merchant_id>/expire-access-token`: the current access token expires now.
- `POST /_sandbox/stores/<merchant_id>/revoke`: every token of the store dies (as on uninstall).
- `GET`/`PUT /_sandbox/settings`: `{"limits_enabled", "oauth_expires_as_timestamp",
  "oauth_latency_ms"}`; PUT changes the keys it sends and answers all of them.
- `GET`/`PUT /_sandbox/faults`: `{"seed", <Faults fields>, "stores": {"<merchant_id>": <Faults
  fields>}}`; PUT replaces everything (left-out keys: no fault; `{}` clears all) and reseeds.
- `GET /_sandbox/stats`, `POST /_sandbox/reset-stats` (answers with the counts it cleared):
  `{"requests", "by_status", "by_customer"}` count loyalty requests (in total, per status code and
  per customer_id as sent, including refused requests that named one); `"stores": {"<merchant_id>":
  <store counts>}` lists every store, where store counts = `{"requests", "by_status",
  "rate_limited" (429s from its budgets, not injected ones), "refresh_calls", "refresh_reuses"}`
  and a loyalty request counts for the store whose token it sent (current or not); `"oauth":
  {"requests", "by_status"}` counts token-endpoint calls.
"""
from __future__ import annotations

import argparse
import dataclasses
import hmac
import json
import math
import random
import secrets
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, Collection, Iterable, Mapping
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

from devkit import sandbox_embedded
from devkit.sandbox_seed import QUIRKS_CUSTOMER, RIYADH, SEEDED, default_customers, lot_row

DEFAULT_PER_PAGE = 15
MAX_PER_PAGE = 60
DEFAULT_MERCHANT_ID = 1305146709  # the merchant of Salla's samples
DEFAULT_SCOPE = "customers.read offline_access"
REQUIRED_SCOPE = "customers.read"
ACCESS_TOKEN_LIFETIME = 14 * 24 * 3600  # Salla: access tokens live 14 days

# Salla's documented answers, read from the fixtures the tests use (tests/fixtures/salla/SOURCES.md
# names each one's source). Read by path, as devkit/demo.py reads the webhook samples: devkit
# never imports `tests`, and the sandbox runs from a source checkout, never from the image.
SAMPLES = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "salla" / "samples"
_ERRORS = json.loads((SAMPLES / "errors.json").read_text(encoding="utf-8"))
_WEBHOOKS = json.loads((SAMPLES.parent / "webhooks-api.json").read_text(encoding="utf-8"))
INVALID_TOKEN = _ERRORS["401_invalid_token"]
MISSING_SCOPE = _ERRORS["401_scope"]
MISSING_CUSTOMER_ID = _ERRORS["422_missing_customer_id"]
NOT_FOUND = _ERRORS["404"]
# Salla documents 403 as "blocked due to many errors in particular time or the access is not
# allowed", with no body and no word on a store without the loyalty app: a store without it
# gets the "not allowed" reading, a 403 fault (`fail_next`) the "blocked" one.
LOYALTY_APP_MISSING = _ERRORS["403_not_allowed"]
FORBIDDEN_BLOCKED = _ERRORS["403_blocked"]
TOO_MANY_REQUESTS = _ERRORS["429"]  # no 429 body is documented: the slug of the Responses page
# The fields of the webhook object in Salla's Register Webhook example, in its order.
WEBHOOK_FIELDS = tuple(_WEBHOOKS["register"]["data"])

# Ory Hydra's wording: Salla's tokens are Ory's (`ory_at_`/`ory_rt_` in errors.json), so its accounts
# server very likely is Hydra.
_INVALID_GRANT = ("The provided authorization grant (e.g., authorization code, resource owner credentials) "
                  "or refresh token is invalid, expired, revoked, does not match the redirection URI used "
                  "in the authorization request, or was issued to another client.")
_INVALID_CLIENT = ("Client authentication failed (e.g., unknown client, no client authentication included, "
                   "or unsupported authentication method).")

_GATEWAY_PAGES = {502: "502 Bad Gateway", 504: "504 Gateway Time-out"}

Rows = list[dict[str, Any]]


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(message)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # JSON true is not a number


def _is_number(value: Any) -> bool:
    return _is_int(value) or isinstance(value, float) and math.isfinite(value)


@dataclass(frozen=True)
class StoreSpec:
    """One store as installed: its tokens, what it may do and its rate limits. See the module docstring."""

    merchant_id: int
    access_token: str
    refresh_token: str | None = None  # None: the store cannot refresh
    scope: str = DEFAULT_SCOPE
    access_expires_at: float | None = None  # unix seconds; None = install time + access_expires_in
    access_expires_in: int = ACCESS_TOKEN_LIFETIME  # lifetime of the first token and of refreshed ones
    loyalty_app: bool = True
    missing_app_status: int = 403  # the answer without the loyalty app: 403 or 404
    limits: bool | None = None  # None: follow the app-wide limits_enabled
    plan_per_minute: int = 120
    plan_window_seconds: float = 60
    customer_limit: int = 500
    customer_window_seconds: float = 600

    def __post_init__(self) -> None:
        # Checked here so that JSON from PUT /_sandbox/stores gets the same checks as Python callers.
        _check(_is_int(self.merchant_id) and self.merchant_id > 0, "merchant_id must be a positive integer")
        _check(isinstance(self.access_token, str) and self.access_token != "",
               "access_token must be a non-empty string")
        _check(self.refresh_token is None or isinstance(self.refresh_token, str) and self.refresh_token != "",
               "refresh_token must be a non-empty string or null")
        _check(self.refresh_token != self.access_token, "refresh_token must differ from access_token")
        _check(isinstance(self.scope, str), "scope must be a string")
        _check(self.access_expires_at is None or _is_number(self.access_expires_at),
               "access_expires_at must be unix seconds or null")
        _check(isinstance(self.loyalty_app, bool), "loyalty_app must be true or false")
        _check(self.missing_app_status in (403, 404), "missing_app_status must be 403 or 404")
        _check(self.limits is None or isinstance(self.limits, bool), "limits must be true, false or null")
        for name in ("access_expires_in", "plan_per_minute", "customer_limit"):
            _check(_is_int(getattr(self, name)) and getattr(self, name) > 0, f"{name} must be a positive integer")
        for name in ("plan_window_seconds", "customer_window_seconds"):
            _check(_is_number(getattr(self, name)) and getattr(self, name) > 0, f"{name} must be a positive number")

    @classmethod
    def from_json(cls, merchant_id: int, data: Any) -> "StoreSpec":
        _check(isinstance(data, dict), "send a JSON object of StoreSpec fields")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        _check(not unknown, f"unknown fields: {', '.join(unknown)}")  # a typo must not pass as a default
        _check(data.get("merchant_id", merchant_id) == merchant_id, "merchant_id differs from the URL")
        _check("access_token" in data, "access_token is required")
        return cls(**{**data, "merchant_id": merchant_id})


FAIL_NEXT_ENTRIES = "403, 429, 500-599 or \"timeout\""


@dataclass
class Faults:
    """Faults of the loyalty endpoint, for everyone or for one store. See the module docstring."""

    latency_ms: float = 0
    error_rate: float = 0.0  # share of answers with error_status
    error_status: int = 503  # 500-599
    timeout_rate: float = 0.0  # share of answers that sleep timeout_seconds, then 504
    timeout_seconds: float = 10.0
    fail_next: list[int | str] = field(default_factory=list)  # consumed first, one entry per request

    def __post_init__(self) -> None:
        _check(_is_number(self.latency_ms) and self.latency_ms >= 0, "latency_ms must be a number >= 0")
        for name in ("error_rate", "timeout_rate"):
            _check(_is_number(getattr(self, name)) and 0 <= getattr(self, name) <= 1, f"{name} must be in [0, 1]")
        _check(self.error_rate + self.timeout_rate <= 1, "error_rate + timeout_rate must be at most 1")
        _check(_is_int(self.error_status) and 500 <= self.error_status <= 599, "error_status must be 500-599")
        _check(_is_number(self.timeout_seconds) and self.timeout_seconds >= 0, "timeout_seconds must be a number >= 0")
        _check(isinstance(self.fail_next, list) and all(_fault_entry(e) for e in self.fail_next),
               f"fail_next must be a list of {FAIL_NEXT_ENTRIES}")
        self.fail_next = list(self.fail_next)  # ours to consume, never the caller's list

    @classmethod
    def from_json(cls, data: Any) -> "Faults":
        _check(isinstance(data, dict), "send a JSON object of Faults fields")
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        _check(not unknown, f"unknown fields: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _fault_entry(entry: Any) -> bool:
    return entry == "timeout" or _is_int(entry) and (entry in (403, 429) or 500 <= entry <= 599)


@dataclass
class _Answer:
    """What the loyalty endpoint answers, decided under the lock and sent after it."""

    status: int
    body: Any = None  # a JSON-able value, text for an HTML page, or None for the 200 page of `rows`
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to sleep before answering (outside the lock)
    rows: Rows = field(default_factory=list)
    rate_limited: bool = False


class _Limiter:
    """A store's two budgets (plan and customer endpoints), as described in the module docstring."""

    def __init__(self, spec: StoreSpec) -> None:
        self.spec = spec
        self.plan_start = self.plan_last = -math.inf
        self.plan_used = 0
        self.customer_start = -math.inf
        self.customer_used = 0

    def take(self, now: float) -> tuple[bool, dict[str, str]]:
        """Spends one request if both budgets allow it; (admitted, headers to send)."""
        spec = self.spec
        if now >= self.plan_start + spec.plan_window_seconds:
            self.plan_start, self.plan_used = now, 0
        if now >= self.customer_start + spec.customer_window_seconds:
            self.customer_start, self.customer_used = now, 0
        plan_reset = self.plan_start + spec.plan_window_seconds
        customer_reset = self.customer_start + spec.customer_window_seconds

        refusals = []  # (seconds until a request would pass, limit, reset)
        if self.customer_used >= spec.customer_limit:
            refusals.append((customer_reset - now, spec.customer_limit, customer_reset))
        trickle_at = self.plan_last + spec.plan_window_seconds / 60  # "1 per second" at a 60 s window
        if self.plan_used >= spec.plan_per_minute and now < trickle_at:
            refusals.append((min(trickle_at, plan_reset) - now, spec.plan_per_minute, plan_reset))
        if refusals:
            wait, limit, reset = max(refusals)  # both budgets must allow the retry
            headers = _limit_headers(limit, 0, reset)
            headers["Retry-After"] = str(max(1, math.ceil(wait)))
            return False, headers

        self.plan_used += 1
        self.plan_last = now
        self.customer_used += 1
        plan = (max(spec.plan_per_minute - self.plan_used, 0), spec.plan_per_minute, plan_reset)
        customer = (spec.customer_limit - self.customer_used, spec.customer_limit, customer_reset)
        remaining, limit, reset = min(plan, customer, key=lambda budget: (budget[0], -budget[2]))
        return True, _limit_headers(limit, remaining, reset)


def _limit_headers(limit: int, remaining: int, reset: float) -> dict[str, str]:
    return {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(math.ceil(reset))}


class _Store:
    """One install of the app on a store: its current tokens and budgets. Counts live in _State,
    so that they outlast a reinstall."""

    def __init__(self, spec: StoreSpec, now: float, expires: bool = True) -> None:
        self.spec = spec
        self.access_token = spec.access_token
        self.access_expires_at: float | None = None
        if expires:
            self.access_expires_at = spec.access_expires_at if spec.access_expires_at is not None \
                else now + spec.access_expires_in
        self.refresh_token = spec.refresh_token
        self.used_refresh: set[str] = set()  # rotated away in this install: presenting one again is reuse
        self.revoked = False
        self.rotations = 0
        self.limiter = _Limiter(spec)

    def accepts(self, access_token: str, now: float) -> bool:
        return (not self.revoked and access_token == self.access_token
                and (self.access_expires_at is None or now < self.access_expires_at))


def _store_counts() -> dict[str, Any]:
    return {"requests": 0, "by_status": Counter(), "rate_limited": 0, "refresh_calls": 0, "refresh_reuses": 0}


class _State:
    """Everything the request threads share; touch it only while holding `lock`."""

    def __init__(self, customers: Mapping[int, Rows], settings: dict[str, Any], client_id: str,
                 client_secret: str, faults: Faults, store_faults: Mapping[int, Faults], fault_seed: int) -> None:
        self.lock = threading.Lock()
        # Row lists are never mutated, only replaced, so a reader may keep one after unlocking.
        self.customers: dict[int, Rows] = {int(cid): list(rows) for cid, rows in customers.items()}
        self.settings = settings  # limits_enabled, oauth_expires_as_timestamp, oauth_latency_ms
        self.client = (client_id.encode(), client_secret.encode())
        self.stores: dict[int, _Store] = {}
        # Every token ever issued → its merchant, so that stale tokens are told apart from unknown ones.
        self.access_owner: dict[str, int] = {}
        self.refresh_owner: dict[str, int] = {}
        self.set_faults(faults, store_faults, fault_seed)
        self.total = 0
        self.by_status: Counter[str] = Counter()
        self.by_customer: Counter[str] = Counter()
        self.store_counts: dict[int, dict[str, Any]] = {}
        self.oauth_total = 0
        self.oauth_by_status: Counter[str] = Counter()
        # The Merchant API beyond the loyalty endpoint (see "Customers, app settings, webhooks").
        self.profiles: dict[int, dict[str, Any]] = {cid: customer_row(cid) for cid in self.customers}
        self.app_settings: dict[int, dict[str, Any]] = {}
        self.subscriptions: dict[int, list[dict[str, Any]]] = {}
        self.path_faults: dict[str, list[int]] = {}
        self.by_route: Counter[str] = Counter()
        self.list_pages: Counter[str] = Counter()  # "<merchant>:<page>" of GET /customers

    # Stores

    def install(self, spec: StoreSpec, expires: bool = True) -> dict[str, Any]:
        with self.lock:
            for token, owners in ((spec.access_token, self.access_owner), (spec.refresh_token, self.refresh_owner)):
                owner = owners.get(token) if token else None
                _check(owner in (None, spec.merchant_id), f"merchant {owner} already holds token {token!r}")
            store = _Store(spec, time.time(), expires)
            self.stores[spec.merchant_id] = store
            self._own(spec.merchant_id, store.access_token, store.refresh_token)
            self.store_counts.setdefault(spec.merchant_id, _store_counts())
            return self._view(spec.merchant_id)

    def _own(self, merchant_id: int, access_token: str, refresh_token: str | None) -> None:
        self.access_owner[access_token] = merchant_id
        if refresh_token:
            self.refresh_owner[refresh_token] = merchant_id

    def view(self, merchant_id: int, expire: bool = False, revoke: bool = False) -> dict[str, Any] | None:
        with self.lock:
            store = self.stores.get(merchant_id)
            if store is None:
                return None
            if expire:
                store.access_expires_at = time.time()
            if revoke:
                store.revoked = True
            return self._view(merchant_id)

    def views(self) -> list[dict[str, Any]]:
        with self.lock:
            return [self._view(merchant_id) for merchant_id in self.stores]

    def _view(self, merchant_id: int) -> dict[str, Any]:
        store = self.stores[merchant_id]
        spec = store.spec
        return {
            "merchant_id": merchant_id,
            "access_token": store.access_token,
            "access_expires_at": None if store.access_expires_at is None else int(store.access_expires_at),
            "refresh_token": store.refresh_token,
            "scope": spec.scope,
            "token_type": "bearer",
            "revoked": store.revoked,
            "rotations": store.rotations,
            "loyalty_app": spec.loyalty_app,
            "missing_app_status": spec.missing_app_status,
            "limits": {"enabled": self._limited(store), "plan_per_minute": spec.plan_per_minute,
                       "plan_window_seconds": spec.plan_window_seconds, "customer_limit": spec.customer_limit,
                       "customer_window_seconds": spec.customer_window_seconds},
            "access_expires_in": spec.access_expires_in,
            "counts": _counts_json(self.store_counts[merchant_id]),
        }

    def _limited(self, store: _Store) -> bool:
        return store.spec.limits if store.spec.limits is not None else bool(self.settings["limits_enabled"])

    # Faults

    def set_faults(self, faults: Faults, store_faults: Mapping[int, Faults], seed: int) -> None:
        # Copies: the queues are consumed, and a caller's objects must not change under it.
        with self.lock:
            self.faults = dataclasses.replace(faults)
            self.store_faults = {int(mid): dataclasses.replace(f) for mid, f in store_faults.items()}
            self.fault_seed = seed
            self.rng = random.Random(seed)

    def faults_json(self) -> dict[str, Any]:
        with self.lock:
            return {"seed": self.fault_seed, **self.faults.to_json(),
                    "stores": {str(mid): f.to_json() for mid, f in self.store_faults.items()}}

    def _fault(self, merchant_id: int | None) -> tuple[float, _Answer | None]:
        """(latency in seconds, the injected answer or None)."""
        faults = self.store_faults.get(merchant_id, self.faults) if merchant_id is not None else self.faults
        latency = faults.latency_ms / 1000
        if faults.fail_next:
            entry = faults.fail_next.pop(0)
        elif faults.timeout_rate or faults.error_rate:
            draw = self.rng.random()  # one draw per request keeps a seeded run reproducible
            entry = "timeout" if draw < faults.timeout_rate else \
                faults.error_status if draw < faults.timeout_rate + faults.error_rate else None
        else:
            entry = None
        if entry is None:
            return latency, None
        if entry == "timeout":
            # A proxy in front of a stuck upstream: nothing for timeout_seconds, then a 504 page.
            return latency, _Answer(504, _GATEWAY_PAGES[504], delay=latency + faults.timeout_seconds)
        if entry == 429:
            return latency, _Answer(429, TOO_MANY_REQUESTS, {"Retry-After": "1"}, latency)
        if entry == 403:  # Salla's temporary block (docs.salla.dev/421123m0)
            return latency, _Answer(403, FORBIDDEN_BLOCKED, delay=latency)
        if entry in _GATEWAY_PAGES:
            return latency, _Answer(entry, _GATEWAY_PAGES[entry], delay=latency)
        body = {"status": entry, "success": False, "error": {"code": entry, "message": "Server Error"}}
        return latency, _Answer(entry, body, delay=latency)

    # The loyalty endpoint

    def loyalty(self, access_token: str | None, customer_id: str) -> _Answer:
        with self.lock:
            now = time.time()
            merchant_id = self.access_owner.get(access_token) if access_token else None
            answer = self._loyalty(now, access_token, merchant_id, customer_id)
            self.total += 1
            self.by_status[str(answer.status)] += 1
            if customer_id:
                self.by_customer[customer_id] += 1
            if merchant_id is not None:
                counts = self.store_counts[merchant_id]
                counts["requests"] += 1
                counts["by_status"][str(answer.status)] += 1
                counts["rate_limited"] += answer.rate_limited
        return answer

    def _loyalty(self, now: float, access_token: str | None, merchant_id: int | None, customer_id: str) -> _Answer:
        latency, fault = self._fault(merchant_id)
        if fault is not None:
            return fault
        store = self.stores.get(merchant_id) if merchant_id is not None else None
        if store is None or access_token is None or not store.accepts(access_token, now):
            return _Answer(401, INVALID_TOKEN, delay=latency)
        headers: dict[str, str] = {}
        if self._limited(store):
            admitted, headers = store.limiter.take(now)
            if not admitted:
                return _Answer(429, TOO_MANY_REQUESTS, headers, latency, rate_limited=True)
        spec = store.spec
        if REQUIRED_SCOPE not in spec.scope.split():
            return _Answer(401, MISSING_SCOPE, headers, latency)
        if not spec.loyalty_app:
            body = LOYALTY_APP_MISSING if spec.missing_app_status == 403 else NOT_FOUND
            return _Answer(spec.missing_app_status, body, headers, latency)
        if not customer_id:
            return _Answer(422, MISSING_CUSTOMER_ID, headers, latency)
        known_id = int(customer_id) if customer_id.isascii() and customer_id.isdigit() else None
        rows = self.customers.get(known_id, []) if known_id is not None else []
        return _Answer(200, None, headers, latency, rows)

    # Customers, app settings, webhooks

    def merchant_call(self, access_token: str | None, route: str, scope: str | None = None
                      ) -> tuple[_Answer | None, int | None]:
        """The checks every Merchant API route shares: an injected status for the route, the
        token, the store's rate limits, the scope. (answer to send instead, merchant id)."""
        with self.lock:
            now = time.time()
            self.by_route[route] += 1
            merchant_id = self.access_owner.get(access_token) if access_token else None
            queue = self.path_faults.get(route)
            if queue:
                status = queue.pop(0)
                body = TOO_MANY_REQUESTS if status == 429 else \
                    {"status": status, "success": False, "error": {"code": status, "message": "injected"}}
                return _Answer(status, body, {"Retry-After": "1"} if status == 429 else {}), merchant_id
            store = self.stores.get(merchant_id) if merchant_id is not None else None
            if store is None or access_token is None or not store.accepts(access_token, now):
                return _Answer(401, INVALID_TOKEN), merchant_id
            headers: dict[str, str] = {}
            if self._limited(store):
                admitted, headers = store.limiter.take(now)
                if not admitted:
                    self.store_counts[merchant_id]["rate_limited"] += 1
                    return _Answer(429, TOO_MANY_REQUESTS, headers, rate_limited=True), merchant_id
            if scope and scope not in store.spec.scope.split():
                return _Answer(401, MISSING_SCOPE, headers), merchant_id
            return _Answer(200, None, headers), merchant_id

    def seed(self, count: int, start_id: int, lots_every: int, now: datetime) -> dict[str, Any]:
        """`count` customers from `start_id`, each in GET /customers; every `lots_every`-th
        (0: none) has 100 points expiring in 7 days, the others an empty history."""
        _check(_is_int(count) and 0 < count <= 100_000, "count must be 1-100000")
        _check(_is_int(start_id) and start_id > 0, "start_id must be a positive integer")
        _check(_is_int(lots_every) and lots_every >= 0, "lots_every must be an integer >= 0")
        with self.lock:
            for index in range(count):
                cid = start_id + index
                self.profiles[cid] = customer_row(cid)
                with_lots = lots_every and index % lots_every == 0
                self.customers[cid] = [lot_row(100, 0, now + timedelta(days=7), now - timedelta(days=60),
                                               order_id=str(9_000_000 + cid))] if with_lots else []
            return {"customers": len(self.profiles)}

    # The token endpoint

    def refresh(self, form: Mapping[str, str], basic: tuple[str, str] | None) -> tuple[int, dict[str, Any]]:
        with self.lock:
            latency = self.settings["oauth_latency_ms"] / 1000
        time.sleep(latency)  # before deciding, as if the request were still on its way
        with self.lock:
            status, body = self._refresh(form, basic, time.time())
            self.oauth_total += 1
            self.oauth_by_status[str(status)] += 1
        return status, body

    def _refresh(self, form: Mapping[str, str], basic: tuple[str, str] | None,
                 now: float) -> tuple[int, dict[str, Any]]:
        client_id, client_secret = basic or (form.get("client_id", ""), form.get("client_secret", ""))
        if not (hmac.compare_digest(client_id.encode(), self.client[0])
                and hmac.compare_digest(client_secret.encode(), self.client[1])):
            return 401, {"error": "invalid_client", "error_description": _INVALID_CLIENT}
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type", "error_description":
                         "The authorization grant type is not supported by the authorization server."}
        presented = form.get("refresh_token", "")
        if not presented:
            return 400, {"error": "invalid_request",
                         "error_description": "The request is missing a required parameter: refresh_token."}
        merchant_id = self.refresh_owner.get(presented)
        if merchant_id is None:
            return 400, {"error": "invalid_grant", "error_description": _INVALID_GRANT}
        store, counts = self.stores[merchant_id], self.store_counts[merchant_id]
        counts["refresh_calls"] += 1
        if presented in store.used_refresh:
            # Salla: using a refresh token twice revokes every token of the merchant.
            counts["refresh_reuses"] += 1
            store.revoked = True
            return 400, {"error": "invalid_grant",
                         "error_description": _INVALID_GRANT + " The refresh token has already been used."}
        if store.revoked or presented != store.refresh_token:  # revoked, or from an earlier install
            return 400, {"error": "invalid_grant", "error_description": _INVALID_GRANT}

        store.used_refresh.add(presented)
        store.rotations += 1
        store.access_token = f"ory_at_{merchant_id}_{store.rotations}_{secrets.token_urlsafe(16)}"
        store.refresh_token = f"ory_rt_{merchant_id}_{store.rotations}_{secrets.token_urlsafe(16)}"
        store.access_expires_at = now + store.spec.access_expires_in
        self._own(merchant_id, store.access_token, store.refresh_token)
        expiry = {"expires": int(store.access_expires_at)} if self.settings["oauth_expires_as_timestamp"] \
            else {"expires_in": store.spec.access_expires_in}
        return 200, {"access_token": store.access_token, **expiry, "refresh_token": store.refresh_token,
                     "scope": store.spec.scope, "token_type": "bearer"}

    # Stats

    def stats(self, reset: bool = False) -> dict[str, Any]:
        with self.lock:
            snapshot = {"requests": self.total, "by_status": dict(self.by_status),
                        "by_customer": dict(self.by_customer),
                        "stores": {str(mid): _counts_json(c) for mid, c in self.store_counts.items()},
                        "oauth": {"requests": self.oauth_total, "by_status": dict(self.oauth_by_status)}}
            if reset:
                self.total = self.oauth_total = 0
                self.by_status.clear()
                self.by_customer.clear()
                self.oauth_by_status.clear()
                self.store_counts = {mid: _store_counts() for mid in self.store_counts}
        return snapshot


def _counts_json(counts: dict[str, Any]) -> dict[str, Any]:
    return {**counts, "by_status": dict(counts["by_status"])}


def create_app(
    customers: Mapping[int, Rows] | None = None,
    token: str | None = "sandbox-token",
    now: datetime | None = None,
    observed_links: Collection[int] = (QUIRKS_CUSTOMER,),
    stores: Iterable[StoreSpec] | None = None,
    limits_enabled: bool = False,
    client_id: str = "sandbox-client",
    client_secret: str = "sandbox-client-secret",
    oauth_expires_as_timestamp: bool = False,
    oauth_latency_ms: float = 0,
    faults: Faults | None = None,
    store_faults: Mapping[int, Faults] | None = None,
    fault_seed: int = 0,
    app_id: int = 513499943,
) -> Flask:
    """The sandbox app (see the module docstring). Without `customers`, the seeded ones, computed
    once from `now`. Raises ValueError for stores that clash (same merchant or a shared token)."""
    if customers is None:
        customers = default_customers(now or datetime.now(RIYADH))
    settings = {"limits_enabled": limits_enabled, "oauth_expires_as_timestamp": oauth_expires_as_timestamp,
                "oauth_latency_ms": oauth_latency_ms}
    _check_settings(settings)
    state = _State(customers, settings, client_id, client_secret, faults or Faults(), store_faults or {}, fault_seed)
    state.app_id = app_id
    specs = list(stores or ())
    merchant_ids = [spec.merchant_id for spec in specs]
    _check(len(set(merchant_ids)) == len(merchant_ids), "two stores with the same merchant_id")
    for spec in specs:
        state.install(spec)
    if token is not None and DEFAULT_MERCHANT_ID not in merchant_ids:
        try:
            state.install(StoreSpec(DEFAULT_MERCHANT_ID, token), expires=False)
        except ValueError as exc:
            raise ValueError(f"the default store's token clashes ({exc}); pass token=None") from None
    observed = frozenset(observed_links)

    app = Flask(__name__)
    app.json.sort_keys = False  # keep Salla's key order: easier to compare by eye with its docs
    app.extensions["salla_sandbox"] = state
    sandbox_embedded.register(app, app_id)  # Token Introspect for the embedded page (devkit/sandbox_embedded.py)

    @app.get("/customers/loyalty/points")
    def loyalty_points() -> Response:
        customer_id = request.args.get("customer_id", "").strip()
        auth = request.headers.get("Authorization", "")
        answer = state.loyalty(auth[len("Bearer "):] if auth.startswith("Bearer ") else None, customer_id)
        if answer.delay:
            time.sleep(answer.delay)
        if answer.body is None:
            response = jsonify(_page(answer.rows, observed, customer_id))
        elif isinstance(answer.body, str):
            response = Response(f"<html><head><title>{answer.body}</title></head><body><center><h1>"
                                f"{answer.body}</h1></center></body></html>\n", mimetype="text/html")
        else:
            response = jsonify(answer.body)
        response.status_code = answer.status
        response.headers.update(answer.headers)
        return response

    @app.post("/oauth2/token")
    def oauth_token() -> tuple[Response, int]:
        auth = request.authorization
        basic = (auth.username or "", auth.password or "") if auth is not None and auth.type == "basic" else None
        status, body = state.refresh(request.form, basic)
        response = jsonify(body)
        response.headers["Cache-Control"] = "no-store"  # RFC 6749 §5.1
        response.headers["Pragma"] = "no-cache"
        return response, status

    def bearer() -> str | None:
        auth = request.headers.get("Authorization", "")
        return auth[len("Bearer "):] if auth.startswith("Bearer ") else None

    def refused(answer: _Answer) -> Response:
        response = jsonify(answer.body)
        response.status_code = answer.status
        response.headers.update(answer.headers)
        return response

    @app.get("/customers")
    def list_customers() -> Response:
        answer, merchant_id = state.merchant_call(bearer(), "customers", REQUIRED_SCOPE)
        if answer.status != 200:
            return refused(answer)
        page = _positive_int(request.args.get("page"), 1)
        with state.lock:
            rows = [state.profiles[cid] for cid in sorted(state.profiles)]
            state.list_pages[f"{merchant_id}:{page}"] += 1
        per_page = min(_positive_int(request.args.get("per_page"), DEFAULT_PER_PAGE), MAX_PER_PAGE)
        total_pages = max(math.ceil(len(rows) / per_page), 1)
        data = rows[(page - 1) * per_page: page * per_page]
        response = jsonify({"status": 200, "success": True, "data": data, "pagination": {
            "count": len(data), "total": len(rows), "perPage": per_page, "currentPage": page,
            "totalPages": total_pages, "links": _links(page, total_pages, False)}})
        response.headers.update(answer.headers)
        return response

    @app.get("/apps/<int:app_id>/settings")
    def get_app_settings(app_id: int) -> Response:
        answer, merchant_id = state.merchant_call(bearer(), "app_settings")
        if answer.status != 200:
            return refused(answer)
        if app_id != state.app_id:
            return refused(_Answer(404, NOT_FOUND))
        with state.lock:
            values = dict(state.app_settings.get(merchant_id, {}))
        return jsonify({"status": 200, "success": True, "data": values})

    @app.get("/webhooks")
    def list_webhooks() -> Response:
        answer, merchant_id = state.merchant_call(bearer(), "webhooks")
        if answer.status != 200:
            return refused(answer)
        with state.lock:
            rows = [_webhook_view(row) for row in state.subscriptions.get(merchant_id, [])]
        page = _positive_int(request.args.get("page"), 1)
        per_page = DEFAULT_PER_PAGE
        total_pages = max(math.ceil(len(rows) / per_page), 1)
        data = rows[(page - 1) * per_page: page * per_page]
        return jsonify({"status": 200, "success": True, "data": data,
                        "pagination": {"count": len(data), "total": len(rows), "perPage": per_page,
                                       "currentPage": page, "totalPages": total_pages,
                                       "links": _links(page, total_pages, True)}})

    def invalid(problems: dict[str, list[str]]) -> Response:
        return refused(_Answer(422, {"status": 422, "success": False, "error": {
            "code": "error", "message": "alert.invalid_fields", "fields": problems}}))

    @app.post("/webhooks/subscribe")
    def subscribe_webhook() -> Response:
        answer, merchant_id = state.merchant_call(bearer(), "subscribe")
        if answer.status != 200:
            return refused(answer)
        body = request.get_json(silent=True)
        problems = _subscription_problems(body, required=("event", "url"))
        if problems:
            return invalid(problems)
        with state.lock:
            rows = state.subscriptions.setdefault(merchant_id, [])
            # Salla: the same URL and event updates (restores) the old subscription.
            row = next((r for r in rows if r["url"] == body["url"] and r["event"] == body["event"]), None)
            if row is None:
                # Register Webhook has no security fields: Salla signs with Signature and a secret
                # of its own (REFERENCE.md §5). `security_strategy` or `secret` sent here are ignored.
                row = {"id": 60587520 + sum(len(v) for v in state.subscriptions.values()), "type": "manual",
                       "security_strategy": "signature", "secret": secrets.token_hex(16), "rule": None,
                       "headers": {}}
                rows.append(row)
            row.update({"name": body.get("name", body["event"]), "event": body["event"], "url": body["url"],
                        "version": body.get("version", 2)})
            row.update({name: body[name] for name in ("rule",) if name in body})
            if "headers" in body:
                row["headers"] = {h["key"]: h["value"] for h in body["headers"]}
            return jsonify({"status": 200, "success": True, "data": _webhook_view(row)})

    @app.put("/webhooks/<int:webhook_id>")
    def update_webhook(webhook_id: int) -> Response:
        answer, merchant_id = state.merchant_call(bearer(), "update")
        if answer.status != 200:
            return refused(answer)
        body = request.get_json(silent=True)
        problems = _subscription_problems(body, required=())
        if isinstance(body, dict) and body.get("security_strategy") == "signature" and not body.get("secret"):
            problems["secret"] = ["حقل secret مطلوب."]
        if problems:
            return invalid(problems)
        with state.lock:
            row = next((r for r in state.subscriptions.get(merchant_id, []) if r["id"] == webhook_id), None)
            if row is None:
                return refused(_Answer(404, NOT_FOUND))
            row.update({name: body[name] for name in ("name", "url", "version", "rule", "security_strategy",
                                                      "secret") if name in body})
            if "headers" in body:
                row["headers"] = {h["key"]: h["value"] for h in body["headers"]}
            return jsonify({"status": 200, "success": True, "data": _webhook_view(row)})

    @app.put("/_sandbox/customers/seed")
    def seed_customers() -> tuple[Response, int]:
        data = request.get_json(silent=True)
        try:
            _check(isinstance(data, dict), "send a JSON object: count, start_id, lots_every")
            return jsonify(state.seed(data.get("count"), data.get("start_id", 100_000), data.get("lots_every", 0),
                                      datetime.now(RIYADH))), 200
        except ValueError as exc:
            return jsonify({"error": str(exc)}), 400

    @app.put("/_sandbox/stores/<int:merchant_id>/app-settings")
    def put_app_settings(merchant_id: int) -> tuple[Response, int]:
        values = request.get_json(silent=True)
        if not isinstance(values, dict):
            return jsonify({"error": "send a JSON object of setting values"}), 400
        with state.lock:
            state.app_settings[merchant_id] = values
        return jsonify(values), 200

    @app.put("/_sandbox/route-faults")
    def put_route_faults() -> tuple[Response, int]:
        data = request.get_json(silent=True)
        routes = ("customers", "app_settings", "webhooks", "subscribe", "update")
        if not isinstance(data, dict) or set(data) - set(routes) or not all(
                isinstance(v, list) and all(_is_int(x) and 400 <= x <= 599 for x in v) for v in data.values()):
            return jsonify({"error": f"send {{route: [status 400-599, ...]}} for routes {', '.join(routes)}"}), 400
        with state.lock:
            state.path_faults = {route: list(statuses) for route, statuses in data.items()}
        return jsonify(data), 200

    @app.get("/_sandbox/merchant-api")
    def merchant_api_stats() -> Response:
        with state.lock:
            return jsonify({"by_route": dict(state.by_route), "list_pages": dict(state.list_pages),
                            "subscriptions": {str(m): rows for m, rows in state.subscriptions.items()}})

    @app.put("/_sandbox/customers/<int:customer_id>/lots")
    def put_lots(customer_id: int) -> tuple[Response, int]:
        rows = request.get_json(silent=True)
        if not isinstance(rows, list):
            return jsonify({"error": "send a JSON array of rows (Content-Type: application/json)"}), 400
        with state.lock:
            state.customers[customer_id] = rows
        return jsonify({"customer_id": customer_id, "lots": len(rows)}), 200

    @app.get("/_sandbox/stores")
    def list_stores() -> Response:
        return jsonify({"stores": state.views()})

    @app.get("/_sandbox/stores/<int:merchant_id>")
    def get_store(merchant_id: int) -> tuple[Response, int]:
        return _store_answer(state.view(merchant_id), merchant_id)

    @app.put("/_sandbox/stores/<int:merchant_id>")
    def put_store(merchant_id: int) -> tuple[Response, int]:
        try:
            return jsonify(state.install(StoreSpec.from_json(merchant_id, request.get_json(silent=True)))), 200
        except ValueError as exc:
            return jsonify({"error": str(exc)}), 400

    @app.post("/_sandbox/stores/<int:merchant_id>/expire-access-token")
    def expire_access_token(merchant_id: int) -> tuple[Response, int]:
        return _store_answer(state.view(merchant_id, expire=True), merchant_id)

    @app.post("/_sandbox/stores/<int:merchant_id>/revoke")
    def revoke(merchant_id: int) -> tuple[Response, int]:
        return _store_answer(state.view(merchant_id, revoke=True), merchant_id)

    @app.route("/_sandbox/settings", methods=["GET", "PUT"])
    def app_settings() -> tuple[Response, int]:
        if request.method == "PUT":
            changes = request.get_json(silent=True)
            try:
                _check(isinstance(changes, dict), "send a JSON object of settings")
                _check_settings({**state.settings, **changes})
            except ValueError as exc:
                return jsonify({"error": str(exc)}), 400
            with state.lock:
                state.settings.update(changes)
        with state.lock:
            return jsonify(dict(state.settings)), 200

    @app.route("/_sandbox/faults", methods=["GET", "PUT"])
    def app_faults() -> tuple[Response, int]:
        if request.method == "PUT":
            try:
                state.set_faults(*_faults_from_json(request.get_json(silent=True)))
            except ValueError as exc:
                return jsonify({"error": str(exc)}), 400
        return jsonify(state.faults_json()), 200

    @app.get("/_sandbox/stats")
    def stats() -> Response:
        return jsonify(state.stats())

    @app.post("/_sandbox/reset-stats")
    def reset_stats() -> Response:
        return jsonify(state.stats(reset=True))

    @app.errorhandler(404)
    def not_found(_: Exception) -> tuple[Response, int]:
        # A client with a wrong base URL should see Salla's JSON 404, not Flask's HTML page.
        return jsonify(NOT_FOUND), 404

    return app


def _check_settings(settings: Mapping[str, Any]) -> None:
    unknown = sorted(set(settings) - {"limits_enabled", "oauth_expires_as_timestamp", "oauth_latency_ms"})
    _check(not unknown, f"unknown settings: {', '.join(unknown)}")
    _check(isinstance(settings["limits_enabled"], bool), "limits_enabled must be true or false")
    _check(isinstance(settings["oauth_expires_as_timestamp"], bool),
           "oauth_expires_as_timestamp must be true or false")
    _check(_is_number(settings["oauth_latency_ms"]) and settings["oauth_latency_ms"] >= 0,
           "oauth_latency_ms must be a number >= 0")


def _faults_from_json(data: Any) -> tuple[Faults, dict[int, Faults], int]:
    _check(isinstance(data, dict), "send a JSON object of faults")
    data = dict(data)
    seed, per_store = data.pop("seed", 0), data.pop("stores", {})
    _check(_is_int(seed), "seed must be an integer")
    _check(isinstance(per_store, dict) and all(key.isdigit() for key in per_store),
           "stores must map merchant ids to faults")
    return Faults.from_json(data), {int(key): Faults.from_json(value) for key, value in per_store.items()}, seed


def customer_row(customer_id: int) -> dict[str, Any]:
    """A row of GET /customers in Salla's shape (REFERENCE.md, List Customers)."""
    return {"id": customer_id, "first_name": "عميل", "last_name": str(customer_id),
            "mobile": 500_000_000 + customer_id % 100_000_000, "mobile_code": "+966",
            "email": f"customer{customer_id}@example.com",
            "urls": {"customer": f"https://salla.sa/dev/customer/{customer_id}",
                     "admin": f"https://s.salla.sa/customers/{customer_id}"},
            "avatar": "https://cdn.salla.sa/images/avatar_male.png", "gender": "male", "birthday": None,
            "city": "الرياض", "country": "السعودية", "country_code": "SA", "currency": "SAR", "location": "",
            "updated_at": {"date": "2026-01-01 10:00:00.000000", "timezone_type": 3, "timezone": "Asia/Riyadh"},
            "groups": []}


def _subscription_problems(body: Any, required: tuple[str, ...]) -> dict[str, list[str]]:
    """Salla's 422 fields for Register (event and url required) and Update Webhook (nothing
    required): a url on localhost or a test. host is refused, version is 1 or 2, headers are
    [{key, value}], security_strategy (Update only; ignored by Register) is signature or token."""
    if not isinstance(body, dict):
        return {"body": ["send a JSON object"]}
    problems = {}
    for name in ("name", "event", "url", "rule") + (() if required else ("secret",)):
        if (name in required or name in body) and (not isinstance(body.get(name), str) or not body[name].strip()):
            problems[name] = [f"حقل {name} مطلوب."]
    url = body.get("url") if isinstance(body.get("url"), str) else ""
    host = url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    if url and (not url.startswith(("http://", "https://")) or host in ("localhost", "127.0.0.1")
                or host.startswith("test.")):
        problems["url"] = ["The url must be a public http(s) address."]
    if body.get("version", 2) not in (1, 2):
        problems["version"] = ["version must be 1 or 2"]
    headers = body.get("headers", [])
    if not isinstance(headers, list) or not all(isinstance(h, dict) and isinstance(h.get("key"), str)
                                                and isinstance(h.get("value"), str) for h in headers):
        problems["headers"] = ["headers must be a list of {key, value}"]
    if "security_strategy" in body and not required and body["security_strategy"] not in ("signature", "token"):
        problems["security_strategy"] = ["security_strategy must be signature or token"]
    return problems


def _webhook_view(row: dict[str, Any]) -> dict[str, Any]:
    """A subscription as Salla answers it: the fields of its Register Webhook example. Its
    `headers` are what a delivery carries: the custom ones, and under the Token strategy the
    secret as `Authorization` (as in that example). A Signature secret is never shown."""
    headers = dict(row["headers"])
    if row["security_strategy"] == "token":
        headers["Authorization"] = row["secret"]
    view = {**row, "headers": headers}
    return {name: view.get(name) for name in WEBHOOK_FIELDS}


def _store_answer(view: dict[str, Any] | None, merchant_id: int) -> tuple[Response, int]:
    if view is None:
        return jsonify({"error": f"no store {merchant_id}"}), 404
    return jsonify(view), 200


def _page(rows: Rows, observed: frozenset[int], customer_id: str) -> dict[str, Any]:
    page = _positive_int(request.args.get("page"), 1)
    per_page = min(_positive_int(request.args.get("per_page"), DEFAULT_PER_PAGE), MAX_PER_PAGE)
    total_pages = max(math.ceil(len(rows) / per_page), 1)
    data = rows[(page - 1) * per_page: page * per_page]
    known_id = int(customer_id) if customer_id.isascii() and customer_id.isdigit() else None
    return {
        "status": 200,
        "success": True,
        "data": data,
        "pagination": {
            "count": len(data),
            "total": len(rows),
            "perPage": per_page,
            "currentPage": page,
            "totalPages": total_pages,
            "links": _links(page, total_pages, known_id in observed),
        },
    }


def _links(page: int, total_pages: int, observed: bool) -> dict[str, str] | list[Any]:
    next_url = _page_url(page + 1) if page < total_pages else None
    previous_url = _page_url(page - 1) if page > 1 else None
    if not observed:
        return {"next": next_url or "", "previous": previous_url or ""}
    links = {key: url for key, url in (("next", next_url), ("previous", previous_url)) if url}
    return links or []  # PHP serialises an empty array as [] (REFERENCE.md §3)


def _page_url(page: int) -> str:
    params = [(key, value) for key, value in request.args.items(multi=True) if key != "page"]
    params.insert(1 if params and params[0][0] == "customer_id" else 0, ("page", str(page)))
    # Deliberately http://, whatever the request came in on: Salla's example link is http.
    return f"http://{request.host}{request.path}?{urlencode(params)}"


def _positive_int(text: str | None, default: int) -> int:
    try:
        value = int(text) if text is not None else default
    except ValueError:
        return default
    return value if value >= 1 else default


class _QuietHandler(WSGIRequestHandler):
    """Skips werkzeug's per-request log line: noise in tests, and a cost in benchmarks."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class ThreadedServer:
    """A WSGI app served by werkzeug's threaded server on a daemon thread; stop() or `with`."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 0, log_requests: bool = False) -> None:
        self._server = make_server(host, port, app, threaded=True,
                                   request_handler=None if log_requests else _QuietHandler)
        self.host = host
        self.port: int = self._server.server_port
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{self.port}"
        # A short poll interval: shutdown() waits for the serve loop to notice, 0.5 s by default.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"wsgi-server-{self.port}", daemon=True)
        self._stopped = False
        self._thread.start()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "ThreadedServer":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


SandboxServer = ThreadedServer  # the name other modules were told to expect


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, *, log_requests: bool = False) -> ThreadedServer:
    """Serve any WSGI app (port 0 = a free one) until `.stop()`; `.url` is its base URL."""
    return ThreadedServer(app, host, port, log_requests)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devkit.sandbox",
                                     description="Serve the Salla loyalty-points sandbox.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--token", default="sandbox-token",
                        help=f"the bearer token of the default store (merchant {DEFAULT_MERCHANT_ID})")
    parser.add_argument("--client-id", default="sandbox-client", help="the app's OAuth client id")
    parser.add_argument("--client-secret", default="sandbox-client-secret", help="the app's OAuth client secret")
    parser.add_argument("--limits", action="store_true", help="enforce Salla's rate limits")
    args = parser.parse_args(argv)

    app = create_app(token=args.token, client_id=args.client_id, client_secret=args.client_secret,
                     limits_enabled=args.limits)
    try:
        server = serve_in_thread(app, args.host, args.port, log_requests=True)
    except OSError as exc:
        print(f"sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    print(f"Salla sandbox at {server.url}", flush=True)
    print(f"  SALLA_API_BASE_URL={server.url} SALLA_ACCESS_TOKEN={args.token}")
    print(f"  SALLA_ACCOUNTS_URL={server.url} SALLA_CLIENT_ID={args.client_id} "
          f"SALLA_CLIENT_SECRET={args.client_secret}")
    print(f"  stores: GET {server.url}/_sandbox/stores (rate limits {'on' if args.limits else 'off'})")
    print(f"  GET {server.url}/customers/loyalty/points?customer_id=1001")
    for customer_id, description in SEEDED.items():
        print(f"  customer {customer_id}: {description}")
    print("Stop with Ctrl-C or SIGTERM.", flush=True)
    with server:
        stop.wait()
    print("sandbox: stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
