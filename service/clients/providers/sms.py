"""SMS through Unifonic or Taqnyat (the store chooses), Arabic in UCS-2 segments.

The text is the store's `sms.<lang>.txt` template, cut to the store's `max_segments` (70
UCS-2 characters in one part, 67 in each part of a longer one). Recipients go without '+'.

Unifonic: POST {api_url}/rest/SMS/messages, form AppSid, SenderID, Recipient, Body,
responseType=JSON, CorrelationID (the reminder id), MessageType=3. 200 `{"success": true,
"errorCode": "ER-00", "data": {"MessageID", "Status"}}` (`success` may also be the string "true",
as on the bulk endpoint); refusals `{"success": false, "errorCode": "ER-xx", "message"}`: ER-01
no funds (transient, store alarm: it comes back once topped up), ER-02..ER-05 the number or its
route (undeliverable), ER-06 empty and ER-07 filtered (refused), ER-08 the sender id
(credentials, store alarm), ER-09 a duplicate (already accepted: taken as sent).
Taqnyat: POST {api_url}/v1/messages, bearer, JSON {recipients, body, sender}. 201
`{"statusCode": 201, "messageId", "accepted": "[966…,]", "rejected": "[]"}`; a number in
`rejected` is undeliverable; 401/403 credentials (store alarm); other 4xx refused.
Both: 429, 5xx and connection errors are transient.
"""
from __future__ import annotations

import requests

from service.domain.arabic import fit_sms
from service.clients.providers.base import (CREDENTIALS, REFUSED, UNDELIVERABLE, DeliveryPermanentError,
                                    DeliveryTransientError, mobile_digits, retry_after, scrub)


def account_alarm(merchant_id: int) -> str:
    return f"sms_account_{merchant_id}"


def _json(response) -> dict:
    try:
        answer = response.json()
    except ValueError:
        return {}
    return answer if isinstance(answer, dict) else {}


def _true(value) -> bool:
    """Unifonic documents `success` as a boolean on /rest/SMS/messages and as the string "true" on
    its bulk endpoint: either is an accepted message."""
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


class UnifonicClient:
    name = "unifonic"
    ERRORS = {"ER-02": UNDELIVERABLE, "ER-03": UNDELIVERABLE, "ER-04": UNDELIVERABLE, "ER-05": UNDELIVERABLE,
              "ER-06": REFUSED, "ER-07": REFUSED, "ER-08": CREDENTIALS}

    def __init__(self, merchant_id: int, config: dict, session: requests.Session, timeout: float):
        self.merchant_id = merchant_id
        self.url = config["api_url"].rstrip("/") + "/rest/SMS/messages"
        self.app_sid = config["api_key"]
        self.sender = config["sender"]
        self.session, self.timeout = session, timeout

    def send_sms(self, to: str, body: str, reference: str) -> str:
        form = {"AppSid": self.app_sid, "SenderID": self.sender, "Recipient": to, "Body": body,
                "responseType": "JSON", "CorrelationID": reference, "MessageType": "3"}
        try:
            response = self.session.post(self.url, data=form, timeout=self.timeout, allow_redirects=False)
        except requests.RequestException as exc:
            raise DeliveryTransientError(f"Unifonic POST failed: {type(exc).__name__}") from None
        answer = _json(response)
        code = answer.get("errorCode")
        if response.status_code == 200 and _true(answer.get("success")):
            data = answer.get("data")
            return str(data.get("MessageID", "")) if isinstance(data, dict) else ""
        if code == "ER-09":
            return ""  # a duplicate of a message Unifonic already accepted (a retry after a lost answer)
        title = f"Unifonic {code or response.status_code}: {scrub(answer.get('message', ''))}"
        if code == "ER-01":
            raise DeliveryTransientError(title, alarm=(account_alarm(self.merchant_id),
                                                       f"merchant {self.merchant_id}: Unifonic has no funds (ER-01)"))
        if code in self.ERRORS:
            reason = self.ERRORS[code]
            alarm = (account_alarm(self.merchant_id), f"merchant {self.merchant_id}: Unifonic refuses the sender id "
                                                      f"({title})") if reason == CREDENTIALS else None
            raise DeliveryPermanentError(title, reason, alarm=alarm)
        if response.status_code in (401, 403):
            raise DeliveryPermanentError(title, CREDENTIALS, alarm=(
                account_alarm(self.merchant_id), f"merchant {self.merchant_id}: Unifonic refuses the AppSid ({title})"))
        if response.status_code == 429 or response.status_code >= 500:
            raise DeliveryTransientError(title, retry_after=retry_after(response))
        raise DeliveryPermanentError(title, REFUSED)


class TaqnyatClient:
    name = "taqnyat"

    def __init__(self, merchant_id: int, config: dict, session: requests.Session, timeout: float):
        self.merchant_id = merchant_id
        self.url = config["api_url"].rstrip("/") + "/v1/messages"
        self.token = config["api_key"]
        self.sender = config["sender"]
        self.session, self.timeout = session, timeout

    def send_sms(self, to: str, body: str, reference: str) -> str:
        try:
            response = self.session.post(self.url, json={"recipients": [to], "body": body, "sender": self.sender},
                                         headers={"Authorization": f"Bearer {self.token}"}, timeout=self.timeout,
                                         allow_redirects=False)
        except requests.RequestException as exc:
            raise DeliveryTransientError(f"Taqnyat POST failed: {type(exc).__name__}") from None
        answer = _json(response)
        title = f"Taqnyat {answer.get('statusCode', response.status_code)}: {scrub(answer.get('message', ''))}"
        if response.status_code in (200, 201) and answer.get("messageId") is not None:
            if to in str(answer.get("rejected", "")):
                raise DeliveryPermanentError("Taqnyat rejected the number", UNDELIVERABLE)
            return str(answer["messageId"])
        if response.status_code in (401, 403):
            raise DeliveryPermanentError(title, CREDENTIALS, alarm=(
                account_alarm(self.merchant_id), f"merchant {self.merchant_id}: Taqnyat refuses the token ({title})"))
        if response.status_code == 429 or response.status_code >= 500:
            raise DeliveryTransientError(title, retry_after=retry_after(response))
        raise DeliveryPermanentError(title, REFUSED)


CLIENTS = {"unifonic": UnifonicClient, "taqnyat": TaqnyatClient}


class SmsChannel:
    name = "sms"

    def __init__(self, merchant_id: int, config: dict, session: requests.Session, timeout: float, renderer,
                 store_name: str = ""):
        self.client = CLIENTS[config["provider"]](merchant_id, config, session, timeout)
        self.max_segments = int(config.get("max_segments") or 3)
        self.renderer = renderer
        self.store_name = store_name

    @property
    def provider(self) -> str:
        """Whose message ids these are (the cross-store message index is per provider)."""
        return self.client.name

    def text(self, reminder: dict) -> str:
        return fit_sms(self.renderer.sms(reminder, self.store_name), self.max_segments)

    def send(self, reminder: dict) -> str:
        to = mobile_digits(reminder)
        return self.client.send_sms(to, self.text(reminder), reminder["reminder_id"])
