-- POST /v1/messages, cycling through prepared (token, body) rows, each with a
-- fresh Idempotency-Key as the reference client sends.
local common = require "common"

local rows, next_row, sent
local key_prefix = os.getenv("BENCH_KEY_PREFIX") or "k"
local use_keys = os.getenv("BENCH_IDEMPOTENCY") ~= "0"

setup = common.setup
done = common.done

function init(args)
  rows = common.read_rows(os.getenv("BENCH_DATA"))
  -- Threads start at different rows, so concurrent requests use different pairs.
  next_row = ((thread_index - 1) * 7) % #rows
  sent = 0
end

function request()
  next_row = next_row % #rows + 1
  sent = sent + 1
  local row = rows[next_row]
  local headers = {["Authorization"] = "Bearer " .. row[1],
                   ["Content-Type"] = "application/json"}
  if use_keys then
    headers["Idempotency-Key"] = key_prefix .. "-" .. thread_index .. "-" .. sent
  end
  return wrk.format("POST", "/v1/messages", headers, row[2])
end

function response(status, headers, body)
  common.count(status)
  if status ~= 201 and (counters.shown or 0) < 3 then
    common.add("shown", 1)
    io.stderr:write("send: HTTP " .. status .. ": " .. body:sub(1, 300) .. "\n")
  end
end
