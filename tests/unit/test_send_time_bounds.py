"""Issue 15: a reminder must not go out twice without any worker dying. The channel's claim and
the delivery's lease follow the channels' timeout (SALLA_HTTP_TIMEOUT_SECONDS), which is bounded,
and SMTP's send has one deadline instead of a timeout per step."""
from __future__ import annotations

import socket
import threading
import time

import fakeredis
import pytest
import requests

from service.clients.channels import DeliveryTransientError
from service.clients.providers.email import EmailChannel
from service.config.settings import SettingsError
from service.domain.messages import Renderer
from service.ops.runtime import build_runtime
from tests.conftest import make_settings
from workers.delivery import queue_reminder

RID = "c0ffee00c0ffee00c0ffee00c0ffee00"
REMINDER = {
    "reminder_id": RID, "merchant_id": 1, "customer_id": 2,
    "customer": {"name": "سارة", "mobile": "+966501234567", "email": "sara@example.com"},
    "stage_days": 7, "points_expiring": 400, "earliest_expiry": "2026-11-28T12:00:00+03:00",
    "language": "ar", "message": "مرحباً سارة", "lots": [{"key": "a"}], "generated_at": "2026-11-25T12:00:00+00:00",
}
NOW = 1_800_000_000.0
KINDS = 5  # log, webhook, whatsapp, sms, email: the most channels one attempt sends on


def worst_send(timeout: float) -> float:
    """One channel's send at its worst: an HTTP request's connect and read, each up to the timeout
    (SMTP: its whole send has a deadline of the same length)."""
    return 2 * timeout


@pytest.mark.parametrize("timeout", ["0.1", "1", "5", "10", "15", "29.9", "30"])
def test_the_claim_and_the_lease_outlast_the_worst_send_for_any_accepted_timeout(timeout):
    """Issue 15: the claim was a fixed 30 s and the lease 90 s whatever the timeout, so a slow send
    outlived its claim and the sweep's next attempt took it over and sent again. Now, for every
    accepted setting, a channel's claim outlasts its worst send and the lease every channel's."""
    rt = build_runtime(make_settings(SALLA_HTTP_TIMEOUT_SECONDS=timeout), fakeredis.FakeRedis(decode_responses=True),
                       requests.Session(), clock=lambda: NOW)
    t = float(timeout)
    queue_reminder(rt, REMINDER, 86400, NOW, lambda *a: None)
    [(_, lease_ends)] = rt.store.zrange(rt.due.scheduled_key, 0, -1, withscores=True)
    assert lease_ends - NOW > KINDS * worst_send(t)
    attempt = rt.ledger.begin_attempt(1, RID, NOW)
    assert rt.ledger.claim_channel(1, RID, "email", attempt, NOW) == "ok"
    claimed_until = float(rt.ledger.get(1, RID).channels["email"].rsplit(":", 1)[-1])
    assert claimed_until - NOW > worst_send(t)
    # Another attempt finds it busy until after the slowest send could have ended.
    assert rt.ledger.claim_channel(1, RID, "email", attempt + 1, NOW + worst_send(t)).startswith("busy:")


@pytest.mark.parametrize("timeout", ["31", "300"])
def test_a_timeout_above_the_bound_is_refused_at_start_naming_it(timeout):
    """Issue 15: SALLA_HTTP_TIMEOUT_SECONDS had no upper bound; now above 30 it stops the start
    with a message naming the variable and the bound."""
    with pytest.raises(SettingsError, match=r"SALLA_HTTP_TIMEOUT_SECONDS=.*maximum 30"):
        make_settings(SALLA_HTTP_TIMEOUT_SECONDS=timeout)


class SlowSmtp:
    """An SMTP server that answers every command, each after `pause` seconds (under the timeout):
    with a timeout per step only, a send takes as long as it likes."""

    def __init__(self, pause: float):
        self.pause = pause
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.url = f"smtp://127.0.0.1:{self.server.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        conn, _ = self.server.accept()
        files = conn.makefile("rb")
        try:
            time.sleep(self.pause)
            conn.sendall(b"220 slow\r\n")
            while True:
                line = files.readline()
                if not line:
                    return
                time.sleep(self.pause)
                command = line.strip().upper()
                if command == b"DATA":
                    conn.sendall(b"354 go on\r\n")
                    while files.readline() not in (b".\r\n", b""):
                        pass
                    time.sleep(self.pause)
                    conn.sendall(b"250 queued\r\n")
                elif command == b"QUIT":
                    conn.sendall(b"221 bye\r\n")
                    return
                else:
                    conn.sendall(b"250 ok\r\n")
        except OSError:
            return
        finally:
            conn.close()
            self.server.close()


def test_an_smtp_send_ends_at_its_deadline_however_many_steps_it_takes():
    """Issue 15: smtplib's timeout applies per step, so a server answering each of a send's steps
    just within it held the send far past the claim (here 0.4 s a step under a 0.5 s timeout:
    over 2 s before). Now one deadline (twice the timeout) ends the send, as a transient failure."""
    server = SlowSmtp(pause=0.4)
    channel = EmailChannel(1, {"smtp_url": server.url, "from": "reminders@store.example"}, 0.5, Renderer(), "متجر")
    started = time.monotonic()
    with pytest.raises(DeliveryTransientError):
        channel.send(REMINDER)
    assert time.monotonic() - started < worst_send(0.5) + 0.3
