"""bench/ingest.py: what it serves under each server, and the figures it prints."""
from __future__ import annotations

from bench.ingest import summarize, web_command


def _run(req_s: float, p99: float) -> dict:
    return {"req_s": req_s, "p50_ms": p99 / 2, "p99_ms": p99, "requests": 100, "non_2xx": 0,
            "found_in_redis": 100, "accepted": 100}


def test_every_rounds_ratio_is_printed_beside_the_median():
    """Issue 18, goal 3 (intake >= 0.75 x the floor in every one of 3 alternated rounds): the
    summary gives each round's ratio, not only the ratio of the medians, and the worst p99."""
    floor = [_run(1000, 20), _run(1200, 22), _run(1100, 21)]
    ours = [_run(800, 30), _run(850, 45), _run(900, 31)]
    summary = summarize(floor, ours, connections=64)
    assert summary["round_ratios"] == [0.8, 0.71, 0.82]
    assert summary["ratio"] == round(850 / 1100, 2)
    assert summary["ours_p99_ms_worst"] == 45
    assert summary["every_accepted_webhook_found"] is True


def test_a_run_longer_than_its_bodies_is_checked_against_the_bodies():
    """A run of more webhooks than distinct bodies sends repeats, answered 200 and dropped: the
    events found are the bodies, not the 2xx answers (granian's runs went past 40,000)."""
    floor = [_run(1000, 20)]
    ours = [dict(_run(4000, 30), requests=49935, accepted=49935, found_in_redis=40000)]
    summary = summarize(floor, ours, connections=64, bodies=40000)
    assert summary["every_accepted_webhook_found"] is True and summary["runs_with_repeats"] == 1
    lost = [dict(ours[0], found_in_redis=39000)]
    assert summarize(floor, lost, connections=64, bodies=40000)["every_accepted_webhook_found"] is False
    assert summarize(floor, [_run(800, 30)], connections=64)["runs_with_repeats"] == 0


def test_granian_serves_the_same_apps_with_the_procfiles_workers():
    """Issue 18, goal 3 (granian against gunicorn, both serving ours and the floor): granian gets
    the same app factory and WEB_CONCURRENCY workers; gunicorn runs the Procfile's `web` as is."""
    assert "service.web.app:create_app" in web_command("granian", "ours")
    assert "bench.ingest_floor:create_app" in web_command("granian", "floor")
    for kind in ("ours", "floor"):
        command = web_command("granian", kind)
        assert command.startswith("granian --interface wsgi --factory ")
        assert "--workers ${WEB_CONCURRENCY:-2}" in command and "--port ${PORT}" in command
    assert web_command("gunicorn", "ours").startswith("METRICS_PORT=")  # the Procfile's line
    assert '"bench.ingest_floor:create_app()"' in web_command("gunicorn", "floor")
