-- wrk script: POST a JSON body, print one JSON line of results when done.
--
-- Settings come from the environment or from wrk arguments after `--` (arguments win):
--   BENCH_BODY_FILE / body=PATH   file holding the JSON body (default: a 2-message request)
--   BENCH_MODEL     / model=ID    model of the default body (default: gpt-oss-120b)
--   BENCH_KEY       / key=KEY     sends "Authorization: Bearer KEY"
--   BENCH_HEADERS   / header=N:V  extra headers; the variable takes "N: V|N2: V2"
-- Example:
--   wrk -t2 -c16 -d10s -s bench/post.lua http://127.0.0.1:9100/v1/chat/completions -- key=sk-1

local settings = {
  body = os.getenv("BENCH_BODY_FILE"),
  model = os.getenv("BENCH_MODEL") or "gpt-oss-120b",
  key = os.getenv("BENCH_KEY"),
}
local extra = {}

local function add_headers(spec)
  for pair in string.gmatch(spec or "", "[^|]+") do
    local name, value = string.match(pair, "^%s*([^:]+):%s*(.-)%s*$")
    if name then extra[name] = value end
  end
end

local function read_file(path)
  local file = assert(io.open(path, "rb"))
  local text = file:read("*a")
  file:close()
  return text
end

add_headers(os.getenv("BENCH_HEADERS"))

function init(args)
  for _, arg in ipairs(args) do
    local name, value = string.match(arg, "^([%w_]+)=(.*)$")
    if name == "header" then
      add_headers(value)
    elseif name then
      settings[name] = value
    end
  end
  wrk.method = "POST"
  if settings.body and settings.body ~= "" then
    wrk.body = read_file(settings.body)
  else
    wrk.body = '{"model":"' .. settings.model .. '","messages":['
      .. '{"role":"system","content":"You are a helpful assistant."},'
      .. '{"role":"user","content":"Say hello in one short sentence."}]}'
  end
  wrk.headers["Content-Type"] = "application/json"
  if settings.key and settings.key ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. settings.key
  end
  for name, value in pairs(extra) do
    wrk.headers[name] = value
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  local function ms(us) return us / 1000 end
  io.write(string.format(
    '{"requests":%d,"duration_s":%.3f,"rps":%.1f,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"mean":%.3f,"max":%.3f}}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency.mean), ms(latency.max)))
end
