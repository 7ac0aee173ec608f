"""The admin API's guard: token length, its own port, failed logins rate-limited per address, the audit."""
from __future__ import annotations

import json
import logging

import fakeredis
import pytest

from service.ops import admin_guard
from service.web.app import create_app
from tests.conftest import make_settings

TOKEN = "a-long-enough-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class NoQueue:
    def enqueue(self, message, task=None):
        raise AssertionError("admin never enqueues")


@pytest.fixture
def store():
    return fakeredis.FakeRedis(server=fakeredis.FakeServer(), decode_responses=True)


def app_for(store, **env):
    return create_app(make_settings(**env), redis_client=store, queue=NoQueue())


def test_a_short_token_turns_the_admin_api_off_and_says_why(store, caplog):
    with caplog.at_level(logging.ERROR, logger="service.web.app"):
        client = app_for(store, ADMIN_TOKEN="x" * 31).test_client()
    assert client.get("/admin/stores", headers={"Authorization": "Bearer " + "x" * 31}).status_code == 404
    [record] = [r for r in caplog.records if "admin API off" in r.getMessage()]
    assert "31 characters; at least 32" in record.getMessage() and "x" * 31 not in record.getMessage()
    assert "admin" not in client.get("/readyz").get_json()  # the log says why; the public port does not
    # The webhooks do not depend on it.
    assert client.get("/healthz").status_code == 200


def test_off_reasons_are_pure():
    assert admin_guard.admin_off_reason("") == "ADMIN_TOKEN is not set"
    assert admin_guard.admin_off_reason("y" * 32) is None
    assert admin_guard.admin_off_reason("y" * 5).startswith("ADMIN_TOKEN is 5 characters")


def test_a_32_character_token_opens_it(store):
    client = app_for(store, ADMIN_TOKEN=TOKEN).test_client()
    assert client.get("/admin/stores", headers=AUTH).status_code == 200
    assert client.get("/admin/health", headers=AUTH).get_json()["status"] == "ready"


def test_with_an_admin_port_admin_answers_there_only(store):
    client = app_for(store, ADMIN_TOKEN=TOKEN, ADMIN_PORT="9444").test_client()
    public = {"SERVER_PORT": "8000"}
    admin_port = {"SERVER_PORT": "9444"}
    assert client.get("/admin/stores", headers=AUTH, environ_overrides=public).status_code == 404
    assert client.get("/admin/stores", headers=AUTH, environ_overrides=admin_port).status_code == 200
    # The admin port serves nothing else (no webhooks, no callbacks).
    refused = client.post("/webhooks/salla", data=b"{}", environ_overrides=admin_port)
    assert refused.status_code == 404 and refused.is_json
    assert refused.get_json() == {"error": "not_found", "message": "the admin port serves /admin/* only"}
    assert len(refused.headers["X-Correlation-Id"]) == 16
    assert client.get("/healthz", environ_overrides=admin_port).status_code == 200


def test_admin_port_must_be_a_port():
    from service.config.settings import SettingsError

    with pytest.raises(SettingsError, match="ADMIN_PORT='x' is not a TCP port"):
        make_settings(ADMIN_PORT="x")
    with pytest.raises(SettingsError, match="METRICS_PORT='70000' is not a TCP port"):
        make_settings(METRICS_PORT="70000")


def test_failed_logins_are_limited_per_address(store):
    client = app_for(store, ADMIN_TOKEN=TOKEN, ADMIN_AUTH_FAILURES_PER_MINUTE="3").test_client()
    here, there = {"REMOTE_ADDR": "203.0.113.7"}, {"REMOTE_ADDR": "198.51.100.9"}
    wrong = {"Authorization": "Bearer wrong"}
    codes = [client.get("/admin/stores", headers=wrong, environ_overrides=here).status_code for _ in range(3)]
    assert codes == [401, 401, 401]
    limited = client.get("/admin/stores", headers=AUTH, environ_overrides=here)  # even the right token now
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert "too many failed admin logins" in limited.get_json()["message"]
    # Another address is not affected.
    assert client.get("/admin/stores", headers=AUTH, environ_overrides=there).status_code == 200
    # The failures live in Redis, in a key of their own that expires.
    key = "lpr:admin:auth-failures:203.0.113.7"
    assert store.zcard(key) == 3 and 0 < store.ttl(key) <= 61


def test_failures_leave_the_window_after_a_minute(store):
    attempts = admin_guard.FailedAttempts(store, "lpr:", limit=2)
    attempts.record("1.2.3.4", 1000.0)
    attempts.record("1.2.3.4", 1010.0)
    assert attempts.blocked_for("1.2.3.4", 1020.0) == pytest.approx(40.0)
    assert attempts.blocked_for("1.2.3.4", 1061.0) == 0.0  # the first one fell out of the minute


