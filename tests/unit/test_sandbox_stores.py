"""The sandbox's stores, OAuth token endpoint, rate limits and faults, over real HTTP.

The 429, 403 and injected 5xx answers have no schema in Salla's OpenAPI contract (Salla documents
none), so their bodies are checked against the fixtures of Salla's documented envelopes
(tests/fixtures/salla/SOURCES.md); the answers the contract does describe are checked in
tests/unit/test_sandbox.py.
"""
from __future__ import annotations

import json
import threading
import time
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from devkit.sandbox import (
    DEFAULT_MERCHANT_ID,
    TOO_MANY_REQUESTS,
    Faults,
    StoreSpec,
    ThreadedServer,
    create_app,
    serve_in_thread,
)
from devkit.sandbox_seed import RIYADH

ERRORS = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "salla" / "samples" / "errors.json")
                    .read_text(encoding="utf-8"))
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=RIYADH)
CLIENT = {"client_id": "sandbox-client", "client_secret": "sandbox-client-secret"}
A = StoreSpec(101, "at-101", "rt-101")
B = StoreSpec(102, "at-102", "rt-102")


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # a proxy from the environment must not sit between us and 127.0.0.1
        yield session


@contextmanager
def sandbox(*stores: StoreSpec, **options: Any) -> Iterator[ThreadedServer]:
    with serve_in_thread(create_app(now=NOW, stores=list(stores or (A, B)), **options)) as running:
        yield running


