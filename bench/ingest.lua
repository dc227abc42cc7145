-- wrk script for bench/ingest.py: replays pre-signed Cloud API webhooks.
-- Usage: wrk ... -s ingest.lua <url> -- <data dir> <phase> <signature header>
-- Thread i sends the requests of <data dir>/<phase>.<i>, one each, in order, so every
-- message id is sent once. If a thread runs out it starts its file again and counts the
-- repeats (ingest.py warns: the daemon dedupes them, so they flatter its numbers).

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("slice", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  local path = args[1] .. "/" .. args[2] .. "." .. slice
  local file = assert(io.open(path, "rb"))
  requests = {}
  for line in file:lines() do
    local tab = line:find("\t", 1, true)
    requests[#requests + 1] = wrk.format("POST", nil, {
      ["Content-Type"] = "application/json",
      [args[3]] = line:sub(1, tab - 1),
    }, line:sub(tab + 1))
  end
  file:close()
  assert(#requests > 0, path .. " holds no requests")
  cursor = 0
  repeats = 0
  ok = 0
  non_2xx = 0
end

function request()
  cursor = cursor + 1
  if cursor > #requests then
    repeats = repeats + 1
  end
  return requests[(cursor - 1) % #requests + 1]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  else
    non_2xx = non_2xx + 1
  end
end

function done(summary, latency, requests)
  local totals = {ok = 0, non_2xx = 0, repeats = 0}
  for _, thread in ipairs(threads) do
    for key in pairs(totals) do
      totals[key] = totals[key] + thread:get(key)
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'WAHUB_BENCH_RESULT {"requests": %d, "duration_us": %d, "ok": %d, "non_2xx": %d, '
    .. '"repeats": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d, "max_us": %d}\n',
    summary.requests, summary.duration, totals.ok, totals.non_2xx, totals.repeats,
    errors.connect + errors.read + errors.write + errors.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
