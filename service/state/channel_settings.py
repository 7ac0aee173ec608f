"""Each store's delivery channels: their order, the policy, the providers' settings, templates.

Stored per store (service/state/keys.py): `channels`, one Fernet-encrypted JSON record under the
same MultiFernet keys as the Salla tokens (TOKEN_ENCRYPTION_KEY; `rotate-token-keys`
re-encrypts it too), and `templates`, a hash of message template overrides (not secret).
Credentials never travel through the broker, never reach a log, and are shown masked
(`••••abcd`). The environment's WHATSAPP_*, SMS_*, SMTP_URL, EMAIL_FROM, REMINDER_WEBHOOK_*,
REMINDER_CHANNELS and REMINDER_CHANNEL_POLICY are only the defaults of a store that sets nothing.

    {"channels": ["whatsapp", "sms", "email"],      # in order
     "policy": "first",                             # first: the next only when one fails for good
                                                    #   (or the shopper has no address for it); all
     "whatsapp": {"api_url", "phone_number_id", "access_token"*, "template_name", "app_secret"*,
                  "verify_token"*, "template_language_ar", "template_language_en"},
                                                    # the language codes the template was approved
                                                    #   in, per reminder language (Meta's: ar, en_US)
     "sms": {"provider": "unifonic"|"taqnyat", "api_url", "api_key"*, "sender", "max_segments"},
     "email": {"smtp_url"* (its password), "from", "reply_to"},
     "webhook": {"url", "secret"*}}                 # * secret: stored encrypted, shown masked

A change is checked before it is stored (ConfigError names the field, e.g.
`whatsapp.phone_number_id`), merged into what the store had (a field set to null goes back to
the default; a masked value sent back unchanged keeps the secret), and the merged result must
give every listed channel what it needs, from the store or from the defaults.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import urlparse, urlunparse

import redis
from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from service.state.keys import Keys
from service.domain.messages import TEMPLATE_NAMES, TemplateProblem, check_template
from service.domain.public_address import RefusedAddress, check_url
from service.config.settings import CHANNEL_POLICIES, CHANNELS, SMS_PROVIDERS, Settings
from service.state.stores import ConfigError

MASK = "••••"
SMS_API_URLS = {"unifonic": "https://el.cloud.unifonic.com", "taqnyat": "https://api.taqnyat.sa"}
DEFAULT_MAX_SEGMENTS = 3
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+$")


def _url(name: str, schemes=("http", "https")):
    def parse(value) -> str:
        parsed = urlparse(value) if isinstance(value, str) else None
        if parsed is None or parsed.scheme not in schemes or not parsed.hostname:
            raise ConfigError(f"{name} must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return value.strip().rstrip("/")
    return parse


def _pattern(name: str, regex: str, what: str):
    compiled = re.compile(regex)

    def parse(value) -> str:
        if not isinstance(value, str) or not compiled.fullmatch(value.strip()):
            raise ConfigError(f"{name} must be {what}")
        return value.strip()
    return parse


def _secret(name: str, least: int = 8):
    def parse(value) -> str:
        if not isinstance(value, str) or len(value.strip()) < least or len(value) > 4096 or any(c.isspace() for c in value.strip()):
            raise ConfigError(f"{name} must be a string of at least {least} characters without spaces")
        return value.strip()
    return parse


def _choice(name: str, allowed):
    def parse(value) -> str:
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
        return value
    return parse


def _whole(name: str, low: int, high: int):
    def parse(value) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit() \
                or not low <= int(value) <= high:
            raise ConfigError(f"{name} must be a whole number from {low} to {high}, got {value!r}")
        return int(value)
    return parse


def _address(name: str):
    def parse(value) -> str:
        text = value.strip() if isinstance(value, str) else ""
        match = re.fullmatch(r"(?:[^<>\r\n]*<([^<>\s]+)>|([^<>\s]+))", text)
        address = match and (match.group(1) or match.group(2))
        if not address or not _EMAIL.match(address):
            raise ConfigError(f"{name} must be an e-mail address (optionally 'Name <address>'), got {value!r}")
        return text
    return parse


# Meta's template language codes: a language, and a region where Meta has one (`ar`, `en_US`,
# `pt_BR`, `zh_CN`). Codes Meta does not have, that a merchant may well type, are named.
_TEMPLATE_LANGUAGE = re.compile(r"[a-z]{2,3}(?:_[A-Z]{2})?")
_NO_SUCH_LANGUAGE = {"ar_SA": "ar"}  # shared/channels/REFERENCE.md: `ar` exists, no `ar_SA`


def _template_language(language: str):
    """The code a store's template was approved in, for reminders in `language` (ar or en)."""
    name = f"whatsapp.template_language_{language}"

    def parse(value) -> str:
        code = value.strip() if isinstance(value, str) else ""
        if code in _NO_SUCH_LANGUAGE:
            raise ConfigError(f"{name}: Meta has no template language {code!r}; use {_NO_SUCH_LANGUAGE[code]!r}")
        if not _TEMPLATE_LANGUAGE.fullmatch(code) or code.split("_")[0] != language:
            raise ConfigError(f"{name} must be a WhatsApp template language code for {language!r} "
                              f"({language!r} or {language!r} with a region, as {language}_XX), "
                              f"got {str(value)[:40]!r}")
        return code
    return parse


