"""A shopper's consent: profile fields applied in event-time order (a late retry of an older
customer.updated never turns notifications back on), and a suppression entry, holding no
personal data, that outlives a forgotten or erased profile."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import fakeredis
import pytest
import requests

from service.web.app import create_app
from service.domain.events import Customer
from service.state.keys import KEPT_AFTER_UNINSTALL
from service.domain.loyalty import Lot
from service.state.stores import UNINSTALLED
from service.state.tokens import StoreTokens
from service.domain.unsubscribe import make_token
from tests.conftest import make_settings
from tests.unit.test_channels_and_delivery import Recorder
from service.ops import personal_data
from workers import lifecycle, reminding, sync
from workers.delivery import deliver
from service.ops.runtime import build_runtime

M, C = 1305146709, 1001
NOW = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)
ADMIN = {"Authorization": "Bearer ops-admin-token-for-the-tests-0123456789"}
OLDER, NEWER = "Tue Nov 24 2026 10:00:00 GMT+0300", "Tue Nov 24 2026 10:05:00 GMT+0300"


def runtime(server=None):
    store = fakeredis.FakeRedis(server=server or fakeredis.FakeServer(), decode_responses=True)
    rt = build_runtime(make_settings(QUIET_HOURS="off"), store, requests.Session(), clock=lambda: NOW.timestamp())
    rt.tokens.save(M, StoreTokens("a", "r", 2e10, "customers.read"))
    rt.registry.set_state(M, "active")
    rt.channels = [Recorder("webhook")]
    return rt


def event(kind, created_at, customer_id=C, **customer):
    raw = {"id": customer_id, "name": "سارة", "mobile": "+966500000001", "email": "sara@example.sa"} | customer
    return {"event": kind, "merchant_id": M, "customer": raw, "event_created_at": created_at,
            "received_at": NOW.isoformat()}


def lots(days=3):
    return [Lot(key=f"l{days}", name="", points=100, used_points=0, status="مؤكدة",
                created_at=NOW - timedelta(days=300), expires_at=NOW + timedelta(days=days), order_id=None,
                reference_id=None)]


def planned(rt, customer_id=C) -> list:
    published = []
    reminding.after_read(rt, M, rt.profiles.load(M, customer_id), lots(), NOW, lambda *a: published.append(a))
    return published


# -- item 8 ---------------------------------------------------------------------------------------
def test_an_older_customer_updated_retried_after_a_newer_opt_out_does_not_turn_notifications_on():
    """Issue 15 item 8: the opt-out of 10:05 is applied first; Salla's retry of the 10:00
    event (notifications on) arrives after it and changes nothing about the flag."""
    rt = runtime()
    sync.accept_event(rt, event("customer.updated", NEWER, notifications_enabled=False, name="سارة ع"))
    sync.accept_event(rt, event("customer.updated", OLDER, notifications_enabled=True, name="سارة القديمة"))
    customer = rt.profiles.load(M, C)
    assert customer.notifications_enabled is False and customer.name == "سارة ع"
    assert planned(rt) == []
    # A newer event applies, field by field: an order (no flag) changes the name, not the flag.
    sync.accept_event(rt, event("order.created", "Tue Nov 24 2026 10:06:00 GMT+0300", name="سارة الجديدة"))
    assert rt.profiles.load(M, C).name == "سارة الجديدة" and rt.profiles.load(M, C).notifications_enabled is False
    # The shopper turns notifications on again in Salla (a newer event): reminders resume.
    sync.accept_event(rt, event("customer.updated", "Tue Nov 24 2026 11:00:00 GMT+0300", notifications_enabled=True))
    assert rt.profiles.load(M, C).notifications_enabled is True and planned(rt)


def test_an_older_opt_out_retried_after_a_newer_opt_in_cancels_nothing():
    """Issue 15 item 8: a stale opt-out neither writes the flag nor cancels pending reminders."""
    rt = runtime()
    sync.accept_event(rt, event("customer.updated", NEWER, notifications_enabled=True))
    assert planned(rt)
    pending = rt.due.customer_entries(M, C)
    sync.accept_event(rt, event("customer.updated", OLDER, notifications_enabled=False))
    assert rt.profiles.load(M, C).notifications_enabled is True
    assert rt.due.customer_entries(M, C) == pending


def test_the_unsubscribe_link_counts_as_newest_at_its_own_time():
    """Issue 15 item 8: an opt-out by our link at 12:00 is newer than Salla's events of 10:00."""
    server = fakeredis.FakeServer()
    rt = runtime(server)
    app = create_app(make_settings(), redis_client=fakeredis.FakeRedis(server=server, decode_responses=True),
                     queue=object())
    sync.accept_event(rt, event("customer.updated", OLDER, notifications_enabled=True))
    token = make_token(make_settings().token_encryption_keys, M, C)
    assert app.test_client().post(f"/unsubscribe/{token}").status_code == 200
    sync.accept_event(rt, event("customer.updated", NEWER, notifications_enabled=True))  # a late retry
    assert rt.profiles.load(M, C).notifications_enabled is False


