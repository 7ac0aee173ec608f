"""bench/growth.py (issue 18 goal 5, first half): CPU per read and plan against history length."""
from __future__ import annotations

from datetime import datetime, timezone

from bench.growth import PagesTransport, bare_read, history, pages_of, report, session_with


def figures(cost):
    return {n: {"ours": [cost(n)], "redis": [0.1], "bare": [n * 0.01], "plan": [cost(n) / 4], "parse": [1.0]}
            for n in (1, 60, 600, 6000)}


def test_the_report_tells_linear_growth_from_faster_growth():
    """Issue 18 goal 5: linear, no step that grows faster (the script says which)."""
    assert "linear" in report(figures(lambda n: 1 + 0.05 * n), [1, 60, 600, 6000], 1).splitlines()[-2]
    faster = report(figures(lambda n: 1 + 0.05 * n + 1e-5 * n * n), [1, 60, 600, 6000], 1)
    assert "GROWS FASTER THAN LINEAR" in faster


def test_the_transport_hands_out_every_page_of_a_customers_history():
    now = datetime(2026, 12, 1, tzinfo=timezone.utc)
    transport = PagesTransport({n: pages_of(history(n, now)) for n in (1, 130)}, [1, 130])
    session = session_with(transport)
    assert bare_read(session, 10_000_001) == 1
    assert bare_read(session, 20_000_001) == 130  # three pages of 60