def _smtp_url(value) -> str:
    value = _url("email.smtp_url", ("smtp", "smtps"))(value)
    try:
        urlparse(value).port
    except ValueError:
        raise ConfigError("email.smtp_url has a port that is not a number") from None
    return value


FIELDS = {
    "whatsapp": {
        "api_url": _url("whatsapp.api_url"),
        "phone_number_id": _pattern("whatsapp.phone_number_id", r"\d{5,20}", "the digits of a WhatsApp phone number id"),
        "access_token": _secret("whatsapp.access_token", 16),
        "template_name": _pattern("whatsapp.template_name", r"[a-z0-9_]{1,512}",
                                  "an approved template's name (lowercase letters, digits, _)"),
        "app_secret": _secret("whatsapp.app_secret"),
        "verify_token": _secret("whatsapp.verify_token"),
        "template_language_ar": _template_language("ar"),
        "template_language_en": _template_language("en"),
    },
    "sms": {
        "provider": _choice("sms.provider", SMS_PROVIDERS),
        "api_url": _url("sms.api_url"),
        "api_key": _secret("sms.api_key"),
        # Alphanumeric sender ids are at most 11 characters; a numeric one a phone number.
        "sender": _pattern("sms.sender", r"[A-Za-z0-9 ._-]{1,11}|\+?\d{3,15}",
                           "a sender id of 1-11 letters, digits, space, '.', '_' or '-' (or a number)"),
        "max_segments": _whole("sms.max_segments", 1, 10),
    },
    "email": {"smtp_url": _smtp_url, "from": _address("email.from"), "reply_to": _address("email.reply_to")},
    "webhook": {"url": _url("webhook.url"), "secret": _secret("webhook.secret")},
}
SECRETS = {("whatsapp", "access_token"), ("whatsapp", "app_secret"), ("whatsapp", "verify_token"),
           ("sms", "api_key"), ("email", "smtp_url"), ("webhook", "secret")}
# Where each channel connects: a store's own value must be a public address (service/domain/public_address.py).
ADDRESS_FIELDS = {"whatsapp": "api_url", "sms": "api_url", "email": "smtp_url", "webhook": "url"}
NEEDS = {"whatsapp": ("api_url", "phone_number_id", "access_token", "template_name"),
         "sms": ("provider", "api_url", "api_key", "sender"), "email": ("smtp_url", "from"),
         "webhook": ("url", "secret"), "log": ()}
ENV_NAMES = {("whatsapp", "api_url"): "WHATSAPP_API_URL", ("whatsapp", "phone_number_id"): "WHATSAPP_PHONE_NUMBER_ID",
             ("whatsapp", "access_token"): "WHATSAPP_ACCESS_TOKEN", ("whatsapp", "template_name"): "WHATSAPP_TEMPLATE_NAME",
             ("sms", "provider"): "SMS_PROVIDER", ("sms", "api_url"): "SMS_API_URL", ("sms", "api_key"): "SMS_API_KEY",
             ("sms", "sender"): "SMS_SENDER", ("email", "smtp_url"): "SMTP_URL", ("email", "from"): "EMAIL_FROM",
             ("webhook", "url"): "REMINDER_WEBHOOK_URL", ("webhook", "secret"): "REMINDER_WEBHOOK_SECRET"}


