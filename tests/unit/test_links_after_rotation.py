"""Unsubscribe links and SMS delivery-report URLs outlive a rotation of TOKEN_ENCRYPTION_KEY: they
are signed with the deployment's `links` secret (service/state/deployment_secrets.py), which
rotate-token-keys re-wraps and never changes. And an unsubscribe click keeps DATA_RETENTION_DAYS."""
from __future__ import annotations

import fakeredis
import requests
from cryptography.fernet import Fernet

from service.domain.events import Customer
from service.domain.unsubscribe import SHARED_DLR, callback_token, make_token
from service.ops.runtime import build_runtime
from service.state import deployment_secrets
from service.web.app import create_app
from tests.conftest import TOKEN_KEY, make_settings

M, C = 1305146709, 1001
ADMIN = "adm-token-for-the-tests-0123456789abcdef"
REPORT = {"MessageID": "nope", "Status": "Delivered"}


def _app(server, **env):
    settings = make_settings(ADMIN_TOKEN=ADMIN, SMTP_URL="smtp://mail.example:25", EMAIL_FROM="shop@example.sa",
                             REMINDER_CHANNELS="email", **env)
    store = fakeredis.FakeRedis(server=server, decode_responses=True)
    rt = build_runtime(settings, store, requests.Session())
    return create_app(settings, redis_client=store, queue=object()).test_client(), rt


def _path(url: str) -> str:
    return "/" + url.split("://", 1)[1].split("/", 1)[1]


def test_links_and_report_urls_made_before_a_rotation_work_after_the_old_key_is_dropped():
    """Issue 15: the e-mail's unsubscribe link and the report URLs (as GET /admin/.../channels shows
    them) made under the old key still work once `new,old`, rotate-token-keys, then `new` alone;
    they were signed under TOKEN_ENCRYPTION_KEY, so the shopper got "This link is not valid" and
    every delivery report a 404. Forged ones (other ids, the dropped key) are still refused."""
    server = fakeredis.FakeServer()
    deployment_secrets.forget_cache()
    client, rt = _app(server)
    rt.profiles.save(M, Customer(C, "سارة", "+966500000001", "sara@example.sa", True))
    [email], _ = rt.directory.build(M)
    link = email.unsubscribe({"merchant_id": M, "customer_id": C})
    urls = client.get(f"/admin/stores/{M}/channels", headers={"Authorization": f"Bearer {ADMIN}"}).get_json()["callbacks"]
    own, shared = _path(urls["sms_delivery_reports"]), _path(urls["sms_delivery_reports_shared_account"])

    new = Fernet.generate_key().decode()
    deployment_secrets.rotate_all(rt.store, rt.settings.redis_key_prefix, (new, TOKEN_KEY))  # new,old
    deployment_secrets.forget_cache()
    client, rt = _app(server, TOKEN_ENCRYPTION_KEY=new)  # old dropped

    assert client.post(own, json=REPORT).status_code == 200
    assert client.post(shared, json=REPORT).status_code == 200
    assert client.get(_path(link)).status_code == 200
    assert client.post(_path(link)).status_code == 200
    assert rt.profiles.load(M, C).notifications_enabled is False

    assert client.post(own.replace(f"/{M}/", f"/{M + 1}/"), json=REPORT).status_code == 404
    assert client.post(own[:-6] + "000000", json=REPORT).status_code == 404
    assert client.post(f"/unsubscribe/{make_token((TOKEN_KEY,), M, C)}").status_code == 404  # the dropped key
    forged = make_token((Fernet.generate_key().decode(),), M, C + 1)
    assert client.post(f"/unsubscribe/{forged}").status_code == 404
    assert client.post(f"/channels/sms/{M}/dlr/{callback_token((TOKEN_KEY,), M)}", json=REPORT).status_code == 404


def test_links_made_by_the_old_code_verify_while_their_token_key_is_listed():
    """Issue 15: a link or report URL made before this release (MAC under TOKEN_ENCRYPTION_KEY)
    still works, also during a rotation (`new,old`), until the old key is dropped."""
    server = fakeredis.FakeServer()
    deployment_secrets.forget_cache()
    new = Fernet.generate_key().decode()
    client, rt = _app(server, TOKEN_ENCRYPTION_KEY=f"{new},{TOKEN_KEY}")
    rt.profiles.save(M, Customer(C, "سارة", "+966500000001", "sara@example.sa", True))
    assert client.post(f"/channels/sms/{M}/dlr/{callback_token((TOKEN_KEY,), M)}", json=REPORT).status_code == 200
    assert client.post(f"/channels/sms/dlr/{callback_token((TOKEN_KEY,), 0, SHARED_DLR)}", json=REPORT).status_code == 200
    assert client.post(f"/unsubscribe/{make_token((TOKEN_KEY,), M, C)}").status_code == 200
    assert rt.profiles.load(M, C).notifications_enabled is False


def test_an_unsubscribe_click_keeps_the_profile_no_longer_than_data_retention_days():
    """Issue 15: with DATA_RETENTION_DAYS=30 the click set the profile's TTL to 400 days (the web
    built Profiles without the retention), and the customer's lots followed it."""
    server = fakeredis.FakeServer()
    deployment_secrets.forget_cache()
    client, rt = _app(server, DATA_RETENTION_DAYS="30")
    rt.profiles.save(M, Customer(C, "سارة", "+966500000001", "sara@example.sa", True))
    assert client.post(f"/unsubscribe/{make_token((TOKEN_KEY,), M, C)}").status_code == 200
    assert rt.profiles.load(M, C).notifications_enabled is False
    assert 0 < rt.store.ttl(rt.keys.store(M).profile(C)) <= 30 * 86400
