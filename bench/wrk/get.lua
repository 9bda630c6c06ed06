-- GET one path over and over: the bare baseline and fxchat's no-op endpoint.
local common = require "common"

local path = os.getenv("BENCH_PATH") or "/"
local request_text

setup = common.setup
done = common.done

function init(args)
  request_text = wrk.format("GET", path)
end

function request()
  return request_text
end

function response(status, headers, body)
  common.count(status)
end
