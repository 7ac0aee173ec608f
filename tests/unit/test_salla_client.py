"""The Salla client against `responses` (the sandbox over real HTTP: tests/integration)."""
import os

import pytest
import requests
import responses
from responses import matchers

from tests.conftest import sample
from service.clients.salla_client import (BudgetExhausted, SallaClient, SallaForbidden, SallaNotFound, SallaPermanentError,
                                  SallaTransientError, SallaUnauthorized)

BASE = "https://api.salla.dev/admin/v2"
URL = BASE + "/customers/loyalty/points"


def client(page_size=30):
    return SallaClient(BASE, requests.Session(), timeout=3.5, page_size=page_size)


def page(data, current, total_pages, next_link="http://evil.example/steal"):
    return {"status": 200, "success": True, "data": data, "pagination": {
        "count": len(data), "total": 99, "perPage": 30, "currentPage": current, "totalPages": total_pages,
        "links": {"next": next_link} if next_link else []}}


@responses.activate
def test_reads_every_page_with_bearer_token_from_our_base_url():
    first = sample("loyalty-points.page1.json")
    responses.get(URL, json=first, match=[
        matchers.query_param_matcher({"customer_id": "7", "page": "1", "per_page": "30"}),
        matchers.header_matcher({"Authorization": "Bearer tok"})])
    responses.get(URL, json=page([{"points": 1}], 2, 2), match=[
        matchers.query_param_matcher({"customer_id": "7", "page": "2", "per_page": "30"})])
    rows, pages = client().loyalty_history("tok", 7)
    assert len(rows) == 3 and pages == 2
    # links.next names another host; it is never followed.
    assert [c.request.url.split("?")[0] for c in responses.calls] == [URL, URL]


@responses.activate
def test_stops_on_an_empty_page_and_tolerates_odd_pagination():
    responses.get(URL, json={"status": 200, "success": True, "data": [{"a": 1}], "pagination": {"links": {}}})
    assert client().loyalty_history("tok", 7) == ([{"a": 1}], 1)
    responses.replace(responses.GET, URL, json=page([], 1, 5))
    assert client().loyalty_history("tok", 7) == ([], 1)


@responses.activate
def test_every_call_has_a_timeout():
    seen = {}

    def callback(request):
        seen["timeout"] = request.req_kwargs["timeout"]
        return 200, {}, '{"data": [], "pagination": {}}'

    responses.add_callback(responses.GET, URL, callback=callback)
    client().loyalty_history("tok", 7)
    assert seen["timeout"] == 3.5


@responses.activate
def test_429_is_transient_and_carries_retry_after():
    responses.get(URL, status=429, headers={"Retry-After": "17", "X-RateLimit-Remaining": "0"})
    with pytest.raises(SallaTransientError) as info:
        client().loyalty_history("tok", 7)
    assert info.value.retry_after == 17 and info.value.status == 429


@pytest.mark.parametrize("status", [500, 502, 503])
@responses.activate
def test_5xx_is_transient(status):
    responses.get(URL, status=status, body="<html>oops</html>")
    with pytest.raises(SallaTransientError):
        client().loyalty_history("tok", 7)


@responses.activate
def test_timeout_and_connection_errors_are_transient():
    responses.get(URL, body=requests.Timeout("slow"))
    with pytest.raises(SallaTransientError, match="timed out"):
        client().loyalty_history("tok", 7)
    responses.replace(responses.GET, URL, body=requests.ConnectionError("refused"))
    with pytest.raises(SallaTransientError, match="ConnectionError"):
        client().loyalty_history("tok", 7)


@responses.activate
def test_a_body_that_is_not_json_is_transient():
    responses.get(URL, body="<html>gateway</html>", status=200)
    with pytest.raises(SallaTransientError, match="not JSON"):
        client().loyalty_history("tok", 7)


@pytest.mark.parametrize("key, status, code", [
    ("401_invalid_token", 401, "Invalid-token"),
    ("401_scope", 401, "Unauthorized"),
    ("404", 404, "404"),
    ("422_missing_customer_id", 422, "error"),
])
@responses.activate
def test_other_4xx_are_permanent_with_salla_error_code(key, status, code):
    responses.get(URL, json=sample("errors.json")[key], status=status)
    with pytest.raises(SallaPermanentError) as info:
        client().loyalty_history("tok", 7)
    assert info.value.status == status and info.value.code == code


@responses.activate
def test_the_token_is_not_in_any_error():
    responses.get(URL, json=sample("errors.json")["401_invalid_token"], status=401)
    with pytest.raises(SallaPermanentError) as info:
        client().loyalty_history("secret-token-value", 7)
    assert "secret-token-value" not in str(info.value)


@responses.activate
def test_pages_beyond_those_paid_for_ask_the_budget_first():
    responses.get(URL, json=page([{"a": 1}], 1, 3))
    asked = []
    with pytest.raises(BudgetExhausted) as info:
        client().loyalty_history("tok", 7, pages_paid=1, pay_for_page=lambda p: asked.append(p) or False)
    assert asked == [2] and info.value.pages == 2
    assert len(responses.calls) == 1  # page 2 was never requested


@responses.activate
def test_every_answer_is_observed_for_rate_headers():
    responses.get(URL, json=page([], 1, 1), headers={"X-RateLimit-Remaining": "3"})
    seen = []
    client().loyalty_history("tok", 7, observe=lambda r: seen.append(r.headers["X-RateLimit-Remaining"]))
    assert seen == ["3"]


@pytest.mark.parametrize("key, status, error, scope_missing", [
    ("401_invalid_token", 401, SallaUnauthorized, False),
    ("401_scope", 401, SallaUnauthorized, True),
    ("404", 404, SallaNotFound, None),
])
@responses.activate
def test_4xx_kinds(key, status, error, scope_missing):
    responses.get(URL, json=sample("errors.json")[key], status=status)
    with pytest.raises(error) as info:
        client().loyalty_history("tok", 7)
    if scope_missing is not None:
        assert info.value.scope_missing is scope_missing


@responses.activate
def test_403_is_forbidden():
    responses.get(URL, status=403, json={"status": 403, "success": False, "error": {"code": "forbidden", "message": "no"}})
    with pytest.raises(SallaForbidden):
        client().loyalty_history("tok", 7)


def test_the_environments_proxy_is_resolved_once_not_per_call(monkeypatch):
    """A proxy set in the environment still carries the calls to Salla, but requests' per-call
    lookup (two passes over os.environ, a tenth of a read's CPU) is done once, at start."""
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    salla = client()
    sent = []

    def send(prepared, **kwargs):
        sent.append(kwargs)
        response = requests.Response()
        response.status_code, response._content = 200, b'{"status": 200, "success": true, "data": [], "pagination": []}'
        response.request = prepared
        return response

    monkeypatch.setattr(salla.session, "send", send)

    def looked_up(*args, **kwargs):
        raise AssertionError("the environment was read again for this call")

    monkeypatch.setattr(requests.sessions, "get_environ_proxies", looked_up)
    salla.loyalty_history("tok", 7)
    salla.loyalty_history("tok", 8)
    assert [kwargs["proxies"].get("https") for kwargs in sent] == ["http://proxy.internal:3128"] * 2
    # TLS verification as requests would have it: on, or the CA bundle the environment names.
    verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    assert all(kwargs["timeout"] == 3.5 and kwargs["verify"] == verify for kwargs in sent)
