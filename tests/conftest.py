"""Shared fixtures. Unit tests use fakeredis and `responses`; integration tests use real parts."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.config.settings import Settings

FIXTURES = Path(__file__).parent / "fixtures" / "salla"
SAMPLES = FIXTURES / "samples"
WEBHOOK_SECRET = "test-webhook-secret"
# A fixed, test-only Fernet key (tokens at rest are encrypted with it).
TOKEN_KEY = "dGVzdC1vbmx5LWtleS1kby1ub3QtdXNlLWFueXdoZXI="


def sample(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text(encoding="utf-8"))


def sample_bytes(name: str) -> bytes:
    return (SAMPLES / name).read_bytes()


def make_settings(**overrides: str) -> Settings:
    env = {"SALLA_WEBHOOK_SECRET": WEBHOOK_SECRET, "SALLA_ACCESS_TOKEN": "sandbox-token", "TOKEN_ENCRYPTION_KEY": TOKEN_KEY}
    env.update(overrides)
    return Settings.from_env(env)


@pytest.fixture
def settings() -> Settings:
    return make_settings()
