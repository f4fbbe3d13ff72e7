-- wrk script for bench/load.py. It sends one kind of tool call and checks every reply. Each
-- thread stops after a maximum number of replies, and done() prints the results as one JSON
-- line.
--
-- Script arguments (after `--`): MODE MAX_REPLIES THREADS [MODEL_KEY [SESSION_PREFIX | SESSIONS_FILE CALLS_PER_SESSION]]
--   MODE direct  JSON-RPC tools/call POSTed straight to the upstream MCP server.
--   MODE rest    POST /mcp/toolcall on the gateway with a new session_id on every call:
--                SESSION_PREFIX-THREAD-N (default prefix `bench`).
--   MODE mcp     JSON-RPC tools/call on the gateway's POST /mcp. Sessions come from
--                SESSIONS_FILE, one Mcp-Session-Id per line; thread t uses lines t, t+THREADS,
--                ... and moves to its next session after CALLS_PER_SESSION calls, so that no
--                session reaches a per-session call limit.
--   MAX_REPLIES  replies per thread after which the thread stops. wrk still divides by the
--                whole -d duration, so a run that stops early reports too low a rate.

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_id", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local MODEL_ID = "gpt-4o"
local TOOL_NAME = "search.web"

function init(args)
  mode = args[1]
  max_replies = tonumber(args[2])
  local threads_total = tonumber(args[3])
  model_key = args[4]
  sent = 0
  received = 0
  bad = 0
  first_bad = ""

  if mode ~= "direct" and mode ~= "rest" and mode ~= "mcp" then
    error("unknown mode `" .. tostring(mode) .. "`; expected direct, rest or mcp")
  end
  if max_replies == nil or threads_total == nil then
    error("usage: -- MODE MAX_REPLIES THREADS [MODEL_KEY [SESSION_PREFIX | SESSIONS_FILE CALLS_PER_SESSION]]")
  end
  if mode ~= "direct" and model_key == nil then
    error("mode " .. mode .. " needs MODEL_KEY")
  end

  session_prefix = "bench"
  if mode == "rest" and args[5] ~= nil then
    session_prefix = args[5]
  end

  if mode == "mcp" then
    calls_per_session = tonumber(args[6])
    local sessions_file = args[5]
    local file = sessions_file and io.open(sessions_file, "r")
    if file == nil or calls_per_session == nil then
      error("mode mcp needs a readable SESSIONS_FILE and CALLS_PER_SESSION")
    end
    -- One request per session, built once, because only the session header changes.
    local body = '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"'
      .. TOOL_NAME .. '","arguments":{"query":"q"}}}'
    mcp_requests = {}
    local line_number = 0
    for line in file:lines() do
      if line ~= "" then
        if line_number % threads_total == thread_id then
          local headers = {
            ["Content-Type"] = "application/json",
            ["Accept"] = "application/json, text/event-stream",
            ["MCP-Protocol-Version"] = "2025-06-18",
            ["X-Model-Key"] = model_key,
            ["Mcp-Session-Id"] = line,
          }
          table.insert(mcp_requests, wrk.format("POST", nil, headers, body))
        end
        line_number = line_number + 1
      end
    end
    file:close()
    if #mcp_requests == 0 then
      error("SESSIONS_FILE has no session for thread " .. thread_id)
    end
  end
end

function request()
  sent = sent + 1
  if mode == "direct" then
    local body = '{"jsonrpc":"2.0","id":' .. sent .. ',"method":"tools/call","params":{"name":"'
      .. TOOL_NAME .. '","arguments":{"query":"q"}}}'
    local headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json, text/event-stream" }
    return wrk.format("POST", nil, headers, body)
  elseif mode == "rest" then
    local body = '{"model_id":"' .. MODEL_ID .. '","session_id":"' .. session_prefix .. '-' .. thread_id .. '-' .. sent
      .. '","tool_name":"' .. TOOL_NAME .. '","input":{"query":"q"}}'
    local headers = { ["Content-Type"] = "application/json", ["X-Model-Key"] = model_key }
    return wrk.format("POST", nil, headers, body)
  end
  -- A session past the end of the list wraps around, and the reply checks then catch any
  -- limit that it reaches.
  local index = math.floor((sent - 1) / calls_per_session) % #mcp_requests + 1
  return mcp_requests[index]
end

-- A reply is good when it has status 200 and carries the upstream's result. The gateway's MCP
-- route reports denials and upstream failures as JSON-RPC errors with status 200, so the body
-- is checked too.
local function is_good(status, body)
  if status ~= 200 or not body:find('"isError":false', 1, true) then
    return false
  end
  if mode == "rest" then
    return body:find('"status":"ok"', 1, true) ~= nil
  end
  return body:find('"error":{', 1, true) == nil
end

function response(status, headers, body)
  received = received + 1
  if not is_good(status, body) then
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body, 1, 300)
    end
  end
  if received >= max_replies then
    wrk.thread:stop()
  end
end

local function json_string(text)
  local escaped = text:gsub('[%c"\\]', function(char)
    return string.format("\\u%04x", string.byte(char))
  end)
  return '"' .. escaped .. '"'
end

function done(summary, latency, requests)
  local bad_total = 0
  local first = ""
  for _, thread in ipairs(threads) do
    bad_total = bad_total + (thread:get("bad") or 0)
    local sample = thread:get("first_bad") or ""
    if first == "" then
      first = sample
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"bad_replies":%d,"first_bad_reply":%s,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, bad_total, json_string(first),
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