def points(http: requests.Session, server: ThreadedServer, token: str, customer_id: Any = 1001,
           timeout: float = 5) -> requests.Response:
    return http.get(f"{server.url}/customers/loyalty/points", params={"customer_id": customer_id},
                    headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


def refresh(http: requests.Session, server: ThreadedServer, refresh_token: str, **form: str) -> requests.Response:
    data = {"grant_type": "refresh_token", "refresh_token": refresh_token, **CLIENT, **form}
    return http.post(f"{server.url}/oauth2/token", data=data, timeout=5)


def store(http: requests.Session, server: ThreadedServer, merchant_id: int) -> dict[str, Any]:
    return http.get(f"{server.url}/_sandbox/stores/{merchant_id}", timeout=5).json()


def stats(http: requests.Session, server: ThreadedServer) -> dict[str, Any]:
    return http.get(f"{server.url}/_sandbox/stats", timeout=5).json()


def put(http: requests.Session, server: ThreadedServer, path: str, body: Any) -> requests.Response:
    return http.put(f"{server.url}/_sandbox/{path}", json=body, timeout=5)


# Stores and tokens

def test_each_store_is_found_by_its_own_token(http):
    with sandbox(A, B, token="legacy") as server:
        assert points(http, server, "at-101").status_code == 200
        assert points(http, server, "at-102").status_code == 200
        assert points(http, server, "at-102").status_code == 200
        assert points(http, server, "legacy").status_code == 200  # the default store
        assert points(http, server, "nobody's").json() == ERRORS["401_invalid_token"]

        counts = stats(http, server)
        assert counts["requests"] == 5 and counts["by_status"] == {"200": 4, "401": 1}
        assert {mid: c["requests"] for mid, c in counts["stores"].items()} == \
            {"101": 1, "102": 2, str(DEFAULT_MERCHANT_ID): 1}
        listed = http.get(f"{server.url}/_sandbox/stores", timeout=5).json()["stores"]
        assert [s["merchant_id"] for s in listed] == [101, 102, DEFAULT_MERCHANT_ID]

        default = store(http, server, DEFAULT_MERCHANT_ID)
        assert (default["access_token"], default["access_expires_at"], default["refresh_token"]) == \
            ("legacy", None, None)  # as before stores existed: never expires, cannot refresh
        view = store(http, server, 101)
        assert view["access_expires_at"] == pytest.approx(time.time() + 1209600, abs=5)
        assert (view["scope"], view["token_type"], view["revoked"], view["rotations"]) == \
            ("customers.read offline_access", "bearer", False, 0)


def test_refresh_rotates_both_tokens(http):
    with sandbox() as server:
        answer = refresh(http, server, "rt-101")
        assert answer.status_code == 200 and answer.headers["Cache-Control"] == "no-store"
        tokens = answer.json()
        assert list(tokens) == ["access_token", "expires_in", "refresh_token", "scope", "token_type"]
        assert (tokens["expires_in"], tokens["scope"], tokens["token_type"]) == \
            (1209600, "customers.read offline_access", "bearer")
        assert tokens["access_token"] != "at-101" and tokens["refresh_token"] != "rt-101"

        assert points(http, server, "at-101").json() == ERRORS["401_invalid_token"]  # the old one is dead
        assert points(http, server, tokens["access_token"]).status_code == 200
        view = store(http, server, 101)
        assert (view["access_token"], view["refresh_token"], view["rotations"]) == \
            (tokens["access_token"], tokens["refresh_token"], 1)

        # The other reading of the expiry: an absolute unix time named `expires`.
        put(http, server, "settings", {"oauth_expires_as_timestamp": True})
        again = refresh(http, server, tokens["refresh_token"]).json()
        assert "expires_in" not in again and again["expires"] == pytest.approx(time.time() + 1209600, abs=5)
        assert stats(http, server)["stores"]["101"]["refresh_calls"] == 2


def test_reusing_a_refresh_token_revokes_every_token_of_the_store(http):
    with sandbox() as server:
        tokens = refresh(http, server, "rt-101").json()
        reused = refresh(http, server, "rt-101")
        assert reused.status_code == 400 and reused.json()["error"] == "invalid_grant"
        assert set(reused.json()) == {"error", "error_description"}

        assert points(http, server, tokens["access_token"]).json() == ERRORS["401_invalid_token"]
        assert refresh(http, server, tokens["refresh_token"]).json()["error"] == "invalid_grant"
        view = store(http, server, 101)
        assert view["revoked"] is True
        assert {k: view["counts"][k] for k in ("refresh_calls", "refresh_reuses")} == \
            {"refresh_calls": 3, "refresh_reuses": 1}
        assert points(http, server, "at-102").status_code == 200  # other stores are untouched

        # Reinstalling (what app.store.authorize brings) makes the store work again.
        reinstalled = put(http, server, "stores/101", {"access_token": "at-101b", "refresh_token": "rt-101b"})
        assert reinstalled.json()["revoked"] is False
        assert points(http, server, "at-101b").status_code == 200
        assert refresh(http, server, "rt-101").json()["error"] == "invalid_grant"  # old chain: refused, no revocation
        assert store(http, server, 101)["revoked"] is False


def test_client_credentials_and_grants_are_checked(http):
    with sandbox() as server:
        wrong = refresh(http, server, "rt-101", client_secret="nope")
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        missing = http.post(f"{server.url}/oauth2/token", timeout=5,
                            data={"grant_type": "refresh_token", "refresh_token": "rt-101"})
        assert missing.status_code == 401 and missing.json()["error"] == "invalid_client"
        unknown = refresh(http, server, "rt-unknown")
        assert unknown.status_code == 400 and unknown.json()["error"] == "invalid_grant"
        assert refresh(http, server, "rt-101", grant_type="password").json()["error"] == "unsupported_grant_type"
        assert refresh(http, server, "").json()["error"] == "invalid_request"

        # None of that spent the refresh token; HTTP Basic client credentials work as well.
        basic = http.post(f"{server.url}/oauth2/token", timeout=5,
                          data={"grant_type": "refresh_token", "refresh_token": "rt-101"},
                          auth=(CLIENT["client_id"], CLIENT["client_secret"]))
        assert basic.status_code == 200
        assert stats(http, server)["oauth"] == {"requests": 6, "by_status": {"401": 2, "400": 3, "200": 1}}


def test_racing_refreshes_of_one_token_revoke_the_store(http):
    # What two workers refreshing without a per-store lock do; the latency widens the window.
    with sandbox(oauth_latency_ms=200) as server:
        answers: list[int] = []
        racers = [threading.Thread(target=lambda: answers.append(refresh(http, server, "rt-101").status_code))
                  for _ in range(2)]
        for racer in racers:
            racer.start()
        for racer in racers:
            racer.join()
        assert sorted(answers) == [200, 400]
        assert store(http, server, 101)["revoked"] is True


def test_an_expired_token_and_a_missing_scope_get_different_401s(http):
    narrow = StoreSpec(103, "at-103", "rt-103", scope="settings.read offline_access")
    with sandbox(A, narrow) as server:
        expired = http.post(f"{server.url}/_sandbox/stores/101/expire-access-token", timeout=5).json()
        assert expired["access_expires_at"] <= time.time()
        assert points(http, server, "at-101").json() == ERRORS["401_invalid_token"]
        assert points(http, server, refresh(http, server, "rt-101").json()["access_token"]).status_code == 200

        assert points(http, server, "at-103").json() == ERRORS["401_scope"]
        new = refresh(http, server, "rt-103").json()
        assert new["scope"] == "settings.read offline_access"
        assert points(http, server, new["access_token"]).json() == ERRORS["401_scope"]  # a refresh cannot fix it

        http.post(f"{server.url}/_sandbox/stores/101/revoke", timeout=5)  # as on app.uninstalled
        assert points(http, server, store(http, server, 101)["access_token"]).status_code == 401


@pytest.mark.parametrize(("status", "body"), [(403, ERRORS["403_not_allowed"]), (404, ERRORS["404"])])
def test_a_store_without_the_loyalty_app(http, status, body):
    with sandbox(StoreSpec(104, "at-104", loyalty_app=False, missing_app_status=status)) as server:
        response = points(http, server, "at-104")
        assert response.status_code == status and response.json() == body
        assert store(http, server, 104)["counts"]["by_status"] == {str(status): 1}


# Rate limits

def limit_headers(response: requests.Response) -> tuple[int, int, int]:
    return tuple(int(response.headers[f"X-RateLimit-{name}"]) for name in ("Limit", "Remaining", "Reset"))


def test_customer_budget_headers_429_and_recovery(http):
    tiny = StoreSpec(105, "at-105", limits=True, customer_limit=2, customer_window_seconds=1)
    with sandbox(tiny, A) as server:
        first, second = points(http, server, "at-105"), points(http, server, "at-105")
        assert [r.status_code for r in (first, second)] == [200, 200]
        assert [limit_headers(r)[:2] for r in (first, second)] == [(2, 1), (2, 0)]
        assert time.time() <= limit_headers(first)[2] <= time.time() + 2

        refused = points(http, server, "at-105")
        assert refused.status_code == 429 and refused.json() == TOO_MANY_REQUESTS
        assert refused.headers["Retry-After"] == "1" and limit_headers(refused)[:2] == (2, 0)
        assert "X-RateLimit-Limit" not in points(http, server, "at-101").headers  # limits off for A

        time.sleep(int(refused.headers["Retry-After"]))
        recovered = points(http, server, "at-105")
        assert recovered.status_code == 200 and limit_headers(recovered)[:2] == (2, 1)
        counts = store(http, server, 105)["counts"]
        assert (counts["rate_limited"], counts["by_status"]) == (1, {"200": 3, "429": 1})


def test_plan_budget_trickles_one_request_per_second_once_spent(http):
    plan = StoreSpec(106, "at-106", plan_per_minute=2, customer_limit=5)
    with sandbox(plan, limits_enabled=True) as server:  # app-wide: the store does not say
        answers = [points(http, server, "at-106") for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 429]
        # The tighter budget speaks: the plan (2 a minute) rather than the customer one (5).
        assert [limit_headers(r)[:2] for r in answers] == [(2, 1), (2, 0), (2, 0)]
        assert answers[2].headers["Retry-After"] == "1"

        time.sleep(1)
        trickled = points(http, server, "at-106")
        assert trickled.status_code == 200 and limit_headers(trickled)[:2] == (2, 0)
        assert points(http, server, "at-106").status_code == 429

        put(http, server, "settings", {"limits_enabled": False})
        assert points(http, server, "at-106").status_code == 200


def test_concurrent_requests_never_overspend_a_budget(http):
    with sandbox(StoreSpec(107, "at-107", limits=True, customer_limit=20)) as server:
        statuses: list[int] = []

        def client() -> None:
            with requests.Session() as session:
                session.trust_env = False
                statuses.extend(points(session, server, "at-107").status_code for _ in range(5))

        threads = [threading.Thread(target=client) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(statuses) == [200] * 20 + [429] * 20
        assert stats(http, server)["stores"]["107"]["rate_limited"] == 20


# Faults

def test_fail_next_queue_answers_first_globally_and_per_store(http):
    with sandbox() as server:
        put(http, server, "faults", {"fail_next": [503, 502], "stores": {"102": {"fail_next": [429]}}})
        first, second = points(http, server, "at-101"), points(http, server, "at-101")
        assert first.status_code == 503
        assert first.json() == {"status": 503, "success": False, "error": {"code": 503, "message": "Server Error"}}
        assert second.status_code == 502 and second.headers["Content-Type"].startswith("text/html")
        assert points(http, server, "at-101").status_code == 200

        queued = points(http, server, "at-102")
        assert (queued.status_code, queued.headers["Retry-After"]) == (429, "1")
        assert points(http, server, "at-102").status_code == 200
        assert http.get(f"{server.url}/_sandbox/faults", timeout=5).json()["fail_next"] == []
        assert stats(http, server)["stores"]["102"]["rate_limited"] == 0  # injected, not its budget


def test_error_share_is_seeded_and_reproducible(http):
    with sandbox(faults=Faults(error_rate=1.0, error_status=500)) as server:
        assert {points(http, server, "at-101").status_code for _ in range(5)} == {500}

        def run() -> list[int]:
            put(http, server, "faults", {"error_rate": 0.5, "seed": 7})
            return [points(http, server, "at-101").status_code for _ in range(20)]

        first = run()
        assert set(first) == {200, 503} and first == run()  # 503: the default error_status


def test_latency_and_timeouts(http):
    with sandbox(store_faults={101: Faults(latency_ms=300)}) as server:
        started = time.monotonic()
        assert points(http, server, "at-101").status_code == 200
        assert time.monotonic() - started >= 0.3
        started = time.monotonic()
        points(http, server, "at-102")
        assert time.monotonic() - started < 0.3  # latency only for that store

        put(http, server, "faults", {"timeout_rate": 1.0, "timeout_seconds": 2})
        with pytest.raises(requests.Timeout):
            points(http, server, "at-102", timeout=0.3)
        assert stats(http, server)["stores"]["102"]["by_status"] == {"200": 1, "504": 1}  # counted at once

        put(http, server, "faults", {})  # clears every fault
        assert points(http, server, "at-101").status_code == 200


# Control endpoints refuse what they cannot use

@pytest.mark.parametrize(("path", "body"), [
    ("stores/101", {"access_token": "x", "acces_expires_in": 5}),  # a typo
    ("stores/101", {"refresh_token": "r"}),  # no access token
    ("stores/101", {"access_token": "at-102"}),  # another store's token
    ("stores/101", {"access_token": "x", "missing_app_status": 500}),
    ("stores/101", {"access_token": "x", "merchant_id": 9}),
    ("stores/101", {"access_token": "x", "customer_limit": "5"}),
    ("faults", {"fail_next": [200]}),
    ("faults", {"error_rate": 0.7, "timeout_rate": 0.7}),
    ("faults", {"stores": {"abc": {}}}),
    ("settings", {"limits_enabled": "yes"}),
    ("settings", {"limit_enabled": True}),
])
def test_control_endpoints_refuse_bad_input(http, path, body):
    with sandbox() as server:
        answer = put(http, server, path, body)
        assert answer.status_code == 400 and "error" in answer.json()
        assert store(http, server, 101)["access_token"] == "at-101"


def test_unknown_store_and_clashing_constructor_arguments():
    with sandbox() as server:
        assert requests.get(f"{server.url}/_sandbox/stores/999", timeout=5).status_code == 404
    with pytest.raises(ValueError, match="token=None"):
        create_app(now=NOW, stores=[StoreSpec(1, "sandbox-token")])
    with pytest.raises(ValueError):
        create_app(now=NOW, stores=[A, StoreSpec(101, "other")])
    create_app(now=NOW, token=None, stores=[StoreSpec(1, "sandbox-token")])


WEBHOOKS = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "salla" / "webhooks-api.json")
                      .read_text(encoding="utf-8"))
