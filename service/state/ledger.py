"""The delivery ledger: every reminder handed to delivery, its state, attempts and channels.

The backbone, as notification statuses are in GOV.UK Notify: statistics, dead letters,
replay and "was this lot reminded" all read it, so nothing counts as reminded that did not
go out.

    scheduled --> sending --> sent                        (every channel done, one or more sent)
        ^            |  \\
        |            |   `--> retrying --> sending ...   (a channel failed for now: backoff)
        |            v
        +-- replay -- dead --> dropped                   (retries used up, or refused everywhere)
    scheduled/sending/retrying --> cancelled             (opt-out, uninstall)
    sent --> scheduled                                    (`first`: the channel that sent reported it
                                                           failed later; on to the next: service/ops/fallback.py)
    sent --> dead                                         (... and no channel is left)
    held_out                                              (the customer is in the store's holdout:
                                                           nothing goes out; service/state/holdout.py)

A record is a hash `reminder:<id>` under the store's hash tag: customer_id, stage, state,
attempts, last_error, created_at, updated_at, sent_at, body (the reminder as JSON), and per
channel `ch:<name>` = sent | failed:<reason>: <why> | retry:<why> | sending:<attempt>:<deadline>.
(The merchant is the key's hash tag; records of the previous format also hold `merchant_id`.)

Once a reminder is sent (settle_sent) its body goes: it was 63 % of Redis's memory, kept until
the lots expired (issue 18). The record is rewritten without it, with what a body is rendered
again from (full_reminder: the customer's profile and last read's lots give the rest) under
short names: `l` the lot keys (comma-separated), `p` points expiring, `x` earliest expiry,
`lg` language, `v` value in SAR (absent: none), and per other stage of the message `o:<n>` =
stage|points|expiry|value|lot keys (`o` = 0 for an empty list of them). An expiry of the usual
ISO form (whole seconds) is kept as unix seconds, in the zone offset `z` (seconds) that every
expiry so kept shares; records settled before this hold the ISO text, read as it is. A record
settled in the attempt that sent it keeps no `updated_at`: it is `sent_at`. Every value then
fits 64 bytes, so Redis keeps the hash as a listpack (hash-max-listpack-value) instead of a
hash table, a third of the size, and short enough for a 256-byte allocation in the usual case
(issue 18 goal 1). A sent reminder reopened by a late failure, or replayed, is delivered from
that rendering.

Once a channel has sent, the provider's word on it follows, as in Notify's status callbacks:
`st:<name>` = sent | delivered | read | failed:<reason>, `st_at:<name>` its provider timestamp.
Statuses arrive in any order and never go backwards: read beats delivered beats sent; a failure
after delivered is kept in `stf:<name>` but does not undo it; a delivered or read after a failure
replaces it. The store's `statuses` hash counts them per channel (`<name>:sent`, `:delivered`
(delivered or read), `:read`, `:failed:<reason>`), each reminder once per level.
`msgid:<channel>:<provider id>` (its own key, the record's lifetime) maps a provider's message
id back to the reminder; it is written with `ch:<name> = sent` in one step (record_send), and the
cross-store index of service/state/message_index.py follows it.

The customer's `marks:<c>` hash (same slot) says which lots were named at which stage:
  <lot key>   -> nearest stage a *sent* reminder named it at (outcome accounting reads these)
  d:<lot key> -> nearest stage a reminder an operator *dropped* named it at
  stage:<S>   -> when this customer's last S reminder was queued (the pause between two), in
                 whole seconds rounded up (before issue 18's memory2: with fractions, still read)
  p:<id>      -> a reminder on its way (or a dead letter): {"stage", "lots", "at"}, and
                 "other_stages": [{"stage", "lots"}] when it names more stages (one message for
                 stages due at once: service/domain/reminders.py). Its lots count as named for planning,
                 so that a read in between does not queue the stage again, and the sweep finds
                 the reminder's id from a due-set timer through it.
  h:<lot key> -> nearest stage a `held_out` reminder named it at: named for planning (so a held-out
                 customer goes through the same stages as the others), never counted as reminded
  r:<S>:<lot key>, c:<group>:<S>:n|u -> the holdout's accounting (service/state/holdout.py): the lot's
                 points when it reached stage S, and the customer's settled totals
The first send marks the lots, each at its own stage (and counts each stage); once every channel
is done the `p:` entry goes. Dropped, it becomes drop marks; cancelled, it goes (the lots are free
again).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import redis

from service.state import store_figures
from service.config.settings import channel_claim_seconds
from service.state.keys import Keys
from service.domain.messages import plain_message

SCHEDULED, SENDING, RETRYING, SENT, DEAD, DROPPED, CANCELLED = (
    "scheduled", "sending", "retrying", "sent", "dead", "dropped", "cancelled")
HELD_OUT = "held_out"  # what the customer would have got, in the store's holdout (service/state/holdout.py)
LIVE = frozenset({SCHEDULED, SENDING, RETRYING})  # still on its way: a timer in the due set watches it
STAGE_FIELD, CLAIM_FIELD, DROP_FIELD = "stage:", "p:", "d:"
HELD_FIELD = "h:"
NOT_MARKS = ("r:", "c:")  # the holdout's accounting, in the same hash (service/state/holdout.py)
SHORT_FIELDS = ("l", "p", "x", "lg", "v", "o", "z")  # a sent record's, in place of its body (and `o:<n>`)

# Every stage a record names, with its lot keys and points: from its body (its own stage, then
# `other_stages` when one message names several), or from its short fields once the body went
# (settle_sent): `l`/`p` its own, `o:<n>` = stage|points|expiry|value|lot keys the n-th other one.
_RECORD_PARTS = """
local function split(text, sep)
  local found = {}
  for piece in string.gmatch(text or '', '([^' .. sep .. ']+)') do table.insert(found, piece) end
  return found
