-- wrk script for ciolake's benchmark: streams pre-signed requests from one file per thread,
-- at saturation or at a fixed rate, and writes a JSON summary.
--
-- bench/load.py prepends these globals:
--   REQUEST_FILES        one file per wrk thread (records: 8-digit length, raw HTTP request)
--   RATE_PER_THREAD      requests/s per thread; 0 means as fast as possible (saturation)
--   STOP_WHEN_EXHAUSTED  true: after a thread's last request its connections only send a
--                        GET /health a second (until the harness interrupts wrk);
--                        false: the thread starts its file over
--   RESULT_PATH          where done() writes the JSON summary
--
-- Pacing (RATE_PER_THREAD > 0) is open-loop per thread: request k is scheduled at
-- t0 + k / rate. A connection that becomes free takes the next slot and waits for it
-- (wrk's delay()). When no connection is free at a slot's time, that request leaves late:
-- `late` counts those (more than 1 ms late) and `max_lag_ms` is the worst lateness, so
-- coordinated omission is measured instead of hidden. `scheduled` (requests due from the
-- first slot to the end) minus `sent` counts the requests that never left at all.

local ffi = require("ffi")
ffi.cdef([[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clock_id, bench_timespec *tp);
]])
local CLOCK_MONOTONIC = 1
local clock_buffer = ffi.new("bench_timespec")

local function now_ms()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, clock_buffer)
  return tonumber(clock_buffer.tv_sec) * 1000 + tonumber(clock_buffer.tv_nsec) / 1e6
end

local HEALTH_REQUEST = "GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"

-- main state: one entry per thread, for done()
local threads = {}

function setup(thread)
  threads[#threads + 1] = thread
  thread:set("thread_index", #threads)
end

-- thread state (each wrk thread has its own Lua state); globals so done() can read them
sent, wraps, late, max_lag_ms, exhausted, first_slot_ms = 0, 0, 0, 0, 0, -1
local source, interval_ms, next_slot_ms

function init(args)
  source = assert(io.open(REQUEST_FILES[thread_index], "rb"))
  if RATE_PER_THREAD > 0 then
    interval_ms = 1000 / RATE_PER_THREAD
  end
end

local function next_record()
  local header = source:read(8)
  if header == nil then
    if STOP_WHEN_EXHAUSTED then
      return nil
    end
    wraps = wraps + 1
    source:seek("set", 0)
    header = source:read(8)
  end
  return source:read(tonumber(header))
end

local checked = false

function request()
  if not checked then
    checked = true
    -- wrk calls request() once in the first thread's state before starting, only to check
    -- the request (script_verify_request); that call must not use up an event.
    if thread_index == 1 then
      return HEALTH_REQUEST
    end
  end
  if exhausted == 1 then
    return HEALTH_REQUEST
  end
  local record = next_record()
  if record == nil then
    exhausted = 1
    return HEALTH_REQUEST
  end
  sent = sent + 1
  return record
end

if RATE_PER_THREAD > 0 then
  function delay()
    local now = now_ms()
    if next_slot_ms == nil then
      next_slot_ms = now
      first_slot_ms = now
    end
    local slot = next_slot_ms
    next_slot_ms = next_slot_ms + interval_ms
    local wait = slot - now
    if wait < -1 then
      late = late + 1
      if -wait > max_lag_ms then
        max_lag_ms = -wait
      end
    end
    if wait < 0 then
      return 0
    end
    return wait
  end
elseif STOP_WHEN_EXHAUSTED then
  -- Nothing left to send: keep the connections (and the requests in flight) but stay quiet.
  function delay()
    if exhausted == 1 then
      return 1000
    end
    return 0
  end
end

-- Requests due between the thread's first slot and now (the end of the run).
local function scheduled(thread)
  local first = thread:get("first_slot_ms")
  if RATE_PER_THREAD <= 0 or first < 0 then
    return 0
  end
  return math.floor((now_ms() - first) * RATE_PER_THREAD / 1000)
end

local function thread_json(thread)
  return string.format(
    '{"sent":%d,"scheduled":%d,"wraps":%d,"late":%d,"max_lag_ms":%.3f,"exhausted":%d}',
    thread:get("sent"), scheduled(thread), thread:get("wraps"), thread:get("late"),
    thread:get("max_lag_ms"), thread:get("exhausted"))
end

function done(summary, latency, requests)
  local per_thread = {}
  for index, thread in ipairs(threads) do
    per_thread[index] = thread_json(thread)
  end
  local errors = summary.errors
  local out = assert(io.open(RESULT_PATH, "w"))
  out:write(string.format(
    '{"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},',
    summary.duration, summary.requests, summary.bytes,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout))
  out:write(string.format(
    '"latency_us":{"min":%d,"max":%d,"mean":%.1f,"stdev":%.1f,' ..
    '"p50":%d,"p90":%d,"p95":%d,"p99":%d,"p999":%d},',
    latency.min, latency.max, latency.mean, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9)))
  out:write('"threads":[' .. table.concat(per_thread, ",") .. ']}\n')
  out:close()
end
