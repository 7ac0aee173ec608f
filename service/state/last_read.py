"""A customer's last read (its lots and when it was read), kept with their profile.

The read lives in the customer's profile hash `customer:<c>` as `L` and `L<lot key>` fields
(service/domain/loyalty.py `_lots_fields`): it lives as long as the profile does (what
`lots:<c>` always did: DATA_RETENTION_DAYS after the customer was last seen), and one key a
customer fewer is ~150 bytes of Redis each (issue 18 goal 1: the key's name, its entries in
Redis's main and expiry tables, its object header). The profile's own fields are lower case,
so the `L` prefix names only the read's.

A read that would not fit a listpack (a lot's field over 64 bytes: a long name of Salla's, an
expiry in another zone; more than LOTS_IN_PROFILE_MAX lots) is kept in `lots:<c>` as before, as
JSON, and the profile's read fields go. Every write keeps one of the two and deletes the other,
in one step. `lots:<c>` written by an earlier version still reads until the customer's next read
moves it into the profile, or it expires (no migration is needed); while an upgrade runs both
versions, a reader takes the later of the two reads.
"""
from __future__ import annotations

import redis

from service.domain.loyalty import Lot, _lots_fields, _lots_from_fields, _lots_from_json, _lots_json, is_lots_field
from service.state.keys import Keys
from service.state.redis_client import pipelined_script

# KEYS: profile, lots. ARGV: seconds to keep a profile without a TTL, 'h' | 's', then the
# fields and values ('h') or the JSON ('s'). The read keeps the profile's TTL (a read does not
# extend it: an event or a listing does); a profile created by it lives the retention period.
_SAVE = """
local ttl = redis.call('TTL', KEYS[1])
if ttl <= 0 then ttl = tonumber(ARGV[1]) end
local stale = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 1) == 'L' then stale[#stale + 1] = name end
end
if #stale > 0 then redis.call('HDEL', KEYS[1], unpack(stale)) end
if ARGV[2] == 'h' then
  redis.call('HSET', KEYS[1], unpack(ARGV, 3))
  if redis.call('TTL', KEYS[1]) < 0 then redis.call('EXPIRE', KEYS[1], ttl) end
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ttl)
end
return 1
"""


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def profile_fields(raw: dict) -> dict:
    """A profile hash's own fields (str), without the read kept beside them."""
    return {_text(name): _text(value) for name, value in raw.items() if not is_lots_field(_text(name))}


def parse(raw_profile: dict | None, raw_lots) -> tuple[float, list[Lot]] | None:
    """The last read from the profile hash's fields or from `lots:<c>`, the later of the two when
    both hold one (a worker of the earlier version, during an upgrade, writes `lots:<c>` only);
    None when neither does."""
    fields = {_text(name): _text(value) for name, value in (raw_profile or {}).items()}
    found = [read for read in (_lots_from_fields(fields), _lots_from_json(_text(raw_lots))) if read is not None]
    return max(found, key=lambda read: read[0]) if found else None


class LastRead:
    def __init__(self, store: redis.Redis, prefix: str, keep_seconds: int):
        self.redis = store
        self.keys = Keys(prefix)
        self.keep_seconds = int(keep_seconds)  # DATA_RETENTION_DAYS: a profile the read creates
        self._save = store.register_script(_SAVE)

    def read(self, pipe, merchant_id: int, customer_id: int) -> None:
        """Queue on `pipe` what `parse` takes: the profile hash, then `lots:<c>`."""
        k = self.keys.store(merchant_id)
        pipe.hgetall(k.profile(customer_id))
        pipe.get(k.lots(customer_id))

    def load(self, merchant_id: int, customer_id: int) -> tuple[float, list[Lot]] | None:
        pipe = self.redis.pipeline(transaction=False)
        self.read(pipe, merchant_id, customer_id)
        return parse(*pipe.execute())

    def save(self, merchant_id: int, customer_id: int, lots: list[Lot], read_at, pipe=None) -> None:
        """Keep this read (replacing the last); on `pipe` when given (its result is 1)."""
        k = self.keys.store(merchant_id)
        fields = _lots_fields(lots, read_at)
        args = ["h", *(part for item in fields.items() for part in item)] if fields is not None \
            else ["s", _lots_json(lots, read_at)]
        keys, args = [k.profile(customer_id), k.lots(customer_id)], [self.keep_seconds, *args]
        if pipe is None:
            self._save(keys=keys, args=args)
        else:
            pipelined_script(self.redis, pipe, self._save, keys, args)
