import json

import fakeredis
import pytest

from service.app import create_app
from service.cli import main as cli
from service.tokens import StoreTokens
from tests.conftest import TOKEN_KEY, make_settings


class NoQueue:
    def enqueue(self, message, task=None):
        raise AssertionError("admin never enqueues")


@pytest.fixture
def server():
    return fakeredis.FakeServer()


def app_for(server, **env):
    store = fakeredis.FakeRedis(server=server, decode_responses=True)
    return create_app(make_settings(**env), redis_client=store, queue=NoQueue())


def test_admin_api_is_off_without_a_token(server):
    assert app_for(server).test_client().get("/admin/stores").status_code == 404


def test_admin_api_needs_the_bearer_token(server):
    client = app_for(server, ADMIN_TOKEN="ops").test_client()
    assert client.get("/admin/stores").status_code == 401
    assert client.get("/admin/stores", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/admin/stores", headers={"Authorization": "Bearer ops"}).status_code == 200


def test_store_summary_shows_state_and_expiry_never_tokens(server):
    app = app_for(server, ADMIN_TOKEN="ops")
    deps = app.extensions["reminder_service"]
    deps.tokens.save(7, StoreTokens("secret-access", "secret-refresh", 2e9, "customers.read"))
    deps.registry.set_state(7, "needs_reauth", "token refresh refused: 400 invalid_grant")
    deps.registry.count(7, "reads", 3)
    client = app.test_client()
    body = client.get("/admin/stores", headers={"Authorization": "Bearer ops"}).get_data(as_text=True)
    assert "secret-access" not in body and "secret-refresh" not in body
    [store] = json.loads(body)["stores"]
    assert store["merchant_id"] == 7 and store["state"] == "needs_reauth"
    assert store["tokens"] == {"stored": True, "expires_at": 2e9, "scope": "customers.read"}
    assert store["counters"] == {"reads": 3}


def test_per_store_settings(server):
    client = app_for(server, ADMIN_TOKEN="ops").test_client()
    auth = {"Authorization": "Bearer ops"}
    answer = client.put("/admin/stores/7", json={"plan_limit": 360, "point_value_sar": 0.05}, headers=auth)
    assert answer.get_json()["config"] == {"plan_limit": 360, "point_value_sar": 0.05}
    assert client.put("/admin/stores/7", json={"colour": "red"}, headers=auth).status_code == 400
    assert client.put("/admin/stores/7", json={"plan_limit": "many"}, headers=auth).status_code == 400


def test_cli_lists_stores_and_rotates_keys(server, monkeypatch, capsys):
    from cryptography.fernet import Fernet
    store = fakeredis.FakeRedis(server=server, decode_responses=True)
    monkeypatch.setattr("service.cli.connect", lambda settings: store)
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    from service.tokens import TokenStore
    TokenStore(store, "lpr:", [TOKEN_KEY]).save(9, StoreTokens("a", "r", 2e9))
    assert cli(["set-store", "9", "--plan-limit", "720", "--paused"]) == 0
    assert json.loads(capsys.readouterr().out) == {"plan_limit": 720, "paused": 1}
    assert cli(["stores"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["merchant_id"] == 9
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", f"{new},{TOKEN_KEY}")
    assert cli(["rotate-token-keys"]) == 0
    assert json.loads(capsys.readouterr().out) == {"re_encrypted": 1}
    assert TokenStore(store, "lpr:", [new]).load(9).access_token == "a"  # the old key can now go


def test_outcome_stats_per_store_and_stage_over_http_and_cli(server, monkeypatch, capsys):
    app = app_for(server, ADMIN_TOKEN="ops")
    deps = app.extensions["reminder_service"]
    deps.registry.set_state(7, "active")
    deps.redis.hset("lpr:stats:7", mapping={"7:reminders_sent": 3, "7:points_reminded": 900, "7:points_saved": 400,
                                            "1:points_lost": 120})
    client = app.test_client()
    assert client.get("/admin/stats").status_code == 401
    body = client.get("/admin/stats", headers={"Authorization": "Bearer ops"}).get_json()
    assert body == {"stores": {"7": {"7": {"reminders_sent": 3, "points_reminded": 900, "points_saved": 400},
                                     "1": {"points_lost": 120}}}}
    one = client.get("/admin/stores/7/stats", headers={"Authorization": "Bearer ops"}).get_json()
    assert one["stages"]["7"]["points_saved"] == 400
    monkeypatch.setattr("service.cli.connect", lambda settings: deps.redis)
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    assert cli(["stats", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["7"]["1"] == {"points_lost": 120}
