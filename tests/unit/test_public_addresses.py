"""Issue 15 item 2: a store's channel addresses reach public addresses only, and signed posts
are never redirected (service/domain/public_address.py, service/clients/providers/public_only.py)."""
from __future__ import annotations

import socket
import threading

import fakeredis
import pytest
import requests
from flask import Flask, redirect, request

from devkit.providers import SmtpFake
from devkit.sandbox import serve_in_thread
from service.web.app import create_app
from service.state.channel_settings import ChannelSettings
from service.state.stores import ConfigError, StoreRegistry
from tests.conftest import make_settings
from service.clients.channels import ChannelDirectory, WebhookChannel
from service.clients.providers.base import DeliveryPermanentError
from service.clients.providers.whatsapp import WhatsAppChannel

M = 77
PUBLIC = "93.184.215.14"  # a public address (example.com's, once); DNS answers are faked here
SECRET = "hook-secret-123456"
REMINDER = {
    "reminder_id": "ab" * 16, "merchant_id": M, "customer_id": 5,
    "customer": {"name": "سارة", "mobile": "+966501234567", "email": "sara@example.com"},
    "stage_days": 7, "points_expiring": 400, "earliest_expiry": "2026-11-29T23:59:00+03:00",
    "language": "ar", "value_sar": 20.0, "message": "", "lots": [{"key": "a", "expires_at": "2026-11-29T23:59:00+03:00"}],
    "generated_at": "2026-11-22T09:00:00+00:00",
}


class FakeDns:
    """socket.getaddrinfo with answers of our own for some names, the real resolver for the rest
    (literal addresses, localhost). `rebind`: one answer per lookup, the last one repeated."""

    def __init__(self, monkeypatch):
        self.answers: dict[str, list[tuple[str, ...]]] = {}
        real = socket.getaddrinfo

        def getaddrinfo(host, port, *args, **kwargs):
            if host not in self.answers:
                return real(host, port, *args, **kwargs)
            queue = self.answers[host]
            addresses = queue.pop(0) if len(queue) > 1 else queue[0]
            return [(socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, int(port or 0)))
                    for a in addresses]

        monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    def point(self, host: str, *addresses: str) -> None:
        self.answers[host] = [addresses]

    def rebind(self, host: str, *answers: tuple[str, ...]) -> None:
        self.answers[host] = list(answers)


@pytest.fixture
def dns(monkeypatch):
    return FakeDns(monkeypatch)


def channel_settings(**env) -> ChannelSettings:
    return ChannelSettings(fakeredis.FakeRedis(), "t:", make_settings(**env))


WA = {"phone_number_id": "1098765432", "access_token": "x" * 20, "template_name": "points_expiry_reminder"}


