-- Shared by the benchmark scripts: request data, status counts, and a
-- machine-readable result line ("BENCH_RESULT {json}") printed by done().
-- Parameters come from environment variables set by bench/loadgen.py.
local M = {}

local threads = {}

-- Per-thread globals, read back by done() through thread:get().
statuses = {}
counters = {}

function M.setup(thread)
  table.insert(threads, thread)
  thread:set("thread_index", #threads)
end

function M.count(status)
  local key = tostring(status)
  statuses[key] = (statuses[key] or 0) + 1
end

function M.add(name, n)
  counters[name] = (counters[name] or 0) + n
end

-- Lines of a data file, split on tabs: {{field1, field2, ...}, ...}.
function M.read_rows(path)
  local rows = {}
  for line in io.lines(path) do
    if line ~= "" then
      local row = {}
      for field in (line .. "\t"):gmatch("([^\t]*)\t") do
        table.insert(row, field)
      end
      table.insert(rows, row)
    end
  end
  assert(#rows > 0, "no rows in " .. path)
  return rows
end

-- wrk is built with LuaJIT: its FFI gives the scripts a monotonic clock (wrk
-- gives them none) and the one system call that stops a run reliably.
local ffi = require "ffi"
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clock_id, bench_timespec *tp);
  int getpid(void);
  int tgkill(int tgid, int tid, int sig);
]]
local CLOCK_MONOTONIC, SIGINT = 1, 2
local now = ffi.new("bench_timespec")

-- Microseconds on a monotonic clock: for what a script times itself.
function M.now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, now)
  return tonumber(now.tv_sec) * 1e6 + tonumber(now.tv_nsec) / 1e3
end

-- wrk's main thread sleeps for the whole --duration; SIGINT wakes it, and the
-- run then ends with its measured duration. Sent to the main thread itself
-- (its thread id is the process id): a signal sent to the process may be
-- handed to any thread that does not block it, and when that is not the main
-- one, the main thread sleeps on. Once, with kill(1), a drain of 4 s ran to
-- wrk's 120 s bound.
function M.stop_run()
  wrk.thread:stop()
  local pid = ffi.C.getpid()
  ffi.C.tgkill(pid, pid, SIGINT)
end

local function encode(value)
  local kind = type(value)
  if kind == "table" then
    local parts = {}
    if #value > 0 then
      for i, item in ipairs(value) do parts[i] = encode(item) end
      return "[" .. table.concat(parts, ",") .. "]"
    end
    for key, item in pairs(value) do
      table.insert(parts, '"' .. tostring(key) .. '":' .. encode(item))
    end
    return "{" .. table.concat(parts, ",") .. "}"
  elseif kind == "number" then
    if value == math.floor(value) and math.abs(value) < 2^53 then
      return string.format("%d", value)
    end
    return string.format("%.3f", value)
  elseif kind == "string" then
    return '"' .. value:gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end) .. '"'
  elseif kind == "boolean" then
    return tostring(value)
  end
  return "null"
end

function M.done(summary, latency, requests)
  local all_statuses, all_counters = {}, {}
  for _, thread in ipairs(threads) do
    for key, n in pairs(thread:get("statuses") or {}) do
      all_statuses[key] = (all_statuses[key] or 0) + n
    end
    for key, n in pairs(thread:get("counters") or {}) do
      all_counters[key] = (all_counters[key] or 0) + n
    end
  end
  local percentiles = {}
  for _, p in ipairs({50, 75, 90, 95, 99, 99.9}) do
    percentiles[tostring(p)] = latency:percentile(p)
  end
  local result = {
    duration_us = summary.duration,
    requests = summary.requests,
    bytes = summary.bytes,
    errors = summary.errors,
    statuses = all_statuses,
    counters = all_counters,
    latency_us = {min = latency.min, max = latency.max, mean = latency.mean,
                  stdev = latency.stdev, percentiles = percentiles},
  }
  io.write("BENCH_RESULT " .. encode(result) .. "\n")
end

return M
