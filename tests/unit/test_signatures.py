import hashlib
import hmac

from hypothesis import given, strategies as st

from service.domain.signatures import sign, signature_matches, token_matches, verify_delivery
from tests.conftest import sample_bytes


def test_sign_is_lowercase_hex_hmac_sha256_of_raw_bytes():
    body = sample_bytes("order.created.json")
    expected = hmac.new(b"k", body, hashlib.sha256).hexdigest()
    assert sign(body, "k") == expected == expected.lower()


def test_reserialised_json_does_not_verify():
    import json
    body = sample_bytes("order.created.json")
    resent = json.dumps(json.loads(body)).encode()  # escapes the Arabic text
    assert not signature_matches(resent, "k", sign(body, "k"))


def test_signature_strategy():
    body = b'{"event":"order.created"}'
    good = {"X-Salla-Signature": sign(body, "k")}
    assert verify_delivery("signature", "k", body, good)
    assert verify_delivery("signature", "k", body, {"X-Salla-Signature": sign(body, "k").upper()})
    assert not verify_delivery("signature", "k", body, {})
    assert not verify_delivery("signature", "k", body, {"X-Salla-Signature": "00" * 32})
    assert not verify_delivery("signature", "other", body, good)
    # The header that names a strategy is chosen by the sender, so it changes nothing.
    assert not verify_delivery("signature", "k", body, {"X-Salla-Security-Strategy": "none"})


def test_token_strategy_takes_the_bare_secret_or_a_bearer_one():
    """Issue 15 item 24: Salla's starter kits send `Authorization: <secret>`, its partner kit
    `Authorization: Bearer <secret>` (shared/salla/REFERENCE.md): both pass, a wrong secret fails
    under both."""
    assert verify_delivery("token", "k", b"", {"Authorization": "k"})
    assert verify_delivery("token", "k", b"", {"Authorization": "Bearer k"})
    assert verify_delivery("token", "k", b"", {"Authorization": "bearer  k "})  # the scheme is case-insensitive
    assert not verify_delivery("token", "k", b"", {"Authorization": "wrong"})
    assert not verify_delivery("token", "k", b"", {"Authorization": "Bearer wrong"})
    assert not verify_delivery("token", "k", b"", {"Authorization": "Bearer "})
    assert not verify_delivery("token", "k", b"", {"Authorization": "Basic k"})
    assert not verify_delivery("token", "k", b"", {"Authorization": "Bearer k k"})
    assert not verify_delivery("token", "k", b"", {})
    assert not token_matches("", "")
    assert not token_matches("", "Bearer ")


def test_none_strategy_accepts_anything():
    assert verify_delivery("none", "", b"x", {})


@given(body=st.binary(max_size=2048), secret=st.text(min_size=1, max_size=64))
def test_round_trip(body, secret):
    assert signature_matches(body, secret, sign(body, secret))


@given(body=st.binary(max_size=512), secret=st.text(min_size=1, max_size=32), flip=st.integers(min_value=0))
def test_any_changed_byte_fails(body, secret, flip):
    if not body:
        body = b"x"
    index = flip % len(body)
    tampered = body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1:]
    assert not signature_matches(tampered, secret, sign(body, secret))
