"""The latest we heard of each customer (name, mobile, e-mail, language, notifications flag).

Webhooks carry the customer; a read triggered later (a sweep, a retry) does not, so the
event's copy is kept here for the reminder. Kept for DATA_RETENTION_DAYS after the last event (or backfill listing).

A hash, written field by field with no read first: order events don't carry the
notifications flag, so they write the other fields only, and an order event handled at the
same moment as a `customer.updated` that opts out can never write the old flag back. The same
goes for the language. `unsubscribed_at` is set by the unsubscribe link (service/domain/unsubscribe.py)
and by nothing Salla sends: once there, the customer counts as opted out whatever Salla's flag says.
The customer's last read is kept in the same hash, as fields named `L...` (service/state/last_read.py);
the profile's own fields are lower case, and a hash holding only those counts as no profile.

Each field is written in event-time order: every field has the time of the event that wrote
it (the envelope's created_at; a backfill listing's own time), and an older event never
overwrites what a newer one set. The times are kept compactly (issue 18): `t` holds the newest
event's time, the time of every field present without a `t:<field>` of its own; a field an
older event wrote keeps its own `t:<field>`. Profiles written before this (a `t:<field>`
beside every field, no `t`) read the same, and take the compact form as events write them. Salla retries a delivery for about 15 minutes, so an
older customer.updated (notifications on) can arrive after a newer one (off): without the
order it would turn notifications back on. The unsubscribe link writes the flag at its own
time. One Lua script per save: two workers applying two events of one customer at once
cannot interleave.

Opt-outs also go to the store's suppression entries (service/domain/suppression.py: keyed hashes,
nothing personal) that outlive the profile; a profile created again (after forget, retention
or uninstall) starts from them, and `load` consults them, so that no reminder is planned or
delivered to a suppressed customer whatever became of the profile.
"""
from __future__ import annotations

import time

import redis

from service.state import deployment_secrets
from service.domain import suppression
from service.domain.events import Customer
from service.state.keys import Keys

KEEP_SECONDS = 400 * 24 * 3600
_FLAG = {"1": True, "0": False}