@pytest.mark.parametrize("changes, field, reason", [
    ({"webhook": {"url": "https://127.0.0.1/hook", "secret": SECRET}}, "webhook.url", "loopback"),
    ({"webhook": {"url": "https://10.1.2.3/hook", "secret": SECRET}}, "webhook.url", "private"),
    ({"webhook": {"url": "https://169.254.169.254/latest/meta-data/", "secret": SECRET}}, "webhook.url", "link-local"),
    ({"webhook": {"url": "https://[::1]:8443/hook", "secret": SECRET}}, "webhook.url", "loopback"),
    ({"webhook": {"url": "https://[::ffff:10.0.0.1]/hook", "secret": SECRET}}, "webhook.url", "private"),
    ({"webhook": {"url": "https://0.0.0.0/hook", "secret": SECRET}}, "webhook.url", "unspecified"),
    ({"webhook": {"url": "https://2130706433/hook", "secret": SECRET}}, "webhook.url", "loopback"),  # 127.0.0.1
    ({"webhook": {"url": "https://localhost/hook", "secret": SECRET}}, "webhook.url", "loopback"),
    ({"webhook": {"url": "https://inside.example/hook", "secret": SECRET}}, "webhook.url",
     "inside.example resolves to 127.0.0.1"),
    ({"webhook": {"url": "https://mixed.example/hook", "secret": SECRET}}, "webhook.url", "private"),
    ({"webhook": {"url": "http://hooks.example/hook", "secret": SECRET}}, "webhook.url", "https://"),
    ({"webhook": {"url": "https://user:pw@hooks.example/hook", "secret": SECRET}}, "webhook.url", "user name"),
    ({"whatsapp": {"api_url": "https://172.16.0.9/v21.0", **WA}}, "whatsapp.api_url", "private"),
    ({"sms": {"provider": "taqnyat", "api_url": "https://224.0.0.1", "api_key": "k" * 12, "sender": "S"}},
     "sms.api_url", "multicast"),
    ({"email": {"smtp_url": "smtp://relay:s3cret-pass@192.168.1.5:25", "from": "r@store.example"}},
     "email.smtp_url", "private"),
    ({"email": {"smtp_url": "smtps://inside.example:465", "from": "r@store.example"}}, "email.smtp_url", "loopback"),
])
def test_non_public_addresses_are_refused_when_saved(dns, changes, field, reason):
    """Issue 15 item 2: loopback, private, link-local (cloud metadata), multicast, unspecified
    and names resolving to them, http:// and user:password@ are refused when saved, naming why."""
    dns.point("inside.example", "127.0.0.1")
    dns.point("hooks.example", PUBLIC)
    dns.point("mixed.example", PUBLIC, "10.0.0.7")  # one public address is not enough: every one must be
    cs = channel_settings()
    with pytest.raises(ConfigError, match=field) as info:
        cs.update(M, changes)
    assert reason in str(info.value)
    assert "s3cret-pass" not in str(info.value)
    assert cs.stored(M) == {}  # nothing kept


def test_public_addresses_are_kept_and_allow_private_urls_opens_the_rest(dns):
    """The other side of item 2: a name resolving to public addresses only is kept;
    ALLOW_PRIVATE_URLS=1 (local development) accepts loopback and http://."""
    dns.point("hooks.example", PUBLIC)
    cs = channel_settings()
    cs.update(M, {"webhook": {"url": "https://hooks.example/hook", "secret": SECRET},
                  "email": {"smtp_url": "smtps://user:pw@hooks.example:465", "from": "r@store.example"}})
    assert cs.effective(M).of("webhook")["url"] == "https://hooks.example/hook"
    local = channel_settings(ALLOW_PRIVATE_URLS="1")
    local.update(M, {"webhook": {"url": "http://127.0.0.1:8080/hook", "secret": SECRET}})
    assert local.effective(M).of("webhook")["url"] == "http://127.0.0.1:8080/hook"


def test_the_admin_api_answers_400_naming_the_reason():
    """Issue 15 item 2: the refusal is a clear 4xx through PUT /admin/stores/M/channels."""
    token = "admin-token-" + "x" * 32
    app = create_app(make_settings(ADMIN_TOKEN=token), redis_client=fakeredis.FakeRedis(decode_responses=True))
    answer = app.test_client().put(f"/admin/stores/{M}/channels", headers={"Authorization": f"Bearer {token}"},
                                   json={"webhook": {"url": "https://169.254.169.254/latest", "secret": SECRET}})
    assert answer.status_code == 400
    assert "webhook.url" in answer.json["message"] and "link-local" in answer.json["message"]


