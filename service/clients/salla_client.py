"""Salla Merchant API client: one class, an injected requests.Session, a timeout on every call.

Transport trouble is mapped to our own two exceptions, so the task decides about retries
without knowing about HTTP: SallaTransientError (connection errors, timeouts, 429, 5xx,
an unreadable answer) is worth retrying; SallaPermanentError (other 4xx) is not.
Tokens go into the Authorization header only, never into an exception or a log line.
"""
from __future__ import annotations

import requests

from service.config import metrics

# A customer with more lots than this many pages of history is surely a loop, not data.
MAX_PAGES = 200


class SallaError(Exception):
    pass


class SallaTransientError(SallaError):
    def __init__(self, message: str, retry_after: float | None = None, status: int | None = None):
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class SallaPermanentError(SallaError):
    def __init__(self, message: str, status: int, code: str | None = None, detail: str = ""):
        super().__init__(message)
        self.status = status
        self.code = code
        self.detail = detail  # Salla's own error message: what a 403 means depends on it


class SallaUnauthorized(SallaPermanentError):
    """401. An expired or revoked token is fixed by a refresh; a missing scope is not."""

    @property
    def scope_missing(self) -> bool:
        return "scope" in str(self).lower()


class SallaForbidden(SallaPermanentError):
    """403: refused, or temporarily blocked (Salla's Responses page); service/clients/salla_refusals.py
    tells the two apart."""


class SallaNotFound(SallaPermanentError):
    """404: Salla does not document what the loyalty endpoint answers without the app."""


class BudgetExhausted(Exception):
    """No budget for the next page now; the read is put back with this many pages known."""

    def __init__(self, pages: int):
        super().__init__(f"no budget for page {pages} now")
        self.pages = pages