def defaults(settings: Settings) -> dict:
    """What a store that sets nothing gets: the environment's values."""
    return {
        "channels": list(settings.reminder_channels), "policy": settings.reminder_channel_policy,
        "whatsapp": {"api_url": settings.whatsapp_api_url, "phone_number_id": settings.whatsapp_phone_number_id,
                     "access_token": settings.whatsapp_access_token, "template_name": settings.whatsapp_template_name,
                     "app_secret": settings.whatsapp_app_secret, "verify_token": settings.whatsapp_verify_token,
                     "template_language_ar": "ar", "template_language_en": "en"},
        "sms": {"provider": settings.sms_provider, "api_url": settings.sms_api_url, "api_key": settings.sms_api_key,
                "sender": settings.sms_sender, "max_segments": DEFAULT_MAX_SEGMENTS},
        "email": {"smtp_url": settings.smtp_url, "from": settings.email_from, "reply_to": ""},
        "webhook": {"url": settings.reminder_webhook_url, "secret": settings.reminder_webhook_secret},
    }


@dataclass(frozen=True)
class Effective:
    """A store's settings merged over the defaults: what its channels are built from."""
    channels: tuple[str, ...]
    policy: str
    providers: dict = field(default_factory=dict)  # channel -> its settings (secrets in clear)

    def of(self, channel: str) -> dict:
        return self.providers.get(channel, {})


def merge(stored: dict, base: dict) -> Effective:
    providers = {}
    for channel in FIELDS:
        merged = {k: v for k, v in base.get(channel, {}).items()}
        merged.update({k: v for k, v in stored.get(channel, {}).items() if v not in (None, "")})
        if channel == "sms":
            own = stored.get("sms", {})
            if own.get("provider") and own["provider"] != base.get("sms", {}).get("provider"):
                # Another provider than the default's: none of the default's credentials apply.
                merged = {"max_segments": DEFAULT_MAX_SEGMENTS, **own}
            if not merged.get("api_url"):
                merged["api_url"] = SMS_API_URLS.get(merged.get("provider", ""), "")
        providers[channel] = merged
    return Effective(channels=tuple(stored.get("channels") or base["channels"]),
                     policy=stored.get("policy") or base["policy"], providers=providers)


def mask(value) -> str:
    text = str(value or "")
    if not text:
        return ""
    if text.startswith(("smtp://", "smtps://")):
        parts = urlparse(text)
        if parts.password:
            netloc = f"{parts.username}:{MASK}@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
            return urlunparse(parts._replace(netloc=netloc))
        return text
    return MASK + text[-4:] if len(text) >= 12 else MASK


def _is_masked(value) -> bool:
    return isinstance(value, str) and MASK in value


def missing_fields(effective: Effective) -> list[str]:
    """`channel.field` of every listed channel that has no value, from the store or the defaults."""
    return [f"{channel}.{name}" for channel in effective.channels for name in NEEDS.get(channel, ())
            if not effective.of(channel).get(name)]