# KEYS[1] the profile, KEYS[2] the store's suppression hash (one hash tag: one slot).
# ARGV[1] the event's time, ARGV[2] the profile's TTL, ARGV[3] n, then n field/value pairs,
# then w, then the customer's suppression digests: the first w under the signing key (written),
# all of them looked up. Returns the notifications flag it applied ('' when none).
_SAVE = """
local at = tonumber(ARGV[1])
local n = tonumber(ARGV[3])
local w = tonumber(ARGV[4 + 2 * n])
local digests = {}
for i = 5 + 2 * n, #ARGV do digests[#digests + 1] = ARGV[i] end
-- No field of the profile's own (the `L` fields are the last read's, service/state/last_read.py):
-- created again (forgotten, expired, erased), the suppression entries speak first, at their time.
local fresh = true
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 1) ~= 'L' then fresh = false break end
end
if fresh and #digests > 0 then
  local values = redis.call('HMGET', KEYS[2], unpack(digests))
  for i = 1, #digests do
    local v = values[i]
    if v then
      local kind, since = string.match(v, '^(%a+):(.+)$')
      if kind == 'link' then redis.call('HSETNX', KEYS[1], 'unsubscribed_at', since) end
      local cur = redis.call('HGET', KEYS[1], 't:notifications_enabled')
      if since and (not cur or tonumber(cur) < tonumber(since)) then
        redis.call('HSET', KEYS[1], 'notifications_enabled', '0', 't:notifications_enabled', since)
      end
    end
  end
end
-- A field's time: its own `t:<field>`, else `t` when the field is there (none: never written).
local base = redis.call('HGET', KEYS[1], 't')
local function time_of(field)
  local t = redis.call('HGET', KEYS[1], 't:' .. field)
  if not t and base and redis.call('HEXISTS', KEYS[1], field) == 1 then t = base end
  return t
end
local newest = not base or tonumber(base) <= at
if newest and base then
  -- `t` moves to this event's time: the fields it leaves alone keep the time they had.
  for _, field in ipairs({'name', 'mobile', 'email', 'notifications_enabled', 'lang'}) do
    if redis.call('HEXISTS', KEYS[1], field) == 1 and redis.call('HEXISTS', KEYS[1], 't:' .. field) == 0 then
      redis.call('HSET', KEYS[1], 't:' .. field, base)
    end
  end
end
local flag = ''
for i = 0, n - 1 do
  local field, value = ARGV[4 + 2 * i], ARGV[5 + 2 * i]
  local t = time_of(field)
  if not t or tonumber(t) <= at then
    redis.call('HSET', KEYS[1], field, value)
    if newest then redis.call('HDEL', KEYS[1], 't:' .. field) else redis.call('HSET', KEYS[1], 't:' .. field, ARGV[1]) end
    if field == 'notifications_enabled' then flag = value end
  end
end
if newest then redis.call('HSET', KEYS[1], 't', ARGV[1]) end
if flag == '0' then
  for i = 1, w do
    local v = redis.call('HGET', KEYS[2], digests[i])
    if not v or (string.sub(v, 1, 5) == 'flag:' and tonumber(string.sub(v, 6)) < at) then
      redis.call('HSET', KEYS[2], digests[i], 'flag:' .. ARGV[1])
    end
  end
elseif flag == '1' then
  -- A newer opt-in in Salla lifts the older Salla opt-outs (never a link's).
  for i = 1, #digests do
    local v = redis.call('HGET', KEYS[2], digests[i])
    if v and string.sub(v, 1, 5) == 'flag:' and tonumber(string.sub(v, 6)) < at then
      redis.call('HDEL', KEYS[2], digests[i])
    end
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return flag
"""


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _time_of(raw: dict, field: str) -> str | None:
    """The time of the event that wrote `field` in a stored profile: its own `t:<field>`, else
    the profile's `t` (the compact form), None when the field was never written."""
    if f"t:{field}" in raw:
        return raw[f"t:{field}"]
    return raw.get("t") if field in raw else None


