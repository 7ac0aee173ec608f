"""Which reminder a provider's status is about, across stores, and statuses that came too early.

A provider account has one report URL (Unifonic's console sets one per account), and stores on
the environment's shared SMS account or WhatsApp app share it: a report names a message, not a
store. So every send is indexed by its provider and *handles* (service/state/keys.py, shared keys):
- `id:<message id>`: the id the provider answered (a wamid, Unifonic's MessageID, Taqnyat's messageId);
- `ref:<reminder id>`: the CorrelationID we sent (Unifonic echoes it in its reports).
Each handle names `<merchant>:<reminder id>:<channel>` for as long as the reminder's record lives.

A status can arrive before the worker has recorded its send (the provider answers the webhook
before our worker gets the HTTP answer back): it finds no index entry. It is kept
(`msg-early:`, EARLY_STATUS_SECONDS) and applied when the send lands. Both sides write first and
look second (the worker: the send, then the index, then takes what was kept; the callback: keeps
it, then looks in the index again), so one of them always sees the other, and the atomic take
(MULTI on one key) lets only one of them apply it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

import redis

from service.state.keys import Keys

EARLY_STATUS_SECONDS = 600  # a send is recorded within its HTTP timeout; a lost worker's send is sent again (new id)
EARLY_STATUSES_KEPT = 10  # per message: a status flood on a report URL stays bounded
LONGEST_HANDLE = 200  # provider ids and CorrelationIDs we send are far shorter: longer ones are not ours
CORRELATED_PROVIDERS = frozenset({"unifonic"})  # they take our CorrelationID (the reminder id) and report it


@dataclass(frozen=True)
class Sent:
    merchant_id: int
    reminder_id: str
    channel: str


def message_handle(message_id) -> str | None:
    text = str(message_id or "").strip()
    return f"id:{text}" if text and len(text) <= LONGEST_HANDLE else None


def correlation_handle(reference) -> str | None:
    text = str(reference or "").strip()
    return f"ref:{text}" if text and len(text) <= LONGEST_HANDLE else None


def send_handles(provider: str, message_id: str, reminder_id: str) -> list[str]:
    """What a send is indexed under (see the module's docstring)."""
    handles = [message_handle(message_id)]
    if provider in CORRELATED_PROVIDERS:
        handles.append(correlation_handle(reminder_id))
    return [handle for handle in handles if handle]


def _text(value) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


class MessageIndex:
    def __init__(self, store: redis.Redis, prefix: str):
        self.redis = store
        self.keys = Keys(prefix)

    def remember(self, provider: str, handles: list[str], sent: Sent, ttl_ms: int) -> None:
        """One write per key (each its own slot on a cluster); the caller recorded the send first."""
        value = f"{sent.merchant_id}:{sent.reminder_id}:{sent.channel}"
        pipe = self.redis.pipeline(transaction=False)
        for handle in handles:
            pipe.set(self.keys.message_index(provider, handle), value, px=max(int(ttl_ms), 1000))
        pipe.execute()

    def find(self, provider: str, handles: list[str]) -> Sent | None:
        for handle in handles:
            found = _text(self.redis.get(self.keys.message_index(provider, handle)))
            if found and found.count(":") >= 2:
                merchant, reminder_id, channel = found.split(":", 2)
                if merchant.isdigit():
                    return Sent(int(merchant), reminder_id, channel)
        return None

    def keep_early(self, provider: str, handle: str, status: dict) -> None:
        key = self.keys.early_statuses(provider, handle)
        pipe = self.redis.pipeline(transaction=True)
        pipe.rpush(key, json.dumps(status, ensure_ascii=False))
        pipe.ltrim(key, -EARLY_STATUSES_KEPT, -1)
        pipe.expire(key, EARLY_STATUS_SECONDS)
        pipe.execute()

    def take_early(self, provider: str, handles: list[str]) -> list[dict]:
        """Every status kept for these handles, gone from Redis in the same step (once)."""
        taken = []
        for handle in handles:
            key = self.keys.early_statuses(provider, handle)
            pipe = self.redis.pipeline(transaction=True)
            pipe.lrange(key, 0, -1)
            pipe.delete(key)
            for raw in pipe.execute()[0]:
                try:
                    item = json.loads(_text(raw))
                except ValueError:
                    continue
                if isinstance(item, dict):
                    taken.append(item)
        return taken