end
local function keys_of(lots)
  local keys = {}
  for _, lot in ipairs(lots or {}) do table.insert(keys, lot['key']) end
  return keys
end
local function record_parts(record)
  local stage = tonumber(redis.call('HGET', record, 'stage'))
  local body = redis.call('HGET', record, 'body')
  if body then
    body = cjson.decode(body)
    local found = {{stage = stage, keys = keys_of(body['lots']), points = body['points_expiring']}}
    if type(body['other_stages']) == 'table' then
      for _, other in ipairs(body['other_stages']) do
        table.insert(found, {stage = tonumber(other['stage_days']), keys = keys_of(other['lots']),
                             points = other['points_expiring']})
      end
    end
    return found
  end
  local found = {{stage = stage, keys = split(redis.call('HGET', record, 'l'), ','),
                  points = tonumber(redis.call('HGET', record, 'p') or '0')}}
  local fields = redis.call('HGETALL', record)
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 2) == 'o:' then
      local stage, points, _, _, keys = string.match(fields[i + 1], '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
      table.insert(found, {stage = tonumber(stage), points = tonumber(points), keys = split(keys, ',')})
    end
  end
  return found
end
"""

# KEYS: record, marks. ARGV: id, merchant, customer, stage, now, keep, body, claim, other stages...
_CREATE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'cancelled' then return state end
redis.call('DEL', KEYS[1])  -- cancelled (an opt-out since undone): it starts over
redis.call('HSET', KEYS[1], 'customer_id', ARGV[3], 'stage', ARGV[4],
           'state', 'scheduled', 'attempts', 0, 'created_at', ARGV[5], 'updated_at', ARGV[5], 'body', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[6])
-- A stage's time in whole seconds, rounded up (a pause never shorter): an integer in the listpack.
local stage_at = string.format('%d', math.ceil(tonumber(ARGV[5])))
redis.call('HSET', KEYS[2], 'p:' .. ARGV[1], ARGV[8], 'stage:' .. ARGV[4], stage_at)
for i = 9, #ARGV do redis.call('HSET', KEYS[2], 'stage:' .. ARGV[i], stage_at) end
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[6]) then redis.call('EXPIRE', KEYS[2], ARGV[6]) end
return 'created'
"""

# KEYS: record. ARGV: channel, attempt, now, claim seconds.
# A channel is claimed for one attempt at a time. A claim of an earlier attempt that has not
# run out means another worker may be sending right now: busy (try again after it). One that
# ran out belonged to a worker that died mid-send; taking it over may repeat that send (the
# one place a reminder can go out twice: X-Reminder-Id lets a receiver drop the repeat).
_CLAIM_CHANNEL = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'gone' end  -- erased meanwhile: never re-created
local field = 'ch:' .. ARGV[1]
local current = redis.call('HGET', KEYS[1], field)
if current == 'sent' then return 'sent' end
if current and string.sub(current, 1, 7) == 'failed:' then return 'failed' end
if current and string.sub(current, 1, 8) == 'sending:' then
  local attempt, deadline = string.match(current, '^sending:(%d+):([%d%.]+)$')
  if attempt ~= ARGV[2] and tonumber(deadline) > tonumber(ARGV[3]) then return 'busy:' .. deadline end
end
redis.call('HSET', KEYS[1], field, 'sending:' .. ARGV[2] .. ':' .. string.format('%.3f', tonumber(ARGV[3]) + tonumber(ARGV[4])))
return 'ok'
"""

# KEYS: record. ARGV: now. An attempt begins: its number, or -1 when the record is gone (the
# customer forgotten or the store erased meanwhile). A write that found no record would
# re-create it without its TTL and without customer_id (issue 15): every write checks first.
_BEGIN_ATTEMPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'sending', 'updated_at', ARGV[1])
return attempt
"""

# KEYS: record. ARGV: field, value, field, value... Written only if the record is still there:
# 1, else 0.
_HSET_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV))
return 1
"""

# KEYS: record, marks, stats, counters, dead. ARGV: id, now.
# The first channel that sends makes the reminder reach the shopper (`sent_at`): its lots are
# marked at its stage, and it is counted, once, here and nowhere else. Its state becomes `sent`
# once no channel is left to retry (settle_sent).
_MARK_SENT = _RECORD_PARTS + """
if redis.call('EXISTS', KEYS[1]) == 0 or redis.call('HEXISTS', KEYS[1], 'sent_at') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'sent_at', ARGV[2], 'updated_at', ARGV[2])
redis.call('ZREM', KEYS[5], ARGV[1])
for _, part in ipairs(record_parts(KEYS[1])) do
  for _, key in ipairs(part.keys) do
    local current = tonumber(redis.call('HGET', KEYS[2], key) or '1000000')
    if part.stage < current then redis.call('HSET', KEYS[2], key, part.stage) end
  end
  redis.call('HINCRBY', KEYS[3], part.stage .. ':reminders_sent', 1)
  redis.call('HINCRBY', KEYS[3], part.stage .. ':points_reminded', part.points or 0)
