"""A store's figures for its page in the Salla dashboard, kept as reminders happen, not scanned.

Written where the ledger counts a reminder as sent (service/state/ledger.py mark_sent) and where
points saved are settled (workers/reminding.py after_read); read by service/web/embedded_view.py in
one pipelined round trip, whatever the store's size (bench/embedded_page.py measures it).

    week:<YYYY-Www>    hash  <stage>:sent, <stage>:points_reminded, <stage>:points_saved
    month:<YYYY-MM>    hash  sent, points_reminded, points_saved
    reached:<YYYY-MM>  HyperLogLog of the customers a reminder reached (a count, ~1 % error,
                       12 KB at most; no list of customers to erase)
    recent             list  the last RECENT_KEPT reminder ids sent, newest first

Weeks and months are Riyadh's (UTC+3, no daylight saving): Salla's merchants are Saudi, and a
fixed zone keeps a count from moving between two weeks when a setting changes.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import redis

from service.state.keys import Keys

RIYADH = timezone(timedelta(hours=3))
WEEKS_SHOWN = 8
WEEK_KEEP_SECONDS = 120 * 86400  # the chart's weeks, with room to spare
MONTH_KEEP_SECONDS = 400 * 86400  # a year back, for a month-on-month comparison later
RECENT_KEPT = 20
RECENT_KEEP_SECONDS = 400 * 86400


def week_label(at: float) -> str:
    year, week, _ = datetime.fromtimestamp(at, RIYADH).isocalendar()
    return f"{year}-W{week:02d}"


def month_label(at: float) -> str:
    return datetime.fromtimestamp(at, RIYADH).strftime("%Y-%m")


def weeks_back(now: float, count: int = WEEKS_SHOWN) -> list[tuple[str, str]]:
    """(label, the Monday it starts, ISO date) of the last `count` weeks, oldest first."""
    today = datetime.fromtimestamp(now, RIYADH).date()
    monday = today - timedelta(days=today.weekday())
    weeks = []
    for back in range(count - 1, -1, -1):
        start = monday - timedelta(weeks=back)
        year, week, _ = start.isocalendar()
        weeks.append((f"{year}-W{week:02d}", start.isoformat()))
    return weeks


def record_sent(store: redis.Redis, keys: Keys, merchant_id: int, customer_id: int, parts: list[tuple[int, int]],
                reminder_id: str, at: float) -> None:
    """A reminder reached its shopper (counted once: the ledger calls this the first time only).
    `parts`: (stage, points) of every stage the message names (one message may carry several
    stages due together); each stage counts it, as the ledger's stats do, the month once."""
    k = keys.store(merchant_id)
    week, month, reached = k.week(week_label(at)), k.month(month_label(at)), k.reached(month_label(at))
    pipe = store.pipeline(transaction=True)  # one store, one hash slot
    for stage, points in parts:
        pipe.hincrby(week, f"{stage}:sent", 1)
        pipe.hincrby(week, f"{stage}:points_reminded", int(points))
    pipe.expire(week, WEEK_KEEP_SECONDS)
    pipe.hincrby(month, "sent", 1)
    pipe.hincrby(month, "points_reminded", sum(int(points) for _, points in parts))
    pipe.expire(month, MONTH_KEEP_SECONDS)
    pipe.pfadd(reached, str(customer_id))
    pipe.expire(reached, MONTH_KEEP_SECONDS)
    pipe.lpush(k.recent, reminder_id)
    pipe.ltrim(k.recent, 0, RECENT_KEPT - 1)
    pipe.expire(k.recent, RECENT_KEEP_SECONDS)
    pipe.execute()


def message_parts(stage: int, body: dict) -> list[tuple[int, int]]:
    """(stage, points) of a reminder's own stage and of the `other_stages` it carries, if any."""
    parts = [(int(stage), int(body.get("points_expiring") or 0))]
    for other in body.get("other_stages") or ():
        if isinstance(other, dict) and str(other.get("stage_days", "")).isdigit():
            parts.append((int(other["stage_days"]), int(other.get("points_expiring") or 0)))
    return parts


def record_saved(store: redis.Redis, keys: Keys, merchant_id: int, stage: int, points: int, at: float) -> None:
    """Points of reminded lots seen used before their expiry (service/domain/outcomes.py settles them)."""
    if points <= 0:
        return
    k = keys.store(merchant_id)
    week, month = k.week(week_label(at)), k.month(month_label(at))
    pipe = store.pipeline(transaction=True)
    pipe.hincrby(week, f"{stage}:points_saved", int(points))
    pipe.expire(week, WEEK_KEEP_SECONDS)
    pipe.hincrby(month, "points_saved", int(points))
    pipe.expire(month, MONTH_KEEP_SECONDS)
    pipe.execute()


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def read(store: redis.Redis, keys: Keys, merchant_id: int, now: float, weeks: int = WEEKS_SHOWN) -> dict:
    """This month's figures, the last `weeks` weeks per stage, and the latest reminder ids."""
    k = keys.store(merchant_id)
    shown = weeks_back(now, weeks)
    pipe = store.pipeline(transaction=False)
    pipe.hgetall(k.month(month_label(now)))
    pipe.pfcount(k.reached(month_label(now)))
    pipe.lrange(k.recent, 0, RECENT_KEPT - 1)
    for label, _ in shown:
        pipe.hgetall(k.week(label))
    month, reached, recent, *week_rows = pipe.execute()
    month = {_text(name): int(value) for name, value in month.items()}
    series = []
    for (label, start), row in zip(shown, week_rows):
        stages: dict[int, dict[str, int]] = {}
        for name, value in row.items():
            stage, _, metric = _text(name).partition(":")
            if stage.isdigit():
                stages.setdefault(int(stage), {})[metric] = int(value)
        series.append({"week": label, "start": start, "stages": stages})
    return {"month": {"label": month_label(now), "sent": month.get("sent", 0),
                      "points_reminded": month.get("points_reminded", 0),
                      "points_saved": month.get("points_saved", 0), "reached": int(reached)},
            "weeks": series, "recent": [_text(rid) for rid in recent]}
