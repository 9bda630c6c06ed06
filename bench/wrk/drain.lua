-- Devices drain their queues, one after the other: fetch a page, acknowledge
-- all of it (with a mac_key each, as the reference client does), until a
-- fetch comes back empty; then the next device, and after the last one the
-- run stops. The drain times itself, from its first request to the empty
-- fetch that ends it ("drain_us"), so that the rate never depends on when
-- wrk's main thread notices the stop. One thread, one connection.
local common = require "common"

local rows, current, limit, ack_body, started_us
-- Whether the response on its way answers an acknowledgement (one connection:
-- responses come in the order of the requests).
local awaiting_ack = false
-- wrk calls request() once before the run, to check what the script builds
-- (script_verify_request in wrk.c), and only then starts its threads and its
-- own clock; that request is never sent, so the drain's clock starts at the
-- second call.
local request_calls = 0
-- A fixed, well-formed mac_key (32 bytes, base64url): the server only stores it.
local MAC_KEY = "bWFjLWtleS1ieXRlcy0wMTIzNDU2Nzg5YWJjZGVmMDE"

setup = common.setup
done = common.done

function init(args)
  rows = common.read_rows(os.getenv("BENCH_DATA"))
  current = 1
  limit = os.getenv("BENCH_LIMIT") or "500"
end

function request()
  request_calls = request_calls + 1
  if request_calls == 2 then started_us = common.now_us() end
  local auth = "Bearer " .. rows[current][1]
  if ack_body then
    local body = ack_body
    ack_body = nil
    awaiting_ack = true
    return wrk.format("POST", "/v1/messages/ack",
                      {["Authorization"] = auth, ["Content-Type"] = "application/json"}, body)
  end
  return wrk.format("GET", "/v1/messages?limit=" .. limit, {["Authorization"] = auth})
end

-- The server writes its JSON with orjson, without spaces: every id of a page
-- follows '"id":"' (a sender's is '"device_id":"'), and base64url values hold
-- no quote. Plain finds (memchr and compare in LuaJIT) take 0.2 ms a page
-- where a Lua pattern over the page's megabyte took 8 ms, on this one
-- connection's critical path.
local function page_ids(body)
  local ids, n, position = {}, 0, 1
  while true do
    local _, key_end = body:find('"id":"', position, true)
    if not key_end then return ids end
    local closing = body:find('"', key_end + 1, true)
    n = n + 1
    ids[n] = body:sub(key_end + 1, closing - 1)
    position = closing + 1
  end
end

function response(status, headers, body)
  common.count(status)
  if status ~= 200 then
    io.stderr:write("drain: HTTP " .. status .. ": " .. body:sub(1, 300) .. "\n")
    common.stop_run()
    return
  end
  if awaiting_ack then
    awaiting_ack = false
    local acked = body:match('"acked": *%[(.-)%]') or ""
    local n = 0
    for _ in acked:gmatch('"[^"]+"') do n = n + 1 end
    common.add("acked", n)
    common.add("ack_requests", 1)
    return
  end
  local acks = {}
  for i, id in ipairs(page_ids(body)) do
    acks[i] = '{"id":"' .. id .. '","mac_key":"' .. MAC_KEY .. '"}'
  end
  common.add("fetch_requests", 1)
  if #acks == 0 then
    current = current + 1
    if current > #rows then
      common.add("drain_us", common.now_us() - started_us)
      common.stop_run()
    end
    return
  end
  common.add("fetched", #acks)
  ack_body = '{"acks":[' .. table.concat(acks, ",") .. ']}'
end