class Profiles:
    def __init__(self, store: redis.Redis, prefix: str, keep_seconds: int = KEEP_SECONDS,
                 secrets: tuple[str, ...] = ()):
        self.redis = store
        self.keys = Keys(prefix)
        # DATA_RETENTION_DAYS: a customer not seen for that long is forgotten (the TTL is
        # renewed at every event, and at every backfill that lists them).
        self.keep_seconds = keep_seconds
        # TOKEN_ENCRYPTION_KEY's keys: they unwrap the deployment's suppression key
        # (service/state/deployment_secrets.py), which keys the entries and never changes.
        self.secrets = tuple(secrets)
        self._save = store.register_script(_SAVE)

    def _key(self, merchant_id: int, customer_id: int) -> str:
        return self.keys.store(merchant_id).profile(customer_id)

    def save(self, merchant_id: int, customer: Customer, at: float | None = None) -> bool | None:
        """Apply what an event (or a listing) at time `at` says of the customer; fields a newer
        event set stay. Returns the notifications flag applied (None: none, or an older one)."""
        at = time.time() if at is None else at
        k = self.keys.store(merchant_id)
        fields = {"name": customer.name or "", "mobile": customer.mobile or "", "email": customer.email or ""}
        if customer.notifications_enabled is not None:
            fields["notifications_enabled"] = "1" if customer.notifications_enabled else "0"
        if customer.lang:
            fields["lang"] = customer.lang
        written, looked_up = self._digests(merchant_id, customer)
        pairs = [part for item in fields.items() for part in item]
        flag = self._save(keys=[k.profile(customer.id), k.suppressed],
                          args=[f"{at:.3f}", self.keep_seconds, len(fields), *pairs, len(written), *looked_up],
                          client=self.redis)
        return _FLAG.get(_text(flag) or "")

    def load(self, merchant_id: int, customer_id: int) -> Customer:
        k = self.keys.store(merchant_id)
        pipe = self.redis.pipeline(transaction=False)
        pipe.hgetall(k.profile(customer_id))
        pipe.exists(k.suppressed)
        stored, any_suppressed = pipe.execute()
        raw = {_text(key): _text(value) for key, value in stored.items()}
        enabled = False if raw.get("unsubscribed_at") else _FLAG.get(raw.get("notifications_enabled", ""))
        customer = Customer(id=customer_id, name=raw.get("name", ""), mobile=raw.get("mobile") or None,
                            email=raw.get("email") or None, notifications_enabled=enabled,
                            lang=raw.get("lang") or None)
        if enabled is not False and any_suppressed and self.secrets:
            _, looked_up = self._digests(merchant_id, customer)
            flag_at = _time_of(raw, "notifications_enabled")
            if suppression.blocks(self.redis.hmget(k.suppressed, looked_up), raw.get("notifications_enabled"),
                                  float(flag_at) if flag_at else None):
                customer = Customer(id=customer.id, name=customer.name, mobile=customer.mobile, email=customer.email,
                                    notifications_enabled=False, lang=customer.lang)
        return customer

    def unsubscribe(self, merchant_id: int, customer_id: int, now: float) -> bool:
        """The customer used the unsubscribe link; True the first time. Newest at its own time."""
        key = self._key(merchant_id, customer_id)
        known = self.load(merchant_id, customer_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(key, "unsubscribed_at", f"{now:.0f}")
        pipe.hset(key, mapping={"notifications_enabled": "0", "t:notifications_enabled": f"{now:.3f}"})
        pipe.expire(key, self.keep_seconds)
        first = bool(pipe.execute()[0])
        self.suppress(merchant_id, known, suppression.LINK, now)
        return first

    def suppress(self, merchant_id: int, customer: Customer, kind: str, at: float) -> None:
        """Suppression entries for this customer (their id and contacts): a link's replaces a
        Salla flag's; nothing replaces a link's."""
        written, _ = self._digests(merchant_id, customer)
        if not written:
            return
        key = self.keys.store(merchant_id).suppressed
        current = self.redis.hmget(key, written)
        value = suppression.entry(kind, at)
        fresh = {d: value for d, old in zip(written, current)
                 if not old or (kind == suppression.LINK and not _text(old).startswith(suppression.LINK))}
        if fresh:
            self.redis.hset(key, mapping=fresh)

    def keep_suppressed(self, merchant_id: int, customer_id: int, now: float) -> bool:
        """Before the profile is erased: an opted-out customer's suppression entries (for one
        who opted out before entries existed). True when the customer was opted out."""
        raw = {_text(k): _text(v) for k, v in self.redis.hgetall(self._key(merchant_id, customer_id)).items()}
        customer = self.load(merchant_id, customer_id)
        if raw.get("unsubscribed_at"):
            self.suppress(merchant_id, customer, suppression.LINK, float(raw["unsubscribed_at"]))
        elif raw.get("notifications_enabled") == "0":
            at = _time_of(raw, "notifications_enabled")
            self.suppress(merchant_id, customer, suppression.FLAG, float(at) if at else now)
        return customer.notifications_enabled is False

    def _digests(self, merchant_id: int, customer: Customer) -> tuple[list[str], list[str]]:
        """(the entries written, the entries looked up): one list, under the deployment's
        suppression key, which a rotation of TOKEN_ENCRYPTION_KEY re-wraps but never changes, so
        an opt-out holds after the old key is dropped."""
        if not self.secrets:
            return [], []
        key = deployment_secrets.current(self.redis, self.keys.prefix, self.secrets, "suppression").hex()
        found = suppression.digests(key, merchant_id, customer.id, customer.mobile, customer.email)
        return found, found
