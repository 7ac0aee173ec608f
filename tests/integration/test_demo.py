"""`make demo` works: the README promises it to every newcomer."""
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_delivers_every_expected_reminder_and_stops_everything():
    result = subprocess.run([sys.executable, "-m", "devkit.demo"], capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "6 reminders reached the merchant's webhook (expected 6)" in result.stdout
    assert "To the shoppers: 6 WhatsApp messages, 6 SMS, 6 e-mails." in result.stdout
    assert "لديك 400 نقطة في متجر الورد" in result.stdout  # the Arabic text that went out
    assert "-> 200 {\"status\":\"duplicate\"}" in result.stdout
    assert "-> 401" in result.stdout
    assert "every process stopped" in result.stdout
