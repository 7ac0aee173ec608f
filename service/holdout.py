"""The holdout's report for one store: what reminders cause (issue 17, section 1).

A placeholder: the holdout branch replaces this module with the real measurement. Until then
every store reports the holdout as off, in the report's final shape, so that the embedded page
(service/embedded_view.py) renders the same dict it will get from the real one.
"""
from __future__ import annotations


def store_report(redis, prefix: str, merchant_id: int, settings, now: float) -> dict:
    """{"percent", "status": "off"|"not_enough_data"|"ok", "customers_needed", "effect", "ci95",
    "points_reminded", "points_saved", "sar_saved", "stages": [...]}: here always "off"."""
    return {"percent": 0, "status": "off", "customers_needed": None, "effect": None, "ci95": None,
            "points_reminded": 0, "points_saved": None, "sar_saved": None, "stages": []}
