"""The webhook endpoint with fakeredis and an in-memory queue (the real ones: tests/integration)."""
import hashlib
import json

import fakeredis
import pytest

from service.web.app import create_app
from service.clients.queue import QueueUnavailable
from service.domain.signatures import sign
from tests.conftest import WEBHOOK_SECRET, make_settings, sample_bytes


class ListQueue:
    def __init__(self):
        self.messages = []
        self.tasks = []
        self.fail = False

    def enqueue(self, message, task="workers.tasks.handle_event"):
        if self.fail:
            raise QueueUnavailable("broker down")
        self.messages.append(json.loads(json.dumps(message)))  # what JSON serialisation keeps
        self.tasks.append(task)

    def send(self, task, args):
        if self.fail:
            raise QueueUnavailable("broker down")
        self.tasks.append(task)
        self.messages.append({"args": args})


@pytest.fixture
def server():
    return fakeredis.FakeServer()


@pytest.fixture
def store(server):
    return fakeredis.FakeRedis(server=server, decode_responses=True)


@pytest.fixture
def queue():
    return ListQueue()


def client_for(store, queue, **env):
    return create_app(make_settings(**env), redis_client=store, queue=queue).test_client()


@pytest.fixture
def client(store, queue):
    return client_for(store, queue)


def post(client, body: bytes, secret=WEBHOOK_SECRET, headers=None):
    headers = {"X-Salla-Signature": sign(body, secret), "Content-Type": "application/json", **(headers or {})}
    return client.post("/webhooks/salla", data=body, headers=headers)


def event_of(client, body: bytes, merchant_id: int):
    """The event as the worker reads it from the store's inbox."""
    digest = hashlib.sha256(body).hexdigest()
    [event] = [e for e in client.application.extensions["reminder_service"].intake.events(merchant_id)
               if e["digest"] == digest]
    return event


def test_signed_order_is_queued_with_a_small_message(client, queue):
    body = sample_bytes("order.created.json")
    response = post(client, body)
    assert response.status_code == 200
    assert response.get_json() == {"status": "queued"}
    # The broker gets a drain of the store's inbox; the event (with the customer's details)
    # waits in Redis. A second event of the store needs no second drain.
    assert queue.messages == [{"merchant_id": 1305146709}] and queue.tasks == ["workers.tasks.drain_intake"]
    message = event_of(client, body, 1305146709)
    assert message["event"] == "order.created"
    assert message["merchant_id"] == 1305146709
    assert message["customer"] == {"id": 225167971, "name": "Mohammed Ali", "mobile": "+966501806978",
                                   "email": "usertest@gmail.com", "notifications_enabled": None}
    assert message["event_created_at"] == "Sun Jun 26 2022 12:21:48 GMT+0300"


def test_order_status_updated_customer_is_read(client, queue):
    body = sample_bytes("order.status.updated.json")
    assert post(client, body).status_code == 200
    merchant = queue.messages[0]["merchant_id"]
    assert event_of(client, body, merchant)["customer"]["id"] == 1779795066
    assert event_of(client, body, merchant)["customer"]["mobile"] == "+96652318526"


def test_same_bytes_twice_are_queued_once(client, queue):
    body = sample_bytes("order.created.json")
    assert post(client, body).get_json() == {"status": "queued"}
    for _ in range(3):
        response = post(client, body)
        assert response.status_code == 200 and response.get_json() == {"status": "duplicate"}
    assert len(queue.messages) == 1


def test_bad_signature_is_401_and_not_queued(client, queue, caplog):
    body = sample_bytes("order.created.json")
    response = post(client, body, secret="wrong")
    assert response.status_code == 401
    assert response.get_json()["error"] == "unauthorized"
    assert client.post("/webhooks/salla", data=body).status_code == 401  # no header at all
    assert queue.messages == []
    assert "verification failed" in caplog.text
    assert "Mohammed" not in caplog.text  # the body never reaches a log line


