"""Per-store settings: bounds, the planner using the store's own values, Salla's app-settings form
(webhook and App API over real HTTP), the admin API and the CLI."""
import hashlib
import hmac
import json
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
import requests

from devkit.sandbox import create_app as create_sandbox, serve_in_thread
from service.web.app import create_app
from service.cli import main as cli
from service.domain.events import Customer
from service.domain.loyalty import Lot
from service.state.stores import CONFIG_FIELDS, ConfigError, StoreRegistry, form_value
from service.domain.store_policy import policy_for
from tests.conftest import WEBHOOK_SECRET, make_settings
from workers import app_settings, reminding
from service.ops.runtime import build_runtime

M, C = 1305146709, 1001
# 20:00 UTC = 23:00 in Riyadh: inside the default quiet hours (21:00-09:00 Asia/Riyadh).
NOW = datetime(2026, 11, 25, 20, 0, tzinfo=timezone.utc)
ADMIN = {"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}


def lot(days, points=100, status="مؤكدة"):
    return Lot(key=f"k{days}{points}{status}", name="", points=points, used_points=0, status=status,
               created_at=NOW - timedelta(days=300), expires_at=NOW + timedelta(days=days), order_id=None,
               reference_id=None)


def runtime(**env):
    return build_runtime(make_settings(**env), fakeredis.FakeRedis(decode_responses=True), requests.Session(),
                         clock=lambda: NOW.timestamp())


def plan_now(rt, lots):
    published = []
    customer = Customer(C, "سارة", "+966500000001", None, None)
    queued = reminding.evaluate(rt, M, customer, lots, NOW, lambda *a: published.append(a))
    return queued, rt.due.customer_entries(M, C)


@pytest.mark.parametrize("field,bad", [
    ("timezone", "Mars/Olympus"), ("timezone", ""), ("quiet_hours", "25:00-09:00"), ("quiet_hours", "9-5"),
    ("quiet_hours", 7), ("stages_days", "0,7"), ("stages_days", "400"), ("stages_days", "30,20,10,7,3,1"),
    ("stages_days", "seven"), ("stages_days", ""), ("min_points", 0), ("min_points", 2_000_000),
    ("min_points", 1.5), ("excluded_statuses", ["x" * 41]), ("excluded_statuses", [""] ), ("language", "fr")])
def test_each_new_setting_is_checked_and_the_error_names_it(field, bad):
    with pytest.raises(ConfigError, match=field):
        CONFIG_FIELDS[field](bad)


def test_good_values_are_normalised():
    assert CONFIG_FIELDS["stages_days"]("7, 30,1,7") == "30,7,1"
    assert CONFIG_FIELDS["stages_days"]([14, 3]) == "14,3"
    assert CONFIG_FIELDS["quiet_hours"]("22:00-07:30") == "22:00-07:30"
    assert CONFIG_FIELDS["quiet_hours"]("OFF") == "off"
    assert CONFIG_FIELDS["timezone"](" Asia/Dubai ") == "Asia/Dubai"
    registry = StoreRegistry(fakeredis.FakeRedis(decode_responses=True), "lpr:")
    config = registry.set_config(M, excluded_statuses="ملغاة, معلقة", stages_days="14,3", min_points=50)
    assert sorted(config["excluded_statuses"]) == sorted(["ملغاة", "معلقة"]) and config["stages_days"] == "14,3"
    policy = policy_for(make_settings(), config)
    assert policy.stages_days == (14, 3) and policy.min_points == 50 and set(policy.excluded_statuses) == {"ملغاة", "معلقة"}
    assert policy_for(make_settings(), {}).stages_days == (30, 7, 1)


def test_the_stores_quiet_hours_and_zone_decide_not_the_environments():
    rt = runtime()
    queued, due = plan_now(rt, [lot(5)])  # 23:00 in Riyadh: held by the default quiet hours
    assert queued == [] and due
    rt = runtime()
    rt.registry.set_config(M, quiet_hours="off")
    assert len(plan_now(rt, [lot(5)])[0]) == 1
    rt = runtime()
    rt.registry.set_config(M, timezone="Asia/Tokyo")  # 05:00 in Tokyo: still quiet (21-09)
    assert plan_now(rt, [lot(5)])[0] == []
    rt = runtime()
    rt.registry.set_config(M, timezone="America/New_York")  # 15:00 in New York: open
    assert len(plan_now(rt, [lot(5)])[0]) == 1


def test_the_stores_stages_and_minimum_points_decide():
    rt = runtime(QUIET_HOURS="off")
    assert [r["stage_days"] for r in plan_now(rt, [lot(20)])[0]] == [30]
    rt = runtime(QUIET_HOURS="off")
    rt.registry.set_config(M, stages_days="14,3")  # 20 days out is in no stage of this store
    assert plan_now(rt, [lot(20)])[0] == []
    assert [r["stage_days"] for r in plan_now(rt, [lot(10)])[0]] == [14]
    rt = runtime(QUIET_HOURS="off")
    rt.registry.set_config(M, min_points=500)
    assert plan_now(rt, [lot(5, points=100)])[0] == []
    assert plan_now(rt, [lot(5, points=600)])[0][0]["points_expiring"] == 600
    rt = runtime(QUIET_HOURS="off")
    rt.registry.set_config(M, excluded_statuses=["معلقة"], language="en")
    [reminder] = plan_now(rt, [lot(5, status="معلقة"), lot(6, points=40)])[0]
    assert reminder["points_expiring"] == 40 and reminder["language"] == "en"


def test_a_form_applies_its_valid_fields_and_keeps_out_and_shows_the_invalid_ones():
    registry = StoreRegistry(fakeredis.FakeRedis(decode_responses=True), "lpr:")
    registry.set_config(M, min_points=5, quiet_hours="22:00-08:00")
    outcome = registry.apply_form(M, {"timezone": "Asia/Dubai", "min_points": "-3", "quiet_hours": "",
                                      "stages_days": "14,3", "unrelated": "x"}, 1000.0, "test")
    assert outcome["applied"] == ["stages_days", "timezone"] and outcome["reset"] == ["quiet_hours"]
    assert set(outcome["rejected"]) == {"min_points"} and "min_points must be from 1" in outcome["rejected"]["min_points"]
    config = registry.config(M)
    assert config["timezone"] == "Asia/Dubai" and config["min_points"] == 5 and "quiet_hours" not in config
    summary = registry.summary(M)
    assert summary["settings_rejected"] == outcome["rejected"]
    # An older form (a delayed retry) changes nothing; a newer valid one clears the rejection.
    assert registry.apply_form(M, {"timezone": "Asia/Tokyo"}, 999.0, "test")["applied"] == []
    assert registry.config(M)["timezone"] == "Asia/Dubai"
    registry.apply_form(M, {"min_points": 10}, 1001.0, "test")
    assert registry.config(M)["min_points"] == 10 and registry.summary(M)["settings_rejected"] == {}


def _signed(client, body: dict):
    raw = json.dumps(body).encode()
    signature = hmac.new(WEBHOOK_SECRET.encode(), raw, hashlib.sha256).hexdigest()
    return client.post("/webhooks/salla", data=raw, headers={"X-Salla-Signature": signature,
                                                             "Content-Type": "application/json"})


class NoQueue:
    def enqueue(self, message, task=None):
        raise AssertionError("settings never go through the broker")


def test_the_app_settings_updated_webhook_applies_the_form_and_the_admin_and_cli_show_rejections(monkeypatch, capsys):
    server = fakeredis.FakeServer()
    store = fakeredis.FakeRedis(server=server, decode_responses=True)
    app = create_app(make_settings(ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789"), redis_client=store, queue=NoQueue())
    client = app.test_client()
    event = {"event": "app.settings.updated", "merchant": M, "created_at": "2026-11-25 10:00:00",
             "data": {"id": 513499943, "app_name": "Loyalty reminders",
                      "settings": {"timezone": "Asia/Riyadh", "quiet_hours": "23:00-08:00", "stages_days": "30,7",
                                   "min_points": "abc", "language": "en", "excluded_statuses": ""}}}
    response = _signed(client, event)
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "applied" and set(body["rejected"]) == {"min_points"}
    summary = client.get(f"/admin/stores/{M}", headers=ADMIN).get_json()
    assert summary["config"]["quiet_hours"] == "23:00-08:00" and summary["config"]["stages_days"] == "30,7"
    assert "min_points" in summary["settings_rejected"] and "min_points" not in summary["config"]
    bad = _signed(client, {"event": "app.settings.updated", "merchant": M, "created_at": "x", "data": {"settings": 3}})
    assert bad.status_code == 400 and "data.settings" in bad.get_json()["message"]
    # The CLI shows the same, and refuses a bad value with exit status 2.
    monkeypatch.setattr("service.cli.connect", lambda settings: fakeredis.FakeRedis(server=server, decode_responses=True))
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", WEBHOOK_SECRET)
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", "dGVzdC1vbmx5LWtleS1kby1ub3QtdXNlLWFueXdoZXI=")
    assert cli(["--json", "store", str(M)]) == 0
    assert "min_points" in json.loads(capsys.readouterr().out)["settings_rejected"]
    assert cli(["--json", "set-store", str(M), "--quiet-hours", "9pm-9am"]) == 2
    assert "quiet_hours" in capsys.readouterr().err
    assert cli(["--json", "set-store", str(M), "--stages-days", "14,3", "--min-points", "25", "--timezone", "Asia/Dubai"]) == 0
    assert json.loads(capsys.readouterr().out)["stages_days"] == "14,3"


@pytest.mark.parametrize("body,field", [({"quiet_hours": "21:00"}, "quiet_hours"), ({"timezone": "Riyadh"}, "timezone"),
                                        ({"stages_days": [0]}, "stages_days"), ({"min_points": True}, "min_points")])
def test_the_admin_api_refuses_a_bad_store_setting_naming_it(body, field):
    app = create_app(make_settings(ADMIN_TOKEN="ops-admin-token-for-the-tests-0123456789"), redis_client=fakeredis.FakeRedis(decode_responses=True),
                     queue=NoQueue())
    response = app.test_client().put(f"/admin/stores/{M}", json=body, headers=ADMIN)
    assert response.status_code == 400 and field in response.get_json()["message"]


@pytest.fixture
def sandbox():
    with serve_in_thread(create_sandbox(token="sandbox-token", app_id=77)) as server:
        yield server


def sandbox_runtime(sandbox, **env):
    settings = make_settings(SALLA_API_BASE_URL=sandbox.url, SALLA_APP_ID="77", **env)
    return build_runtime(settings, fakeredis.FakeRedis(decode_responses=True), requests.Session())


def test_after_authorize_the_app_api_settings_are_read_and_applied_over_http(sandbox):
    requests.put(f"{sandbox.url}/_sandbox/stores/{M}/app-settings",
                 json={"quiet_hours": "off", "min_points": 40, "stages_days": "nonsense"}).raise_for_status()
    rt = sandbox_runtime(sandbox)
    assert app_settings.fetch_and_apply(rt, M) == "applied"
    assert rt.registry.config(M) == {"quiet_hours": "off", "min_points": 40}
    assert "stages_days" in rt.registry.summary(M)["settings_rejected"]


@pytest.mark.parametrize("status,outcome", [(500, "retry"), (503, "retry"), (429, "retry"), (403, "refused"),
                                            (404, "refused"), (422, "refused")])
def test_salla_errors_on_the_app_settings_read(sandbox, status, outcome):
    requests.put(f"{sandbox.url}/_sandbox/route-faults", json={"app_settings": [status]}).raise_for_status()
    rt = sandbox_runtime(sandbox)
    assert app_settings.fetch_and_apply(rt, M) == outcome
    assert str(status) in rt.registry.summary(M)["settings_error"] and rt.registry.config(M) == {}


def test_a_wrong_app_id_is_a_404_and_no_app_id_reads_nothing(sandbox):
    rt = build_runtime(make_settings(SALLA_API_BASE_URL=sandbox.url, SALLA_APP_ID="78"),
                       fakeredis.FakeRedis(decode_responses=True), requests.Session())
    assert app_settings.fetch_and_apply(rt, M) == "refused"
    rt = build_runtime(make_settings(SALLA_API_BASE_URL=sandbox.url), fakeredis.FakeRedis(decode_responses=True),
                       requests.Session())
    assert app_settings.fetch_and_apply(rt, M) == "skipped"


# Salla's app settings arrive as plain values, as text ("true", "40") and as one-item lists
# (["ar"]): shared/salla/REFERENCE.md, "Pitfalls" (App settings values).
FORM_SHAPES = [
    ("language", "en", "en"), ("language", ["en"], "en"), ("language", [" en"], None),
    ("timezone", ["Asia/Dubai"], "Asia/Dubai"), ("timezone", "Asia/Dubai", "Asia/Dubai"),
    ("quiet_hours", ["22:00-07:00"], "22:00-07:00"), ("quiet_hours", ["off"], "off"),
    ("min_points", 40, 40), ("min_points", "40", 40), ("min_points", [40], 40), ("min_points", ["40"], 40),
    ("min_points", 40.0, 40),
    ("stages_days", ["14,3"], "14,3"), ("stages_days", [14], "14"), ("stages_days", ["14", "3"], "14,3"),
    ("stages_days", [14, 3], "14,3"), ("stages_days", "14,3", "14,3"),
    ("excluded_statuses", ["معلقة"], ["معلقة"]), ("excluded_statuses", ["معلقة, ملغاة"], ["ملغاة", "معلقة"]),
]


@pytest.mark.parametrize("field,value,stored", FORM_SHAPES)
def test_app_settings_values_in_every_shape_salla_sends(field, value, stored):
    """Issue 15 item 24: app settings values arrive as scalars, as text and as one-item lists;
    each is read as the value it carries (None: refused with a reason, never a 500)."""
    registry = StoreRegistry(fakeredis.FakeRedis(decode_responses=True), "lpr:")
    outcome = registry.apply_form(M, {field: value}, 1000.0, "test")
    if stored is None:
        assert field in outcome["rejected"]
        return
    assert outcome["applied"] == [field], outcome
    got = registry.config(M)[field]
    assert (sorted(got) if isinstance(stored, list) else got) == (sorted(stored) if isinstance(stored, list) else stored)


@pytest.mark.parametrize("value", [[""], [None], [], ""])
def test_an_empty_app_settings_value_in_any_shape_resets_the_field(value):
    """Issue 15 item 24: an empty one-item list is an empty value: back to the default."""
    registry = StoreRegistry(fakeredis.FakeRedis(decode_responses=True), "lpr:")
    registry.set_config(M, language="en")
    assert registry.apply_form(M, {"language": value}, 1000.0, "test")["reset"] == ["language"]
    assert "language" not in registry.config(M)


@pytest.mark.parametrize("value,flag", [(True, 1), ("true", 1), ("TRUE", 1), (" True ", 1), (["true"], 1), ([True], 1),
                                        (False, 0), ("false", 0), ("False", 0), (["false"], 0), ([0], 0), ("0", 0)])
def test_a_yes_no_value_as_a_boolean_as_text_or_in_a_one_item_list(value, flag):
    """Issue 15 item 24: "true" as text (any case) and in a one-item list reads as true."""
    assert CONFIG_FIELDS["paused"](form_value(value)) == flag


def test_the_webhook_and_the_app_api_read_list_shaped_values(sandbox):
    """Issue 15 item 24: app.settings.updated and GET /apps/{id}/settings with list-shaped values."""
    store = fakeredis.FakeRedis(decode_responses=True)
    app = create_app(make_settings(), redis_client=store, queue=NoQueue())
    event = {"event": "app.settings.updated", "merchant": M, "created_at": "2026-11-25 10:00:00",
             "data": {"settings": {"language": ["en"], "min_points": ["25"], "timezone": ["Asia/Dubai"]}}}
    body = _signed(app.test_client(), event).get_json()
    assert body["applied"] == ["language", "min_points", "timezone"] and body["rejected"] == {}
    requests.put(f"{sandbox.url}/_sandbox/stores/{M}/app-settings",
                 json={"language": ["ar"], "min_points": "40", "quiet_hours": ["off"]}).raise_for_status()
    rt = sandbox_runtime(sandbox)
    assert app_settings.fetch_and_apply(rt, M) == "applied"
    assert rt.registry.config(M) == {"language": "ar", "min_points": 40, "quiet_hours": "off"}
