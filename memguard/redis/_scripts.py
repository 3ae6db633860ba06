"""The Lua scripts of a Redis store: every write of a job and every eviction is one script.

A script runs atomically, so a job is never half-written, two workers evicting at once never
evict the same job twice (the second finds it gone), and the count bound is checked in the
same step as the insert that could break it. Each script is registered once per client
(redis-py's `register_script`) and run with EVALSHA, loaded again after a server restart.

Every script takes the same seven index keys (`RedisCore.keys`) and the key prefix of the
store as ARGV[1]; job keys are that prefix plus `j:ID` (small fields), `r:ID` (release
fields) and `p:ID` (pins), so all keys of a store share its `{name}` hash tag. Scripts that
may add data carry the `#!lua` shebang without `allow-oom`: a full Redis refuses them before
they start. Scripts that only delete or re-score carry `allow-oom`, so eviction still works
on a full Redis.
"""

from __future__ import annotations

from typing import Any

#: Marks, in a job's small-field hash, a field whose value lives in its release hash.
RELEASED_MARK = b"\x00r"
#: The field of a job's small-field hash that holds its generation (never a user field).
GEN_FIELD = "\x00g"

_PRELUDE = r"""
local K_CREATED, K_RECENCY, K_SIZES = KEYS[1], KEYS[2], KEYS[3]
local K_RUNNING, K_META, K_PINS, K_AGED = KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local BASE = ARGV[1]
local MARK = '\0r'
local GEN = '\0g'  -- in a job's small-field hash: its generation, new at each put
local argi = 1
local function arg() argi = argi + 1; return ARGV[argi] end
local function clock()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function jkey(id) return BASE .. 'j:' .. id end
local function rkey(id) return BASE .. 'r:' .. id end
local function pkey(id) return BASE .. 'p:' .. id end
local function exists(id) return redis.call('ZSCORE', K_CREATED, id) ~= false end
local function pinned(id, now)
  local until_ = redis.call('ZSCORE', K_PINS, id)
  return until_ ~= false and tonumber(until_) > now
end
local function evictable(id, now, exempt)
  if id == exempt then return false end
  if redis.call('ZSCORE', K_RUNNING, id) ~= false then return false end
  return not pinned(id, now)
end
local function fsize(key, f)
  local n = redis.call('HSTRLEN', key, f)
  if n > 0 then return n + #f end
  return 0
end
local function remove(id)
  local size = tonumber(redis.call('ZSCORE', K_SIZES, id) or 0)
  redis.call('DEL', jkey(id), rkey(id))
  redis.call('ZREM', K_CREATED, id)
  redis.call('ZREM', K_RECENCY, id)
  redis.call('ZREM', K_SIZES, id)
  redis.call('ZREM', K_AGED, id)
  redis.call('ZREM', K_RUNNING, id)
  redis.call('HINCRBY', K_META, 'bytes', 0 - size)  -- never -0: not an integer to Redis
  return size
end
-- what decides whether a job is active: ('f', field, n, values...) or ('a'|'i'|'-', '', 0)
local function read_active()
  local act = {mode = arg(), field = arg(), values = {}}
  for _ = 1, tonumber(arg()) do act.values[arg()] = true end
  return act
end
-- After a write of `written` (a field, or true: the whole job) at `now`: decide whether the
-- job is active (when the write can change it), then date the write. An active job is in
-- K_RUNNING, scored by its last write (max_running), and out of the eviction orders
-- K_RECENCY and K_AGED, so no insert or pass walks past it; an inactive one is in both.
-- Returns true when the job just finished (was active, is not any more).
local function apply_active(id, act, written, now, touch)
  local yes
  if act.mode == 'f' then
    if written == true then
      local v = redis.call('HGET', jkey(id), act.field)
      yes = v ~= false and act.values[v] == true
    end
  elseif act.mode == 'a' then yes = true
  elseif act.mode == 'i' then yes = false end
  if yes == nil then yes = redis.call('ZSCORE', K_RUNNING, id) ~= false end
  if yes then
    redis.call('ZADD', K_RUNNING, now, id)
    redis.call('ZREM', K_RECENCY, id)
    redis.call('ZREM', K_AGED, id)
  else
    -- a job that finishes comes back at the recent end; a deleted field is no use of it
    local finished = redis.call('ZREM', K_RUNNING, id) == 1
    if finished or touch then redis.call('ZADD', K_RECENCY, now, id) end
    redis.call('ZADD', K_AGED, 'NX', redis.call('ZSCORE', K_CREATED, id), id)
    return finished
  end
  return false
end
local function push(out, id, size, cause)
  out[#out + 1] = id; out[#out + 1] = tostring(size); out[#out + 1] = cause
end
-- evict evictable jobs in `order` while more() says so, at most `limit` victims in `out`
local function evict_ordered(order, now, exempt, cause, out, limit, more)
  local zkey, rev = K_RECENCY, false
  if order == 'oldest' then zkey = K_AGED elseif order == 'largest' then
    zkey = K_SIZES; rev = true end
  local skipped = 0
  while #out < limit * 3 and more() do
    local ids
    if rev then ids = redis.call('ZRANGE', zkey, skipped, skipped + 99, 'REV')
    else ids = redis.call('ZRANGE', zkey, skipped, skipped + 99) end
    if #ids == 0 then return end
    for _, id in ipairs(ids) do
      if #out >= limit * 3 or not more() then return end
      if evictable(id, now, exempt) then push(out, id, remove(id), cause)
      else skipped = skipped + 1 end
    end
  end
end
local function enforce(order, now, exempt, max_jobs, max_bytes, out, limit)
  if max_jobs then
    evict_ordered(order, now, exempt, 'count', out, limit,
      function() return redis.call('ZCARD', K_CREATED) > max_jobs end)
  end
  if max_bytes then
    evict_ordered(order, now, exempt, 'bytes', out, limit,
      function() return tonumber(redis.call('HGET', K_META, 'bytes') or 0) > max_bytes end)
  end
end
"""