def test_token_strategy(store, queue):
    """Issue 15 item 24: the Token strategy takes `Authorization: <secret>` and `Bearer <secret>`."""
    client = client_for(store, queue, SALLA_WEBHOOK_STRATEGY="token")
    body = sample_bytes("customer.updated.json")
    assert client.post("/webhooks/salla", data=body, headers={"Authorization": WEBHOOK_SECRET}).status_code == 200
    assert client.post("/webhooks/salla", data=body, headers={"Authorization": "nope"}).status_code == 401
    assert client.post("/webhooks/salla", data=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    other = body.replace(b"}", b" }", 1)  # another delivery (not a repeat of the first)
    bearer = client.post("/webhooks/salla", data=other, headers={"Authorization": f"Bearer {WEBHOOK_SECRET}"})
    assert bearer.status_code == 200 and bearer.get_json() == {"status": "queued"}
    assert client.application.extensions["reminder_service"].intake.waiting(1305146709) == 2


def test_none_strategy_is_an_opt_in(store, queue):
    client = client_for(store, queue, SALLA_WEBHOOK_STRATEGY="none")
    assert client.post("/webhooks/salla", data=sample_bytes("order.created.json")).status_code == 200


@pytest.mark.parametrize("body, message", [
    (b"{not json", "not valid JSON"),
    (b'{"merchant": 1, "data": {}}', "missing event"),
    (b'{"event": "order.created", "data": {}}', "missing merchant"),
    (b'{"event": "order.created", "merchant": 1}', "missing data"),
])
def test_malformed_bodies_are_400_with_a_reason(client, queue, body, message):
    response = post(client, body)
    assert response.status_code == 400
    assert response.get_json()["error"] == "bad_request"
    assert message in response.get_json()["message"]
    assert queue.messages == []


def test_events_not_acted_on_get_200(client, queue):
    body = json.dumps({"event": "app.installed", "merchant": 1, "data": {}}).encode()
    response = post(client, body)
    assert response.status_code == 200 and response.get_json()["status"] == "ignored"
    assert queue.messages == []


def authorize(merchant=1234509876, access="access-A", refresh="refresh-A", expires=2_000_000_000,
              scope="settings.read customers.read offline_access"):
    return json.dumps({"event": "app.store.authorize", "merchant": merchant, "created_at": "2022-12-31 12:31:25",
                       "data": {"access_token": access, "refresh_token": refresh, "expires": expires, "scope": scope,
                                "token_type": "bearer"}}).encode()


def test_authorize_stores_the_tokens_encrypted_and_never_logs_them(client, store, queue, caplog):
    caplog.set_level("DEBUG")
    response = post(client, sample_bytes("app.store.authorize.json"))
    assert response.status_code == 200 and response.get_json() == {"status": "stored"}
    raw = store.get("lpr:{store:1234509876}:tokens")
    sample_token = json.loads(sample_bytes("app.store.authorize.json"))["data"]["access_token"]
    assert raw and sample_token not in raw and "fWcceFWF9eFH4y" not in raw
    deps = client.application.extensions["reminder_service"]
    tokens = deps.tokens.load(1234509876)
    assert tokens.access_token == sample_token and tokens.expires_at == 1634819484
    assert deps.registry.state(1234509876)["state"] == "active"
    assert sample_token not in caplog.text and "fWcceFWF9eFH4y" not in caplog.text
    # Tokens never travel through the broker: only the store's id, for the settings read and backfill.
    assert queue.messages == [{"merchant_id": 1234509876}] and queue.tasks == ["workers.tasks.store_authorized"]


def test_a_new_authorize_replaces_the_tokens_and_an_older_one_does_not(client):
    deps = client.application.extensions["reminder_service"]
    post(client, authorize(access="A", expires=2_000_000_000))
    post(client, authorize(access="B", expires=2_000_100_000))  # app.updated, then a new authorize
    assert deps.tokens.load(1234509876).access_token == "B"
    late = post(client, authorize(access="A", expires=2_000_000_000))  # Salla retrying the first one
    assert late.get_json()["status"] == "ignored"
    assert deps.tokens.load(1234509876).access_token == "B"


def test_authorize_without_customers_read_marks_the_store(client):
    post(client, authorize(scope="settings.read offline_access"))
    state = client.application.extensions["reminder_service"].registry.state(1234509876)
    assert state["state"] == "needs_reauth" and "customers.read" in state["reason"]


def test_authorize_without_an_access_token_is_400(client):
    body = json.dumps({"event": "app.store.authorize", "merchant": 5, "data": {"refresh_token": "r"}}).encode()
    response = post(client, body)
    assert response.status_code == 400 and "access_token" in response.get_json()["message"]


def test_uninstall_deletes_tokens_and_queues_the_clean_up(client, store, queue):
    post(client, authorize())
    response = post(client, sample_bytes("app.uninstalled.json"))
    assert response.get_json() == {"status": "uninstalled"}
    assert store.get("lpr:{store:1234509876}:tokens") is None
    assert client.application.extensions["reminder_service"].registry.state(1234509876)["state"] == "uninstalled"
    assert queue.tasks[-1] == "workers.tasks.forget_store"
    assert queue.messages[-1] == {"merchant_id": 1234509876, "uninstalled_at": 1672479085.0}
    post(client, authorize(access="again", expires=2_000_000_001))  # reinstalled
    assert client.application.extensions["reminder_service"].registry.state(1234509876)["state"] == "active"


def test_uninstall_with_the_broker_down_is_503(client, queue):
    queue.fail = True
    assert post(client, sample_bytes("app.uninstalled.json")).status_code == 503


def test_a_signature_header_that_is_not_ascii_is_401(client):
    body = sample_bytes("order.created.json")
    response = client.post("/webhooks/salla", data=body, headers={"X-Salla-Signature": "تواقيع"})
    assert response.status_code == 401


@pytest.mark.parametrize("body", [b'{"event": "order.created", "merchant": 1, "data": {"x": ' + b"9" * 5000 + b"}}",
                                  b"[" * 50000 + b"]" * 50000])
def test_pathological_json_is_400(client, body):
    response = post(client, body)
    assert response.status_code == 400 and response.get_json()["error"] == "bad_request"


def test_unknown_event_gets_200(client, queue):
    response = post(client, b'{"event": "brand.created", "merchant": 1, "data": {}}')
    assert response.status_code == 200 and response.get_json()["status"] == "ignored"


def test_guest_order_gets_200_ignored(client, queue):
    response = post(client, b'{"event": "order.created", "merchant": 1, "data": {"id": 3}}')
    assert response.get_json() == {"status": "ignored", "reason": "event names no customer"}


def test_body_over_the_limit_is_413(store, queue):
    client = client_for(store, queue, WEBHOOK_MAX_BODY_BYTES="2048")
    body = json.dumps({"event": "order.created", "merchant": 1, "data": {"pad": "x" * 4096}}).encode()
    response = post(client, body)
    assert response.status_code == 413
    assert response.get_json()["error"] == "request_entity_too_large"
    assert queue.messages == []


def test_redis_outage_is_503_so_salla_retries(server, client, queue):
    server.connected = False
    response = post(client, sample_bytes("order.created.json"))
    assert response.status_code == 503
    assert response.get_json()["error"] == "unavailable"
    assert queue.messages == []


def test_broker_outage_is_503_and_the_retry_is_not_taken_for_a_repeat(client, queue):
    body = sample_bytes("order.created.json")
    queue.fail = True
    assert post(client, body).status_code == 503
    queue.fail = False
    assert post(client, body).get_json() == {"status": "queued"}  # Salla's retry goes through
    assert len(queue.messages) == 1


def test_health_and_readiness(server, client):
    assert client.get("/healthz").get_json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    server.connected = False
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200


def test_unknown_route_answers_json(client):
    response = client.get("/nope")
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"


def app_event(event, created_at, merchant=1234509876, **data):
    return json.dumps({"event": event, "merchant": merchant, "created_at": created_at, "data": data}).encode()


def installed(created_at, access="A", expires=2_000_000_000):
    return app_event("app.store.authorize", created_at, access_token=access, refresh_token="r", expires=expires,
                     scope="customers.read offline_access")


def test_a_late_retry_of_an_older_uninstall_does_not_undo_a_newer_install(client, queue):
    deps = client.application.extensions["reminder_service"]
    assert post(client, installed("Sun Nov 01 2026 10:00:00 GMT+0300")).get_json() == {"status": "stored"}
    uninstall = app_event("app.uninstalled", "Mon Nov 02 2026 10:00:00 GMT+0300")
    assert post(client, uninstall).get_json() == {"status": "uninstalled"}
    assert post(client, installed("2026-11-03 10:00:00", access="fresh")).get_json() == {"status": "stored"}
    late = post(client, uninstall)  # Salla's retry of the uninstall, five minutes... or days late
    assert late.status_code == 200 and late.get_json()["status"] == "ignored"
    assert deps.tokens.load(1234509876).access_token == "fresh"
    assert deps.registry.state(1234509876)["state"] == "active"
    # only the real uninstall asked for erasure
    assert [t for t in queue.tasks if t != "workers.tasks.store_authorized"] == ["workers.tasks.forget_store"]


def test_an_authorize_older_than_the_uninstall_is_ignored(client):
    deps = client.application.extensions["reminder_service"]
    post(client, installed("2026-11-01 10:00:00"))
    post(client, app_event("app.uninstalled", "2026-11-02T07:00:00Z"))  # 10:00 in Riyadh
    late = post(client, installed("2026-11-01 10:00:00", access="old", expires=2_100_000_000))
    assert late.get_json()["status"] == "ignored"
    assert deps.tokens.load(1234509876) is None and deps.registry.state(1234509876)["state"] == "uninstalled"


ADMIN_TOKEN = "ops-admin-token-for-the-tests-0123456789"


def test_readiness_is_up_or_down_in_public_and_the_alarms_are_on_the_admin_port(store, queue, server):
    """Issue 15 item 3: /readyz on the public port showed operator alarm texts (merchant ids,
    template names, provider errors). Publicly it says up or down per dependency, nothing more;
    the alarms' texts are at GET /admin/health, on the admin port behind the admin token."""
    client = client_for(store, queue, ADMIN_TOKEN=ADMIN_TOKEN, ADMIN_PORT="9444")
    deps = client.application.extensions["reminder_service"]
    deps.alarms.raise_("oauth_client", "merchant 1305146709: Salla refused our token refresh with invalid_client")
    public = client.get("/readyz", environ_overrides={"SERVER_PORT": "8000"})
    assert public.status_code == 200
    assert public.get_json() == {"status": "ready", "redis": "up", "beat": "down"}  # no beat running here
    assert "invalid_client" not in public.get_data(as_text=True) and "1305146709" not in public.get_data(as_text=True)
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    assert client.get("/admin/health", headers=auth, environ_overrides={"SERVER_PORT": "8000"}).status_code == 404
    assert client.get("/admin/health", environ_overrides={"SERVER_PORT": "9444"}).status_code == 401
    details = client.get("/admin/health", headers=auth, environ_overrides={"SERVER_PORT": "9444"}).get_json()
    assert details["status"] == "ready" and "invalid_client" in details["alarms"]["oauth_client"]
    server.connected = False
    down = client.get("/readyz", environ_overrides={"SERVER_PORT": "8000"})
    assert down.status_code == 503 and down.get_json() == {"status": "unavailable", "redis": "down"}
