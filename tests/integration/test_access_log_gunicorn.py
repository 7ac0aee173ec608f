"""gunicorn's access log with WEB_ACCESS_LOG=1, from a real gunicorn process started as the
Procfile starts it (`-c python:service.web.gunicorn_conf`): every request has its line, and no URL
secret is in any line (issue 15 item 5)."""
from __future__ import annotations

import json
import sys

import pytest
import requests

from devkit.processes import ManagedProcess
from devkit.redis_server import free_port
from service.domain.unsubscribe import callback_token, make_token
from tests.conftest import TOKEN_KEY
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.integration

M = 1305146709


def test_the_access_log_of_a_real_gunicorn_has_no_url_secret(service_env, tmp_path):
    port = free_port()
    env = dict(service_env, PORT=str(port), BIND_ADDRESS="127.0.0.1", WEB_ACCESS_LOG="1",
               WHATSAPP_VERIFY_TOKEN="meta-verify-token-0123456789")
    web = ManagedProcess([sys.executable, "-m", "gunicorn", "-c", "python:service.web.gunicorn_conf", "--workers", "1",
                          "service.web.app:create_app()"], env, tmp_path / "web.log", ready_text="Booting worker")
    web.start()
    url = f"http://127.0.0.1:{port}"
    unsubscribe, dlr = make_token((TOKEN_KEY,), M, 42), callback_token((TOKEN_KEY,), M)
    try:
        wait_until(lambda: _answers(url + "/healthz"), message="gunicorn answering")
        assert requests.get(f"{url}/unsubscribe/{unsubscribe}", timeout=5).status_code == 200
        assert requests.post(f"{url}/unsubscribe/{unsubscribe}", timeout=5,
                             headers={"Referer": f"{url}/unsubscribe/{unsubscribe}"}).status_code == 200
        assert requests.post(f"{url}/channels/sms/{M}/dlr/{dlr}?messageId=1&status=delivered",
                             timeout=5).status_code == 200
        assert requests.get(f"{url}/channels/whatsapp/status", timeout=5, params={
            "hub.mode": "subscribe", "hub.verify_token": "meta-verify-token-0123456789",
            "hub.challenge": "42"}).text == "42"
        lines = wait_until(lambda: _access_lines(web.log_text(), 5), timeout=10, message="the access lines")
    finally:
        web.stop()
    text = web.log_text()
    for secret in (unsubscribe, dlr, "meta-verify-token-0123456789"):
        assert secret not in text
    assert any('"POST /unsubscribe/[redacted]" 200' in line for line in lines), lines
    assert any(f'"POST /channels/sms/{M}/dlr/[redacted]" 200' in line for line in lines), lines


def _answers(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def _access_lines(text: str, at_least: int) -> list[str] | None:
    lines = []
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue
        if line.get("logger") == "gunicorn.access":
            lines.append(line["msg"])
    return lines if len(lines) >= at_least else None