end
redis.call('HINCRBY', KEYS[4], 'reminders_sent', 1)
return 1
"""

# A dead letter is listed in the store's `dead` sorted set scored by the unix time its record
# expires (Redis's own clock: the record's TTL runs on it), so that a record gone by itself is
# gone from the counts too (ZCOUNT from now; Ledger.dead_letters trims the rest); the set itself
# lives as long as its longest-lived record.
_ADD_DEAD = """
local function add_dead(record, dead, id)
  local ttl = redis.call('PTTL', record)
  if ttl <= 0 then ttl = 400 * 86400 * 1000 end
  local clock = redis.call('TIME')
  redis.call('ZADD', dead, tonumber(clock[1]) + tonumber(clock[2]) / 1e6 + ttl / 1000, id)
  if redis.call('PTTL', dead) < ttl then redis.call('PEXPIRE', dead, ttl) end
end
"""

# KEYS: record, marks, counters, dead. ARGV: id, now, new state, error, counter.
# dead: the claim stays (the stage is not queued again while an operator decides);
# dropped: the claim becomes drop marks; cancelled: the claim goes.
_FINISH = _ADD_DEAD + _RECORD_PARTS + """
local state = redis.call('HGET', KEYS[1], 'state')
if not state or state == 'sent' or state == ARGV[3] then return 0 end
if ARGV[3] ~= 'cancelled' then
  -- a channel that sent keeps the reminder from dying; one that failed late (after `sent_at`) does not
  local fields = redis.call('HGETALL', KEYS[1])
  for i = 1, #fields, 2 do
    if string.sub(fields[i], 1, 3) == 'ch:' and fields[i + 1] == 'sent' then return 0 end
  end
end
redis.call('HSET', KEYS[1], 'state', ARGV[3], 'updated_at', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'last_error', ARGV[4]) end
local claim = 'p:' .. ARGV[1]
if ARGV[3] == 'dead' then
  add_dead(KEYS[1], KEYS[4], ARGV[1])
else
  redis.call('ZREM', KEYS[4], ARGV[1])
end
if ARGV[3] == 'dropped' then
  for _, part in ipairs(record_parts(KEYS[1])) do
    for _, key in ipairs(part.keys) do
      local current = tonumber(redis.call('HGET', KEYS[2], 'd:' .. key) or '1000000')
      if part.stage < current then redis.call('HSET', KEYS[2], 'd:' .. key, part.stage) end
    end
  end
  redis.call('HDEL', KEYS[2], claim)
elseif ARGV[3] == 'cancelled' then
  redis.call('HDEL', KEYS[2], claim)
end
if ARGV[5] ~= '' then redis.call('HINCRBY', KEYS[3], ARGV[5], 1) end
return 1
"""


# A hash once converted to a hash table stays one, even when every value is short again:
# rewritten, it is a listpack again (a third of the size). Only when every field fits.
_AS_LISTPACK = """
local function as_listpack(key, fields)
  if #fields == 0 or #fields > 256 then return end
  for i = 1, #fields do if string.len(fields[i]) > 64 then return end end
  local ttl = redis.call('PTTL', key)
  redis.call('DEL', key)
  redis.call('HSET', key, unpack(fields))
  if ttl > 0 then redis.call('PEXPIRE', key, ttl) end
end
"""

# KEYS: record, marks. ARGV: id, now.
# Every channel is done: `sent` if one still stands as sent (its claim goes, its lots are marked).
# None does when a late failure took back the only one while this attempt ran (service/ops/fallback.py):
# the record stays on its way, for the next attempt.
# Sent, the record keeps no body (see the module's docstring): rewritten from its other fields
# and the short ones taken from the body. The marks, once the claim is gone, are rewritten too
# when a long claim had made them a hash table.
_SETTLE = _AS_LISTPACK + _RECORD_PARTS + """
local fields = redis.call('HGETALL', KEYS[1])
local sent = false
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 3) == 'ch:' and fields[i + 1] == 'sent' then sent = true end
end
if not sent then return 0 end
local kept, body, sent_at = {}, nil, nil
for i = 1, #fields, 2 do
  local name = fields[i]
  if name == 'body' then body = cjson.decode(fields[i + 1])
  elseif name ~= 'merchant_id' and name ~= 'state' and name ~= 'updated_at' then
    if name == 'sent_at' then sent_at = fields[i + 1] end
    table.insert(kept, name)
    table.insert(kept, fields[i + 1])
  end
end
table.insert(kept, 'state')
table.insert(kept, 'sent')
if not body or ARGV[2] ~= sent_at then  -- settled as it was sent (one attempt): `sent_at` says it
  table.insert(kept, 'updated_at')
  table.insert(kept, ARGV[2])
