"""Lua scripts that change a show's seats on its home Redis master.

Every script takes the same KEYS (see `keys.show_keys`), all tagged
`{show:<id>}` so a script touches one cluster slot:
    KEYS[1] holds    hash seat -> "<booking_id>|<expires_at_ms>"
    KEYS[2] booked   hash seat -> booking_id
    KEYS[3] blocked  set of seats never for sale
    KEYS[4] version  counter, bumped once per change
    KEYS[5] owner    "<epoch>" | "moving" | "moved <region> <epoch>" (`keys.show_owner`)
and publishes each change on the show's own channel, ARGV[1] .. ':' .. ARGV[2]
(`keys.show_changes`; ARGV[1] is `keys.SEAT_CHANGES_CHANNEL`, ARGV[2] the show
id), as JSON {show, version, seats, status, booking, ts[, expires_at]} where
`ts` is the master's clock in ms (publishes replicate, so nodes that follow the
show hear them on their local replica, and `ts` measures how long that took).
Time comes from the master's clock (TIME), not a node's, so every node agrees
when a hold ends.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_HOLDER = """
local function holder(seat)
  local h = redis.call('HGET', KEYS[1], seat)
  if not h then return nil, 0 end
  local sep = string.find(h, '|', 1, true)
  return string.sub(h, 1, sep - 1), tonumber(string.sub(h, sep + 1))
end
"""

_PUBLISH = """
local function publish(seats, status, booking, expires)
  local version = redis.call('INCR', KEYS[4])
  local clock = redis.call('TIME')
  local msg = {show = tonumber(ARGV[2]), version = version, seats = seats,
               status = status, booking = booking,
               ts = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)}
  if expires then msg.expires_at = expires end
  redis.call('PUBLISH', ARGV[1] .. ':' .. ARGV[2], cjson.encode(msg))
  return version
end
"""

# A show whose owner key says it moved away (or is moving) is not this master's to
# change; a missing key leaves the decision to PostgreSQL.
_MOVED = """
local owner_state = redis.call('GET', KEYS[5])
local function moved_away()
  return owner_state ~= false and string.sub(owner_state, 1, 5) == 'moved'
end
"""

# A script sent with a deadline (ARGV[6], unix ms, `deadline.Deadline.script_ms`) that
# starts on the master after it changes nothing: its caller has been told 503 already
# (or is about to be), so a hold made now would sit on the master with no PostgreSQL
# record until its TTL. Checked first, before any rate-limit token is taken.
_LATE = """
if now > tonumber(ARGV[6]) then return {-4, now} end
"""

# One token of a rate-limit bucket (hash {tokens, ts} at `key`), refilled at `per_s`
# tokens a second up to `burst`, on the master's clock (`now`), so every node of the
# region agrees. Returns 1, 0 when a token was taken; 0, the ms until one is free
# otherwise (nothing taken).
_TAKE_TOKEN = """
local function take_token(key, per_s, burst)
  local rate, cap = tonumber(per_s) / 1000, tonumber(burst)
  local b = redis.call('HMGET', key, 'tokens', 'ts')
  local tokens = tonumber(b[1]) or cap
  local ts = tonumber(b[2]) or now
  tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
  local allowed, wait = 0, math.ceil((1 - tokens) / rate)
  if tokens >= 1 then tokens, allowed, wait = tokens - 1, 1, 0 end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'ts', now)
  redis.call('PEXPIRE', key, math.ceil(cap / rate) + 1000)
  return allowed, wait
end
"""

# KEYS[1] bucket hash {tokens, ts}; ARGV: tokens per second, burst.
# Returns {1, 0} when a token was taken, {0, ms until one is free} otherwise.
# (Not a seat script: the rate limits' own, `booking/limits.py`; its key is its own slot.)
TOKEN_BUCKET = _NOW + _TAKE_TOKEN + """
local allowed, wait = take_token(KEYS[1], ARGV[1], ARGV[2])
return {allowed, wait}
"""

# The seats of HOLD and HOLD_LIMITED: ARGV[7 .. last_seat].
_HOLD_SEATS = """
if owner_state ~= false and (owner_state == 'moving' or moved_away()
    or tonumber(owner_state) > tonumber(ARGV[5])) then
  return {-1, owner_state}