#: Store a whole job (replacing one of that id, whose age it keeps): its fields in order, a
#: release field as MARK, then the release fields' values. Then enforce the count and byte
#: bounds; the job just written is never the victim. Returns the victims as flat
#: (id, size, cause) triples, or false when `nx` was asked and the id exists.
PUT = """
local id, nx = arg(), arg()
local act = read_active()
local max_jobs, max_bytes, order = tonumber(arg()), tonumber(arg()), arg()
local now = clock()
local old = 0
if exists(id) then
  if nx == '1' then return false end
  old = tonumber(redis.call('ZSCORE', K_SIZES, id) or 0)
  redis.call('DEL', jkey(id), rkey(id))
else
  redis.call('ZADD', K_CREATED, now, id)
end
local gen = redis.call('HINCRBY', K_META, 'gen', 1)
redis.call('HSET', jkey(id), GEN, gen)
local size = 0
for _ = 1, tonumber(arg()) do
  local f, v = arg(), arg()
  redis.call('HSET', jkey(id), f, v)
  size = size + #f + #v
end
for _ = 1, tonumber(arg()) do
  local f, v = arg(), arg()
  redis.call('HSET', rkey(id), f, v)
  size = size + #f + #v
end
redis.call('ZADD', K_SIZES, size, id)
redis.call('HINCRBY', K_META, 'bytes', size - old)
apply_active(id, act, true, now, true)
local out = {tostring(gen)}
enforce(order, now, id, max_jobs, max_bytes, out, 1000000000)
return out
"""

#: Write fields of a stored job at once (`job[f] = v`, `job.update(...)`): (field, value,
#: release?) triples, then what decides activeness, then the generation the writer read
#: ('' = any), then the insert bounds (max_jobs, max_bytes, order). A write is a touch.
#: Returns {1, victims...}: a write that finishes a job enforces the count and byte bounds
#: as an insert does (the job itself never the victim); or 0 when the job is gone (evicted,
#: deleted) or is another job now (its id deleted and reused): nothing written, nor brought
#: back.
SET_FIELDS = """
local id, gen, n = arg(), arg(), tonumber(arg())
local items = {}
for i = 1, n do items[i] = {arg(), arg(), arg()} end
local act = read_active()
local max_jobs, max_bytes, order = tonumber(arg()), tonumber(arg()), arg()
if not exists(id) then return 0 end
local j, r = jkey(id), rkey(id)
if gen ~= '' and redis.call('HGET', j, GEN) ~= gen then return 0 end
local delta, hit = 0, false
for _, item in ipairs(items) do
  local f, v, rel = item[1], item[2], item[3]
  local old = fsize(j, f) + fsize(r, f)
  if rel == '1' then
    redis.call('HSET', r, f, v)
    redis.call('HSET', j, f, MARK)
  else
    redis.call('HSET', j, f, v)
    redis.call('HDEL', r, f)
  end
  delta = delta + fsize(j, f) + fsize(r, f) - old
  if f == act.field then hit = true end
end
redis.call('ZINCRBY', K_SIZES, delta, id)
redis.call('HINCRBY', K_META, 'bytes', delta)
local now = clock()
local out = {1}
-- a job that finishes counts toward the bounds again: enforce them now, as an insert does
if apply_active(id, act, hit, now, true) then
  enforce(order, now, id, max_jobs, max_bytes, out, 1000000000)
end
return out
"""