end
if body then
  local function text(value) return (value == nil or value == cjson.null) and '' or tostring(value) end
  -- An expiry as unix seconds in the zone offset `z` (seconds), when it is the usual ISO text
  -- with whole seconds; any other text as it is.
  local function days_from_civil(y, m, d)
    if m <= 2 then y = y - 1 end
    local era = math.floor(y / 400)
    local yoe = y - era * 400
    local doy = math.floor((153 * ((m + 9) % 12) + 2) / 5) + d - 1
    return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
  end
  local function unix_of(iso)
    local y, mo, d, h, mi, sec, sign, oh, om = string.match(iso,
      '^(%d%d%d%d)%-(%d%d)%-(%d%d)T(%d%d):(%d%d):(%d%d)([+-])(%d%d):(%d%d)$')
    if not y then return nil end
    local offset = (tonumber(oh) * 3600 + tonumber(om) * 60) * (sign == '-' and -1 or 1)
    return days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400 + tonumber(h) * 3600 +
           tonumber(mi) * 60 + tonumber(sec) - offset, offset
  end
  local zone = nil
  local function expiry(value)
    local iso = text(value)
    local unix, offset = unix_of(iso)
    if unix and unix > 0 and (zone == nil or zone == offset) then
      zone = offset
      return string.format('%d', unix)
    end
    return iso
  end
  local short = {l = table.concat(keys_of(body['lots']), ','), p = body['points_expiring'],
                 x = expiry(body['earliest_expiry']), lg = body['language'], v = body['value_sar']}
  for _, name in ipairs({'l', 'p', 'x', 'lg', 'v'}) do
    if text(short[name]) ~= '' then
      table.insert(kept, name)
      table.insert(kept, text(short[name]))
    end
  end
  if type(body['other_stages']) == 'table' then
    -- `o` (how many) only for an empty list: the `o:<n>` fields count themselves
    if #body['other_stages'] == 0 then
      table.insert(kept, 'o')
      table.insert(kept, '0')
    end
    for n, other in ipairs(body['other_stages']) do
      table.insert(kept, 'o:' .. n)
      table.insert(kept, text(other['stage_days']) .. '|' .. text(other['points_expiring']) .. '|' ..
                         expiry(other['earliest_expiry']) .. '|' .. text(other['value_sar']) .. '|' ..
                         table.concat(keys_of(other['lots']), ','))
    end
  end
  if zone then
    table.insert(kept, 'z')
    table.insert(kept, tostring(zone))
  end
  local ttl = redis.call('PTTL', KEYS[1])
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], unpack(kept))
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
else
  redis.call('HSET', KEYS[1], 'state', 'sent', 'updated_at', ARGV[2])
end
redis.call('HDEL', KEYS[2], 'p:' .. ARGV[1])
local ok, encoding = pcall(redis.call, 'OBJECT', 'ENCODING', KEYS[2])
if ok and encoding == 'hashtable' then as_listpack(KEYS[2], redis.call('HGETALL', KEYS[2])) end
return 1
"""

# KEYS: record, marks, counters, dead. ARGV: channel, failed outcome, action (move_on | dead |
# record), now, claim, id, error.
# A channel that sent reports a failure later (service/ops/fallback.py decides what it does). The
# compare-and-set on `ch:<channel> = sent` makes it happen once: a repeated failure finds it
# failed already. A failure after delivered or read is kept (the shopper got it).
_LATE_FAILURE = _ADD_DEAD + """
local ch = 'ch:' .. ARGV[1]
if redis.call('HGET', KEYS[1], ch) ~= 'sent' then return 'same' end
local st = redis.call('HGET', KEYS[1], 'st:' .. ARGV[1])
if st == 'delivered' or st == 'read' then return 'kept' end
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'sent' and state ~= 'scheduled' and state ~= 'sending' and state ~= 'retrying' then return 'same' end
redis.call('HSET', KEYS[1], ch, ARGV[2], 'updated_at', ARGV[4])
if ARGV[3] == 'record' then return 'recorded' end
-- on its way again (or a dead letter): the sweep and replay find it through its claim
redis.call('HSET', KEYS[2], 'p:' .. ARGV[6], ARGV[5])
if ARGV[3] == 'move_on' then
  if state == 'sent' then redis.call('HSET', KEYS[1], 'state', 'scheduled', 'attempts', 0) end
  redis.call('HSET', KEYS[1], 'last_error', ARGV[7])
  redis.call('HINCRBY', KEYS[3], 'fallbacks_after_failure', 1)
  return 'moved_on'
end
if state == 'sent' then
  redis.call('HSET', KEYS[1], 'state', 'dead', 'last_error', ARGV[7])
  add_dead(KEYS[1], KEYS[4], ARGV[6])
  redis.call('HINCRBY', KEYS[3], 'reminders_dead', 1)
  return 'dead'
end
return 'recorded'  -- an attempt is running: it finds no channel left and ends the reminder itself
"""

# KEYS: record, statuses. ARGV: channel, status (accepted | sent | delivered | read | failed), reason, at.
# `accepted` is our own send (the provider took it): counted as sent, once per channel.
_STATUS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 'missing' end
local ch, status = ARGV[1], ARGV[2]
local field, at_field = 'st:' .. ch, 'st_at:' .. ch
local current = redis.call('HGET', KEYS[1], field) or ''
local ranks = {sent = 1, delivered = 2, read = 3}
local cur = ranks[current] or 0
local was_failed = string.sub(current, 1, 7) == 'failed:'
if status == 'accepted' then
  redis.call('HINCRBY', KEYS[2], ch .. ':sent', 1)
  if current == '' then redis.call('HSET', KEYS[1], field, 'sent', at_field, ARGV[4]) end
  return 'sent'
end
if status == 'failed' then
  if cur >= 2 then
    redis.call('HSET', KEYS[1], 'stf:' .. ch, ARGV[3] .. '@' .. ARGV[4])
    return 'kept'
  end
  if was_failed then return 'same' end
  redis.call('HSET', KEYS[1], field, 'failed:' .. ARGV[3], at_field, ARGV[4])
  redis.call('HINCRBY', KEYS[2], ch .. ':failed:' .. ARGV[3], 1)
  return 'failed'
end
local new = ranks[status]
if not new then return 'unknown' end
if new <= cur or (was_failed and new < 2) then return 'same' end
if was_failed then redis.call('HINCRBY', KEYS[2], ch .. ':' .. current, -1) end
for level = math.max(cur + 1, 2), new do
  redis.call('HINCRBY', KEYS[2], ch .. ':' .. (level == 2 and 'delivered' or 'read'), 1)
end
redis.call('HSET', KEYS[1], field, status, at_field, ARGV[4])
return status
"""
STATUS_LEVELS = ("sent", "delivered", "read")

