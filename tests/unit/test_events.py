import json

import pytest
from hypothesis import given, strategies as st

from service.domain.events import Customer, EventError, customer_of, e164, is_handled, parse_envelope
from tests.conftest import SAMPLES, sample_bytes


@pytest.mark.parametrize("path", sorted(p.name for p in SAMPLES.glob("*.json") if p.name != "errors.json"
                                         and not p.name.startswith("loyalty")))
def test_every_webhook_sample_parses(path):
    envelope = parse_envelope(sample_bytes(path))
    assert envelope.event == json.loads(sample_bytes(path))["event"]
    assert isinstance(envelope.merchant_id, int) and envelope.merchant_id > 0


def test_full_order_customer_shape():
    envelope = parse_envelope(sample_bytes("order.created.json"))
    assert envelope.merchant_id == 1305146709
    assert envelope.created_at == "Sun Jun 26 2022 12:21:48 GMT+0300"  # kept as text
    assert customer_of(envelope) == Customer(
        id=225167971, name="Mohammed Ali", mobile="+966501806978", email="usertest@gmail.com",
        notifications_enabled=None)


def test_order_status_updated_customer_shape():
    envelope = parse_envelope(sample_bytes("order.status.updated.json"))
    customer = customer_of(envelope)
    assert customer == Customer(id=1779795066, name="Test Salla", mobile="+96652318526",
                                email="Test.2022@salla.sa", notifications_enabled=None)


def test_customer_event_shape():
    customer = customer_of(parse_envelope(sample_bytes("customer.updated.json")))
    assert customer.id == 225167971
    assert customer.name == "User Mohammed"
    assert customer.mobile == "+966555555555"
    assert customer.notifications_enabled is True


def test_shipment_event_with_name_and_string_mobile():
    body = {"event": "order.shipment.created", "merchant": 1, "data": {
        "customer": {"id": 7, "name": "سارة", "mobile": "+966501234567", "email": ""}}}
    customer = customer_of(parse_envelope(json.dumps(body).encode()))
    assert customer == Customer(id=7, name="سارة", mobile="+966501234567", email=None, notifications_enabled=None)


def test_guest_order_has_no_customer():
    body = {"event": "order.created", "merchant": 1, "data": {"id": 5}}
    assert customer_of(parse_envelope(json.dumps(body).encode())) is None


@pytest.mark.parametrize("mobile, code, expected", [
    (501806978, "+966", "+966501806978"),
    (501806978, "966", "+966501806978"),
    ("0501806978", "+966", "+966501806978"),
    ("+96652318526", None, "+96652318526"),
    ("00966501806978", None, "+966501806978"),
    (777123456, "967", "+967777123456"),
    (966501806978, "+966", "+966501806978"),
    (501806978, None, None),
    ("", "+966", None),
    (None, "+966", None),
    (True, "+966", None),
    ("12", "+966", None),
])
def test_e164(mobile, code, expected):
    assert e164(mobile, code) == expected


@pytest.mark.parametrize("body, message", [
    (b"not json", "not valid JSON"),
    (b"\xff\xfe", "not valid JSON"),
    (b"[]", "JSON object"),
    (b'{"merchant": 1, "data": {}}', "missing event"),
    (b'{"event": "order.created", "data": {}}', "missing merchant"),
    (b'{"event": "order.created", "merchant": 1}', "missing data"),
    (b'{"event": "", "merchant": 1, "data": {}}', "'event'"),
    (b'{"event": "order.created", "merchant": "abc", "data": {}}', "merchant"),
    (b'{"event": "order.created", "merchant": true, "data": {}}', "merchant"),
    (b'{"event": "order.created", "merchant": -4, "data": {}}', "merchant"),
    (b'{"event": "order.created", "merchant": 1, "data": []}', "'data'"),
])
def test_bad_envelopes_say_what_is_wrong(body, message):
    with pytest.raises(EventError, match=message):
        parse_envelope(body)


def test_merchant_as_numeric_string_is_accepted():
    assert parse_envelope(b'{"event": "x", "merchant": "42", "data": {}}').merchant_id == 42


def test_handled_events():
    assert is_handled("order.created") and is_handled("order.status.updated")
    assert is_handled("customer.updated") and is_handled("customer.login")
    assert not is_handled("customer.otp.request")
    assert not is_handled("app.store.authorize")
    assert not is_handled("product.created")


def test_customer_round_trips_through_the_queue_message():
    customer = customer_of(parse_envelope(sample_bytes("order.created.json")))
    assert Customer.from_dict(json.loads(json.dumps(customer.to_dict()))) == customer


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@given(st.binary(max_size=256))
def test_any_bytes_give_an_envelope_or_our_own_error(body):
    try:
        parse_envelope(body)
    except EventError:
        pass


@given(event=st.sampled_from(["order.created", "order.status.updated", "order.shipment.created", "customer.updated"]),
       merchant=json_values, data=json_values)
def test_any_json_gives_a_customer_or_our_own_error(event, merchant, data):
    body = json.dumps({"event": event, "merchant": merchant, "data": data}).encode()
    try:
        customer_of(parse_envelope(body))
    except EventError:
        pass


@given(customer=st.dictionaries(st.sampled_from(["id", "name", "first_name", "last_name", "mobile", "mobile_code",
                                                 "email", "is_notifications_enabled"]), json_values))
def test_any_customer_object_gives_a_customer_or_our_own_error(customer):
    body = json.dumps({"event": "order.created", "merchant": 1, "data": {"customer": customer}}).encode()
    try:
        result = customer_of(parse_envelope(body))
    except EventError:
        return
    assert result is None or (isinstance(result.id, int) and isinstance(result.name, str))
