import pytest

from service.config.settings import Settings, SettingsError
from tests.conftest import TOKEN_KEY

BASE = {"TOKEN_ENCRYPTION_KEY": TOKEN_KEY}


def test_defaults_need_only_a_secret():
    s = Settings.from_env({**BASE, "SALLA_WEBHOOK_SECRET": "x"})
    assert s.webhook_strategy == "signature"
    assert s.reminder_stages_days == (30, 7, 1)
    assert s.reminder_channels == ("log",)
    assert s.salla_api_base_url == "https://api.salla.dev/admin/v2"
    assert s.broker_url == s.redis_url == "redis://127.0.0.1:6379/0"
    assert s.webhook_max_body_bytes == 1024 * 1024
    assert s.store_timezone == "Asia/Riyadh"
    assert s.due_set_shards == 1
    assert Settings.from_env({**BASE, "SALLA_WEBHOOK_SECRET": "x", "DUE_SET_SHARDS": "1024"}).due_set_shards == 1024


@pytest.mark.parametrize("strategy", ["signature", "token"])
def test_refuses_to_start_without_secret(strategy):
    with pytest.raises(SettingsError, match="SALLA_WEBHOOK_SECRET"):
        Settings.from_env({**BASE, "SALLA_WEBHOOK_STRATEGY": strategy})


def test_none_strategy_is_an_explicit_opt_in():
    assert Settings.from_env({**BASE, "SALLA_WEBHOOK_STRATEGY": "none"}).webhook_strategy == "none"


@pytest.mark.parametrize("env, variable", [
    ({"SALLA_WEBHOOK_STRATEGY": "hmac"}, "SALLA_WEBHOOK_STRATEGY"),
    ({"REMINDER_STAGES_DAYS": "30,x"}, "REMINDER_STAGES_DAYS"),
    ({"REMINDER_STAGES_DAYS": "30,0"}, "REMINDER_STAGES_DAYS"),
    ({"REMINDER_CHANNELS": "log,fax"}, "REMINDER_CHANNELS"),
    ({"REMINDER_CHANNEL_POLICY": "some"}, "REMINDER_CHANNEL_POLICY"),
    ({"SMS_PROVIDER": "twilio"}, "SMS_PROVIDER"),
    ({"SMTP_URL": "http://mail"}, "SMTP_URL"),
    ({"WHATSAPP_API_URL": "graph.facebook.com"}, "WHATSAPP_API_URL"),
    ({"REMINDER_CHANNELS": "webhook"}, "REMINDER_WEBHOOK_URL"),
    ({"REMINDER_CHANNELS": "webhook", "REMINDER_WEBHOOK_URL": "http://h/x"}, "REMINDER_WEBHOOK_SECRET"),
    ({"REMINDER_CHANNELS": "webhook", "REMINDER_WEBHOOK_URL": "ftp://h/x", "REMINDER_WEBHOOK_SECRET": "s"}, "REMINDER_WEBHOOK_URL"),
    ({"REDIS_URL": "localhost:6379"}, "REDIS_URL"),
    ({"SALLA_API_BASE_URL": "api.salla.dev"}, "SALLA_API_BASE_URL"),
    ({"WEBHOOK_MAX_BODY_BYTES": "lots"}, "WEBHOOK_MAX_BODY_BYTES"),
    ({"SALLA_PAGE_SIZE": "100"}, "SALLA_PAGE_SIZE"),
    ({"SALLA_HTTP_TIMEOUT_SECONDS": "0"}, "SALLA_HTTP_TIMEOUT_SECONDS"),
    ({"STORE_TIMEZONE": "Mars/Olympus"}, "STORE_TIMEZONE"),
    ({"TOKEN_ENCRYPTION_KEY": "short"}, "TOKEN_ENCRYPTION_KEY"),
    ({"TOKEN_ENCRYPTION_KEY": TOKEN_KEY + ",nope"}, "TOKEN_ENCRYPTION_KEY"),
    ({"SALLA_ACCOUNTS_URL": "accounts.salla.sa"}, "SALLA_ACCOUNTS_URL"),
    ({"SALLA_CUSTOMER_LIMIT": "0"}, "SALLA_CUSTOMER_LIMIT"),
    ({"REMINDER_LANGUAGE": "fr"}, "REMINDER_LANGUAGE"),
    ({"DUE_SET_SHARDS": "0"}, "DUE_SET_SHARDS"),
    ({"DUE_SET_SHARDS": "1025"}, "DUE_SET_SHARDS"),
    ({"DUE_SET_SHARDS": "four"}, "DUE_SET_SHARDS"),
])
def test_wrong_values_name_the_variable(env, variable):
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env({**BASE, "SALLA_WEBHOOK_SECRET": "x", **env})


def test_token_key_is_required_and_may_hold_two_for_rotation():
    with pytest.raises(SettingsError, match="TOKEN_ENCRYPTION_KEY is required"):
        Settings.from_env({"SALLA_WEBHOOK_SECRET": "x"})
    from cryptography.fernet import Fernet
    new = Fernet.generate_key().decode()
    assert Settings.from_env({"SALLA_WEBHOOK_SECRET": "x", "TOKEN_ENCRYPTION_KEY": f"{new}, {TOKEN_KEY}"}).token_encryption_keys == (new, TOKEN_KEY)


def test_stages_are_sorted_and_deduplicated():
    s = Settings.from_env({**BASE, "SALLA_WEBHOOK_SECRET": "x", "REMINDER_STAGES_DAYS": "1, 30,7,7"})
    assert s.reminder_stages_days == (30, 7, 1)


def test_redis_password_is_not_echoed_in_errors():
    with pytest.raises(SettingsError) as info:
        Settings.from_env({**BASE, "SALLA_WEBHOOK_SECRET": "x", "REDIS_URL": "http://:hunter2@h:1/0"})
    assert "hunter2" not in str(info.value)


def test_every_variable_is_documented():
    from pathlib import Path
    import re
    source = Path("service/config/settings.py").read_text()
    variables = set(re.findall(r'env\.\w+\("([A-Z][A-Z0-9_]+)"', source))
    assert len(variables) >= 15
    example = Path(".env.example").read_text()
    reference = Path("docs/configuration.md").read_text()  # issue 16 item 2: moved there from the README
    for name in sorted(variables):
        assert name in example, f"{name} missing from .env.example"
        assert f"`{name}`" in reference, f"{name} missing from docs/configuration.md"