# KEYS: record, marks, stats. ARGV: merchant, customer, stage, now, keep, body, points, lot keys...
# A reminder the customer would have got, had they not been held out: recorded as sent ones are
# (same id, stage and lots; the stage's time, so the pause between two applies alike), with no
# message and no channel: ids, points and times only.
_HOLD_OUT = """
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'cancelled' then return state end
redis.call('DEL', KEYS[1])  -- cancelled (an opt-out since undone): it starts over, as in _CREATE
redis.call('HSET', KEYS[1], 'merchant_id', ARGV[1], 'customer_id', ARGV[2], 'stage', ARGV[3], 'state', 'held_out',
           'attempts', 0, 'created_at', ARGV[4], 'updated_at', ARGV[4], 'body', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[5])
local stage = tonumber(ARGV[3])
for i = 8, #ARGV do
  local current = tonumber(redis.call('HGET', KEYS[2], 'h:' .. ARGV[i]) or '1000000')
  if stage < current then redis.call('HSET', KEYS[2], 'h:' .. ARGV[i], stage) end
end
redis.call('HSET', KEYS[2], 'stage:' .. ARGV[3], string.format('%d', math.ceil(tonumber(ARGV[4]))))  -- as in _CREATE
if redis.call('TTL', KEYS[2]) < tonumber(ARGV[5]) then redis.call('EXPIRE', KEYS[2], ARGV[5]) end
redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':reminders_held_out', 1)
redis.call('HINCRBY', KEYS[3], ARGV[3] .. ':points_held_out', ARGV[7])
return 'created'
"""

# KEYS: record, statuses[, msgid]. ARGV: channel, at, message id, reminder id. Returns the record's PTTL.
# A channel's send, in one step: `ch:<name> = sent`, its `accepted` status (as _STATUS), and the
# provider's message id -> the reminder (for the record's lifetime). A status callback that finds
# the message id finds the send recorded with it (service/state/message_index.py keeps the ones before).
_RECORD_SEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end  -- erased meanwhile: no half record
local ch = ARGV[1]
redis.call('HSET', KEYS[1], 'ch:' .. ch, 'sent')
redis.call('HINCRBY', KEYS[2], ch .. ':sent', 1)
if not redis.call('HGET', KEYS[1], 'st:' .. ch) then
  redis.call('HSET', KEYS[1], 'st:' .. ch, 'sent', 'st_at:' .. ch, ARGV[2])
end
local ttl = redis.call('PTTL', KEYS[1])
if #KEYS >= 3 then
  redis.call('SET', KEYS[3], ARGV[4], 'PX', ttl > 0 and ttl or 34560000000)  -- 400 days if the record has none
