"""The Lua scripts behind the job store's atomic steps (service.jobs.store): each one changes a
job and the work queue together, so a worker that dies between two Redis calls leaves nothing
half done. Each script's comment names its KEYS and ARGV, in the order JobStore passes them."""

from __future__ import annotations

from .keys import DEAD_MAXLEN, ERROR_SAMPLE

# Shared by the scripts below: note a job's progress (the stale check's clock, service.jobs.upkeep);
# end a job (state, time, error), let its keys expire, release its output prefix, move it from
# the active index to the expiry index (whose members are "id" or "id:owner", so that the
# owner's index can be pruned once the job's hash is gone), count it; keep a sample of errors;
# count a chunk (the last one enqueues the finalize message); acknowledge and drop a message.
# KEYS are never built here but for the job's own suffixes.
_HELPERS = """
local function progress(job, active, now)
  redis.call('HSET', job, 'progress_at', now)
  redis.call('ZADD', active, now, redis.call('HGET', job, 'id'))
end
local function finish(job, state, now, err, retention, stats, active, expiry)
  redis.call('HSET', job, 'state', state, 'finished_at', now)
  if err ~= '' then redis.call('HSET', job, 'error', err) end
  for _, suffix in ipairs({'', ':chunks', ':errors', ':dead', ':attempts'}) do
    redis.call('EXPIRE', job .. suffix, retention)
  end
  local idem = redis.call('HGET', job, 'idempotency')
  if idem then redis.call('EXPIRE', idem, retention) end
  local id = redis.call('HGET', job, 'id')
  local out = redis.call('HGET', job, 'output_lock')
  if out and redis.call('GET', out) == id then
    redis.call('DEL', out)
  end
  redis.call('ZREM', active, id)
  local owner = redis.call('HGET', job, 'owner')
  local member = owner and (id .. ':' .. owner) or id
  redis.call('ZADD', expiry, tonumber(now) + tonumber(retention), member)
  redis.call('HINCRBY', stats, 'jobs_' .. state, 1)
end
local function push_errors(list, first, cap)
  local room = cap - redis.call('LLEN', list)
  for i = first, math.min(#ARGV, first + room - 1) do redis.call('RPUSH', list, ARGV[i]) end
end
local function chunk_counted(job, queue, job_id)
  local d = redis.call('HINCRBY', job, 'chunks_done', 1)
  if d == tonumber(redis.call('HGET', job, 'chunks')) then
    redis.call('XADD', queue, '*', 'kind', 'finalize', 'job', job_id)
  end
end
local function ack(queue, group, id)
  redis.call('XACK', queue, group, id)
  redis.call('XDEL', queue, id)
end
"""


def _with_helpers(body: str) -> str:
    """``body`` after the shared functions, with $SAMPLE and $DEAD_MAXLEN filled in."""
    script = _HELPERS + body
    return script.replace("$SAMPLE", str(ERROR_SAMPLE)).replace("$DEAD_MAXLEN", str(DEAD_MAXLEN))


# KEYS job, jobs, idempotency (or jobs: unused), output lock, queue, stats, the owner's jobs
#      (or jobs: unused), active jobs
# ARGV id, spec, now, has idempotency key ('1'/'0'), owner ('' for none)
CREATE = _with_helpers("""
if ARGV[4] == '1' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {'replayed', existing} end
end
local holder = redis.call('GET', KEYS[4])
if holder then return {'busy', holder} end
redis.call('HSET', KEYS[1], 'id', ARGV[1], 'state', 'queued', 'spec', ARGV[2],
  'created_at', ARGV[3], 'done', 0, 'failed', 0, 'chunks_done', 0, 'output_lock', KEYS[4])
if ARGV[4] == '1' then
  redis.call('SET', KEYS[3], ARGV[1])
  redis.call('HSET', KEYS[1], 'idempotency', KEYS[3])
end
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[1], 'owner', ARGV[5])
  redis.call('ZADD', KEYS[7], ARGV[3], ARGV[1])
end
redis.call('SET', KEYS[4], ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
progress(KEYS[1], KEYS[8], ARGV[3])
redis.call('XADD', KEYS[5], '*', 'kind', 'plan', 'job', ARGV[1])
redis.call('HINCRBY', KEYS[6], 'jobs_created', 1)
return {'created', ARGV[1]}
""")

# KEYS job, active jobs; ARGV now -> the state before (a queued job becomes running)
START = _with_helpers("""
local state = redis.call('HGET', KEYS[1], 'state')
if state == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'started_at', ARGV[1])
  progress(KEYS[1], KEYS[2], ARGV[1])
end
return state or ''
""")

# KEYS job, queue, errors, active jobs; ARGV total, chunks, failed (planning errors), job id,
#      message id, group, now, errors JSON...
PLANNED = _with_helpers("""
local enqueued = 0
if redis.call('HGET', KEYS[1], 'state') == 'running'
    and redis.call('HSETNX', KEYS[1], 'planned', 1) == 1 then
  redis.call('HSET', KEYS[1], 'total', ARGV[1], 'chunks', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'failed', ARGV[3])
  progress(KEYS[1], KEYS[4], ARGV[7])
  push_errors(KEYS[3], 8, $SAMPLE)
  local n = tonumber(ARGV[2])
  if n == 0 then
    redis.call('XADD', KEYS[2], '*', 'kind', 'finalize', 'job', ARGV[4])
  end
  for i = 0, n - 1 do
    redis.call('XADD', KEYS[2], '*', 'kind', 'chunk', 'job', ARGV[4], 'chunk', i)
  end
  enqueued = 1
end
ack(KEYS[2], ARGV[6], ARGV[5])
return enqueued
""")

