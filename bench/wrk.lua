-- wrk script for bench/load.py. It sends tool calls, a chosen share of them to a tool that the
-- policy denies, checks every reply and counts the allowed and the denied replies. Each thread
-- stops after a maximum number of replies and then writes `BENCH_THREAD_DONE` to stderr, so that
-- load.py can end wrk early with SIGINT. done() prints the results as one JSON line.
--
-- Script arguments (after `--`) are KEY=VALUE pairs:
--   mode=MODE            direct: JSON-RPC tools/call POSTed straight to the upstream MCP server.
--                        rest: the gateway's POST /mcp/toolcall.
--                        mcp: JSON-RPC tools/call on the gateway's POST /mcp.
--   max_replies=N        replies per thread after which the thread stops (required).
--   threads=N            wrk's thread count (-t), to split session ids between threads (default 1).
--   model_key=KEY        X-Model-Key of model gpt-4o (required for rest and mcp).
--   denied_percent=P     share of calls, 0 to 100, sent to denied_tool (default 0). Call n of a
--                        thread is denied when floor(n * P / 100) grows at n, so the shares are
--                        exact over any run of calls.
--   denied_tool=NAME     the tool that the policy denies (default calendar.delete_event).
--   denied_rule=ID       the rule id that every denial must name (required when P > 0).
--   session_prefix=TEXT  rest: session ids start with TEXT (default bench).
--   session_count=N      rest: cycle over the ids TEXT-F ... TEXT-(F+N-1), where F is
--                        session_first (default 0). Without it every call gets a new id
--                        TEXT-THREAD-N.
--   sessions_file=FILE   mcp: Mcp-Session-Id values, one per line. Thread t uses lines t,
--                        t+threads, ... in turn.
--   calls_per_session=N  mcp: calls on one session before the thread moves to its next one, so
--                        that no session reaches a per-session call limit. rest without
--                        session_count: N calls in a row share a new session id.
--
-- wrk still divides by the whole -d duration when every thread stops early, unless load.py
-- ends it with SIGINT.

local threads = {}
local thread_count = 0

function setup(thread)
  thread:set("thread_id", thread_count)
  thread_count = thread_count + 1
  table.insert(threads, thread)
end

local MODEL_ID = "gpt-4o"
local ALLOWED_TOOL = "search.web"
local ALLOWED_ARGUMENTS = '{"query":"q"}'
local DENIED_ARGUMENTS = '{"event_id":"ev-1"}'
local PROTOCOL_VERSION = "2025-06-18"
-- JSON-RPC error code of the gateway's MCP route for a call denied by scope, policy or a limit.
local MCP_DENIED_CODE = '"code":-32003'

local KNOWN_ARGUMENTS = {
  mode = true, max_replies = true, threads = true, model_key = true, denied_percent = true,
  denied_tool = true, denied_rule = true, session_prefix = true, session_count = true,
  session_first = true, sessions_file = true, calls_per_session = true,
}

local function parse_arguments(args)
  local options = {}
  for _, argument in ipairs(args) do
    local key, value = argument:match("^([%w_]+)=(.*)$")
    if key == nil or not KNOWN_ARGUMENTS[key] then
      error("invalid script argument `" .. argument .. "`; expected KEY=VALUE with a key listed at the top of wrk.lua")
    end
    options[key] = value
  end
  return options
end

local function number_option(options, name, default)
  local text = options[name]
  if text == nil then
    if default == nil then
      error("missing script argument " .. name .. "=N")
    end
    return default
  end
  local value = tonumber(text)
  if value == nil or value < 0 or value ~= math.floor(value) then
    error("invalid script argument " .. name .. "=" .. text .. "; expected a whole number")
  end
  return value
end

-- Builds one MCP request per session and kind of call, because only the session header and
-- the tool change between requests.
local function load_mcp_requests(options, threads_total)
  local file = options.sessions_file and io.open(options.sessions_file, "r")
  if file == nil or calls_per_session == nil then
    error("mode mcp needs a readable sessions_file and calls_per_session")
  end
  local function body(tool, arguments)
    return '{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"' .. tool .. '","arguments":' .. arguments .. '}}'
  end
  local allowed_body = body(ALLOWED_TOOL, ALLOWED_ARGUMENTS)
  local denied_body = body(denied_tool, DENIED_ARGUMENTS)
  mcp_allowed = {}
  mcp_denied = {}
  local line_number = 0
  for line in file:lines() do
    if line ~= "" then
      if line_number % threads_total == thread_id then
        local headers = {
          ["Content-Type"] = "application/json",
          ["Accept"] = "application/json, text/event-stream",
          ["MCP-Protocol-Version"] = PROTOCOL_VERSION,
          ["X-Model-Key"] = model_key,
          ["Mcp-Session-Id"] = line,
        }
        table.insert(mcp_allowed, wrk.format("POST", nil, headers, allowed_body))
        table.insert(mcp_denied, wrk.format("POST", nil, headers, denied_body))
      end
      line_number = line_number + 1
    end
  end
  file:close()
  if #mcp_allowed == 0 then
    error("sessions_file has no session for thread " .. thread_id)
  end
end