#: Delete fields of a stored job at once (`del job[f]`, `job.clear()`); 1, or 0 as above.
DEL_FIELDS = """#!lua flags=allow-oom
local id, gen, n = arg(), arg(), tonumber(arg())
local fields = {}
for i = 1, n do fields[i] = arg() end
local act = read_active()
local max_jobs, max_bytes, order = tonumber(arg()), tonumber(arg()), arg()
if not exists(id) then return 0 end
local j, r = jkey(id), rkey(id)
if gen ~= '' and redis.call('HGET', j, GEN) ~= gen then return 0 end
local delta, hit = 0, false
for _, f in ipairs(fields) do
  delta = delta - (fsize(j, f) + fsize(r, f))
  redis.call('HDEL', j, f)
  redis.call('HDEL', r, f)
  if f == act.field then hit = true end
end
redis.call('ZINCRBY', K_SIZES, delta, id)
redis.call('HINCRBY', K_META, 'bytes', delta)
local now = clock()
local out = {1}
if apply_active(id, act, hit, now, false) then
  enforce(order, now, id, max_jobs, max_bytes, out, 1000000000)
end
return out
"""

#: Mark ids as just used (batched reads, oldest read first: each gets a score 1 us above
#: the one before, the last one now); unknown ids and active jobs (not in the order) are
#: ignored.
TOUCH = """#!lua flags=allow-oom
local now = clock()
local args = {}
for i = 2, #ARGV do
  args[#args + 1] = now - (#ARGV - i) / 1000000; args[#args + 1] = ARGV[i]
end
if #args > 0 then redis.call('ZADD', K_RECENCY, 'XX', unpack(args)) end
return #args / 2
"""

#: Remove a job whatever its state (del, explicit eviction); its size, or false if absent.
DELETE = """#!lua flags=allow-oom
local id = arg()
if not exists(id) then return false end
return remove(id)
"""

#: Remove a job and return it whole: {small fields, release fields, size}; false if absent.
#: The job's hashes are renamed to `t:TOKEN:j` / `t:TOKEN:r` (kept TAKEN_TTL ms, deleted by
#: the store's next take through `prev`), so a take whose reply was lost, sent again with
#: the same token, returns the job instead of finding it gone.
TAKE = """#!lua flags=allow-oom
local id, token, prev, ttl = arg(), arg(), arg(), tonumber(arg())
if prev ~= '' then redis.call('DEL', BASE .. 't:' .. prev .. ':j', BASE .. 't:' .. prev .. ':r') end
local tj, tr = BASE .. 't:' .. token .. ':j', BASE .. 't:' .. token .. ':r'
if redis.call('EXISTS', tj) == 1 then  -- taken by this very call before: its reply was lost
  return {redis.call('HGETALL', tj), redis.call('HGETALL', tr), 0}
end
if not exists(id) then return false end
redis.call('RENAME', jkey(id), tj)
redis.call('PEXPIRE', tj, ttl)
if redis.call('EXISTS', rkey(id)) == 1 then
  redis.call('RENAME', rkey(id), tr)
  redis.call('PEXPIRE', tr, ttl)
end
return {redis.call('HGETALL', tj), redis.call('HGETALL', tr), remove(id)}
"""

#: Remove up to `limit` jobs; how many it removed (0 once the store is empty).
CLEAR = """#!lua flags=allow-oom
local limit = tonumber(arg())
local ids = redis.call('ZRANGE', K_CREATED, 0, limit - 1)
for _, id in ipairs(ids) do remove(id) end
return #ids
"""

