"""A local stand-in for Salla's `GET /customers/loyalty/points`, for tests, the demo and benchmarks.

Run it: `python -m devkit.sandbox --host 127.0.0.1 --port 8765 --token sandbox-token`, then point
the service at it with SALLA_API_BASE_URL=http://127.0.0.1:8765 (the path is served at the root,
as if the base URL were Salla's `https://api.salla.dev/admin/v2`).

`GET /customers/loyalty/points?customer_id=&page=&per_page=` (contract:
tests/fixtures/salla/loyalty-points.openapi.yaml)
- 401 with Salla's `Invalid-token` envelope unless `Authorization` is exactly `Bearer <token>`
  (checked first, like Salla's middleware).
- 422 with Salla's validation envelope when customer_id is missing or blank.
- 200 otherwise. `page` defaults to 1, `per_page` to 15 and is capped at 60; a value that is not
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

Control endpoints (no auth; tests and benchmarks only): `PUT /_sandbox/customers/<id>/lots`
(JSON array of rows, replaces that customer's history as given, unvalidated so that tests can
serve malformed rows), `GET /_sandbox/stats` and `POST /_sandbox/reset-stats` (answers with the
counts it cleared, so a benchmark can read and reset in one step). Stats count loyalty requests
only: in total, per status code and per customer_id as sent (including refused requests that
named one).
"""
from __future__ import annotations

import argparse
import hmac
import math
import signal
import sys
import threading
from collections import Counter
from datetime import datetime
from types import TracebackType
from typing import Any, Collection, Mapping
from urllib.parse import urlencode

from flask import Flask, Response, jsonify, request
from werkzeug.serving import WSGIRequestHandler, make_server

from devkit.sandbox_seed import QUIRKS_CUSTOMER, RIYADH, SEEDED, default_customers

DEFAULT_PER_PAGE = 15
MAX_PER_PAGE = 60

# Envelopes exactly as in tests/fixtures/salla/samples/errors.json (a test keeps them in step).
INVALID_TOKEN = {"status": 401, "success": False,
                 "error": {"code": "Invalid-token", "message": "please provide a valid API Key"}}
MISSING_CUSTOMER_ID = {"status": 422, "success": False,
                       "error": {"code": "error", "message": "alert.invalid_fields",
                                 "fields": {"customer_id": ["حقل customer id مطلوب."]}}}
NOT_FOUND = {"success": False, "status": 404,
             "error": {"code": 404, "message": "The content you are trying to access is no longer available"}}

Rows = list[dict[str, Any]]


class _State:
    """Everything the request threads share; touch it only while holding `lock`."""

    def __init__(self, customers: Mapping[int, Rows]) -> None:
        self.lock = threading.Lock()
        # Row lists are never mutated, only replaced, so a reader may keep one after unlocking.
        self.customers: dict[int, Rows] = {int(cid): list(rows) for cid, rows in customers.items()}
        self.total = 0
        self.by_status: Counter[str] = Counter()
        self.by_customer: Counter[str] = Counter()

    def record(self, status: int, customer_id: str) -> None:
        with self.lock:
            self.total += 1
            self.by_status[str(status)] += 1
            if customer_id:
                self.by_customer[customer_id] += 1

    def stats(self, reset: bool = False) -> dict[str, Any]:
        with self.lock:
            snapshot = {"requests": self.total, "by_status": dict(self.by_status),
                        "by_customer": dict(self.by_customer)}
            if reset:
                self.total = 0
                self.by_status.clear()
                self.by_customer.clear()
        return snapshot


def create_app(
    customers: Mapping[int, Rows] | None = None,
    token: str = "sandbox-token",
    now: datetime | None = None,
    observed_links: Collection[int] = (QUIRKS_CUSTOMER,),
) -> Flask:
    """The sandbox app. Without `customers`, the seeded ones, computed once from `now`."""
    if customers is None:
        customers = default_customers(now or datetime.now(RIYADH))
    state = _State(customers)
    expected_auth = f"Bearer {token}".encode()
    observed = frozenset(observed_links)

    app = Flask(__name__)
    app.json.sort_keys = False  # keep Salla's key order: easier to compare by eye with its docs
    app.extensions["salla_sandbox"] = state

    @app.get("/customers/loyalty/points")
    def loyalty_points() -> tuple[Response, int]:
        customer_id = request.args.get("customer_id", "").strip()
        status, body = _loyalty_answer(state, expected_auth, observed, customer_id)
        state.record(status, customer_id)
        return jsonify(body), status

    @app.put("/_sandbox/customers/<int:customer_id>/lots")
    def put_lots(customer_id: int) -> tuple[Response, int]:
        rows = request.get_json(silent=True)
        if not isinstance(rows, list):
            return jsonify({"error": "send a JSON array of rows (Content-Type: application/json)"}), 400
        with state.lock:
            state.customers[customer_id] = rows
        return jsonify({"customer_id": customer_id, "lots": len(rows)}), 200

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


def _loyalty_answer(
    state: _State, expected_auth: bytes, observed: frozenset[int], customer_id: str
) -> tuple[int, dict[str, Any]]:
    if not hmac.compare_digest(request.headers.get("Authorization", "").encode(), expected_auth):
        return 401, INVALID_TOKEN
    if not customer_id:
        return 422, MISSING_CUSTOMER_ID
    page = _positive_int(request.args.get("page"), 1)
    per_page = min(_positive_int(request.args.get("per_page"), DEFAULT_PER_PAGE), MAX_PER_PAGE)
    known_id = int(customer_id) if customer_id.isascii() and customer_id.isdigit() else None
    with state.lock:
        rows = state.customers.get(known_id, []) if known_id is not None else []
    total_pages = max(math.ceil(len(rows) / per_page), 1)
    data = rows[(page - 1) * per_page: page * per_page]
    return 200, {
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
    parser.add_argument("--token", default="sandbox-token", help="the bearer token clients must send")
    args = parser.parse_args(argv)

    try:
        server = serve_in_thread(create_app(token=args.token), args.host, args.port, log_requests=True)
    except OSError as exc:
        print(f"sandbox: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())

    print(f"Salla sandbox at {server.url}", flush=True)
    print(f"  SALLA_API_BASE_URL={server.url} SALLA_ACCESS_TOKEN={args.token}")
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