function init(args)
  local options = parse_arguments(args)
  mode = options.mode
  if mode ~= "direct" and mode ~= "rest" and mode ~= "mcp" then
    error("unknown mode `" .. tostring(mode) .. "`; expected direct, rest or mcp")
  end
  max_replies = number_option(options, "max_replies", nil)
  threads_total = number_option(options, "threads", 1)
  model_key = options.model_key
  if mode ~= "direct" and model_key == nil then
    error("mode " .. mode .. " needs model_key")
  end

  denied_percent = number_option(options, "denied_percent", 0)
  denied_tool = options.denied_tool or "calendar.delete_event"
  denied_rule = options.denied_rule
  if denied_percent > 100 then
    error("denied_percent must be from 0 to 100")
  end
  if denied_percent > 0 and (mode == "direct" or denied_rule == nil) then
    error("denied calls need mode rest or mcp and denied_rule")
  end

  session_prefix = options.session_prefix or "bench"
  session_count = options.session_count and number_option(options, "session_count", nil)
  session_first = number_option(options, "session_first", 0)
  if session_count == 0 then
    error("session_count must be at least 1")
  end
  calls_per_session = options.calls_per_session and number_option(options, "calls_per_session", nil)
  if mode == "mcp" then
    load_mcp_requests(options, threads_total)
  end

  sent = 0
  received = 0
  allowed = 0
  denied = 0
  bad = 0
  first_bad = ""
end

local function is_denied_call(n)
  return math.floor(n * denied_percent / 100) > math.floor((n - 1) * denied_percent / 100)
end

local function rest_session_id()
  if session_count == nil and calls_per_session ~= nil then
    return session_prefix .. "-" .. thread_id .. "-" .. math.floor((sent - 1) / calls_per_session)
  end
  if session_count == nil then
    return session_prefix .. "-" .. thread_id .. "-" .. sent
  end
  local index = ((sent - 1) * threads_total + thread_id) % session_count
  return session_prefix .. "-" .. (session_first + index)
end

function request()
  sent = sent + 1
  local deny = is_denied_call(sent)
  if mode == "direct" then
    local body = '{"jsonrpc":"2.0","id":' .. sent .. ',"method":"tools/call","params":{"name":"'
      .. ALLOWED_TOOL .. '","arguments":' .. ALLOWED_ARGUMENTS .. '}}'
    local headers = { ["Content-Type"] = "application/json", ["Accept"] = "application/json, text/event-stream" }
    return wrk.format("POST", nil, headers, body)
  elseif mode == "rest" then
    local tool, arguments = ALLOWED_TOOL, ALLOWED_ARGUMENTS
    if deny then
      tool, arguments = denied_tool, DENIED_ARGUMENTS
    end
    local body = '{"model_id":"' .. MODEL_ID .. '","session_id":"' .. rest_session_id()
      .. '","tool_name":"' .. tool .. '","input":' .. arguments .. '}'
    local headers = { ["Content-Type"] = "application/json", ["X-Model-Key"] = model_key }
    return wrk.format("POST", nil, headers, body)
  end
  -- A session past the end of the list wraps around, and the reply checks then catch any
  -- limit that it reaches.
  local index = math.floor((sent - 1) / calls_per_session) % #mcp_allowed + 1
  if deny then
    return mcp_denied[index]
  end
  return mcp_allowed[index]
end

-- Returns "allowed" for a reply that carries the upstream's result, "denied" for the gateway's
-- denial naming denied_rule, and nil for anything else. The MCP route reports denials and
-- upstream failures as JSON-RPC errors with status 200, so the body decides.
local function classify(status, body)
  local find = function(text) return body:find(text, 1, true) ~= nil end
  if mode == "rest" then
    if status == 200 and find('"status":"ok"') and find('"isError":false') then
      return "allowed"
    end
    if status == 403 and denied_rule ~= nil and find('"status":"denied"') and find('"' .. denied_rule .. '"') then
      return "denied"
    end
    return nil
  end
  if status ~= 200 then
    return nil
  end
  if find('"error":{') then
    if mode == "mcp" and denied_rule ~= nil and find(MCP_DENIED_CODE) and find('"' .. denied_rule .. '"') then
      return "denied"
    end
    return nil
  end
  if find('"isError":false') then
    return "allowed"
  end
  return nil
end

function response(status, headers, body)
  received = received + 1
  local kind = classify(status, body)
  if kind == "allowed" then
    allowed = allowed + 1
  elseif kind == "denied" then
    denied = denied + 1
  else
    bad = bad + 1
    if first_bad == "" then
      first_bad = status .. " " .. string.sub(body, 1, 300)
    end
  end
  if received == max_replies then
    io.stderr:write("BENCH_THREAD_DONE\n")
    io.stderr:flush()
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
  local totals = { allowed = 0, denied = 0, bad = 0 }
  local first = ""
  for _, thread in ipairs(threads) do
    for name, _ in pairs(totals) do
      totals[name] = totals[name] + (thread:get(name) or 0)
    end
    local sample = thread:get("first_bad") or ""
    if first == "" then
      first = sample
    end
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests":%d,"duration_us":%d,"allowed":%d,"denied":%d,"bad_replies":%d,"first_bad_reply":%s,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d}}\n',
    summary.requests, summary.duration, totals.allowed, totals.denied, totals.bad, json_string(first),
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
