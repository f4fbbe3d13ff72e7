"""Single HTTP calls that the benchmark sends itself: route checks and MCP session set-up.

wrk sends the load. These calls run before it, to fail early with a readable message when a
route, the policy or the upstream does not behave as the load phases expect.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import urllib.parse

MODEL_ID = "gpt-4o"
DEFAULT_MODEL_KEY = "modelkey-abc123"
PROTOCOL_VERSION = "2025-06-18"
TOOL_CALL = {"name": "search.web", "arguments": {"query": "q"}}
# The tool and rule of examples/policies.yaml that deny a call that the key's scope allows.
DENIED_TOOL = "calendar.delete_event"
DENIED_ARGUMENTS = {"event_id": "ev-1"}
DENIED_RULE = "no-calendar-deletes"
# JSON-RPC error code of the gateway's MCP route for a denied call.
MCP_DENIED_CODE = -32003


class BenchError(Exception):
    """A check, a reply, a process or a wrk run failed, so the benchmark stops."""


def require_loopback(url: str) -> urllib.parse.SplitResult:
    """Parse an http URL and reject any host outside 127.0.0.0/8 and ::1."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise BenchError(f"invalid URL `{url}`: expected http://127.0.0.1:PORT/PATH")
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError as error:
        raise BenchError(f"invalid URL `{url}`: the host must be a loopback IP address") from error
    if not address.is_loopback:
        raise BenchError(f"invalid URL `{url}`: the benchmark only sends traffic to loopback addresses")
    return parts


class Connection:
    """One keep-alive HTTP/1.1 connection for the checks and for opening MCP sessions."""

    def __init__(self, url: str):
        parts = require_loopback(url)
        self.path = parts.path or "/"
        self.connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)

    def post(self, body: dict, headers: dict) -> tuple[int, dict, dict | None]:
        """POST `body` as JSON and return the status, lowercase headers and JSON reply, if any."""
        data = json.dumps(body).encode()
        all_headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers}
        self.connection.request("POST", self.path, body=data, headers=all_headers)
        response = self.connection.getresponse()
        raw = response.read()
        reply_headers = {name.lower(): value for name, value in response.getheaders()}
        reply = json.loads(raw) if raw else None
        return response.status, reply_headers, reply

    def close(self) -> None:
        self.connection.close()


def post_once(url: str, body: dict, headers: dict) -> tuple[int, dict, dict | None]:
    """POST one JSON body on a new connection and return what Connection.post returns."""
    connection = Connection(url)
    try:
        return connection.post(body, headers)
    finally:
        connection.close()


def open_mcp_sessions(url: str, model_key: str, count: int) -> list[str]:
    """Send `initialize` `count` times and return the Mcp-Session-Id of each reply."""
    connection = Connection(url)
    sessions = []
    try:
        for index in range(count):
            request = {
                "jsonrpc": "2.0",
                "id": index,
                "method": "initialize",
                "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "bench", "version": "0"}},
            }
            status, headers, reply = connection.post(request, {"X-Model-Key": model_key})
            session = headers.get("mcp-session-id")
            if status != 200 or not session or reply is None or "result" not in reply:
                raise BenchError(f"initialize on {url} failed: HTTP {status}, reply {reply}")
            sessions.append(session)
    finally:
        connection.close()
    return sessions


def upstream_result(upstream: str) -> dict:
    """Call the upstream's tools/call directly and return its result."""
    status, _, reply = post_once(upstream, {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": TOOL_CALL}, {})
    if status != 200 or reply is None or "result" not in reply:
        raise BenchError(f"direct tools/call on {upstream} failed: HTTP {status}, reply {reply}")
    return reply["result"]


def rest_call(gateway: str, model_key: str, session_id: str, tool: str, arguments: dict) -> tuple[int, dict | None]:
    """Send one REST tool call and return the status and JSON reply."""
    body = {"model_id": MODEL_ID, "session_id": session_id, "tool_name": tool, "input": arguments}
    status, _, reply = post_once(gateway.rstrip("/") + "/mcp/toolcall", body, {"X-Model-Key": model_key})
    return status, reply


def check_rest_allowed(gateway: str, model_key: str, session_id: str, expected: dict) -> None:
    """Check that an allowed REST call returns the upstream's result."""
    status, reply = rest_call(gateway, model_key, session_id, TOOL_CALL["name"], TOOL_CALL["arguments"])
    if status != 200 or reply is None or reply.get("status") != "ok" or reply.get("result") != expected:
        raise BenchError(f"allowed REST call through {gateway} failed: HTTP {status}, reply {reply}")


def check_rest_denied(gateway: str, model_key: str, session_id: str, tool: str, arguments: dict, rule: str) -> None:
    """Check that a REST call is denied with 403 and names `rule`."""
    status, reply = rest_call(gateway, model_key, session_id, tool, arguments)
    if status != 403 or reply is None or reply.get("status") != "denied" or rule not in reply.get("rules", []):
        raise BenchError(
            f"REST call of `{tool}` through {gateway} was not denied by rule `{rule}`: HTTP {status}, reply {reply}; "
            "check that the gateway loaded the expected policy"
        )


def check_mcp(gateway: str, model_key: str, expected: dict) -> None:
    """Check the MCP route: a session opens, an allowed call returns the upstream's result and
    a call of the denied tool returns the JSON-RPC denial naming the rule."""
    url = gateway.rstrip("/") + "/mcp"
    session = open_mcp_sessions(url, model_key, 1)[0]
    headers = {"X-Model-Key": model_key, "Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL_VERSION}
    connection = Connection(url)
    try:
        status, _, _ = connection.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
        if status != 202:
            raise BenchError(f"notifications/initialized through {gateway} returned HTTP {status}; expected 202")
        status, _, reply = connection.post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": TOOL_CALL}, headers)
        if status != 200 or reply is None or reply.get("result") != expected:
            raise BenchError(f"MCP tools/call through {gateway} failed: HTTP {status}, reply {reply}")
        denied_call = {"name": DENIED_TOOL, "arguments": DENIED_ARGUMENTS}
        status, _, reply = connection.post({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": denied_call}, headers)
    finally:
        connection.close()
    error = (reply or {}).get("error") or {}
    rules = (error.get("data") or {}).get("rules", [])
    if status != 200 or error.get("code") != MCP_DENIED_CODE or DENIED_RULE not in rules:
        raise BenchError(f"MCP call of `{DENIED_TOOL}` through {gateway} was not denied by rule `{DENIED_RULE}`: HTTP {status}, reply {reply}")


def check_routes(upstream: str, gateway: str, model_key: str) -> None:
    """Check every route and mix that the load phases use, once each, on a gateway that runs
    examples/policies.yaml."""
    expected = upstream_result(upstream)
    check_rest_allowed(gateway, model_key, "bench-check", expected)
    check_rest_denied(gateway, model_key, "bench-check", DENIED_TOOL, DENIED_ARGUMENTS, DENIED_RULE)
    check_mcp(gateway, model_key, expected)