class Listener:
    """A plain TCP listener on loopback that counts connections and bytes received."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.connections, self.received = 0, b""
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            conn.settimeout(2)
            try:
                self.received += conn.recv(65536)
            except OSError:
                pass
            conn.close()

    def close(self):
        self.server.close()


@pytest.fixture
def listener():
    server = Listener()
    yield server
    server.close()


def directory_with(dns, changes, **env):
    settings = make_settings(**env)
    store = fakeredis.FakeRedis(decode_responses=True)
    ChannelSettings(store, settings.redis_key_prefix, settings).update(M, changes)
    return ChannelDirectory(settings, store, requests.Session(), StoreRegistry(store, settings.redis_key_prefix))


@pytest.mark.parametrize("answers", [[("127.0.0.1",)], [(PUBLIC,), ("127.0.0.1",)]], ids=["check", "peer"])
def test_a_name_that_resolves_elsewhere_after_the_save_is_refused_at_connect_time(dns, listener, answers):
    """Issue 15 item 2: DNS changed after the save. `check`: the name resolves to loopback when
    the worker connects; `peer`: it resolves to a public address for the check and to loopback
    for the connection itself (rebinding): the peer is checked too. Nothing is sent."""
    dns.point("hooks.example", PUBLIC)
    directory = directory_with(dns, {"channels": ["webhook"], "webhook": {
        "url": f"https://hooks.example:{listener.port}/hook", "secret": SECRET}})
    dns.rebind("hooks.example", *answers)
    [webhook], _ = directory.build(M)
    with pytest.raises(DeliveryPermanentError) as info:
        webhook.send(REMINDER)
    assert info.value.reason == "non_public_address" and "loopback" in str(info.value)
    assert listener.received == b""


def test_a_store_s_smtp_server_is_checked_at_connect_time_too(dns):
    """Issue 15 item 2: the same for the SMTP connection: nothing reaches the server."""
    dns.point("mail.example", PUBLIC)
    with SmtpFake() as smtp:
        directory = directory_with(dns, {"channels": ["email"], "email": {
            "smtp_url": f"smtp://mail.example:{smtp.port}", "from": "r@store.example"}})
        dns.point("mail.example", "127.0.0.1")
        [email], _ = directory.build(M)
        with pytest.raises(DeliveryPermanentError) as info:
            email.send(REMINDER)
        assert info.value.reason == "non_public_address"
        assert smtp.messages == []


def test_allow_private_urls_lets_the_devkit_reach_its_local_fakes():
    """With ALLOW_PRIVATE_URLS=1 a store's loopback SMTP server is used (how the devkit runs)."""
    with SmtpFake() as smtp:
        directory = directory_with(None, {"channels": ["email"], "email": {"smtp_url": smtp.url,
                                                                           "from": "r@store.example"}},
                                   ALLOW_PRIVATE_URLS="1")
        [email], _ = directory.build(M)
        email.send(REMINDER)
        assert len(smtp.messages) == 1


@pytest.fixture
def redirecting():
    """A receiver that answers every POST with 307 to /elsewhere, and records what reaches /elsewhere."""
    app, followed = Flask("redirecting"), []

    @app.post("/hook")
    @app.post("/v21.0/1098765432/messages")
    def hook():
        return redirect("/elsewhere", code=307)

    @app.post("/elsewhere")
    def elsewhere():
        followed.append(request.get_data())
        return {"messages": [{"id": "wamid.X"}]}

    with serve_in_thread(app) as server:
        server.followed = followed
        yield server


def test_a_signed_post_is_never_redirected(redirecting):
    """Issue 15 item 2: a 307 from the webhook receiver is not followed with the signed body and
    the shopper's contact details: the channel fails with a clear reason."""
    with pytest.raises(DeliveryPermanentError) as info:
        WebhookChannel(redirecting.url + "/hook", SECRET, requests.Session(), timeout=5).send(REMINDER)
    assert "307" in str(info.value) and "redirect" in str(info.value)
    assert redirecting.followed == []


def test_a_provider_post_is_never_redirected(redirecting):
    """Issue 15 item 2: the same for a provider's API (the bearer token and the mobile number)."""
    channel = WhatsAppChannel(M, {**WA, "api_url": redirecting.url + "/v21.0"}, requests.Session(), 5)
    with pytest.raises(DeliveryPermanentError):
        channel.send(REMINDER)
    assert redirecting.followed == []