def test_a_backfill_listing_is_the_state_at_its_own_time():
    """Issue 15 item 8: a retry of an event older than a backfill listing does not overwrite it."""
    rt = runtime()
    rt.profiles.save(M, Customer(C, "سارة من القائمة", "+966500000009", None, None), at=NOW.timestamp())
    sync.accept_event(rt, event("order.created", OLDER, name="سارة القديمة"))
    assert rt.profiles.load(M, C).name == "سارة من القائمة"


# -- item 9 ---------------------------------------------------------------------------------------
def _suppressed_dump(rt) -> str:
    return json.dumps(rt.store.hgetall(rt.keys.store(M).suppressed), ensure_ascii=False)


def test_a_forgotten_customer_who_unsubscribed_stays_unsubscribed_when_salla_sends_them_again():
    """Issue 15 item 9: forget erases the profile with its unsubscribe; the next order webhook
    re-creates the profile, and the suppression entry (keyed hashes, nothing personal) keeps
    them opted out; so does the same mobile or e-mail under a new customer id."""
    server = fakeredis.FakeServer()
    rt = runtime(server)
    app = create_app(make_settings(ADMIN_TOKEN=ADMIN["Authorization"][7:]),
                     redis_client=fakeredis.FakeRedis(server=server, decode_responses=True), queue=object())
    client = app.test_client()
    sync.accept_event(rt, event("order.created", OLDER))
    client.post(f"/unsubscribe/{make_token(make_settings().token_encryption_keys, M, C)}")
    assert client.delete(f"/admin/stores/{M}/customers/{C}", headers=ADMIN).status_code == 200
    assert not rt.store.exists(rt.keys.store(M).profile(C))
    dump = _suppressed_dump(rt)
    assert dump != "{}"
    for personal in (str(C), "سارة", "966500000001", "sara@example.sa"):
        assert personal not in dump
    sync.accept_event(rt, event("order.created", NEWER))  # Salla sends the customer again
    assert rt.profiles.load(M, C).notifications_enabled is False and planned(rt) == []
    # A new customer id with the same mobile (or the same e-mail) is the same shopper.
    sync.accept_event(rt, event("customer.created", NEWER, customer_id=2002, email=None))
    sync.accept_event(rt, event("customer.created", NEWER, customer_id=2003, mobile=None))
    assert planned(rt, 2002) == [] and planned(rt, 2003) == []
    sync.accept_event(rt, event("customer.created", NEWER, customer_id=2004, mobile="+966500000077",
                                email="other@example.sa"))
    assert planned(rt, 2004)  # somebody else: reminded