# KEYS job, chunks, errors, queue, stats, active jobs
# ARGV message id, group, chunk, images done, images failed, job id, now, errors JSON...
COMPLETE = _with_helpers("""
local counted = 0
if redis.call('HGET', KEYS[1], 'state') == 'running'
    and redis.call('SADD', KEYS[2], ARGV[3]) == 1 then
  counted = 1
  redis.call('HINCRBY', KEYS[1], 'done', ARGV[4])
  redis.call('HINCRBY', KEYS[1], 'failed', ARGV[5])
  redis.call('HINCRBY', KEYS[5], 'images_done', ARGV[4])
  redis.call('HINCRBY', KEYS[5], 'images_failed', ARGV[5])
  redis.call('HINCRBY', KEYS[5], 'chunks_done', 1)
  progress(KEYS[1], KEYS[6], ARGV[7])
  push_errors(KEYS[3], 8, $SAMPLE)
  chunk_counted(KEYS[1], KEYS[4], ARGV[6])
end
ack(KEYS[4], ARGV[2], ARGV[1])
return counted
""")

# KEYS job, chunks, errors, queue, dead stream, stats, dead hash, active jobs, expiring jobs
# ARGV message id, group, kind, chunk, error, deliveries, now, job id, images, retention,
#      errors JSON...
DEAD_LETTER = _with_helpers("""
if redis.call('XACK', KEYS[4], ARGV[2], ARGV[1]) == 0 then return 0 end
redis.call('XDEL', KEYS[4], ARGV[1])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', $DEAD_MAXLEN, '*', 'job', ARGV[8], 'kind', ARGV[3],
  'chunk', ARGV[4], 'error', ARGV[5], 'deliveries', ARGV[6], 'at', ARGV[7])
redis.call('HINCRBY', KEYS[6], 'messages_dead', 1)
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'running' and state ~= 'queued' then return 1 end
if ARGV[3] ~= 'chunk' then
  finish(KEYS[1], 'failed', ARGV[7],
    ARGV[3] .. ' failed ' .. ARGV[6] .. ' times: ' .. ARGV[5], ARGV[10], KEYS[6], KEYS[8],
    KEYS[9])
  return 1
end
if redis.call('SADD', KEYS[2], ARGV[4]) == 1 then
  redis.call('HSET', KEYS[7], ARGV[4], ARGV[5])
  redis.call('HINCRBY', KEYS[1], 'failed', ARGV[9])
  redis.call('HINCRBY', KEYS[6], 'images_failed', ARGV[9])
  redis.call('HINCRBY', KEYS[6], 'chunks_dead', 1)
  progress(KEYS[1], KEYS[8], ARGV[7])
  push_errors(KEYS[3], 11, $SAMPLE)
  chunk_counted(KEYS[1], KEYS[4], ARGV[8])
end
return 1
""")

# KEYS job, queue, stats, active jobs, expiring jobs; ARGV state, now, error, retention, allowed
#      states (comma-separated), summary JSON ('' for none), message id ('' for none), group
FINISH_JOB = _with_helpers("""
local state = redis.call('HGET', KEYS[1], 'state')
local result = state or ''
if state and string.find(',' .. ARGV[5] .. ',', ',' .. state .. ',', 1, true) then
  if ARGV[6] ~= '' then redis.call('HSET', KEYS[1], 'summary', ARGV[6]) end
  finish(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], KEYS[3], KEYS[4], KEYS[5])
  result = 'ok'
end
if ARGV[7] ~= '' then ack(KEYS[2], ARGV[8], ARGV[7]) end
return result
""")

# KEYS job, stats, active jobs, expiring jobs, workers (name -> last heartbeat), last seen
# ARGV quiet since (what the caller read: the later of the job's progress and the last time a
#      worker was seen), now, stale seconds, error, retention
# -> 'failed'; or why not: 'gone', the state ('completed', ...), 'moved' (progress or a worker
#    since), 'recent' (quiet for less than the stale time)
FAIL_STALE = _with_helpers("""
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then  -- not active: out of the active index
  redis.call('ZREM', KEYS[3], string.match(KEYS[1], '([^:]+)$'))
  return state or 'gone'
end
local fields = redis.call('HMGET', KEYS[1], 'progress_at', 'started_at', 'created_at')
local last = tonumber(fields[1] or fields[2] or fields[3]) or 0
local seen = tonumber(redis.call('GET', KEYS[6]) or '0') or 0
local top = redis.call('ZREVRANGE', KEYS[5], 0, 0, 'WITHSCORES')
if top[2] then seen = math.max(seen, tonumber(top[2])) end
if math.max(last, seen) > tonumber(ARGV[1]) then return 'moved' end
if tonumber(ARGV[2]) - tonumber(ARGV[1]) < tonumber(ARGV[3]) then return 'recent' end
finish(KEYS[1], 'failed', ARGV[2], ARGV[4], ARGV[5], KEYS[2], KEYS[3], KEYS[4])
return 'failed'
""")

# KEYS job; ARGV the summary JSON -> 1 when noted (the job is running), else 0. The results
# are written: a finalize message tried again after this skips to removing the job's leftovers
FINALIZED = """
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
redis.call('HSET', KEYS[1], 'finalized', ARGV[1])
return 1
"""

# KEYS job, attempts, stats; ARGV part, error, counter -> 1 when noted, 0 when the job is no
# longer active (a finished job's keys expire: a new key now would stay for ever)
ATTEMPT_FAILED = """
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'queued' and state ~= 'running' then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
return 1
"""
