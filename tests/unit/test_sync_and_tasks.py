"""The sync function with fakeredis and `responses`; the task options pinned."""
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import fakeredis
import pytest
import requests
import responses

from service.celery_config import HANDLE_EVENT_TASK, VISIBILITY_TIMEOUT_SECONDS, celery_config
from service.reminders import message_text, reminder_id
from tests.conftest import make_settings
from workers.backoff import MAX_COUNTDOWN_SECONDS, retry_countdown
from workers.salla_client import SallaClient, SallaTransientError
from workers.sync import sync_customer

RIYADH = ZoneInfo("Asia/Riyadh")
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=timezone.utc)
URL = "https://api.salla.dev/admin/v2/customers/loyalty/points"
MESSAGE = {"event": "order.created", "merchant_id": 1305146709,
           "customer": {"id": 225167971, "name": "Mohammed Ali", "mobile": "+966501806978",
                        "email": "m@example.com", "notifications_enabled": None}}


def row(expires_in: timedelta, points=100, used=0, order_id=1):
    local = (NOW + expires_in).astimezone(RIYADH)
    return {"name": "مخصصة", "points": points, "used_points": used, "status": "مؤكدة",
            "created_at": {"date": "2026-01-01 10:00:00.000000", "timezone_type": 3, "timezone": "Asia/Riyadh"},
            "expiry_date": local.strftime("%Y-%m-%d %H:%M:%S"), "order_id": order_id, "used_at": {}, "reference_id": None}


def answer(rows):
    return {"status": 200, "success": True, "data": rows,
            "pagination": {"count": len(rows), "total": len(rows), "perPage": 60, "currentPage": 1, "totalPages": 1,
                           "links": {}}}


class Recorder:
    name = "webhook"

    def __init__(self):
        self.reminders = []

    def send(self, reminder):
        self.reminders.append(reminder)


def run(settings=None, channel=None, store=None):
    settings = settings or make_settings()
    return sync_customer(MESSAGE, settings=settings, store=store or fakeredis.FakeRedis(decode_responses=True),
                         client=SallaClient(settings.salla_api_base_url, requests.Session(), 5),
                         channels=[channel or Recorder()], now=NOW)


@responses.activate
def test_points_expiring_in_3_days_give_one_7_day_reminder():
    responses.get(URL, json=answer([row(timedelta(days=3), 500, 100), row(timedelta(days=3, hours=2), 50, order_id=2),
                                    row(timedelta(days=90)), row(timedelta(days=2), 100, 100), row(-timedelta(days=1))]))
    channel = Recorder()
    result = run(channel=channel)
    [reminder] = channel.reminders
    assert result.lots == 5 and result.sent == 1
    assert reminder["stage_days"] == 7
    assert reminder["points_expiring"] == 450
    assert reminder["earliest_expiry"] == (NOW + timedelta(days=3)).astimezone(RIYADH).isoformat()
    assert reminder["earliest_expiry"].endswith("+03:00")
    assert reminder["customer"] == {"name": "Mohammed Ali", "mobile": "+966501806978", "email": "m@example.com"}
    assert [lot["remaining_points"] for lot in reminder["lots"]] == [400, 50]
    assert reminder["language"] == "ar" and "450" in reminder["message"]


@responses.activate
def test_nothing_expiring_gives_no_reminder():
    responses.get(URL, json=answer([row(timedelta(days=120)), row(-timedelta(days=3))]))
    channel = Recorder()
    assert run(channel=channel).reminders == [] and channel.reminders == []


@responses.activate
def test_a_repeated_sync_sends_nothing_new():
    responses.get(URL, json=answer([row(timedelta(days=3))]))
    store, channel = fakeredis.FakeRedis(decode_responses=True), Recorder()
    for _ in range(4):
        run(channel=channel, store=store)
    assert len(channel.reminders) == 1


@responses.activate
def test_unreadable_rows_are_skipped_and_logged(caplog):
    responses.get(URL, json=answer([row(timedelta(days=3)), {"points": "x"}]))
    result = run()
    assert result.unreadable_rows == 1 and result.sent == 1
    assert "unreadable loyalty row" in caplog.text


@responses.activate
def test_a_permanent_salla_error_is_recorded_with_store_and_customer(caplog):
    responses.get(URL, status=422, json={"status": 422, "success": False, "error": {"code": "error", "message": "bad"}})
    result = run()
    assert result.skipped == "salla 422"
    assert "merchant=1305146709 customer=225167971" in caplog.text


@responses.activate
def test_a_transient_salla_error_propagates_for_the_task_to_retry():
    responses.get(URL, status=503)
    with pytest.raises(SallaTransientError):
        run()


def test_without_a_token_the_sync_is_skipped_loudly(caplog):
    settings = make_settings(SALLA_ACCESS_TOKEN="")
    assert run(settings=settings).skipped == "no access token"
    assert "SALLA_ACCESS_TOKEN" in caplog.text


def test_reminder_id_depends_on_stage_and_lot_set_not_order():
    assert reminder_id(1, 2, 7, ["a", "b"]) == reminder_id(1, 2, 7, ["b", "a"])
    assert reminder_id(1, 2, 7, ["a"]) != reminder_id(1, 2, 1, ["a"])
    assert reminder_id(1, 2, 7, ["a"]) != reminder_id(1, 2, 7, ["a", "b"])


def test_messages_in_arabic_and_english():
    when = datetime(2026, 12, 1, tzinfo=RIYADH)
    assert message_text("en", "Sara", 40, when) == "Hi Sara, 40 of your loyalty points expire on 2026-12-01. Use them before they are gone!"
    assert "40" in message_text("ar", None, 40, when) and "عميلنا العزيز" in message_text("ar", None, 40, when)
    later = when + timedelta(days=3)
    assert message_text("en", "Sara", 40, when, later).startswith("Hi Sara, 40 of your loyalty points start expiring on 2026-12-01")
    assert "تبدأ" in message_text("ar", "سارة", 40, when, later)
    assert message_text("fr", "Sara", 1, when).startswith("Hi Sara")


def test_backoff_grows_with_jitter_and_honours_retry_after():
    assert 1 <= retry_countdown(0, rand=lambda: 0) <= 2
    assert retry_countdown(3, rand=lambda: 1) == 16
    assert retry_countdown(0, retry_after=30, rand=lambda: 0) == 30
    assert retry_countdown(50, rand=lambda: 1) == MAX_COUNTDOWN_SECONDS
    assert retry_countdown(0, retry_after=10**6) == MAX_COUNTDOWN_SECONDS
    assert MAX_COUNTDOWN_SECONDS * 4 <= VISIBILITY_TIMEOUT_SECONDS


def test_celery_settings_are_pinned():
    # A typo such as ignore_results=True is silently accepted by Celery: pin what matters.
    conf = celery_config(make_settings())
    assert conf["task_serializer"] == "json" and conf["accept_content"] == ["json"]
    assert conf["task_acks_late"] is True and conf["task_reject_on_worker_lost"] is True
    assert conf["task_ignore_result"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_transport_options"]["visibility_timeout"] == VISIBILITY_TIMEOUT_SECONDS


def test_task_options_are_pinned(monkeypatch):
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    from workers.celery import app
    app.loader.import_default_modules()
    task = app.tasks[HANDLE_EVENT_TASK]
    assert task.acks_late is True and task.ignore_result is True
    assert task.max_retries == 8
    assert task.name == "workers.tasks.handle_event"
