"""SMS delivery reports as Unifonic and Taqnyat send them: which message, and what became of it.

Pure: service/web/callbacks.py reads the request (JSON, or a form) and hands the fields here;
service/ops/fallback.py reads the failure reasons. The words are the providers' documented states
(devkit/fixtures/channels/unifonic.json and taqnyat.json name the pages):

- Unifonic: intermediate `Queued`, `Sent`; final `Delivered`, `Undelivered` and `Delivery not
  confirmed` ("Understanding SMS Delivery"); the current system's `Not Sent` and `Pending`; the
  older support articles' `Rejected`, `Failed`, `Enroute`, `Expired`, `Deleted`, `Undeliverable`,
  `Accepted`, `Unknown`. The console sets the report URL (one per account) and may send a form
  or JSON and rename fields, so field names are matched without regard to case or separators
  (`MessageID`, `messageId`, `message_id`), and the state is read from `DLR` before `Status`:
  a console that sends both sends the send status in `Status`.
- Taqnyat documents no report; SMPP's words (`DELIVRD`, `UNDELIV`, `REJECTD`, ...) are accepted.

Each word maps to the ledger's `delivered`, `sent` (still on its way, or final without an
answer either way: "Delivery not confirmed" moves nothing on, the shopper may well have it) or
`failed` with the reason the failed-by-reason counts show (service/clients/providers/base.py's words).
Every failure here is final at the carrier, so each moves the reminder on (service/ops/fallback.py).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

DELIVERED, SENT, FAILED = "delivered", "sent", "failed"
UNDELIVERABLE, REFUSED = "undeliverable", "refused"  # as in service/clients/providers/base.py

# normalised word -> (ledger status, failure reason or None)
STATES: dict[str, tuple[str, str | None]] = {
    "delivered": (DELIVERED, None), "delivrd": (DELIVERED, None),
    "queued": (SENT, None), "sent": (SENT, None), "accepted": (SENT, None), "acceptd": (SENT, None),
    "enroute": (SENT, None), "pending": (SENT, None), "unknown": (SENT, None),
    "delivery not confirmed": (SENT, None),
    "undelivered": (FAILED, UNDELIVERABLE), "undeliverable": (FAILED, UNDELIVERABLE),
    "undeliv": (FAILED, UNDELIVERABLE), "failed": (FAILED, UNDELIVERABLE), "expired": (FAILED, UNDELIVERABLE),
    "deleted": (FAILED, UNDELIVERABLE),
    # Refused by the platform before it reached the carrier (number format, content, sender, balance).
    "rejected": (FAILED, REFUSED), "rejectd": (FAILED, REFUSED), "not sent": (FAILED, REFUSED),
}
MESSAGE_ID_FIELDS = ("messageid", "msgid", "id")
STATE_FIELDS = ("dlr", "status", "state", "deliverystatus", "messagestatus")
CORRELATION_FIELDS = ("correlationid",)
MAX_FIELD = 128  # ids and words are short; anything longer is not one of them


@dataclass(frozen=True)
class Report:
    message_id: str
    correlation_id: str
    word: str  # the state, normalised ("delivery not confirmed"); "" when none was sent
    status: str | None  # delivered | sent | failed; None for a word no provider documents
    reason: str | None  # why it failed (None unless failed)


def normalise(word) -> str:
    """`Delivery not confirmed`, `DELIVERY_NOT_CONFIRMED` and `delivery-not-confirmed` alike."""
    return re.sub(r"[\s_\-]+", " ", str(word)).strip().lower() if isinstance(word, (str, int)) else ""


def _key(name) -> str:
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _pick(fields: dict, names: tuple[str, ...]) -> str:
    for name in names:
        value = fields.get(name)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            continue
        text = str(value).strip()
        if text and len(text) <= MAX_FIELD:
            return text
    return ""


def read_report(data) -> Report:
    """One report's fields (a JSON object or a form, as a dict) -> what it says."""
    fields = {_key(k): v for k, v in data.items()} if isinstance(data, dict) else {}
    word = normalise(_pick(fields, STATE_FIELDS))
    status, reason = STATES.get(word, (None, None))
    return Report(_pick(fields, MESSAGE_ID_FIELDS), _pick(fields, CORRELATION_FIELDS), word, status, reason)
