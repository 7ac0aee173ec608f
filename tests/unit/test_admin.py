import json

import fakeredis
import pytest

from service.web.app import create_app
from service.cli import main as cli
from service.state.tokens import StoreTokens
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
    client = app_for(server, ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789").test_client()
    assert client.get("/admin/stores").status_code == 401
    assert client.get("/admin/stores", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.get("/admin/stores", headers={"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}).status_code == 200


def test_store_summary_shows_state_and_expiry_never_tokens(server):
    app = app_for(server, ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789")
    deps = app.extensions["reminder_service"]
    deps.tokens.save(7, StoreTokens("secret-access", "secret-refresh", 2e9, "customers.read"))
    deps.registry.set_state(7, "needs_reauth", "token refresh refused: 400 invalid_grant")
    deps.registry.count(7, "reads", 3)
    client = app.test_client()
    body = client.get("/admin/stores", headers={"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}).get_data(as_text=True)
    assert "secret-access" not in body and "secret-refresh" not in body
    [store] = json.loads(body)["stores"]
    assert store["merchant_id"] == 7 and store["state"] == "needs_reauth"
    assert store["tokens"] == {"stored": True, "expires_at": 2e9, "scope": "customers.read"}
    assert store["counters"] == {"reads": 3}


def test_per_store_settings(server):
    client = app_for(server, ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789").test_client()
    auth = {"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}
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
    from service.state.tokens import TokenStore
    TokenStore(store, "lpr:", [TOKEN_KEY]).save(9, StoreTokens("a", "r", 2e9))
    from service.state import deployment_secrets
    deployment_secrets.forget_cache()
    holdout_key = deployment_secrets.secret(store, "lpr:", [TOKEN_KEY], "holdout")
    assert cli(["--json", "set-store", "9", "--plan-limit", "720", "--paused"]) == 0
    assert json.loads(capsys.readouterr().out) == {"plan_limit": 720, "paused": 1}
    assert cli(["--json", "stores"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["merchant_id"] == 9
    new = Fernet.generate_key().decode()
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", f"{new},{TOKEN_KEY}")
    assert cli(["--json", "rotate-token-keys"]) == 0
    assert json.loads(capsys.readouterr().out) == {"re_encrypted": 1, "channel_settings_re_encrypted": 0,
                                                   "deployment_secrets_re_encrypted": 1}
    assert TokenStore(store, "lpr:", [new]).load(9).access_token == "a"  # the old key can now go
    # Issue 17 §1: the holdout's key is re-wrapped, not changed: no customer switches group.
    deployment_secrets.forget_cache()
    assert deployment_secrets.secret(store, "lpr:", [new], "holdout") == holdout_key


def test_outcome_stats_per_store_and_stage_over_http_and_cli(server, monkeypatch, capsys):
    app = app_for(server, ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789")
    deps = app.extensions["reminder_service"]
    deps.registry.set_state(7, "active")
    deps.redis.hset(deps.keys.store(7).stats, mapping={"7:reminders_sent": 3, "7:points_reminded": 900, "7:points_saved": 400,
                                            "1:points_lost": 120})
    client = app.test_client()
    assert client.get("/admin/stats").status_code == 401
    body = client.get("/admin/stats", headers={"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}).get_json()
    assert body == {"stores": {"7": {"7": {"reminders_sent": 3, "points_reminded": 900, "points_saved": 400},
                                     "1": {"points_lost": 120}}}}
    one = client.get("/admin/stores/7/stats", headers={"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}).get_json()
    assert one["stages"]["7"]["points_saved"] == 400
    monkeypatch.setattr("service.cli.connect", lambda settings: deps.redis)
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    assert cli(["--json", "stats", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["7"]["1"] == {"points_lost": 120}


@pytest.mark.parametrize("body, field", [({"plan_limit": 0}, "plan_limit"), ({"plan_limit": -120}, "plan_limit"),
                                         ({"plan_limit": 10**9}, "plan_limit"), ({"plan_limit": 12.5}, "plan_limit"),
                                         ({"plan_limit": True}, "plan_limit"), ({"point_value_sar": -1}, "point_value_sar"),
                                         ({"point_value_sar": "nan"}, "point_value_sar"),
                                         ({"paused": "maybe"}, "paused")])
def test_every_setting_has_bounds_and_a_clear_400(server, body, field):
    client = app_for(server, ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789").test_client()
    answer = client.put("/admin/stores/7", json=body, headers={"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"})
    assert answer.status_code == 400 and field in answer.get_json()["message"]
    # nothing was stored, not even the valid part of a mixed request
    mixed = client.put("/admin/stores/7", json={"point_value_sar": 0.1, **body}, headers={"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"})
    assert mixed.status_code == 400
    assert client.get("/admin/stores/7", headers={"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}).get_json()["config"] == {}


def test_the_cli_refuses_a_bad_value_with_a_message(server, monkeypatch, capsys):
    store = fakeredis.FakeRedis(server=server, decode_responses=True)
    monkeypatch.setattr("service.cli.connect", lambda settings: store)
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    store.sadd("lpr:stores", 9)  # a store that installed the app (an unknown one is refused first)
    assert cli(["--json", "set-store", "9", "--plan-limit", "0"]) == 2
    assert "plan_limit must be from 1 to 10000" in capsys.readouterr().err
    assert cli(["--json", "set-store", "9", "--plan-limit", "lots"]) == 2
    assert cli(["--json", "dead-letters", "replay", "9"]) == 2
    assert "needs a merchant id and a reminder id" in capsys.readouterr().err


def _dead_letter(store):
    """A reminder whose every channel refused it, through the real delivery code."""
    import requests
    from tests.unit.test_channels_and_delivery import REMINDER, RID, Recorder
    from service.clients.channels import DeliveryPermanentError
    from workers.delivery import deliver, queue_reminder
    from service.ops.runtime import build_runtime
    rt = build_runtime(make_settings(), store, requests.Session())
    rt.channels = [Recorder("webhook", failures=[DeliveryPermanentError("422 unknown shopper")])]
    queue_reminder(rt, REMINDER, 86400, 1e9, lambda *a: None)
    assert deliver(rt, 1, 2, RID, 1e9) == "dead"
    return rt, RID


def test_dead_letters_are_listed_replayed_and_dropped_over_http(server):
    app = app_for(server, ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789")
    client, auth = app.test_client(), {"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}
    rt, rid = _dead_letter(app.extensions["reminder_service"].redis)
    listing = client.get("/admin/dead-letters", headers=auth).get_json()
    [letter] = listing["stores"]["1"]
    assert letter["reminder_id"] == rid and letter["state"] == "dead" and "422 unknown shopper" in letter["last_error"]
    assert "+966501234567" not in json.dumps(listing)  # the shopper's address is not shown
    assert client.get("/admin/stores/1", headers=auth).get_json()["dead_letters"] == 1
    assert client.post(f"/admin/stores/1/dead-letters/{rid}/replay", headers=auth).status_code == 200
    assert rt.ledger.get(1, rid).state == "scheduled" and rt.due.next_due() is not None  # the sweep publishes it
    assert client.get("/admin/dead-letters", headers=auth).get_json() == {"stores": {}}
    assert client.post(f"/admin/stores/1/dead-letters/{rid}/drop", headers=auth).status_code == 404  # not dead now
    assert client.get(f"/admin/stores/1/reminders/{rid}", headers=auth).get_json()["state"] == "scheduled"


def test_dead_letters_over_the_cli(server, monkeypatch, capsys):
    store = fakeredis.FakeRedis(server=server, decode_responses=True)
    monkeypatch.setattr("service.cli.connect", lambda settings: store)
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    rt, rid = _dead_letter(store)
    assert cli(["--json", "dead-letters", "list"]) == 0
    assert [l["reminder_id"] for l in json.loads(capsys.readouterr().out)["1"]] == [rid]
    assert cli(["--json", "dead-letters", "drop", "1", rid]) == 0
    assert rt.ledger.get(1, rid).state == "dropped"
    capsys.readouterr()
    assert cli(["--json", "dead-letters", "replay", "1", rid]) == 2  # dropped is final
    assert cli(["--json", "reminder", "1", rid]) == 0 and json.loads(capsys.readouterr().out)["state"] == "dropped"


def test_alarms_over_http_and_cli(server, monkeypatch, capsys):
    app = app_for(server, ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789")
    deps = app.extensions["reminder_service"]
    deps.alarms.raise_("oauth_client", "invalid_client")
    client, auth = app.test_client(), {"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}
    assert client.get("/admin/alarms", headers=auth).get_json()["alarms"]["oauth_client"]["message"] == "invalid_client"
    monkeypatch.setattr("service.cli.connect", lambda settings: deps.redis)
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", TOKEN_KEY)
    assert cli(["--json", "alarms"]) == 0 and "oauth_client" in json.loads(capsys.readouterr().out)
    assert cli(["--json", "clear-alarm", "oauth_client"]) == 0
    assert client.delete("/admin/alarms/oauth_client", headers=auth).status_code == 404


ADMIN = "ops-admin-token-for-the-tests-0123456789"


@pytest.mark.parametrize("body", [{"merchant_id": 8}, {"self": 1}, {"merchant_id": 8, "plan_limit": 360}])
def test_a_setting_named_like_an_argument_is_a_400_not_a_500(server, body):
    """Issue 15 item 6: `PUT /admin/stores/M` with a body key `merchant_id` was a 500 (it met
    set_config's own argument); it is an unknown setting like any other, and nothing is stored."""
    client = app_for(server, ADMIN_TOKEN=ADMIN).test_client()
    answer = client.put("/admin/stores/7", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 400 and answer.get_json()["error"] == "bad_request"
    assert "unknown store setting" in answer.get_json()["message"]
    assert client.get("/admin/stores/7", headers={"Authorization": f"Bearer {ADMIN}"}).get_json()["config"] == {}


@pytest.mark.parametrize("path", ["preview", "send-test"])
@pytest.mark.parametrize("body", [{"channel": 5}, {"channel": ["sms"]}, {"channel": {"a": 1}}, {"channel": True},
                                  {"channel": "pigeon"}, {"lang": 3}, {"lang": "fr"}, [1], "x", 5])
def test_preview_and_send_test_refuse_a_channel_or_language_they_do_not_know(server, path, body):
    """Issue 15 item 6: `preview` with a non-string `channel` was a 500 (service/ops/preview.py);
    a channel or language that is not one of ours, or a body that is not an object, is a 400."""
    client = app_for(server, ADMIN_TOKEN=ADMIN).test_client()
    if isinstance(body, dict):
        body = {"customer_id": 1, "to": "a@example.com", **body}
    answer = client.post(f"/admin/stores/7/{path}", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    assert answer.status_code == 400 and answer.get_json()["error"] == "bad_request"


@pytest.mark.parametrize("body", [{"to": "owner@store.example", "channel": "email"},
                                  {"to": "+966500000001", "channel": "webhook"},
                                  {"to": "no-address-here", "channel": "log"}])
def test_send_test_through_a_channel_the_store_has_not_set_up_is_a_400(server, body):
    """Issue 15 item 6 (a 5xx the schemathesis run meets): a channel the store has not configured
    answered 502, as if the provider had refused; it is the operator's doing, a 400 that says what
    is missing. (The log channel needs no address: it sends.)"""
    client = app_for(server, ADMIN_TOKEN=ADMIN).test_client()
    answer = client.post("/admin/stores/7/send-test", json=body, headers={"Authorization": f"Bearer {ADMIN}"})
    if body["channel"] == "log":
        assert answer.status_code == 200 and answer.get_json()["sent"] is True
    else:
        assert answer.status_code == 400 and "not configured" in answer.get_json()["message"]
