"""What the planner uses for one store: its own settings, else the environment's. Pure.

A store's `config` (service/state/stores.py) may set its time zone, quiet hours, stages, minimum
points, language and excluded statuses (from the admin API, the CLI or the merchant's
app-settings form in Salla). Whatever it leaves unset comes from Settings (STORE_TIMEZONE,
QUIET_HOURS, REMINDER_STAGES_DAYS, REMINDER_MIN_POINTS, REMINDER_LANGUAGE,
REMINDER_EXCLUDED_STATUSES). The values in `config` were checked when they were stored.
"""
from __future__ import annotations

from dataclasses import dataclass

from service.domain.send_window import QuietHours, parse_quiet_hours


@dataclass(frozen=True)
class StorePolicy:
    timezone: str
    quiet_hours: QuietHours | None
    stages_days: tuple[int, ...]
    min_points: int
    language: str
    excluded_statuses: tuple[str, ...]
    point_value_sar: float
    store_name: str
    holdout_percent: int = 0  # HOLDOUT_PERCENT (service/state/holdout.py)


def policy_for(settings, config: dict) -> StorePolicy:
    quiet = settings.quiet_hours if "quiet_hours" not in config else parse_quiet_hours(config["quiet_hours"])
    stages = settings.reminder_stages_days if "stages_days" not in config else \
        tuple(sorted({int(d) for d in config["stages_days"].split(",")}, reverse=True))
    return StorePolicy(
        timezone=config.get("timezone", settings.store_timezone),
        quiet_hours=quiet,
        stages_days=stages,
        min_points=config.get("min_points", settings.reminder_min_points),
        language=config.get("language", settings.reminder_language),
        excluded_statuses=tuple(config.get("excluded_statuses", settings.reminder_excluded_statuses)),
        point_value_sar=config.get("point_value_sar", settings.point_value_sar),
        store_name=config.get("store_name", ""),
        holdout_percent=config.get("holdout_percent", settings.holdout_percent),
    )