def test_every_change_is_audited_without_values(store, caplog):
    client = app_for(store, ADMIN_TOKEN=TOKEN).test_client()
    secret = "wa-access-token-value-never-logged"
    with caplog.at_level(logging.INFO, logger="service.ops.admin_guard"):
        client.put("/admin/stores/7", json={"paused": True, "point_value_sar": 0.05}, headers=AUTH,
                   environ_overrides={"REMOTE_ADDR": "10.0.0.5"})
        client.put("/admin/stores/7/channels", json={"whatsapp": {"access_token": secret}}, headers=AUTH)
        client.put("/admin/stores/7", json={"paused": "soon"}, headers=AUTH)  # refused: still audited, with 400
        client.get("/admin/stores", headers=AUTH)  # a read: not audited
        client.put("/admin/stores/7", json={"paused": False}, headers={"Authorization": "Bearer wrong"})  # no auth
    entries = client.get("/admin/audit", headers=AUTH).get_json()["entries"]
    assert [(e["method"], e["path"], e["status"]) for e in entries] == [
        ("PUT", "/admin/stores/7", 400), ("PUT", "/admin/stores/7/channels", 200), ("PUT", "/admin/stores/7", 200)]
    oldest = entries[-1]
    assert oldest["fields"] == ["paused", "point_value_sar"] and oldest["ip"] == "10.0.0.5"
    assert oldest["token"] == admin_guard.token_id(TOKEN) and TOKEN not in json.dumps(entries)
    assert entries[1]["fields"] == ["whatsapp.access_token"]
    assert secret not in json.dumps(entries) and secret not in caplog.text
    assert sum("admin change: PUT /admin/stores/7 ->" in r.getMessage() for r in caplog.records) == 2
    assert client.get("/admin/audit?limit=1", headers=AUTH).get_json()["entries"] == entries[:1]
    assert client.get("/admin/audit?limit=0", headers=AUTH).status_code == 400


def test_the_audit_keeps_the_newest(store):
    audit = admin_guard.AuditLog(store, "lpr:", keep=10)
    for n in range(15):
        audit.record({"at": n, "token": "t", "ip": "i", "method": "PUT", "path": f"/admin/x/{n}", "status": 200,
                      "fields": []})
    assert [e["at"] for e in audit.latest(100)] == list(range(14, 4, -1))


def test_field_names_are_names_only():
    assert admin_guard.field_names({"a": 1, "b": {"c": "secret", "d": {"e": 2}}, "f": {}}) == ["a", "b.c", "b.d.e", "f"]
    assert admin_guard.field_names(["not", "a", "dict"]) == []


def _shopper(store, merchant=7, customer=5):
    store.hset(f"lpr:{{store:{merchant}}}:customer:{customer}",
               mapping={"name": "سارة القحطاني", "mobile": "+966500000001", "email": "sara@example.sa"})


def test_every_read_of_personal_data_is_audited_without_the_data(store, caplog, monkeypatch, capsys):
    """Issue 15 item 4: reading a customer's personal data (the admin export; the CLI's
    export-customer and preview) is audited as changes are: who, when, whose (the path), the
    answer; never the name, mobile or e-mail it returned."""
    _shopper(store)
    client = app_for(store, ADMIN_TOKEN=TOKEN).test_client()
    with caplog.at_level(logging.INFO, logger="service.ops.admin_guard"):
        exported = client.get("/admin/stores/7/customers/5/export", headers=AUTH,
                              environ_overrides={"REMOTE_ADDR": "10.0.0.9"})
        missing = client.get("/admin/stores/7/customers/6/export", headers=AUTH)
        client.get("/admin/stores/7", headers=AUTH)  # no personal data: not audited
    assert exported.status_code == 200 and "+966500000001" in exported.get_data(as_text=True)
    assert missing.status_code == 404
    entries = client.get("/admin/audit", headers=AUTH).get_json()["entries"]
    assert [(e["method"], e["path"], e["status"], e.get("access")) for e in entries] == [
        ("GET", "/admin/stores/7/customers/6/export", 404, "personal data read"),
        ("GET", "/admin/stores/7/customers/5/export", 200, "personal data read")]
    assert entries[-1]["ip"] == "10.0.0.9" and entries[-1]["token"] == admin_guard.token_id(TOKEN)
    shown = json.dumps(entries, ensure_ascii=False) + caplog.text
    for personal in ("سارة", "+966500000001", "966500000001", "sara@example.sa"):
        assert personal not in shown
    assert "admin personal data read: GET /admin/stores/7/customers/5/export -> 200" in caplog.text
    # The CLI's reads of personal data land in the same audit.
    from service.cli import main as cli
    monkeypatch.setattr("service.cli.connect", lambda settings: store)
    store.sadd("lpr:stores", 7)  # the store installed the app
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", make_settings().token_encryption_keys[0])
    assert cli(["--json", "export-customer", "7", "5"]) == 0 and "sara@example.sa" in capsys.readouterr().out
    assert cli(["--json", "preview", "7", "5"]) == 0
    assert cli(["--json", "stores"]) == 0  # no personal data: not audited
    latest = client.get("/admin/audit?limit=2", headers=AUTH).get_json()["entries"]
    assert [(e["method"], e["path"], e["status"], e["access"]) for e in latest] == [
        ("CLI", "preview 7 5", 0, "personal data read"), ("CLI", "export-customer 7 5", 0, "personal data read")]
    assert latest[0]["token"].startswith("cli:")
    assert "sara@example.sa" not in json.dumps(latest) and "+966500000001" not in json.dumps(latest)


def test_personal_data_is_not_shown_when_its_read_cannot_be_audited(store, monkeypatch):
    """Issue 15 item 4: no unaudited read: when the audit cannot be written, the export is a 503."""
    import redis
    _shopper(store)
    client = app_for(store, ADMIN_TOKEN=TOKEN).test_client()

    def down(self, entry):
        raise redis.ConnectionError("audit down")
    monkeypatch.setattr(admin_guard.AuditLog, "record", down)
    answer = client.get("/admin/stores/7/customers/5/export", headers=AUTH)
    assert answer.status_code == 503 and "+966500000001" not in answer.get_data(as_text=True)
