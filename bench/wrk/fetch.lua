-- GET /v1/messages (first page, nothing acknowledged), cycling through tokens.
local common = require "common"

local rows, next_row
local limit = os.getenv("BENCH_LIMIT") or "100"

setup = common.setup
done = common.done

function init(args)
  rows = common.read_rows(os.getenv("BENCH_DATA"))
  next_row = (thread_index - 1) % #rows
end

function request()
  next_row = next_row % #rows + 1
  return wrk.format("GET", "/v1/messages?limit=" .. limit,
                    {["Authorization"] = "Bearer " .. rows[next_row][1]})
end

function response(status, headers, body)
  common.count(status)
  local n = 0
  for _ in body:gmatch('"id": *"') do n = n + 1 end
  common.add("messages", n)
end
