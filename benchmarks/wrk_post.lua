-- wrk script for the gateway benchmark: POST the same JSON body with a routing key that
-- varies per request (x-backout-key), and print a JSON summary line at the end.
-- The body comes from the environment (BENCH_BODY) so the benchmark owns it.
local body = os.getenv("BENCH_BODY") or '{"instances": [[5.1, 3.5, 1.4, 0.2]]}'
local keyed = os.getenv("BENCH_KEYS") ~= "0"
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  thread_id = tid or 0
end

function request()
  counter = counter + 1
  local headers = { ["Content-Type"] = "application/json" }
  if keyed then
    headers["x-backout-key"] = "user-" .. thread_id .. "-" .. counter
  end
  return wrk.format("POST", nil, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