def test_a_salla_opt_out_survives_forget_until_a_newer_opt_in():
    """Issue 15 item 9: opted out in Salla, forgotten, then an order (which carries no flag):
    still opted out. A newer customer.updated turning notifications on lifts it."""
    server = fakeredis.FakeServer()
    rt = runtime(server)
    app = create_app(make_settings(ADMIN_TOKEN=ADMIN["Authorization"][7:]),
                     redis_client=fakeredis.FakeRedis(server=server, decode_responses=True), queue=object())
    sync.accept_event(rt, event("customer.updated", OLDER, notifications_enabled=False))
    assert app.test_client().delete(f"/admin/stores/{M}/customers/{C}", headers=ADMIN).status_code == 200
    sync.accept_event(rt, event("order.created", NEWER))
    assert rt.profiles.load(M, C).notifications_enabled is False and planned(rt) == []
    sync.accept_event(rt, event("customer.updated", "Wed Nov 25 2026 09:00:00 GMT+0300", notifications_enabled=True))
    assert rt.profiles.load(M, C).notifications_enabled is True and planned(rt)


def test_the_suppression_survives_uninstall_and_a_new_install():
    """Issue 15 item 9: uninstall erases every profile; the suppression entry is kept (it holds
    nothing personal) and applies when the store installs the app again."""
    rt = runtime()
    sync.accept_event(rt, event("order.created", OLDER))
    rt.profiles.unsubscribe(M, C, NOW.timestamp())
    rt.registry.set_state(M, UNINSTALLED)
    lifecycle.forget_store(rt, M)
    assert "suppressed" in KEPT_AFTER_UNINSTALL and not rt.store.exists(rt.keys.store(M).profile(C))
    rt.tokens.save(M, StoreTokens("a", "r", 2e10, "customers.read"))
    rt.registry.set_state(M, "active")
    sync.accept_event(rt, event("order.created", NEWER))
    assert rt.profiles.load(M, C).notifications_enabled is False and planned(rt) == []


def test_an_opt_out_recorded_only_in_the_profile_survives_uninstall():
    """Issue 15 item 9: a customer who opted out before suppression entries existed has only
    the profile's flag; the uninstall keeps a suppression entry for them before it erases the
    profile, so a reinstall does not remind them."""
    rt = runtime()
    sync.accept_event(rt, event("order.created", OLDER))
    sync.accept_event(rt, event("order.created", OLDER, customer_id=C + 1, mobile="+966500000002",
                                email="other@example.sa"))
    profile = rt.keys.store(M).profile(C)
    rt.store.hset(profile, mapping={"unsubscribed_at": f"{NOW.timestamp():.0f}", "notifications_enabled": "0"})
    rt.store.delete(rt.keys.store(M).suppressed)  # as an opt-out recorded before entries existed
    rt.registry.set_state(M, UNINSTALLED)
    assert lifecycle.forget_store(rt, M)["opt_outs_kept"] == 1
    assert not rt.store.exists(profile)
    rt.tokens.save(M, StoreTokens("a", "r", 2e10, "customers.read"))
    rt.registry.set_state(M, "active")
    sync.accept_event(rt, event("order.created", NEWER))
    sync.accept_event(rt, event("order.created", NEWER, customer_id=C + 1, mobile="+966500000002",
                                email="other@example.sa"))
    assert rt.profiles.load(M, C).notifications_enabled is False and planned(rt) == []
    assert planned(rt, C + 1)  # the customer who never opted out is reminded as before


def test_an_opt_out_recorded_only_in_the_profile_outlives_its_retention_after_the_resync():
    """Issue 15 item 9: opt-outs recorded before suppression entries existed live only in the
    profile, which DATA_RETENTION_DAYS expires; the next event re-created it without them and the
    customer was reminded. Beat's hourly resync writes their entries, once per store."""
    from workers import backfill
    rt = runtime()
    sync.accept_event(rt, event("order.created", OLDER))
    sync.accept_event(rt, event("order.created", OLDER, customer_id=C + 1, mobile="+966500000002",
                                email="other@example.sa"))
    rt.store.hset(rt.keys.store(M).profile(C), mapping={"notifications_enabled": "0"})
    rt.store.delete(rt.keys.store(M).suppressed)  # as an opt-out recorded before entries existed
    backfill.resync(rt, NOW.timestamp())
    assert rt.store.hget(rt.keys.store(M).state, personal_data.OPT_OUTS_KEPT)
    assert personal_data.keep_recorded_opt_outs(rt.store, rt.profiles, rt.keys, M, NOW.timestamp()) is None  # once
    rt.store.delete(rt.keys.store(M).profile(C))  # DATA_RETENTION_DAYS passed
    sync.accept_event(rt, event("order.created", NEWER))
    assert rt.profiles.load(M, C).notifications_enabled is False and planned(rt) == []
    assert planned(rt, C + 1)  # the customer who never opted out is reminded as before