HOOK_URL = "https://hooks.example.com/webhooks/salla"


def test_the_sandbox_answers_salla_errors_as_documented():
    """Issue 15 (fakes): the sandbox's envelopes are the fixtures' (Salla's documented ones)."""
    assert TOO_MANY_REQUESTS == ERRORS["429"]


def test_a_403_fault_is_sallas_temporary_block(http):
    with sandbox(store_faults={101: Faults(fail_next=[403])}) as server:
        blocked = points(http, server, "at-101")
        assert blocked.status_code == 403 and blocked.json() == ERRORS["403_blocked"]
        assert points(http, server, "at-101").status_code == 200


def webhook_call(http, server, method, path, token="at-101", **kwargs):
    return http.request(method, f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"}, timeout=5,
                        **kwargs)


def sandbox_rows(http, server, merchant_id=101):
    return http.get(f"{server.url}/_sandbox/merchant-api", timeout=5).json()["subscriptions"][str(merchant_id)]


def test_register_update_and_list_webhooks_answer_as_documented(http):
    """Issue 15 item 22: Register Webhook takes the documented fields and answers in the shape of
    Salla's example; security fields sent to it are ignored (Salla then signs with a secret of
    its own); Update Webhook sets them; the list shows the Register example's fields."""
    with sandbox() as server:
        body = {**WEBHOOKS["register_request"], "url": HOOK_URL, "security_strategy": "token", "secret": "ours"}
        registered = webhook_call(http, server, "POST", "/webhooks/subscribe", json=body)
        assert registered.status_code == 200
        answer = registered.json()
        assert set(answer) == set(WEBHOOKS["register"]) and answer["status"] == 200 and answer["success"] is True
        assert list(answer["data"]) == list(WEBHOOKS["register"]["data"])
        [row] = sandbox_rows(http, server)
        assert row["security_strategy"] == "signature" and row["secret"] != "ours"  # Salla's own secret
        updated = webhook_call(http, server, "PUT", f"/webhooks/{answer['data']['id']}",
                               json=WEBHOOKS["update_request"])
        assert updated.status_code == 200 and list(updated.json()["data"]) == list(WEBHOOKS["update"]["data"])
        [row] = sandbox_rows(http, server)
        assert (row["security_strategy"], row["secret"]) == ("token", WEBHOOKS["update_request"]["secret"])
        listed = webhook_call(http, server, "GET", "/webhooks").json()
        assert set(listed) == set(WEBHOOKS["list"]) and set(listed["pagination"]) == set(WEBHOOKS["list"]["pagination"])
        [shown] = listed["data"]
        assert list(shown) == list(WEBHOOKS["list"]["data"][0])
        assert shown["headers"] == {"Authorization": WEBHOOKS["update_request"]["secret"]}


def test_update_webhook_refuses_what_salla_refuses(http):
    with sandbox() as server:
        made = webhook_call(http, server, "POST", "/webhooks/subscribe", json={"event": "order.created", "url": HOOK_URL})
        webhook_id = made.json()["data"]["id"]
        unknown = webhook_call(http, server, "PUT", f"/webhooks/{webhook_id + 99}", json={"name": "x"})
        assert unknown.status_code == 404 and unknown.json() == ERRORS["404"]
        other_store = webhook_call(http, server, "PUT", f"/webhooks/{webhook_id}", token="at-102", json={"name": "x"})
        assert other_store.status_code == 404
        for bad in ({"security_strategy": "signature"}, {"security_strategy": "basic", "secret": "s"},
                    {"url": "http://localhost/x"}, {"headers": {"a": "b"}}):
            refused = webhook_call(http, server, "PUT", f"/webhooks/{webhook_id}", json=bad)
            assert refused.status_code == 422 and refused.json()["error"]["message"] == "alert.invalid_fields", bad
        assert webhook_call(http, server, "PUT", f"/webhooks/{webhook_id}", token="nope", json={}).status_code == 401
