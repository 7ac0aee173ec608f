"""Issue 15 item 18: a shopper's e-mail address is one plain addr-spec, or the e-mail channel
fails for good at once (service/clients/providers/base.py email_address), never a retried ValueError
and never a second recipient. A real SMTP server on loopback receives what is sent."""
from __future__ import annotations

from email.message import EmailMessage

import fakeredis
import pytest
import requests
from hypothesis import given, settings, strategies as st

from devkit.providers import SmtpFake
from service.domain.messages import Renderer
from tests.conftest import make_settings
from tests.unit.test_shopper_channels import REMINDER, RID, C, M  # noqa: F401  (the same sample reminder)
from workers.delivery import deliver, queue_reminder
from service.clients.providers.base import DeliveryPermanentError, single_address
from service.clients.providers.email import EmailChannel
from service.ops.runtime import build_runtime

BAD = [
    "sara@example.com\r\nBcc: spy@evil.example",  # a header of its own
    "sara@example.com\nBcc: spy@evil.example",
    "sara@example.com, spy@evil.example",  # two recipients
    "sara@example.com,spy@evil.example",
    "sara@example.com; spy@evil.example",
    "Sara <sara@example.com>",  # a display name
    "<sara@example.com>",
    '"sara, spy"@example.com',
    "sara@[127.0.0.1]",
    "sara@localhost",
]


def with_email(reminder: dict, address: str) -> dict:
    return {**reminder, "customer": {**reminder["customer"], "email": address}}


@pytest.fixture(scope="module")
def smtp():
    with SmtpFake() as server:
        yield server


def email_channel(smtp) -> EmailChannel:
    return EmailChannel(M, {"smtp_url": smtp.url, "from": "متجر <reminders@store.example>"}, 5, Renderer(), "متجر")


@pytest.mark.parametrize("address", BAD)
def test_an_address_with_a_line_break_a_comma_or_a_display_name_fails_for_good(smtp, address):
    """Issue 15 item 18: CR/LF (EmailMessage's ValueError, retried 12 times as transient before)
    and anything that could name a second recipient are a permanent bad address: nothing is sent."""
    sent = len(smtp.envelopes)
    with pytest.raises(DeliveryPermanentError) as info:
        email_channel(smtp).send(with_email(REMINDER, address))
    assert info.value.reason == "undeliverable"
    assert "spy" not in str(info.value) and "sara" not in str(info.value)  # no address in the ledger or logs
    assert len(smtp.envelopes) == sent


@pytest.mark.parametrize("address, recipient", [
    ("sara@example.com", "sara@example.com"),
    ("  o'brien+points@mail.example.co  ", "o'brien+points@mail.example.co"),
    ("noura@مثال.السعودية", "noura@xn--mgbh0fb.xn--mgberp4a5d4ar"),  # IDNA, as SMTP carries it
])
def test_a_plain_address_reaches_exactly_that_one_recipient(smtp, address, recipient):
    email_channel(smtp).send(with_email(REMINDER, address))
    assert smtp.envelopes[-1]["to"] == [recipient]


class Fake:
    def __init__(self, name):
        self.name, self.sent = name, []

    def send(self, reminder):
        self.sent.append(reminder["reminder_id"])


def test_a_bad_address_moves_on_to_the_store_s_next_channel_at_once(smtp):
    """Issue 15 item 18: under `first`, the next channel gets the reminder in the same attempt."""
    rt = build_runtime(make_settings(), fakeredis.FakeRedis(decode_responses=True), requests.Session(),
                       clock=lambda: 1_800_000_000.0)
    sms = Fake("sms")
    rt.channels_for = lambda m: ([email_channel(smtp), sms], "first")
    reminder = with_email(REMINDER, "sara@example.com\r\nBcc: spy@evil.example")
    queue_reminder(rt, reminder, 86400, rt.clock(), lambda *a: None)
    assert deliver(rt, M, C, RID, rt.clock()) == "sent"
    assert sms.sent == [RID]
    assert rt.ledger.get(M, RID).channels["email"].startswith("failed:undeliverable")


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet="ab.@,;:<>()[]\"' \t\r\n\\-+=?é")))
def test_whatever_is_accepted_is_exactly_one_recipient(text):
    """Issue 15 item 18, as a property: an accepted address parses as one recipient, itself."""
    address = single_address(text)
    if address is not None:
        message = EmailMessage()
        message["To"] = address
        assert [a.addr_spec for a in message["To"].addresses] == [address]
