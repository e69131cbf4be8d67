-- wrk script for bench/sim/run.sh: POST a valid text-to-image body to the simulator, with a
-- request_id unique per request (thread number + counter), so that every request is a new one
-- and the duplicate set grows by one entry per request, as in a real run.

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local counter = 0
local headers = {
  ["Content-Type"] = "application/json",
  ["Authorization"] = "Bearer bench",
}

function request()
  counter = counter + 1
  local body = string.format(
    '{"prompt":"a studio photo of product %d on a marble table","negative_prompt":"text, watermark",' ..
    '"img_count":1,"version":"v2L","resolution":"1024*1024","request_id":"bench-%d-%d"}',
    counter % 1000, tid, counter)
  return wrk.format("POST", "/api-pub/gw/v3/image/txt2img/async", headers, body)
end
