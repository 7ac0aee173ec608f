"""The Salla sandbox over real HTTP, checked against Salla's OpenAPI contract and our own parser.

One documented deviation from the contract when validating: the spec gives `created_at.date`
`format: date-time` (RFC 3339), yet its own description and example, and every Salla response,
use "2024-12-17 17:42:14.000000". The date-time check below accepts exactly that shape as well;
everything else in the spec is used as written.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from openapi_core import Config, OpenAPI
from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
from openapi_core.exceptions import OpenAPIError
from openapi_schema_validator import oas30_format_checker

from devkit.sandbox import (
    DEFAULT_MERCHANT_ID,
    INVALID_TOKEN,
    MISSING_CUSTOMER_ID,
    MISSING_SCOPE,
    NOT_FOUND,
    StoreSpec,
    ThreadedServer,
    create_app,
    serve_in_thread,
)
from devkit.sandbox_seed import (
    EXPECTED_STAGE_POINTS,
    QUIRKS_CUSTOMER,
    RIYADH,
    SEEDED,
    default_customers,
    lot_row,
)
from service.domain.expiry import due_groups
from service.domain.loyalty import parse_history, parse_lot

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "salla"
ERRORS = json.loads((FIXTURES / "samples" / "errors.json").read_text(encoding="utf-8"))
TOKEN = "test-token"
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=RIYADH)
STAGES = (30, 7, 1)
CONTRACT_CLEAN = (1001, 1002, 1003, 1004)

_SALLA_DATE = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{6}")


def _date_time(value: Any) -> bool:
    if isinstance(value, str) and _SALLA_DATE.fullmatch(value):
        return True  # the one deviation, see the module docstring
    return oas30_format_checker.conforms(value, "date-time")


SPEC = OpenAPI.from_file_path(
    str(FIXTURES / "loyalty-points.openapi.yaml"),
    config=Config(extra_format_validators={"date-time": _date_time}),
)


def assert_contract(response: requests.Response) -> None:
    """The body matches the spec's schema for this status code (a status the spec lacks fails).

    The spec's first server url is "", i.e. paths sit at the root of any host, which is
    exactly where the sandbox serves them, so the real request URL matches it as is."""
    SPEC.validate_response(RequestsOpenAPIRequest(response.request), RequestsOpenAPIResponse(response))


def contract_errors(response: requests.Response) -> list[tuple[str, str]]:
    """(path, message) of every schema violation in the response body."""
    try:
        assert_contract(response)
    except OpenAPIError as exc:
        errors = [("/".join(map(str, error.path)), error.message)
                  for error in getattr(exc.__cause__, "schema_errors", ())]
        if not errors:
            raise  # not a body problem (no such path, status or server): never read as "clean"
        return errors
    return []


@pytest.fixture(scope="module")
def server() -> Iterator[ThreadedServer]:
    with serve_in_thread(create_app(token=TOKEN, now=NOW)) as running:
        yield running


@pytest.fixture
def fresh() -> Iterator[ThreadedServer]:
    """A server of its own, for tests that change lots or count requests."""
    with serve_in_thread(create_app(token=TOKEN, now=NOW)) as running:
        yield running


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # a proxy from the environment must not sit between us and 127.0.0.1
        yield session


def get_points(http: requests.Session, server: ThreadedServer, token: str | None = TOKEN,
               **params: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return http.get(f"{server.url}/customers/loyalty/points", params=params, headers=headers, timeout=5)


def walk(http: requests.Session, server: ThreadedServer, customer_id: int, **params: Any) -> list[requests.Response]:
    first = get_points(http, server, customer_id=customer_id, page=1, **params)
    pages = [first]
    for page in range(2, first.json()["pagination"]["totalPages"] + 1):
        pages.append(get_points(http, server, customer_id=customer_id, page=page, **params))
    return pages


# Responses against the contract

@pytest.mark.parametrize("per_page", [15, 7, 60])
def test_pages_of_1003_return_every_lot_once_and_match_the_contract(http, server, per_page):
    expected = default_customers(NOW)[1003]
    pages = walk(http, server, 1003, per_page=per_page)

    assert len(pages) == -(-75 // per_page)
    rows = []
    for number, response in enumerate(pages, start=1):
        assert response.status_code == 200
        assert_contract(response)
        SPEC.validate_request(RequestsOpenAPIRequest(response.request))
        body = response.json()
        pagination = body["pagination"]
        assert (pagination["currentPage"], pagination["perPage"], pagination["total"]) == (number, per_page, 75)
        assert pagination["count"] == len(body["data"]) > 0
        rows.extend(body["data"])
    assert rows == expected  # each lot once, in the seeded order
    assert pages[0].json()["pagination"]["links"]["previous"] == ""
    assert pages[-1].json()["pagination"]["links"]["next"] == ""


def test_per_page_is_capped_at_60_and_bad_paging_values_fall_back_to_defaults(http, server):
    assert get_points(http, server, customer_id=1003, per_page=500).json()["pagination"]["perPage"] == 60
    pagination = get_points(http, server, customer_id=1003, per_page="x", page="-2").json()["pagination"]
    assert (pagination["perPage"], pagination["currentPage"], pagination["totalPages"]) == (15, 1, 5)


def test_links_are_absolute_http_urls_on_the_request_host(http, server):
    links = get_points(http, server, customer_id=1003, page=2, per_page=15).json()["pagination"]["links"]
    base = f"http://127.0.0.1:{server.port}/customers/loyalty/points"
    assert links == {"next": f"{base}?customer_id=1003&page=3&per_page=15",
                     "previous": f"{base}?customer_id=1003&page=1&per_page=15"}


@pytest.mark.parametrize("customer_id", [1001, 1002, 1004])
def test_other_contract_clean_customers_match_the_contract(http, server, customer_id):
    response = get_points(http, server, customer_id=customer_id)
    assert response.status_code == 200
    assert contract_errors(response) == []
    assert response.json()["data"] == default_customers(NOW)[customer_id]


def test_unknown_customer_gets_one_empty_page(http, server):
    for customer_id in ("999999", "abc"):
        response = get_points(http, server, customer_id=customer_id)
        assert response.status_code == 200
        assert_contract(response)
        assert response.json()["data"] == []
        assert response.json()["pagination"] == {
            "count": 0, "total": 0, "perPage": 15, "currentPage": 1, "totalPages": 1,
            "links": {"next": "", "previous": ""},
        }


def test_page_past_the_end_is_empty_and_links_back(http, server):
    response = get_points(http, server, customer_id=1001, page=3)
    assert_contract(response)
    body = response.json()
    assert body["data"] == []
    assert body["pagination"]["count"] == 0 and body["pagination"]["totalPages"] == 1
    assert body["pagination"]["links"]["next"] == ""
    assert "page=2" in body["pagination"]["links"]["previous"]


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": TOKEN},  # the bare secret, as Salla's webhook Token strategy sends it
    {"Authorization": f"bearer {TOKEN}"},
    {"Authorization": f"Bearer {TOKEN} "},
])
def test_a_missing_or_wrong_token_gets_salla_401(http, server, headers):
    response = http.get(f"{server.url}/customers/loyalty/points", params={"customer_id": 1001},
                        headers=headers, timeout=5)
    assert response.status_code == 401
    assert response.json() == ERRORS["401_invalid_token"]
    assert_contract(response)


def test_a_token_without_customers_read_gets_salla_scope_401_within_the_contract(http):
    stores = [StoreSpec(42, "settings-only", scope="settings.read offline_access")]
    with serve_in_thread(create_app(token=TOKEN, now=NOW, stores=stores)) as running:
        response = get_points(http, running, token="settings-only", customer_id=1001)
    assert response.status_code == 401 and response.json() == ERRORS["401_scope"]
    assert_contract(response)


def test_rate_limited_answers_still_match_the_contract(http):
    # The rate-limit headers are extra; the 429 itself has no schema (Salla documents no body),
    # see tests/unit/test_sandbox_stores.py.
    with serve_in_thread(create_app(token=TOKEN, now=NOW, limits_enabled=True)) as running:
        response = get_points(http, running, customer_id=1001)
    assert response.status_code == 200 and "X-RateLimit-Remaining" in response.headers
    assert_contract(response)


def test_the_token_is_checked_before_the_parameters(http, server):
    response = get_points(http, server, token=None)
    assert response.status_code == 401 and response.json() == ERRORS["401_invalid_token"]


@pytest.mark.parametrize("params", [{}, {"customer_id": ""}, {"customer_id": "  "}, {"page": 1}])
def test_a_missing_customer_id_gets_salla_422(http, server, params):
    response = get_points(http, server, **params)
    assert response.status_code == 422
    assert response.json() == ERRORS["422_missing_customer_id"]
    assert_contract(response)


def test_envelopes_are_the_sampled_ones():
    assert INVALID_TOKEN == ERRORS["401_invalid_token"]
    assert MISSING_SCOPE == ERRORS["401_scope"]
    assert MISSING_CUSTOMER_ID == ERRORS["422_missing_customer_id"]
    assert NOT_FOUND == ERRORS["404"]


def test_unknown_paths_get_salla_404_json(http, server):
    response = http.get(f"{server.url}/admin/v2/customers/loyalty/points", timeout=5)
    assert response.status_code == 404
    assert response.json() == ERRORS["404"]


def test_quirks_customer_departs_from_the_contract_only_in_the_documented_ways(http, server):
    pages = walk(http, server, QUIRKS_CUSTOMER)
    assert [p.json()["pagination"]["links"].keys() for p in pages] == [{"next"}, {"previous"}]
    single = get_points(http, server, customer_id=QUIRKS_CUSTOMER, per_page=60)
    assert single.json()["pagination"]["links"] == []

    rows = [row for page in pages for row in page.json()["data"]]
    assert rows == default_customers(NOW)[QUIRKS_CUSTOMER]
    assert any(isinstance(row["order_id"], int) and row["order_id"] > 2**32 for row in rows)
    assert any(row["used_at"] == {} for row in rows) and any("notes" not in row for row in rows)

    allowed = re.compile(r"data/\d+/(order_id|reference_id): \d+ is not of type 'string'"
                         r"|pagination/links: '(next|previous)' is a required property"
                         r"|pagination/links: \[\] is not of type 'object'")
    for response in [*pages, single]:
        errors = contract_errors(response)
        assert errors, "the quirks customer is meant to be off-contract"
        assert [e for e in errors if not allowed.fullmatch(f"{e[0]}: {e[1]}")] == []


# Seeded rows

def test_seeded_rows_are_identical_between_reads(http, server):
    first = [r.content for r in walk(http, server, 1003)] + [get_points(http, server, customer_id=1001).content]
    second = [r.content for r in walk(http, server, 1003)] + [get_points(http, server, customer_id=1001).content]
    assert first == second
    assert default_customers(NOW) == default_customers(NOW)


def test_every_seeded_row_is_readable_by_our_parser():
    for customer_id, rows in default_customers(NOW).items():
        lots = [parse_lot(row) for row in rows]
        assert len({lot.key for lot in lots}) == len(lots), customer_id  # rows are told apart
        created = [lot.created_at for lot in lots]
        assert created == sorted(created, reverse=True), customer_id  # newest first, like Salla


def test_contract_clean_customers_use_only_contract_id_shapes():
    for customer_id in CONTRACT_CLEAN:
        for row in default_customers(NOW)[customer_id]:
            assert all(row[key] is None or isinstance(row[key], str) for key in ("order_id", "reference_id"))
    shapes = [row for cid in CONTRACT_CLEAN for row in default_customers(NOW)[cid]]
    assert {type(row["used_at"]).__name__ for row in shapes} == {"dict", "NoneType", "str"}
    assert any("notes" in row for row in shapes) and any("notes" not in row for row in shapes)


@pytest.mark.parametrize("later", [timedelta(0), timedelta(hours=1)])
def test_seeded_stages_are_as_documented(later):
    assert set(SEEDED) == set(EXPECTED_STAGE_POINTS) == set(default_customers(NOW))
    for customer_id, rows in default_customers(NOW).items():
        lots, problems = parse_history(rows)
        assert problems == []
        groups = due_groups(lots, NOW + later, STAGES)
        assert {g.stage_days: g.points_expiring for g in groups} == EXPECTED_STAGE_POINTS[customer_id], customer_id


def test_lot_row_writes_salla_local_time_shapes():
    created = datetime(2024, 12, 17, 14, 42, 14, 123456, tzinfo=timezone.utc)
    row = lot_row(900, 0, datetime(2029, 2, 17, 14, 42, 14, tzinfo=timezone.utc), created, order_id="7")
    assert row["created_at"] == {"date": "2024-12-17 17:42:14.000000", "timezone_type": 3, "timezone": "Asia/Riyadh"}
    assert row["expiry_date"] == "2029-02-17 17:42:14"
    assert "notes" not in row and row["used_at"] is None and row["status"] == "مؤكدة"
    assert parse_lot(row).expires_at == datetime(2029, 2, 17, 14, 42, 14, tzinfo=timezone.utc)
    with pytest.raises(ValueError):
        lot_row(1, 0, datetime(2029, 1, 1), created)


# Control endpoints, threads and the standalone process

def test_put_replaces_a_customers_lots(http, fresh):
    rows = [lot_row(42, 2, NOW + timedelta(days=4), NOW - timedelta(days=1), order_id="1", reference_id=None)]
    answer = http.put(f"{fresh.url}/_sandbox/customers/1001/lots", json=rows, timeout=5)
    assert answer.status_code == 200 and answer.json() == {"customer_id": 1001, "lots": 1}
    assert get_points(http, fresh, customer_id=1001).json()["data"] == rows

    http.put(f"{fresh.url}/_sandbox/customers/7777/lots", json=[{"not": "a lot"}], timeout=5)
    assert get_points(http, fresh, customer_id=7777).json()["data"] == [{"not": "a lot"}]  # served as given

    refused = http.put(f"{fresh.url}/_sandbox/customers/1001/lots", json={"rows": rows}, timeout=5)
    assert refused.status_code == 400
    assert get_points(http, fresh, customer_id=1001).json()["data"] == rows


def test_stats_count_loyalty_requests_by_customer_and_status(http, fresh):
    get_points(http, fresh, customer_id=1001)
    get_points(http, fresh, customer_id=1001, page=2)
    get_points(http, fresh, customer_id=1003)
    get_points(http, fresh, token="wrong", customer_id=1003)
    get_points(http, fresh)
    http.get(f"{fresh.url}/_sandbox/stats", timeout=5)  # control calls are not counted
    expected = {"requests": 5, "by_status": {"200": 3, "401": 1, "422": 1},
                "by_customer": {"1001": 2, "1003": 2},
                # "wrong" is nobody's token, so the default store has the other four
                "stores": {str(DEFAULT_MERCHANT_ID): {"requests": 4, "by_status": {"200": 3, "422": 1},
                                                      "rate_limited": 0, "refresh_calls": 0, "refresh_reuses": 0}},
                "oauth": {"requests": 0, "by_status": {}}}
    assert http.get(f"{fresh.url}/_sandbox/stats", timeout=5).json() == expected

    assert http.post(f"{fresh.url}/_sandbox/reset-stats", timeout=5).json() == expected
    cleared = http.get(f"{fresh.url}/_sandbox/stats", timeout=5).json()
    assert (cleared["requests"], cleared["by_status"], cleared["by_customer"]) == (0, {}, {})
    assert cleared["stores"][str(DEFAULT_MERCHANT_ID)]["requests"] == 0


def test_concurrent_requests_are_all_counted(http, fresh):
    statuses: list[int] = []  # list.append is atomic: the threads need no lock of their own

    def client() -> None:
        with requests.Session() as session:
            session.trust_env = False
            for page in range(1, 11):
                statuses.append(get_points(session, fresh, customer_id=1003, page=page % 5 + 1).status_code)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 80
    stats = http.get(f"{fresh.url}/_sandbox/stats", timeout=5).json()
    assert {key: stats[key] for key in ("requests", "by_status", "by_customer")} == \
        {"requests": 80, "by_status": {"200": 80}, "by_customer": {"1003": 80}}
    assert stats["stores"][str(DEFAULT_MERCHANT_ID)]["requests"] == 80


def test_serve_in_thread_stops_listening_on_exit(http):
    with serve_in_thread(create_app(token=TOKEN, now=NOW)) as running:
        assert running.url == f"http://127.0.0.1:{running.port}"
        assert http.get(f"{running.url}/_sandbox/stats", timeout=5).status_code == 200
    with pytest.raises(requests.ConnectionError):
        http.get(f"{running.url}/_sandbox/stats", timeout=1)
    running.stop()  # a second stop is harmless


def test_standalone_sandbox_serves_and_stops_cleanly_on_sigterm(http):
    process = subprocess.Popen(
        [sys.executable, "-m", "devkit.sandbox", "--port", "0", "--token", TOKEN],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        # Read the whole banner line by line: communicate() would miss what readline() buffered.
        banner = [process.stdout.readline()]
        while banner[-1] and not banner[-1].startswith("Stop with"):
            banner.append(process.stdout.readline())
        url = re.fullmatch(r"Salla sandbox at (http://127\.0\.0\.1:\d+)\n", banner[0])
        assert url, banner
        assert all(any(line.startswith(f"  customer {cid}:") for line in banner) for cid in SEEDED), banner
        response = http.get(f"{url.group(1)}/customers/loyalty/points", params={"customer_id": 1001},
                            headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert response.status_code == 200 and len(response.json()["data"]) == 4
        process.send_signal(signal.SIGTERM)
        rest, errors = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, errors
    assert rest == "sandbox: stopped\n"


def test_a_page_has_the_fields_of_sallas_example_page(http, server):
    """Issue 15 (fakes): the sandbox's loyalty page has the envelope, pagination and row fields of
    Salla's documented example (samples/loyalty-points.page1.json), not only what our parser reads."""
    example = json.loads((FIXTURES / "samples" / "loyalty-points.page1.json").read_text(encoding="utf-8"))
    body = get_points(http, server, customer_id=1001).json()
    assert set(body) == set(example) and set(body["pagination"]) == set(example["pagination"])
    example_fields = {name for row in example["data"] for name in row}
    assert body["data"] and all(set(row) <= example_fields for row in body["data"])
    assert all({"name", "points", "used_points", "status", "created_at", "expiry_date"} <= set(row)
               for row in body["data"])
