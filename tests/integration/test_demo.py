"""`make demo` works: the README promises it to every newcomer."""
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_delivers_every_expected_reminder_and_stops_everything():
    result = subprocess.run([sys.executable, "-m", "devkit.demo"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # Issue 15 item 15: one message per customer; 1003 (7 and 30 days) and 1004 (1 and 30) get theirs together.
    assert "4 reminders reached the merchant's webhook (expected 4)" in result.stdout
    assert "To the shoppers: 4 WhatsApp messages, 4 SMS, 4 e-mails." in result.stdout
    assert "and  30-day stage    80 points" in result.stdout and "and  30-day stage   150 points" in result.stdout
    assert "لديك 400 نقطة في متجر الورد" in result.stdout  # the Arabic text that went out
    assert "-> 200 {\"status\":\"duplicate\"}" in result.stdout
    assert "-> 401" in result.stdout
    assert "every process stopped" in result.stdout
