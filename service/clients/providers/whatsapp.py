"""WhatsApp Business Cloud API: an approved template message per reminder.

POST {api_url}/{phone_number_id}/messages, bearer token. The template's body parameters are
name, points, SAR value, expiry date, store name (service/domain/messages.py); its language code is
the one the store's template was approved in, per reminder language: the store's
`template_language_ar` / `template_language_en` (service/state/channel_settings.py; `ar` and `en`
unless set: Meta has `ar`, `en`, `en_US`, ..., no `ar_SA`). `biz_opaque_callback_data` =
`<merchant>:<reminder id>` comes back in sent/delivered/read status webhooks (Meta does not
promise it on failed). 200 `{"messages": [{"id": "wamid..."}]}`.

Errors, `{"error": {"code", "message", "type", "error_data", "fbtrace_id"}}`
(devkit/fixtures/channels/whatsapp.json), each the shopper's, the store's set-up, or transient:
- 130429, 131056, 80007, 131048: rate and quality limits -> transient (backoff, Retry-After);
- 131026: the number cannot receive it -> permanent `undeliverable` (the next channel);
- 100 (invalid parameter), 131008, 131009 (a parameter missing or not valid), 133010 (the phone
  number is not registered), 131031, 131042, 368 (the account locked, unpaid, blocked) ->
  permanent `setup` and an alarm of the store: every reminder of the store would fail the same way;
- 132000, 132001, 132015, 132016: the template (parameters, not approved in that language,
  paused, disabled) -> permanent `template` and an operator alarm;
- 190: the access token -> permanent `credentials` and an alarm of the store;
- 131047, 131049 and other 4xx: permanent `refused`; 5xx and connection errors: transient.
"""
from __future__ import annotations

import requests

from service.domain.messages import whatsapp_parameters
from service.clients.providers.base import (CREDENTIALS, REFUSED, SETUP, TEMPLATE, UNDELIVERABLE, DeliveryPermanentError,
                                    DeliveryTransientError, mobile_digits, retry_after, scrub)

RATE_LIMITS = frozenset({130429, 131056, 80007, 131048})
UNDELIVERABLE_CODES = frozenset({131026})
# The store's set-up, not the shopper: 100 is "Invalid parameter" (Meta's error codes page).
SETUP_CODES = frozenset({100, 131008, 131009, 133010, 131031, 131042, 368})
TEMPLATE_CODES = frozenset({132000, 132001, 132015, 132016})
TOKEN_CODES = frozenset({190})
TEMPLATE_ALARM = "whatsapp_template"


DEFAULT_LANGUAGES = {"ar": "ar", "en": "en"}  # reminder language -> template language code


def token_alarm(merchant_id: int) -> str:
    return f"whatsapp_token_{merchant_id}"


def setup_alarm(merchant_id: int) -> str:
    return f"whatsapp_setup_{merchant_id}"


class WhatsAppChannel:
    name = "whatsapp"

    def __init__(self, merchant_id: int, config: dict, session: requests.Session, timeout: float, store_name: str = ""):
        self.merchant_id = merchant_id
        self.url = f"{config['api_url'].rstrip('/')}/{config['phone_number_id']}/messages"
        self.token = config["access_token"]
        self.template = config["template_name"]
        self.languages = {lang: config.get(f"template_language_{lang}") or code
                          for lang, code in DEFAULT_LANGUAGES.items()}
        self.session = session
        self.timeout = timeout
        self.store_name = store_name

    def request_body(self, reminder: dict, to: str) -> dict:
        parameters = whatsapp_parameters(reminder, self.store_name)
        language = self.languages["en" if reminder.get("language") == "en" else "ar"]
        return {
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "template",
            "template": {"name": self.template, "language": {"code": language},
                         "components": [{"type": "body",
                                         "parameters": [{"type": "text", "text": p} for p in parameters]}]},
            "biz_opaque_callback_data": f"{reminder['merchant_id']}:{reminder['reminder_id']}",
        }

    def send(self, reminder: dict) -> str:
        body = self.request_body(reminder, mobile_digits(reminder))
        try:
            response = self.session.post(self.url, json=body, timeout=self.timeout, allow_redirects=False,
                                         headers={"Authorization": f"Bearer {self.token}"})
        except requests.RequestException as exc:
            raise DeliveryTransientError(f"WhatsApp POST failed: {type(exc).__name__}") from None
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code == 200 and isinstance(answer, dict) and answer.get("messages"):
            return str(answer["messages"][0].get("id", ""))
        error = answer.get("error") if isinstance(answer, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        title = f"WhatsApp error {code}: {scrub(error.get('message', ''))}" if code is not None \
            else f"WhatsApp answered {response.status_code}"
        raise self._error(code, title, response)

    def _error(self, code, title: str, response) -> Exception:
        if code in RATE_LIMITS:
            return DeliveryTransientError(title, retry_after=retry_after(response))
        if code in UNDELIVERABLE_CODES:
            return DeliveryPermanentError(title, UNDELIVERABLE)
        if code in SETUP_CODES:
            return DeliveryPermanentError(title, SETUP, alarm=(
                setup_alarm(self.merchant_id), f"merchant {self.merchant_id}: WhatsApp refuses the store's set-up "
                                               f"({title}); check its phone number id, template and language "
                                               "code with set-channels"))
        if code in TEMPLATE_CODES:
            return DeliveryPermanentError(title, TEMPLATE, alarm=(
                TEMPLATE_ALARM, f"merchant {self.merchant_id}: template {self.template!r} refused ({title}); "
                                "its WhatsApp reminders fall back to the next channel until it is fixed"))
        if code in TOKEN_CODES:
            return DeliveryPermanentError(title, CREDENTIALS, alarm=(
                token_alarm(self.merchant_id), f"merchant {self.merchant_id}: the WhatsApp access token is refused "
                                               f"({title}); set a new one with set-channels"))
        if response.status_code == 429 or response.status_code >= 500:
            return DeliveryTransientError(title, retry_after=retry_after(response))
        return DeliveryPermanentError(title, REFUSED)