class ChannelSettings:
    def __init__(self, store: redis.Redis, prefix: str, settings: Settings):
        self.redis = store
        self.keys = Keys(prefix)
        self.settings = settings
        self._fernet = MultiFernet([Fernet(key) for key in settings.token_encryption_keys])

    # -- the encrypted record ----------------------------------------------------------------
    def stored(self, merchant_id: int) -> dict:
        blob = self.redis.get(self.keys.store(merchant_id).channels)
        if blob is None:
            return {}
        try:
            return json.loads(self._fernet.decrypt(blob if isinstance(blob, bytes) else blob.encode()))
        except InvalidToken:
            raise ConfigError(f"the channel settings of merchant {merchant_id} cannot be decrypted with "
                              "TOKEN_ENCRYPTION_KEY (was a key removed before rotate-token-keys ran?)") from None

    def effective(self, merchant_id: int) -> Effective:
        return merge(self.stored(merchant_id), defaults(self.settings))

    def update(self, merchant_id: int, changes: dict) -> dict:
        """Check `changes`, merge them into the store's settings, store them; the masked view."""
        if not isinstance(changes, dict):
            raise ConfigError("send a JSON object of channel settings")
        current = self.stored(merchant_id)
        result = {k: (dict(v) if isinstance(v, dict) else v) for k, v in current.items()}
        unknown = set(changes) - {"channels", "policy", *FIELDS}
        if unknown:
            raise ConfigError(f"unknown channel setting(s): {', '.join(sorted(unknown))} "
                              f"(known: channels, policy, {', '.join(FIELDS)})")
        if "channels" in changes:
            listed = changes["channels"]
            if listed is None:
                result.pop("channels", None)
            else:
                if not isinstance(listed, list) or not listed:
                    raise ConfigError("channels must be a non-empty list, in the order to try them")
                for index, name in enumerate(listed):
                    if name not in CHANNELS:
                        raise ConfigError(f"channels[{index}]: unknown channel {name!r} (known: {', '.join(CHANNELS)})")
                if len(set(listed)) != len(listed):
                    raise ConfigError("channels: a channel is listed twice")
                result["channels"] = list(listed)
        if "policy" in changes:
            if changes["policy"] is None:
                result.pop("policy", None)
            else:
                result["policy"] = _choice("policy", CHANNEL_POLICIES)(changes["policy"])
        for channel, parsers in FIELDS.items():
            if channel not in changes:
                continue
            given = changes[channel]
            if given is None:
                result.pop(channel, None)
                continue
            if not isinstance(given, dict):
                raise ConfigError(f"{channel} must be an object of settings")
            section = result.setdefault(channel, {})
            for name, value in given.items():
                if name not in parsers:
                    raise ConfigError(f"{channel}.{name} is not a setting (known: {', '.join(parsers)})")
                if value is None or value == "":
                    section.pop(name, None)
                elif (channel, name) in SECRETS and _is_masked(value):
                    if name not in section:
                        raise ConfigError(f"{channel}.{name}: a masked value was sent, but the store has none")
                else:
                    section[name] = parsers[name](value)
                    if ADDRESS_FIELDS.get(channel) == name:
                        try:
                            check_url(section[name], self.settings.allow_private_urls)
                        except RefusedAddress as exc:
                            raise ConfigError(f"{channel}.{name}: {exc}") from None
            if not section:
                result.pop(channel, None)
        effective = merge(result, defaults(self.settings))
        missing = missing_fields(effective)
        if missing:
            raise ConfigError(f"{missing[0]} is needed for the {missing[0].split('.')[0]} channel "
                              f"(no default in {ENV_NAMES.get(tuple(missing[0].split('.')), 'the environment')})")
        record = self._fernet.encrypt(json.dumps(result, ensure_ascii=False).encode())
        pipe = self.redis.pipeline(transaction=False)  # `stores` is in another cluster slot
        pipe.set(self.keys.store(merchant_id).channels, record)
        pipe.sadd(self.keys.stores, merchant_id)
        pipe.execute()
        return self.view(merchant_id)

    def view(self, merchant_id: int) -> dict:
        """The settings in force, secrets masked, each provider field marked when it is a default."""
        stored = self.stored(merchant_id)
        effective = merge(stored, defaults(self.settings))
        providers = {}
        for channel in FIELDS:
            own = stored.get(channel, {})
            shown = {}
            for name, value in effective.of(channel).items():
                if value in (None, ""):
                    continue
                shown[name] = mask(value) if (channel, name) in SECRETS else value
            providers[channel] = {"settings": shown, "from_store": sorted(own)}
        return {"merchant_id": merchant_id, "channels": list(effective.channels), "policy": effective.policy,
                "own_channels": "channels" in stored, **providers, "missing": missing_fields(effective)}

    def rotate(self, merchant_id: int, dry_run: bool = False) -> bool:
        key = self.keys.store(merchant_id).channels
        blob = self.redis.get(key)
        if blob is None:
            return False
        if dry_run:  # only check that a key decrypts it (InvalidToken if none does)
            self._fernet.decrypt(blob if isinstance(blob, bytes) else blob.encode())
            return True
        self.redis.set(key, self._fernet.rotate(blob if isinstance(blob, bytes) else blob.encode()))
        return True

    # -- templates --------------------------------------------------------------------------
    def templates(self, merchant_id: int) -> dict[str, str]:
        raw = self.redis.hgetall(self.keys.store(merchant_id).templates)
        return {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
                for k, v in raw.items()}

    def set_template(self, merchant_id: int, name: str, source: str) -> None:
        try:
            check_template(name, source)
        except TemplateProblem as exc:
            raise ConfigError(str(exc)) from None
        self.redis.hset(self.keys.store(merchant_id).templates, name, source)

    def delete_template(self, merchant_id: int, name: str) -> bool:
        if name not in TEMPLATE_NAMES:
            raise ConfigError(f"unknown template {name!r} (known: {', '.join(TEMPLATE_NAMES)})")
        return bool(self.redis.hdel(self.keys.store(merchant_id).templates, name))
