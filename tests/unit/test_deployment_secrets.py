"""Issue 17, section 1 (holdout): the assignment's key is a deployment secret that a rotation of
TOKEN_ENCRYPTION_KEY (`new,old`, rotate-token-keys, then drop `old`) never changes, or customers
would switch groups. service/state/deployment_secrets.py."""
from __future__ import annotations

import fakeredis
import pytest
from cryptography.fernet import Fernet

from service.state import deployment_secrets
from service.state.keys import Keys, lifetime
from tests.conftest import TOKEN_KEY

PREFIX = "lpr:"


@pytest.fixture(autouse=True)
def fresh_cache():
    deployment_secrets.forget_cache()
    yield
    deployment_secrets.forget_cache()


def test_a_secret_is_random_generated_once_and_stored_encrypted():
    """Issue 17 §1, stable unguessable assignment: one random 32-byte key per purpose, the same
    for every process, and Redis never holds it in the clear."""
    store = fakeredis.FakeRedis()
    first = deployment_secrets.secret(store, PREFIX, (TOKEN_KEY,), "holdout")
    assert len(first) == 32
    deployment_secrets.forget_cache()  # another process
    assert deployment_secrets.secret(store, PREFIX, (TOKEN_KEY,), "holdout") == first
    assert deployment_secrets.secret(store, PREFIX, (TOKEN_KEY,), "suppression") != first
    stored = store.get(Keys(PREFIX).deployment_secret("holdout"))
    assert first not in stored and Fernet(TOKEN_KEY).decrypt(stored) == first
    assert lifetime(PREFIX, Keys(PREFIX).deployment_secret("holdout")) is not None  # documented in keys.py


def test_the_secret_survives_a_token_key_rotation():
    """Issue 17 §1: `new,old`, rotate-token-keys, then drop `old`: the same secret (no customer
    switches group)."""
    store = fakeredis.FakeRedis()
    before = deployment_secrets.secret(store, PREFIX, (TOKEN_KEY,), "holdout")
    new = Fernet.generate_key().decode()
    assert deployment_secrets.rotate_all(store, PREFIX, (new, TOKEN_KEY)) == 1
    deployment_secrets.forget_cache()
    assert deployment_secrets.secret(store, PREFIX, (new,), "holdout") == before


def test_a_secret_no_listed_key_opens_is_a_clear_error():
    store = fakeredis.FakeRedis()
    deployment_secrets.secret(store, PREFIX, (TOKEN_KEY,), "holdout")
    deployment_secrets.forget_cache()
    with pytest.raises(deployment_secrets.SecretError, match="TOKEN_ENCRYPTION_KEY"):
        deployment_secrets.secret(store, PREFIX, (Fernet.generate_key().decode(),), "holdout")


def test_a_purpose_is_a_plain_word():
    with pytest.raises(ValueError):
        deployment_secrets.secret(fakeredis.FakeRedis(), PREFIX, (TOKEN_KEY,), "../x")


def test_rotating_without_the_old_key_is_a_clear_cli_error(monkeypatch, capsys):
    """Issue 17 §1: an operator who dropped the old key before rotate-token-keys gets a message
    that says so (exit 2), and the stored secret is left as it was."""
    from service.cli import main as cli
    store = fakeredis.FakeRedis(decode_responses=True)
    deployment_secrets.secret(store, PREFIX, (TOKEN_KEY,), "holdout")
    before = store.get(Keys(PREFIX).deployment_secret("holdout"))
    monkeypatch.setattr("service.cli.connect", lambda settings: store)
    monkeypatch.setenv("SALLA_WEBHOOK_SECRET", "x")
    monkeypatch.setenv("TOKEN_ENCRYPTION_KEY", Fernet.generate_key().decode())
    assert cli(["rotate-token-keys"]) == 2
    assert "TOKEN_ENCRYPTION_KEY" in capsys.readouterr().err
    assert store.get(Keys(PREFIX).deployment_secret("holdout")) == before
