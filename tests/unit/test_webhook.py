"""The webhook endpoint with fakeredis and an in-memory queue (the real ones: tests/integration)."""
import json

import fakeredis
import pytest

from service.app import create_app
from service.queue import QueueUnavailable
from service.signatures import sign
from tests.conftest import WEBHOOK_SECRET, make_settings, sample_bytes


class ListQueue:
    def __init__(self):
        self.messages = []
        self.fail = False

    def enqueue(self, message):
        if self.fail:
            raise QueueUnavailable("broker down")
        self.messages.append(json.loads(json.dumps(message)))  # what JSON serialisation keeps


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


def test_signed_order_is_queued_with_a_small_message(client, queue):
    response = post(client, sample_bytes("order.created.json"))
    assert response.status_code == 200
    assert response.get_json() == {"status": "queued"}
    [message] = queue.messages
    assert message["event"] == "order.created"
    assert message["merchant_id"] == 1305146709
    assert message["customer"] == {"id": 225167971, "name": "Mohammed Ali", "mobile": "+966501806978",
                                   "email": "usertest@gmail.com", "notifications_enabled": None}
    assert message["event_created_at"] == "Sun Jun 26 2022 12:21:48 GMT+0300"


def test_order_status_updated_customer_is_read(client, queue):
    assert post(client, sample_bytes("order.status.updated.json")).status_code == 200
    assert queue.messages[0]["customer"]["id"] == 1779795066
    assert queue.messages[0]["customer"]["mobile"] == "+96652318526"


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
    client = client_for(store, queue, SALLA_WEBHOOK_STRATEGY="token")
    body = sample_bytes("customer.updated.json")
    assert client.post("/webhooks/salla", data=body, headers={"Authorization": WEBHOOK_SECRET}).status_code == 200
    assert client.post("/webhooks/salla", data=body, headers={"Authorization": "nope"}).status_code == 401
    assert len(queue.messages) == 1


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


@pytest.mark.parametrize("name", ["app.store.authorize.json", "app.uninstalled.json"])
def test_events_not_acted_on_get_200(client, queue, name):
    response = post(client, sample_bytes(name))
    assert response.status_code == 200
    assert response.get_json()["status"] == "ignored"
    assert queue.messages == []


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
