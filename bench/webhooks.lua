-- wrk script: POST pre-signed Stripe webhooks, each one once.
--   wrk -t T -c C -d D -s bench/webhooks.lua URL -- <events file> T [cycle]
-- The events file has one "<Stripe-Signature>\t<body>" line per event; thread n of T sends lines
-- n, n+T, n+2T, ... ("cycle": round and round, for a view that does not care about repeats). When a thread runs out it sends one bare POST to /bench/ok/ and stops,
-- and done() says so: a run that ran out measured nothing useful and the harness refuses it.
-- done() prints one JSON line the harness reads (latencies in microseconds).

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local path, nthreads = args[1], tonumber(args[2])
  cycle = args[3] == "cycle"
  local tid = tonumber(wrk.thread:get("tid"))
  events = {}
  local i = 0
  for line in io.lines(path) do
    if i % nthreads == tid then
      local tab = string.find(line, "\t", 1, true)
      table.insert(events, wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["Stripe-Signature"] = string.sub(line, 1, tab - 1),
      }, string.sub(line, tab + 1)))
    end
    i = i + 1
  end
  index = 0
  exhausted = 0
end

function request()
  index = index + 1
  if index > #events and cycle then
    index = 1
  end
  if index > #events then
    if exhausted == 0 then
      exhausted = 1
      wrk.thread:set("exhausted", 1)
      wrk.thread:stop()
    end
    return wrk.format("POST", "/bench/ok/", {}, "")
  end
  wrk.thread:set("sent", index)
  return events[index]
end

function done(summary, latency, requests)
  local exhausted = 0
  local sent = 0
  for _, thread in ipairs(threads) do
    if tonumber(thread:get("exhausted")) == 1 then exhausted = exhausted + 1 end
    sent = sent + (tonumber(thread:get("sent")) or 0)
  end
  local e = summary.errors
  io.write(string.format(
    '{"duration_us": %d, "requests": %d, "bytes": %d, "sent": %d, "threads_exhausted": %d, '
      .. '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, '
      .. '"latency_us": {"min": %d, "mean": %.1f, "max": %d, "p50": %d, "p90": %d, "p99": %d, "p999": %d}}\n',
    summary.duration, summary.requests, summary.bytes, sent, exhausted,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