end
local seats, taken = {}, {}
for i = 7, last_seat do
  local seat = ARGV[i]
  seats[#seats + 1] = seat
  local owner, expires = holder(seat)
  if redis.call('SISMEMBER', KEYS[3], seat) == 1 or redis.call('HEXISTS', KEYS[2], seat) == 1
     or (expires > now and owner ~= ARGV[3]) then
    taken[#taken + 1] = seat
  end
end
if #taken > 0 then return {0, unpack(taken)} end
local expires = now + tonumber(ARGV[4])
local value = ARGV[3] .. '|' .. expires
for _, seat in ipairs(seats) do redis.call('HSET', KEYS[1], seat, value) end
return {1, publish(seats, 'LOCKED', ARGV[3], expires), expires}
"""

# ARGV: channel, show_id, booking_id, ttl_ms, epoch, deadline_ms, seat...
# Returns {1, version, expires_at_ms}: every seat was free (or already held by this
#         booking: a retried hold under the same Idempotency-Key) and is now held
#         by booking_id;
#         {0, seat...}: nothing changed; these seats were held, booked or blocked;
#         {-1, owner}: nothing changed; the show is moving or moved (owner key), or
#         owned here only since an epoch newer than the caller's (ARGV[5]);
#         {-4, now_ms}: nothing changed; the master's clock is past deadline_ms (`_LATE`).
HOLD = _NOW + _LATE + _HOLDER + _PUBLISH + _MOVED + """
local last_seat = #ARGV
""" + _HOLD_SEATS

# HOLD with the write rate limits in the same round trip (`booking/limits.py`).
# KEYS[6] the user's bucket, KEYS[7] the client address's (`keys.rate_bucket`).
# ARGV: as HOLD's, then user tokens per second, user burst, address tokens per
# second, address burst (the last four).
# First one token of each bucket, each taken if it has one, as the two TOKEN_BUCKET
# calls of any other write take them; then, only if both were granted, HOLD. A token
# taken is kept whatever follows (the other bucket's refusal, taken seats, a moved
# show), exactly as when the limits ran before HOLD, so every limit counts the same.
# Returns HOLD's answers (-4 before any token is taken), or {-2, user granted, user wait
# ms, address granted, address wait ms} when a bucket refused (no seat changed).
# The buckets are their own slots: unlike the seat scripts this one is not Redis-Cluster
# safe (a region's master is one Redis with replicas, never a cluster).
HOLD_LIMITED = _NOW + _LATE + _HOLDER + _PUBLISH + _MOVED + _TAKE_TOKEN + """
local last_seat = #ARGV - 4
local user_ok, user_wait = take_token(KEYS[6], ARGV[last_seat + 1], ARGV[last_seat + 2])
local addr_ok, addr_wait = take_token(KEYS[7], ARGV[last_seat + 3], ARGV[last_seat + 4])
if user_ok == 0 or addr_ok == 0 then return {-2, user_ok, user_wait, addr_ok, addr_wait} end
""" + _HOLD_SEATS

# The choice and hold of BEST and BEST_LIMITED (`best.py` defines the rule; this is the
# same rule, step for step). KEYS[6] the show's layout (`keys.show_layout`, fields of
# `best.Layout.encode`); ARGV[6] the deadline (`_LATE`), ARGV[7 .. 10] count, category
# ('' for any), accessible ('1' accessible spaces only), allow_split ('1').
# Cost: the holds, sales and blocked seats are read once (O(seats taken)); rows are
# parsed only when looked at, nearest the focal row first, and once a block with no
# orphan in one section is found, a row too far for any block of it to cost less is
# not looked at (nor any row beyond). Each row looked at is scanned once per shape (a
# sliding window over prefix sums).
_BEST_SEATS = """
if owner_state ~= false and (owner_state == 'moving' or moved_away()
    or tonumber(owner_state) > tonumber(ARGV[5])) then
  return {-1, owner_state}
end
local find, sub, byte = string.find, string.sub, string.byte
local taken, mine = {}, {}
-- Hold values are "<booking>|<expires ms>", the expiry 13 digits until the year 2286:
-- compared as text with `now` (the same length), one string operation a hold.
local nowtext, booking, blen = string.format('%013d', now), ARGV[3], #ARGV[3]
local held = redis.call('HGETALL', KEYS[1])
for i = 1, #held, 2 do
  local value = held[i + 1]
  local live, sep
  if #nowtext == 13 and byte(value, -14) == 124 then
    sep = #value - 13
    live = sub(value, -13) > nowtext
  else
    sep = find(value, '|', 1, true)
    live = tonumber(sub(value, sep + 1)) > now
  end
  if live then
    if sep == blen + 1 and sub(value, 1, blen) == booking then mine[#mine + 1] = held[i]
    else taken[held[i]] = true end
  end
end
local expires = now + tonumber(ARGV[4])
local function hold_all(seats)
  table.sort(seats)
  local value = ARGV[3] .. '|' .. expires
  for _, seat in ipairs(seats) do redis.call('HSET', KEYS[1], seat, value) end
  return {1, publish(seats, 'LOCKED', ARGV[3], expires), expires, unpack(seats)}
end
-- A retry of this booking (same Idempotency-Key) gets the seats it holds, never more.
if #mine > 0 then return hold_all(mine) end
for _, seat in ipairs(redis.call('HKEYS', KEYS[2])) do taken[seat] = true end
for _, seat in ipairs(redis.call('SMEMBERS', KEYS[3])) do taken[seat] = true end
local meta = redis.call('HMGET', KEYS[6], 'n', 'fr', 'fx', 'cats')
local nrows, fr, fx = tonumber(meta[1]), tonumber(meta[2]), tonumber(meta[3])
local count, accessible, split = tonumber(ARGV[7]), ARGV[9] == '1', ARGV[10] == '1'
local want = nil  -- the category's index; -1: no such category
if ARGV[8] ~= '' then
  want = -1
  local k = 0
  for c in string.gmatch(meta[4] .. '\\n', '([^\\n]*)\\n') do
    if c == ARGV[8] then want = k end
    k = k + 1
  end
end
local longest = 0
-- rows[r]: ids, pos, free, and prefix sums OK (eligible), GAP (an aisle before seat i),
-- COST.
local rows = {}
local function row(r)
  local R = rows[r]
  if R then return R end
  local text = redis.call('HGET', KEYS[6], 'r' .. r)
  local tab = find(text, '\\t', 1, true)
  local ids, pos, free, okp, gp, cp = {}, {}, {}, {0}, {0, 0}, {0}
  for id in string.gmatch(sub(text, 1, tab - 1), '%S+') do ids[#ids + 1] = id end
  local dr = 2 * (r - 1 - fr)
  local run = 0
  for i = 1, #ids do
    local c = tab + 4 * i - 3
    local a, b, cat, acc = byte(text, c, c + 3)
    local p = (a - 48) * 64 + b - 48
    pos[i] = p
    local isfree = not taken[ids[i]]
    free[i] = isfree
    local ok = isfree and (want == nil or cat - 48 == want) and (not accessible or acc == 49)
    okp[i + 1] = okp[i] + (ok and 1 or 0)
    if i > 1 then gp[i + 1] = gp[i] + ((p ~= pos[i - 1] + 1) and 1 or 0) end
    local dx = 2 * p - fx
    cp[i + 1] = cp[i] + dx * dx + dr * dr
    if ok then run = run + 1 else run = 0 end
    if run > longest then longest = run end
  end
  R = {ids = ids, pos = pos, free = free, OK = okp, GAP = gp, COST = cp}
  rows[r] = R
  return R
end
-- Whether taking row[first..last] leaves the free seat beside it alone.
local function orphan_beside(R, first, last)
  local pos, f = R.pos, R.free
  local j = first - 1
  if j >= 1 and pos[j] == pos[first] - 1 and f[j] then
    if not (j > 1 and pos[j - 1] == pos[j] - 1 and f[j - 1]) then return true end
  end
  j = last + 1
  if j <= #pos and pos[j] == pos[last] + 1 and f[j] then
    if not (j < #pos and pos[j + 1] == pos[j] + 1 and f[j + 1]) then return true end
  end
  return false
end
local function section_run(R, i, n)
  if i + n - 1 > #R.pos then return false end
  return R.OK[i + n] - R.OK[i] == n and R.GAP[i + n] - R.GAP[i + 1] == 0
end
-- The best so far: key (bo, bs, bc), ties by (b1 .. b4) (the rule's seat order: row,
-- first position, then for two rows -seats in front, the back run's first position),
-- and the pick: row, index, seats (and for two rows: the back row's index, seats).
local bo, bs, bc, b1, b2, b3, b4
local pr, pi, pa, pk, pb
local function better(o, s, c, t1, t2, t3, t4)
  if bo == nil then return true end
  if o ~= bo then return o < bo end
  if s ~= bs then return s < bs end
  if c ~= bc then return c < bc end
  if t1 ~= b1 then return t1 < b1 end
  if t2 ~= b2 then return t2 < b2 end
  if t3 ~= b3 then return t3 < b3 end
  return t4 < b4
end
local function take(o, s, c, t1, t2, t3, t4, r, i, a, k, b)
  bo, bs, bc, b1, b2, b3, b4 = o, s, c, t1, t2, t3, t4
  pr, pi, pa, pk, pb = r, i, a, k, b
end
-- One row: nearest the focal row first (then the front one).
local order = {}
for r = 1, nrows do order[r] = r end
table.sort(order, function(x, y)
  local dx, dy = math.abs(x - 1 - fr), math.abs(y - 1 - fr)
  if dx ~= dy then return dx < dy end
  return x < y
end)
for _, r in ipairs(order) do
  local dr = 2 * (r - 1 - fr)
  if bo == 0 and bs == 0 and count * dr * dr > bc then break end
  local R = row(r)
  local okp, gp, cp, pos = R.OK, R.GAP, R.COST, R.pos
  for i = 1, #pos - count + 1 do
    local j = i + count - 1
    if okp[j + 1] - okp[i] == count then
      local shape = (gp[j + 1] - gp[i + 1] > 0) and 1 or 0
      local c = cp[j + 1] - cp[i]
      -- The orphan test only for a block that could win without one.
      if better(0, shape, c, r, pos[i], 0, 0) then
        local o = orphan_beside(R, i, j) and 1 or 0
        if o == 0 or better(o, shape, c, r, pos[i], 0, 0) then
          take(o, shape, c, r, pos[i], 0, 0, r, i, count)
        end
      end
    end
  end
end
-- Two rows, one behind the other: only while no block leaves no orphan.
if count > 1 and (bo == nil or bo == 1) then
  for r = 1, nrows - 1 do
    local F, B = row(r), row(r + 1)
    local at = {}
    for k, p in ipairs(B.pos) do at[p] = k end
    for i = 1, #F.pos do
      for a = math.min(count - 1, #F.pos - i + 1), 1, -1 do
        if section_run(F, i, a) then
          local b = count - a
          local start = F.pos[i]
          for q = start - b + 1, start + a - 1 do
            local k = at[q]
            if k and section_run(B, k, b) then
              local c = F.COST[i + a] - F.COST[i] + B.COST[k + b] - B.COST[k]
              if better(0, 2, c, r, start, -a, q) then
                local o = (orphan_beside(F, i, i + a - 1) or orphan_beside(B, k, k + b - 1))
                  and 1 or 0
                if o == 0 or better(o, 2, c, r, start, -a, q) then
                  take(o, 2, c, r, start, -a, q, r, i, a, k, b)
                end
              end
            end
          end
        end
      end
    end
  end
end
local seats = {}
if pr ~= nil then
  local ids = rows[pr].ids
  for n = 0, pa - 1 do seats[#seats + 1] = ids[pi + n] end
  if pk then
    ids = rows[pr + 1].ids
    for n = 0, pb - 1 do seats[#seats + 1] = ids[pk + n] end
  end
elseif split then
  local pool = {}
  for r = 1, nrows do
    local R = row(r)
    local okp, pos, dr = R.OK, R.pos, 2 * (r - 1 - fr)
    for i = 1, #pos do
      if okp[i + 1] > okp[i] then
        local dx = 2 * pos[i] - fx
        pool[#pool + 1] = {dx * dx + dr * dr, r, pos[i], R.ids[i]}
      end
    end
  end
  if #pool >= count then
    table.sort(pool, function(x, y)
      if x[1] ~= y[1] then return x[1] < y[1] end
      if x[2] ~= y[2] then return x[2] < y[2] end
      if x[3] ~= y[3] then return x[3] < y[3] end
      return x[4] < y[4]
    end)
    for n = 1, count do seats[n] = pool[n][4] end
  end
end
if #seats == 0 then
  for r = 1, nrows do row(r) end  -- every row looked at: the longest run is of them all
  return {0, longest}
end
return hold_all(seats)
"""

# ARGV: channel, show_id, booking_id, ttl_ms, epoch, deadline_ms, count, category,
# accessible, allow_split. KEYS: the show's, then its layout (`keys.show_layout`).
# Chooses the best block of `count` free seats (`best.py`) and holds it for booking_id,
# in one step: no other write can come between the choice and the hold.
# Returns {1, version, expires_at_ms, seat...}: these seats (sorted) are now held by
#         booking_id; if booking_id already held seats of the show (a retry under the
#         same Idempotency-Key), those are held again and no others;
#         {0, longest}: nothing changed; no block of `count` eligible seats is free
#         (`longest`: the longest run of eligible free seats in one row);
#         {-1, owner}, {-4, now_ms}: as HOLD's;
#         {-3}: nothing changed (no token taken either); the show's layout is not on
#         this master (write it from the catalog, `layout.py`, and call again).
# (A show moving or moved away is refused by the owner check below, layout or not.)
_LAYOUT_HERE = """
if redis.call('EXISTS', KEYS[6]) == 0 and owner_state ~= 'moving' and not moved_away() then
  return {-3}
end
"""
BEST = _NOW + _LATE + _PUBLISH + _MOVED + _LAYOUT_HERE + _BEST_SEATS

# BEST with the write rate limits, as HOLD_LIMITED is HOLD with them: KEYS[7] the user's
# bucket, KEYS[8] the address's; ARGV as BEST's, then the four bucket arguments.
# Returns BEST's answers, or {-2, ...} as HOLD_LIMITED.
BEST_LIMITED = _NOW + _LATE + _PUBLISH + _MOVED + _TAKE_TOKEN + _LAYOUT_HERE + """
local user_ok, user_wait = take_token(KEYS[7], ARGV[11], ARGV[12])
local addr_ok, addr_wait = take_token(KEYS[8], ARGV[13], ARGV[14])
if user_ok == 0 or addr_ok == 0 then return {-2, user_ok, user_wait, addr_ok, addr_wait} end
""" + _BEST_SEATS

# ARGV: channel, show_id, booking_id, seat...
# Drops the holds of booking_id on these seats (others' holds are left alone).
# Returns {version or 0, released seat...}; {0} for a show that moved away.
RELEASE = _HOLDER + _PUBLISH + _MOVED + """
if moved_away() then return {0} end
local released = {}
for i = 4, #ARGV do
  local owner = holder(ARGV[i])
  if owner == ARGV[3] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    released[#released + 1] = ARGV[i]
  end
end
if #released == 0 then return {0} end
return {publish(released, 'AVAILABLE', ARGV[3]), unpack(released)}
"""

# ARGV: channel, show_id, booking_id, seat...
# Records seats as sold to booking_id after PostgreSQL committed the sale:
# PostgreSQL decided, so any hold on these seats is dropped. Returns the version,
# or 0 when every seat was already recorded (applying a sale twice is a no-op:
# nothing changes, nothing is published), and for a show that moved away (its new
# home's master was rebuilt from PostgreSQL).
BOOK = _PUBLISH + _MOVED + """
if moved_away() then return 0 end
local seats, changed = {}, false
for i = 4, #ARGV do
  seats[#seats + 1] = ARGV[i]
  if redis.call('HGET', KEYS[2], ARGV[i]) ~= ARGV[3]
     or redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then
    redis.call('HSET', KEYS[2], ARGV[i], ARGV[3])
    redis.call('HDEL', KEYS[1], ARGV[i])
    changed = true
  end
end
if not changed then return 0 end
return publish(seats, 'BOOKED', ARGV[3])
"""

# ARGV: channel, show_id, booking_id, seat...
# Puts seats sold to booking_id back on sale after PostgreSQL committed its refund
# (`bc_refund`): a seat sold to anyone else is left alone. Returns the version, or 0
# when none was still sold to it (applying a refund twice is a no-op) and for a show
# that moved away.
UNBOOK = _PUBLISH + _MOVED + """
if moved_away() then return 0 end
local freed = {}
for i = 4, #ARGV do
  if redis.call('HGET', KEYS[2], ARGV[i]) == ARGV[3] then
    redis.call('HDEL', KEYS[2], ARGV[i])
    freed[#freed + 1] = ARGV[i]
  end
end
if #freed == 0 then return 0 end
return publish(freed, 'AVAILABLE', ARGV[3])
"""

# ARGV: channel, show_id, min_version, then triples (seat, expected, wanted) where
# a state is "B:<booking>" (sold), "H:<booking>|<expires_ms>" (held, expired or
# not), "U" (never for sale) or "A" (free). The reconciler's repair: sets each
# listed seat that still is what the reconciler read (`expected`) to what
# PostgreSQL says: a seat a hold, sale or release changed since that read is
# left to the next pass, so a repair never undoes a change it did not see.
# Then it raises the version to at least min_version (a new generation of the
# master), and publishes RESET on the show's channel so every node that follows
# the show drops its copy and reads it again (a new generation repairs every
# show of the region, so it reaches every node that caches any of them).
# Returns {version, seats changed}.
REPAIR = """
local function current(seat)
  if redis.call('SISMEMBER', KEYS[3], seat) == 1 then return 'U' end
  local booked = redis.call('HGET', KEYS[2], seat)
  if booked then return 'B:' .. booked end
  local held = redis.call('HGET', KEYS[1], seat)
  if held then return 'H:' .. held end
  return 'A'
end
local changed = 0
for i = 4, #ARGV, 3 do
  local seat, expected, want = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if current(seat) == expected then
    local kind = string.sub(want, 1, 1)
    redis.call('HDEL', KEYS[1], seat)
    redis.call('HDEL', KEYS[2], seat)
    redis.call('SREM', KEYS[3], seat)
    if kind == 'B' then redis.call('HSET', KEYS[2], seat, string.sub(want, 3))
    elseif kind == 'H' then redis.call('HSET', KEYS[1], seat, string.sub(want, 3))
    elseif kind == 'U' then redis.call('SADD', KEYS[3], seat) end
    changed = changed + 1
  end
end
local version = redis.call('INCR', KEYS[4])
local floor = tonumber(ARGV[3])
if version < floor then
  redis.call('SET', KEYS[4], ARGV[3])
  version = floor
end
local clock = redis.call('TIME')
-- Written by hand: cjson would encode the empty seat list as an object.
redis.call('PUBLISH', ARGV[1] .. ':' .. ARGV[2], string.format(
  '{"show": %d, "version": %d, "seats": [], "status": "RESET", "ts": %d}',
  tonumber(ARGV[2]), version,
  tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)))
return {version, changed}
"""

# ARGV: channel, show_id, booking_id, ttl_ms, deadline_ms, seat...
# Extends booking_id's live holds to min(now + ttl, deadline).
# Returns {1, version, expires_at_ms}; {0, seat...} if a hold is gone or
# belongs to someone else (nothing changed); {-1, deadline_ms} if the hold
# already reached its cap.
EXTEND = _NOW + _HOLDER + _PUBLISH + """
local seats, lost = {}, {}
for i = 6, #ARGV do
  local owner, expires = holder(ARGV[i])
  seats[#seats + 1] = ARGV[i]
  if owner ~= ARGV[3] or expires <= now then lost[#lost + 1] = ARGV[i] end
end
if #lost > 0 then return {0, unpack(lost)} end
local expires = math.min(now + tonumber(ARGV[4]), tonumber(ARGV[5]))
local _, current = holder(seats[1])
if expires <= current then return {-1, tonumber(ARGV[5])} end
local value = ARGV[3] .. '|' .. expires
for _, seat in ipairs(seats) do redis.call('HSET', KEYS[1], seat, value) end
return {1, publish(seats, 'LOCKED', ARGV[3], expires), expires}
"""


class SeatScripts:
    """The seat scripts registered once per Redis client (EVALSHA, loaded on first use)."""

    def __init__(self) -> None:
        self._registered: dict[int, dict[str, AsyncScript]] = {}

    def _scripts(self, client: aioredis.Redis) -> dict[str, AsyncScript]:
        scripts = self._registered.get(id(client))
        if scripts is None:
            scripts = {name: client.register_script(body) for name, body in
                       (("hold", HOLD), ("hold_limited", HOLD_LIMITED), ("release", RELEASE),
                        ("book", BOOK), ("unbook", UNBOOK), ("extend", EXTEND), ("repair", REPAIR),
                        ("best", BEST), ("best_limited", BEST_LIMITED))}
            self._registered[id(client)] = scripts
        return scripts

    async def run(self, client: aioredis.Redis, name: str, keys: list[str],
                  args: list[Any]) -> Any:
        return await self._scripts(client)[name](keys=keys, args=args)
