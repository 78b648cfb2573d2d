-- wrk script: POST the benchmark JSON body and emit a machine-readable summary.
--
-- The last line printed by done() starts with "BENCH_JSON " followed by one JSON
-- object; benchmarks/run.py parses it instead of scraping wrk's human output.
-- All latencies are in microseconds (wrk's native unit).

wrk.method = "POST"
wrk.body = '{"input": 4.0}'
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"min": %d, "mean": %.2f, "max": %d, "stdev": %.2f, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "p99_9": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
