"""What parsing a webhook's envelope costs: bench/ingest.py measures the web against a floor
that only checks the HMAC and does one LPUSH."""
from __future__ import annotations

import json

import pytest

from service.domain import events
from tests.conftest import sample_bytes


def test_a_body_without_a_surrogate_escape_is_not_walked_for_one(monkeypatch):
    """Issue 18, goal 3 (intake >= 0.75 x the floor in every round): a lone surrogate can only
    come from a \\uD800-\\uDFFF escape in the raw body (UTF-8 bytes cannot hold one), so a body
    without such an escape, nearly every one, is not walked node by node (about 10 µs a
    webhook, as long as its json.loads); a body with one still is."""
    walked = []
    real = events.without_lone_surrogates
    monkeypatch.setattr(events, "without_lone_surrogates", lambda payload: walked.append(1) or real(payload))
    envelope = events.parse_envelope(sample_bytes("order.created.json"))
    assert envelope.event == "order.created" and walked == []
    arabic = json.dumps({"event": "order.created", "merchant": 1, "data": {"name": "محمد"}}, ensure_ascii=True).encode()
    assert events.parse_envelope(arabic).data == {"name": "محمد"} and walked == []  # \u0645...: not a surrogate


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\uDFFF", b"\\uDbff"])
def test_a_body_with_a_surrogate_escape_still_has_it_replaced(escape):
    """Issue 18, goal 3: the shortcut keeps issue 15's rule: each lone surrogate becomes U+FFFD."""
    body = b'{"event": "order.created", "merchant": 1, "data": {"n": "a' + escape + b'", "k\\udc00": 1}}'
    assert events.parse_envelope(body).data == {"n": "a\ufffd", "k\ufffd": 1}