end
return ttl
"""


def status_counts(store: redis.Redis, keys: Keys, merchant_id: int) -> dict:
    """Per channel and in total: sent, delivered (or read), read, failed by reason."""
    result: dict[str, dict] = {}
    total = {"sent": 0, "delivered": 0, "read": 0, "failed": {}}
    for name, value in store.hgetall(keys.store(merchant_id).statuses).items():
        name = name.decode() if isinstance(name, bytes) else name
        channel, _, status = name.partition(":")
        counts = result.setdefault(channel, {"sent": 0, "delivered": 0, "read": 0, "failed": {}})
        if status.startswith("failed:"):
            reason = status[len("failed:"):]
            counts["failed"][reason] = int(value)
            total["failed"][reason] = total["failed"].get(reason, 0) + int(value)
        elif status in STATUS_LEVELS:
            counts[status] = int(value)
            total[status] += int(value)
    return {"channels": result, "total": total}


def count_stat(store: redis.Redis, keys: Keys, merchant_id: int, stage: int, name: str, amount: int = 1) -> None:
    """Outcome counters per store and stage (stage 0: per customer, e.g. opted_out_cancelled)."""
    if amount:
        store.hincrby(keys.store(merchant_id).stats, f"{stage}:{name}", amount)


@dataclass(frozen=True)
class Record:
    reminder_id: str
    merchant_id: int
    customer_id: int
    stage: int
    state: str
    attempts: int
    last_error: str
    created_at: float
    updated_at: float
    sent_at: float | None
    channels: dict[str, str]
    body: str  # "" once sent: `short` keeps what it is rendered again from (full_reminder)
    statuses: dict[str, dict] = None  # channel -> {"status", "at"} (provider statuses)
    short: dict[str, str] = None  # l, p, x, lg, v: see the module's docstring

    @property
    def reminder(self) -> dict:
        """The body; once sent, the reminder as far as the record itself tells: its lots are keys
        only, without the customer and the message (full_reminder adds them)."""
        if self.body:
            return json.loads(self.body)
        short = self.short or {}
        reminder = {"reminder_id": self.reminder_id, "merchant_id": self.merchant_id,
                    "customer_id": self.customer_id, "stage_days": self.stage,
                    "points_expiring": int(short.get("p") or 0), "earliest_expiry": _expiry(short.get("x"), short),
                    "language": short.get("lg"), "value_sar": _number(short.get("v")), "lots": _keys(short.get("l")),
                    "generated_at": datetime.fromtimestamp(round(self.created_at, 6), timezone.utc).isoformat()}
        others = int(short["o"]) if "o" in short else sum(1 for name in short if name.startswith("o:"))
        if "o" in short or others:  # stages due at once, in one message: each with its own figures
            reminder["other_stages"] = []
            for n in range(1, others + 1):
                stage, points, expiry, value, keys = short.get(f"o:{n}", "||||").split("|", 4)
                reminder["other_stages"].append({"stage_days": int(stage or 0), "points_expiring": int(points or 0),
                                                 "earliest_expiry": _expiry(expiry, short), "value_sar": _number(value),
                                                 "lots": _keys(keys)})
        return reminder

    def view(self) -> dict:
        """What an operator sees (the message, never the shopper's address)."""
        reminder = self.reminder
        return {"reminder_id": self.reminder_id, "merchant_id": self.merchant_id, "customer_id": self.customer_id,
                "stage_days": self.stage, "state": self.state, "attempts": self.attempts,
                "last_error": self.last_error, "created_at": self.created_at, "updated_at": self.updated_at,
                "sent_at": self.sent_at,
                "channels": self.channels, "statuses": self.statuses or {}, "points_expiring": reminder.get("points_expiring"),
                "lots": len(reminder.get("lots", []))}


def _expiry(text: str | None, short: dict) -> str | None:
    """A sent record's expiry: unix seconds in its zone offset `z` (_SETTLE), or the ISO text."""
    if text and text.isdigit() and "z" in short:
        return datetime.fromtimestamp(int(text), timezone(timedelta(seconds=int(short["z"])))).isoformat()
    return text or None


def _number(text: str | None) -> float | None:
    return float(text) if text else None


def _keys(text: str | None) -> list[dict]:
    return [{"key": key} for key in (text or "").split(",") if key]


def full_reminder(record: Record, customer, lots, store_name: str = "") -> dict:
    """The reminder as it went out: its body while it has one, else rendered again from the
    record's short fields, the customer (`service.domain.events.Customer`, the profile now) and the
    lots of the last read (a lot no longer in it is named by its key only). Pure."""
    if record.body:
        return record.reminder
    reminder = record.reminder
    by_key = {lot.key: lot for lot in lots or ()}
    for part in [reminder, *reminder.get("other_stages", [])]:
        part["lots"] = [by_key[lot["key"]].to_dict() if lot["key"] in by_key else lot for lot in part["lots"]]
    reminder["customer"] = {"name": getattr(customer, "name", None), "mobile": getattr(customer, "mobile", None),
                            "email": getattr(customer, "email", None)}
    reminder["message"] = ""
    reminder["message"] = plain_message(reminder, store_name)
    return reminder


@dataclass(frozen=True)
class Marks:
    """One read of a customer's `marks` hash."""
    sent: dict[str, int]  # lot key -> nearest stage a sent reminder named it at
    named: dict[str, int]  # sent, dropped or queued: what planning must not queue again
    stage_times: dict[int, float]  # stage -> when the last reminder of it was queued
    claims: dict[str, dict]  # reminder id -> {"stage", "lots", "at"} of reminders not sent yet

    def claim_for(self, reminder_key: str) -> str | None:
        """The queued reminder whose id starts with `reminder_key` (a due-set entry's key)."""
        return next((rid for rid in self.claims if rid.startswith(reminder_key)), None)


def stage_parts(reminder: dict) -> list[tuple[int, list[str]]]:
    """(stage, lot keys) of every stage a reminder names: its own first, then `other_stages`."""
    return [(int(part["stage_days"]), [lot["key"] for lot in part.get("lots") or []])
            for part in [reminder, *(reminder.get("other_stages") or [])]]


def claim_json(reminder: dict, now: float) -> str:
    """The `p:<id>` entry of a reminder on its way: its stages' lots count as named meanwhile."""
    (stage, lots), *others = stage_parts(reminder)
    claim = {"stage": stage, "lots": lots, "at": round(now, 3)}
    if others:
        claim["other_stages"] = [{"stage": other, "lots": keys} for other, keys in others]
    # Compact: a claim of up to a lot or two fits 64 bytes, and the marks stay a listpack.
    return json.dumps(claim, separators=(",", ":"))


def parse_marks(raw: dict) -> Marks:
    sent, named, times, claims = {}, {}, {}, {}
    for field, value in raw.items():
        field = field.decode() if isinstance(field, bytes) else field
        value = value.decode() if isinstance(value, bytes) else value
        if field.startswith(NOT_MARKS):
            continue
        if field.startswith(HELD_FIELD):  # held out at that stage: named, never reminded
            key = field[len(HELD_FIELD):]
            named[key] = min(named.get(key, 10**6), int(value))
        elif field.startswith(STAGE_FIELD):
            times[int(field[len(STAGE_FIELD):])] = float(value)
        elif field.startswith(CLAIM_FIELD):
            claims[field[len(CLAIM_FIELD):]] = json.loads(value)
        elif field.startswith(DROP_FIELD):
            key = field[len(DROP_FIELD):]
            named[key] = min(named.get(key, 10**6), int(value))
        else:
            sent[field] = int(value)
            named[field] = min(named.get(field, 10**6), int(value))
    for claim in claims.values():
        for part in [claim, *claim.get("other_stages", [])]:
            for key in part["lots"]:
                named[key] = min(named.get(key, 10**6), int(part["stage"]))
    return Marks(sent=sent, named=named, stage_times=times, claims=claims)


class Ledger:
    # A channel's claim outlasts its send at the worst (service/config/settings.py): at the default
    # timeout unless the runtime passes its own (build_runtime: SALLA_HTTP_TIMEOUT_SECONDS).
    CLAIM_SECONDS = channel_claim_seconds(10.0)

    def __init__(self, store: redis.Redis, prefix: str, claim_seconds: float | None = None):
        self.redis = store
        if claim_seconds is not None:
            self.CLAIM_SECONDS = claim_seconds
        self.keys = Keys(prefix)
        self._create = store.register_script(_CREATE)
        self._claim_channel = store.register_script(_CLAIM_CHANNEL)
        self._mark_sent = store.register_script(_MARK_SENT)
        self._finish = store.register_script(_FINISH)
        self._status = store.register_script(_STATUS)
        self._settle = store.register_script(_SETTLE)
        self._late_failure = store.register_script(_LATE_FAILURE)
        self._record_send = store.register_script(_RECORD_SEND)
        self._hold_out = store.register_script(_HOLD_OUT)
        self._begin_attempt = store.register_script(_BEGIN_ATTEMPT)
        self._hset_if_exists = store.register_script(_HSET_IF_EXISTS)

    claim_json = staticmethod(claim_json)  # for callers handed a ledger (service/ops/fallback.py)

    def marks(self, merchant_id: int, customer_id: int) -> Marks:
        return parse_marks(self.redis.hgetall(self.keys.store(merchant_id).marks(customer_id)))

    def create(self, reminder: dict, keep_seconds: int, now: float) -> str:
        """Record a reminder about to be delivered and claim its lots at its stage.
        Returns 'created', or the state of the record that already exists (same id)."""
        m, c, rid = reminder["merchant_id"], reminder["customer_id"], reminder["reminder_id"]
        k = self.keys.store(m)
        result = self._create(keys=[k.reminder(rid), k.marks(c)], args=[
            # Full precision: the pause between two reminders of a stage is measured from this
            # time, and a value rounded down let the next one out a fraction of a ms early.
            rid, m, c, reminder["stage_days"], f"{now:.6f}", max(int(keep_seconds), 60),
            json.dumps(reminder, ensure_ascii=False), claim_json(reminder, now),
            *(stage for stage, _ in stage_parts(reminder)[1:])])
        return result.decode() if isinstance(result, bytes) else result

    def hold_out(self, held: dict, keep_seconds: int, now: float) -> str:
        """Record the reminder a held-out customer would have got (`held`: service/state/holdout.py
        held_out_record); 'created', or the state of the record that already exists."""
        m, c = held["merchant_id"], held["customer_id"]
        k = self.keys.store(m)
        result = self._hold_out(keys=[k.reminder(held["reminder_id"]), k.marks(c), k.stats], args=[
            m, c, held["stage_days"], f"{now:.6f}", max(int(keep_seconds), 60),
            json.dumps(held, separators=(",", ":")), held["points_expiring"], *[lot["key"] for lot in held["lots"]]])
        return result.decode() if isinstance(result, bytes) else result

    def get(self, merchant_id: int, reminder_id: str) -> Record | None:
        raw = self.redis.hgetall(self.keys.store(merchant_id).reminder(reminder_id))
        if not raw:
            return None
        raw = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
               for k, v in raw.items()}
        return Record(reminder_id=reminder_id, merchant_id=int(merchant_id),
                      customer_id=int(raw["customer_id"]), stage=int(raw["stage"]), state=raw["state"],
                      attempts=int(raw.get("attempts", 0)), last_error=raw.get("last_error", ""),
                      created_at=float(raw.get("created_at", 0)),
                      # a record settled as it was sent keeps no `updated_at` of its own (_SETTLE)
                      updated_at=float(raw.get("updated_at") or raw.get("sent_at") or 0),
                      sent_at=float(raw["sent_at"]) if raw.get("sent_at") else None,
                      channels={k[3:]: v for k, v in raw.items() if k.startswith("ch:")}, body=raw.get("body", ""),
                      short={name: value for name, value in raw.items() if name in SHORT_FIELDS or name.startswith("o:")},
                      statuses={k[3:]: {"status": v, "at": raw.get("st_at:" + k[3:], ""),
                                        **({"failed_later": raw["stf:" + k[3:]]} if "stf:" + k[3:] in raw else {})}
                                for k, v in raw.items() if k.startswith("st:")})

    def _write_if_exists(self, merchant_id: int, reminder_id: str, fields: dict) -> bool:
        """HSET on the record only if it is still there (one step): False when it is gone."""
        args = [str(value) for pair in fields.items() for value in pair]
        return bool(self._hset_if_exists(keys=[self.keys.store(merchant_id).reminder(reminder_id)], args=args))

    def begin_attempt(self, merchant_id: int, reminder_id: str, now: float) -> int | None:
        """The attempt's number; None when the record is gone (erased meanwhile: nothing re-created)."""
        attempt = int(self._begin_attempt(keys=[self.keys.store(merchant_id).reminder(reminder_id)],
                                          args=[f"{now:.3f}"]))
        return None if attempt < 0 else attempt

    def claim_channel(self, merchant_id: int, reminder_id: str, channel: str, attempt: int, now: float) -> str:
        """'ok', 'sent', 'failed', 'busy:<deadline>', or 'gone' (the record was erased meanwhile)."""
        result = self._claim_channel(keys=[self.keys.store(merchant_id).reminder(reminder_id)],
                                     args=[channel, attempt, f"{now:.3f}", self.CLAIM_SECONDS])
        return result.decode() if isinstance(result, bytes) else result

    def channel_result(self, merchant_id: int, reminder_id: str, channel: str, outcome: str) -> bool:
        return self._write_if_exists(merchant_id, reminder_id, {f"ch:{channel}": outcome[:300]})

    def record_status(self, merchant_id: int, reminder_id: str, channel: str, status: str, reason: str = "",
                      at: float | str = "") -> str:
        """Apply one status (see the module's docstring); returns what it did: the status applied,
        'same' (not newer), 'kept' (a failure after delivered), 'missing' or 'unknown'."""
        k = self.keys.store(merchant_id)
        result = self._status(keys=[k.reminder(reminder_id), k.statuses],
                              args=[channel, status, (reason or "unknown")[:60], str(at)])
        return result.decode() if isinstance(result, bytes) else result

    def record_send(self, merchant_id: int, reminder_id: str, channel: str, message_id: str, now: float) -> int | None:
        """The channel sent it (see _RECORD_SEND); returns the record's lifetime left in ms, None
        when the record is gone (the customer forgotten meanwhile)."""
        k = self.keys.store(merchant_id)
        keys = [k.reminder(reminder_id), k.statuses]
        if message_id:
            keys.append(k.provider_message(channel, message_id))
        ttl = int(self._record_send(keys=keys, args=[channel, f"{now:.0f}", message_id or "", reminder_id]))
        if ttl == -2:
            return None
        return ttl if ttl > 0 else 400 * 24 * 3600 * 1000

    def find_message(self, merchant_id: int, channel: str, message_id: str) -> str | None:
        found = self.redis.get(self.keys.store(merchant_id).provider_message(channel, message_id))
        return found.decode() if isinstance(found, bytes) else found

    def mark_sent(self, merchant_id: int, customer_id: int, reminder_id: str, now: float) -> bool:
        """True the first time (the reminder is counted then)."""
        k = self.keys.store(merchant_id)
        counted = bool(self._mark_sent(keys=[k.reminder(reminder_id), k.marks(customer_id), k.stats, k.counters,
                                             k.dead], args=[reminder_id, f"{now:.3f}"]))
        if counted:  # the store's page figures (service/state/store_figures.py), counted once with the stats
            stage, body = self.redis.hmget(k.reminder(reminder_id), "stage", "body")
            parts = store_figures.message_parts(int(stage or 0), json.loads(body) if body else {})
            store_figures.record_sent(self.redis, self.keys, merchant_id, customer_id, parts, reminder_id, now)
        return counted

    def settle_sent(self, merchant_id: int, customer_id: int, reminder_id: str, now: float) -> bool:
        """Every channel is done and one or more sent: the claim goes (its lots are marked).
        False when no channel stands as sent any more (a late failure meanwhile): still on its way."""
        k = self.keys.store(merchant_id)
        return bool(self._settle(keys=[k.reminder(reminder_id), k.marks(customer_id)],
                                 args=[reminder_id, f"{now:.3f}"]))

    def state(self, merchant_id: int, reminder_id: str) -> str | None:
        found = self.redis.hget(self.keys.store(merchant_id).reminder(reminder_id), "state")
        return found.decode() if isinstance(found, bytes) else found

    def late_failure(self, merchant_id: int, reminder_id: str, channel: str, outcome: str, action: str, now: float,
                     claim: str, error: str) -> str:
        """A channel that sent failed later (service/ops/fallback.py): 'moved_on', 'dead', 'recorded',
        'same' (not sent by it, or already failed) or 'kept' (delivered before)."""
        record = self.get(merchant_id, reminder_id)
        if record is None:
            return "same"
        k = self.keys.store(merchant_id)
        result = self._late_failure(keys=[k.reminder(reminder_id), k.marks(record.customer_id), k.counters, k.dead],
                                    args=[channel, outcome[:300], action, f"{now:.3f}", claim, reminder_id,
                                          error[:300]])
        return result.decode() if isinstance(result, bytes) else result

    def retrying(self, merchant_id: int, reminder_id: str, error: str, now: float) -> bool:
        """False when the record is gone (nothing written)."""
        return self._write_if_exists(merchant_id, reminder_id,
                                     {"state": RETRYING, "last_error": error[:300], "updated_at": f"{now:.3f}"})

    def finish(self, merchant_id: int, customer_id: int, reminder_id: str, state: str, now: float,
               error: str = "", counter: str = "") -> bool:
        """dead, dropped or cancelled; False when the record is missing, sent, or already so."""
        k = self.keys.store(merchant_id)
        return bool(self._finish(keys=[k.reminder(reminder_id), k.marks(customer_id), k.counters, k.dead],
                                 args=[reminder_id, f"{now:.3f}", state, error[:300], counter]))

    def replay(self, merchant_id: int, reminder_id: str, now: float) -> Record | None:
        """A dead letter goes back to `scheduled` with its attempts reset; the caller delivers it."""
        record = self.get(merchant_id, reminder_id)
        if record is None or record.state != DEAD:
            return None
        k = self.keys.store(merchant_id)
        if not self._write_if_exists(merchant_id, reminder_id,
                                     {"state": SCHEDULED, "attempts": 0, "updated_at": f"{now:.3f}"}):
            return None  # erased since it was read
        pipe = self.redis.pipeline(transaction=True)
        failed = [f"ch:{name}" for name, outcome in record.channels.items() if outcome.startswith("failed:")]
        if failed:  # an operator replays after fixing the cause: every channel that failed tries again
            pipe.hdel(k.reminder(reminder_id), *failed)
        pipe.zrem(k.dead, reminder_id)
        pipe.hincrby(k.counters, "dead_letters_replayed", 1)
        pipe.execute()
        return self.get(merchant_id, reminder_id)

    def dead_letters(self, merchant_id: int, limit: int = 100) -> list[Record]:
        """The store's dead letters whose record still lives, the soonest to expire first."""
        dead = self.keys.store(merchant_id).dead
        self.redis.zremrangebyscore(dead, "-inf", f"({time.time()}")  # their records expired (wall clock, as Redis)
        ids = self.redis.zrange(dead, 0, limit - 1)
        records = [self.get(merchant_id, rid.decode() if isinstance(rid, bytes) else rid) for rid in ids]
        return [record for record in records if record is not None]

    def live_claims(self, merchant_id: int, customer_id: int) -> list[str]:
        return list(self.marks(merchant_id, customer_id).claims)