#: One periodic pass: age, idle, then the count and byte bounds in `order`, at most `limit`
#: victims per call (the caller calls again while a call comes back full). Expired pins go.
#: Returns {victims, {jobs, bytes}}: the figures after the pass come with it.
PASS = """#!lua flags=allow-oom
local max_age, max_idle = tonumber(arg()), tonumber(arg())
local max_jobs, max_bytes, order = tonumber(arg()), tonumber(arg()), arg()
local limit, max_running = tonumber(arg()), tonumber(arg())
local now = clock()
local out = {}
local function expire(zkey, cutoff, cause, running)
  local skipped = 0
  while #out < limit * 3 do
    local ids = redis.call('ZRANGEBYSCORE', zkey, '-inf', '(' .. cutoff, 'LIMIT', skipped, 100)
    if #ids == 0 then return end
    for _, id in ipairs(ids) do
      if #out >= limit * 3 then return end
      if (running and not pinned(id, now)) or evictable(id, now, '') then
        push(out, id, remove(id), cause)
      else skipped = skipped + 1 end
    end
  end
end
if max_running then expire(K_RUNNING, now - max_running, 'abandoned', true) end
if max_age then expire(K_AGED, now - max_age, 'age') end
if max_idle then expire(K_RECENCY, now - max_idle, 'idle') end
enforce(order, now, '', max_jobs, max_bytes, out, limit)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', K_PINS, '-inf', '(' .. now, 'LIMIT', 0, limit)) do
  redis.call('DEL', pkey(id))  -- no TTL on any key: a volatile-* maxmemory-policy spares them
  redis.call('ZREM', K_PINS, id)
end
return {out, {redis.call('ZCARD', K_CREATED), tonumber(redis.call('HGET', K_META, 'bytes') or 0)}}
"""

#: The emergency rule of Redis stores: evict in `order` until `need` stored bytes are freed.
EVICT_BYTES = """#!lua flags=allow-oom
local order, need, limit = arg(), tonumber(arg()), tonumber(arg())
local now = clock()
local out = {}
local freed, counted = 0, 0
local function more()
  while counted < #out do freed = freed + tonumber(out[counted + 2]); counted = counted + 3 end
  return freed < need
end
evict_ordered(order, now, '', 'emergency', out, limit, more)
return out
"""

#: Pin ids for `holder` until now + lease seconds (a renewal is the same call).
PIN = """
local holder, lease = arg(), tonumber(arg())
local now = clock()
for i = argi + 1, #ARGV do
  local id = ARGV[i]
  redis.call('HSET', pkey(id), holder, now + lease)
  redis.call('ZADD', K_PINS, 'GT', now + lease, id)
end
return 1
"""

#: Drop `holder`'s pin of an id; the job stays pinned while another holder's lease runs.
UNPIN = """#!lua flags=allow-oom
local holder, id = arg(), arg()
redis.call('HDEL', pkey(id), holder)
local until_ = nil
local held = redis.call('HVALS', pkey(id))
for _, v in ipairs(held) do
  if until_ == nil or tonumber(v) > until_ then until_ = tonumber(v) end
end
if until_ == nil then redis.call('ZREM', K_PINS, id)
else redis.call('ZADD', K_PINS, until_, id) end
return 1
"""

#: {jobs, active, bytes, pinned, server time}: what `stats()` reports, read in one step.
STATS = """#!lua flags=no-writes
local now = clock()
return {redis.call('ZCARD', K_CREATED), redis.call('ZCARD', K_RUNNING),
        tonumber(redis.call('HGET', K_META, 'bytes') or 0),
        redis.call('ZCOUNT', K_PINS, '(' .. now, '+inf'), tostring(now)}
"""

#: `set_fields` for a write that finishes a job (turns it inactive): allowed on a full Redis,
#: so a full Redis holding running jobs is never wedged (the write frees a job for eviction).
FINISH_FIELDS = "#!lua flags=allow-oom\n" + SET_FIELDS.lstrip("\n")

SOURCES: dict[str, str] = {
    "finish_fields": FINISH_FIELDS,
    "put": PUT, "set_fields": SET_FIELDS, "del_fields": DEL_FIELDS, "touch": TOUCH,
    "delete": DELETE, "take": TAKE, "clear": CLEAR, "pass": PASS, "evict_bytes": EVICT_BYTES,
    "pin": PIN, "unpin": UNPIN, "stats": STATS,
}


def _assemble(body: str) -> str:
    """The prelude after the script's shebang line (a shebang must come first)."""
    shebang = "#!lua"
    if body.startswith("#!"):
        shebang, _, body = body.partition("\n")
    return f"{shebang}\n{_PRELUDE}\n{body}"


class Scripts:
    """The store's scripts registered with one client; `scripts.put(keys, args)` runs one."""

    def __init__(self, client: Any) -> None:
        for name, body in SOURCES.items():
            setattr(self, name, client.register_script(_assemble(body)))

    def __getattr__(self, name: str) -> Any:  # for mypy: attributes are set in __init__
        raise AttributeError(name)
