"""WhatsApp Business Cloud API: an approved template message per reminder.

POST {api_url}/{phone_number_id}/messages, bearer token. The template's body parameters are
name, points, SAR value, expiry date, store name (service/messages.py), its language `ar` or `en`
(Meta has no `ar_SA`), and `biz_opaque_callback_data` = `<merchant>:<reminder id>` comes back in
every status webhook. 200 `{"messages": [{"id": "wamid..."}]}`.

Errors, `{"error": {"code", "message", "type", "error_data", "fbtrace_id"}}`:
- 130429, 131056, 80007, 131048: rate and quality limits -> transient (backoff, Retry-After);
- 131026, 100: the number cannot receive it -> permanent `undeliverable` (the next channel);
- 132000, 132001, 132015, 132016: the template (parameters, not approved, paused, disabled) ->
  permanent `template` and an operator alarm: every reminder of the store would fail the same way;
- 190: the access token -> permanent `credentials` and an alarm of the store;
- 131047, 131049 and other 4xx: permanent `refused`; 5xx and connection errors: transient.
"""
from __future__ import annotations

import requests

from service.messages import whatsapp_parameters
from workers.providers.base import (CREDENTIALS, REFUSED, TEMPLATE, UNDELIVERABLE, DeliveryPermanentError,
                                    DeliveryTransientError, mobile_digits, retry_after, scrub)

RATE_LIMITS = frozenset({130429, 131056, 80007, 131048})
UNDELIVERABLE_CODES = frozenset({131026, 100})
TEMPLATE_CODES = frozenset({132000, 132001, 132015, 132016})
TOKEN_CODES = frozenset({190})
TEMPLATE_ALARM = "whatsapp_template"


def token_alarm(merchant_id: int) -> str:
    return f"whatsapp_token_{merchant_id}"


class WhatsAppChannel:
    name = "whatsapp"

    def __init__(self, merchant_id: int, config: dict, session: requests.Session, timeout: float, store_name: str = ""):
        self.merchant_id = merchant_id
        self.url = f"{config['api_url'].rstrip('/')}/{config['phone_number_id']}/messages"
        self.token = config["access_token"]
        self.template = config["template_name"]
        self.session = session
        self.timeout = timeout
        self.store_name = store_name

    def request_body(self, reminder: dict, to: str) -> dict:
        parameters = whatsapp_parameters(reminder, self.store_name)
        return {
            "messaging_product": "whatsapp", "recipient_type": "individual", "to": to, "type": "template",
            "template": {"name": self.template, "language": {"code": "en" if reminder.get("language") == "en" else "ar"},
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