def test_a_queued_reminder_is_not_sent_to_a_suppressed_customer_whose_profile_is_gone():
    """Issue 15 item 9: the delivery path asks too: the profile expired (retention), the
    suppression entry stays, the queued reminder is cancelled, not sent."""
    rt = runtime()
    sync.accept_event(rt, event("order.created", OLDER))
    [(m, c, reminder_id)] = planned(rt)
    rt.profiles.suppress(M, rt.profiles.load(M, C), "link", NOW.timestamp())  # as the link does
    rt.store.delete(rt.keys.store(M).profile(C))  # DATA_RETENTION_DAYS passed
    assert deliver(rt, m, c, reminder_id, NOW.timestamp()) == "cancelled"
    assert rt.channels[0].sent == []


def test_an_opt_out_holds_after_the_token_key_is_rotated_and_the_old_one_dropped(monkeypatch):
    """Issue 15 item 9: the suppression entries are keyed by the deployment's suppression secret,
    which rotate-token-keys re-wraps and never changes; keyed by TOKEN_ENCRYPTION_KEY itself, every
    entry of a forgotten customer was lost when the old key was dropped, and reminders resumed."""
    from cryptography.fernet import Fernet
    from service.state import deployment_secrets
    from tests.conftest import TOKEN_KEY
    server = fakeredis.FakeServer()
    rt = runtime(server)
    sync.accept_event(rt, event("order.created", OLDER))
    rt.profiles.unsubscribe(M, C, NOW.timestamp())
    personal_data.forget(rt.store, rt.settings.redis_key_prefix, M, C, NOW.timestamp(),
                         secrets=rt.settings.token_encryption_keys)
    new = Fernet.generate_key().decode()
    deployment_secrets.rotate_all(rt.store, rt.settings.redis_key_prefix, (new, TOKEN_KEY))  # new,old
    deployment_secrets.forget_cache()
    store = fakeredis.FakeRedis(server=server, decode_responses=True)
    rotated = build_runtime(make_settings(QUIET_HOURS="off", TOKEN_ENCRYPTION_KEY=new), store, requests.Session(),
                            clock=lambda: NOW.timestamp())  # old key dropped
    rotated.channels = [Recorder("webhook")]
    sync.accept_event(rotated, event("order.created", NEWER))
    assert rotated.profiles.load(M, C).notifications_enabled is False and planned(rotated) == []


@pytest.mark.parametrize("secrets", [("k1",), ("k2", "k1")])
def test_suppression_digests_are_keyed_and_survive_a_key_rotation(secrets):
    """Issue 15 item 9: entries are HMACs under the deployment's key (TOKEN_ENCRYPTION_KEY):
    written under the first, found under any listed, so a rotation keeps them."""
    from service.domain import suppression
    written = suppression.digests("k1", M, C, "+966 50 000 0001", "Sara@Example.SA ")
    assert written == suppression.digests("k1", M, C, "+966500000001", "sara@example.sa")
    assert set(written) <= set(suppression.lookups(secrets, M, C, "+966500000001", "sara@example.sa"))
    assert not set(written) & set(suppression.digests("k1", M + 1, C, "+966500000001", "sara@example.sa"))
    assert not set(written) & set(suppression.digests("k3", M, C, "+966500000001", "sara@example.sa"))