class SallaClient:
    def __init__(self, base_url: str, session: requests.Session, timeout: float, page_size: int = 60):
        self.base_url = base_url.rstrip("/")
        self.session = session
        self.timeout = timeout
        self.page_size = page_size
        # The environment's proxy and CA settings for Salla's host, resolved once: requests
        # looks them up on every call (two passes over os.environ, about a tenth of a read's
        # CPU in a profile), and a worker's environment does not change while it runs.
        self._send_settings = session.merge_environment_settings(self.base_url, {}, None, None, None)

    def loyalty_history(self, token: str, customer_id: int, *, pages_paid: int = 1, pay_for_page=None,
                        observe=None, may_send=None) -> tuple[list[dict], int]:
        """Every row of the customer's points history, all pages; and how many pages it took.

        Page URLs are built from our configured base URL; `links.next` in the answer is
        never followed (it names http:// hosts, and a response must not steer our token).
        `pay_for_page(page) -> bool` is asked before each page beyond `pages_paid`, and
        `may_send(page) -> bool` before each page already paid for; False raises
        BudgetExhausted. `observe(response)` sees every answer (rate-limit headers).
        """
        rows: list[dict] = []
        page = 1
        while True:
            if page > pages_paid and pay_for_page is not None and not pay_for_page(page):
                raise BudgetExhausted(page)
            if page <= pages_paid and may_send is not None and not may_send(page):
                raise BudgetExhausted(page)
            body = self._get("/customers/loyalty/points", token, {"customer_id": customer_id, "page": page, "per_page": self.page_size},
                             observe)
            data = body.get("data")
            if not isinstance(data, list):
                raise SallaTransientError("loyalty answer has no data list")
            rows.extend(data)
            pagination = body.get("pagination") if isinstance(body.get("pagination"), dict) else {}
            total_pages = _as_int(pagination.get("totalPages"), default=page)
            if not data or page >= total_pages:
                return rows, page
            if page >= MAX_PAGES:
                raise SallaPermanentError(f"loyalty history exceeds {MAX_PAGES} pages", status=200)
            page += 1

    def list_customers(self, token: str, page: int, observe=None) -> tuple[list[dict], int, int | None]:
        """One page of the store's customers (GET /customers): the rows, the number of pages
        and the total when Salla gives them (missing or unreadable: this page is the last)."""
        body = self._get("/customers", token, {"page": page, "per_page": self.page_size}, observe)
        data = body.get("data")
        if not isinstance(data, list):
            raise SallaTransientError("customers answer has no data list")
        pagination = body.get("pagination") if isinstance(body.get("pagination"), dict) else {}
        total = pagination.get("total")
        return data, _as_int(pagination.get("totalPages"), default=page), total if isinstance(total, int) else None

    def app_settings(self, token: str, app_id: str, observe=None) -> dict:
        """The store's values of the app's settings form (App API: App Setting Details)."""
        body = self._get(f"/apps/{app_id}/settings", token, {}, observe)
        data = body.get("data")
        if isinstance(data, dict) and isinstance(data.get("settings"), dict):
            data = data["settings"]  # the shape app.settings.updated carries
        if not isinstance(data, dict):
            raise SallaTransientError("app settings answer has no data object")
        return data

    def webhooks(self, token: str) -> list[dict]:
        """The store's webhook subscriptions (GET /webhooks), every page."""
        found, page = [], 1
        while True:
            body = self._get("/webhooks", token, {"page": page})
            data = body.get("data")
            if not isinstance(data, list):
                raise SallaTransientError("webhooks answer has no data list")
            found += [row for row in data if isinstance(row, dict)]
            pagination = body.get("pagination") if isinstance(body.get("pagination"), dict) else {}
            if not data or page >= _as_int(pagination.get("totalPages"), default=page) or page >= MAX_PAGES:
                return found
            page += 1

    def subscribe_webhook(self, token: str, body: dict) -> dict:
        """POST /webhooks/subscribe; Salla updates a subscription of the same URL and event."""
        answer = self._send("POST", "/webhooks/subscribe", token, None, body)
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    def update_webhook(self, token: str, webhook_id: int, body: dict) -> dict:
        """PUT /webhooks/{id} (Update Webhook): where the security strategy and secret are set."""
        answer = self._send("PUT", f"/webhooks/{int(webhook_id)}", token, None, body)
        data = answer.get("data")
        return data if isinstance(data, dict) else {}

    def _get(self, path: str, token: str, params: dict, observe=None) -> dict:
        return self._send("GET", path, token, params, None, observe)

    def _send(self, method: str, path: str, token: str, params: dict | None, json_body: dict | None,
              observe=None) -> dict:
        try:
            # What Session.request does, with the environment's settings looked up once.
            prepared = self.session.prepare_request(requests.Request(
                method, self.base_url + path, params=params, json=json_body,
                headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}))
            response = self.session.send(prepared, timeout=self.timeout, allow_redirects=True, **self._send_settings)
        except requests.Timeout:
            metrics.count_salla_call(_endpoint(path), None, "timeout")
            raise SallaTransientError(f"{method} {path} timed out after {self.timeout}s") from None
        except requests.RequestException as exc:
            metrics.count_salla_call(_endpoint(path), None, "connection_error")
            raise SallaTransientError(f"{method} {path} failed: {type(exc).__name__}") from None
        status = response.status_code
        metrics.count_salla_call(_endpoint(path), status)
        if observe is not None:
            observe(response)
        if status == 429:
            raise SallaTransientError(f"{method} {path}: 429 too many requests", retry_after=_retry_after(response), status=429)
        if status >= 500:
            raise SallaTransientError(f"{method} {path}: {status} from Salla", retry_after=_retry_after(response), status=status)
        if status >= 400:
            code, message = _error_of(response)
            error = {401: SallaUnauthorized, 403: SallaForbidden, 404: SallaNotFound}.get(status, SallaPermanentError)
            raise error(f"{method} {path}: {status} {code}: {message}", status=status, code=code, detail=message)
        try:
            body = response.json()
        except ValueError:
            raise SallaTransientError(f"{method} {path}: {status} with a body that is not JSON", status=status) from None
        if not isinstance(body, dict):
            raise SallaTransientError(f"{method} {path}: answer is not a JSON object", status=status)
        return body


def _endpoint(path: str) -> str:
    """A metric label: the path without ids (few values, whatever the store or customer)."""
    if "loyalty" in path:
        return "loyalty_points"
    if path.rstrip("/").endswith("/customers") or path.startswith("customers"):
        return "customers"
    if "/settings" in path:
        return "app_settings"
    if "webhooks" in path:
        return "webhooks"
    return "other"


def _retry_after(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return max(float(value), 0.0) if value is not None else None
    except ValueError:
        return None  # an HTTP-date form; our own backoff applies


def _error_of(response: requests.Response) -> tuple[str | None, str]:
    """Salla's envelope {"error": {"code", "message"}}; OAuth answers {"error": "invalid_grant"}."""
    try:
        body = response.json()
    except ValueError:
        return None, response.reason or ""
    error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return (str(code) if code is not None else None), str(error.get("message", ""))
    if isinstance(error, str):
        return error, str(body.get("error_description", ""))
    return None, response.reason or ""


def _as_int(value, default: int) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default
