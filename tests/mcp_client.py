#!/usr/bin/env python3
"""Run a scripted list of MCP operations against a Streamable HTTP endpoint.

The end-to-end tests use this client, built on the official MCP Python SDK
(`mcp` 2.x), to drive the gateway the way a real MCP client does. It prints one
JSON document on stdout and nothing else, so a test can parse it:

    {"initialize": {"result": {...InitializeResult...}, "session_id": "...",
                    "http_status": 200, "initialized_http_status": 202},
     "results": [
       {"op": "list_tools", "ok": true, "names": ["echo", ...], "tools": [...],
        "http": [{"message": "tools/list", "status": 200}]},
       {"op": "call_tool", "ok": true, "result": {"content": [...]},
        "http": [{"message": "tools/call", "status": 200}]},
       {"op": "get_prompt", "ok": false,
        "error": {"kind": "jsonrpc", "code": -32602, "message": "..."},
        "http": [{"message": "prompts/get", "status": 200}]}]}

Operations (the "op" field of each object in --ops):
    list_tools                            all pages of tools/list
    call_tool      name, arguments?       tools/call
    list_resources                        all pages of resources/list
    read_resource  uri                    resources/read
    list_prompts                          all pages of prompts/list
    get_prompt     name, arguments?       prompts/get (string arguments)
    ping                                  ping

Results hold the fields that the server sent, without the SDK's defaults.
"http" lists every POST that the client made during the operation, named by
the JSON-RPC method it carried ("response" or "error" for a reply to a server
request). The SDK sends its own tools/list before it validates the first
tools/call result of a tool that it has not listed yet.

An operation that fails (a JSON-RPC error, a timeout, an invalid result) is
reported as "ok": false, and the next operation still runs. A tool that fails
inside a successful tools/call response is "ok": true with "isError": true in
its result, because that is how MCP reports tool errors. When the server
responds with an HTTP error status and no JSON-RPC error body, the SDK
substitutes its own error (code -32603, or -32601 for 404), so check "http".

Exit status: 0 when initialize succeeded (whatever the operations returned),
2 for invalid arguments, 3 when initialize failed (stdout then contains
{"initialize_error": "...", "error": {...}, "http_status": N or null}), 4 when
the connection failed after initialize (stdout then contains the results so far
and a "connection_error").
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx2
from mcp import types
from mcp.client.session import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel

EXIT_INITIALIZE_FAILED = 3
EXIT_CONNECTION_FAILED = 4

# Upper bound on pages fetched by one list operation, so a server that keeps
# returning a cursor cannot loop the client forever.
MAX_LIST_PAGES = 100

# Required fields of each operation, by operation name.
OPERATION_FIELDS: dict[str, tuple[str, ...]] = {
    "list_tools": (),
    "call_tool": ("name",),
    "list_resources": (),
    "read_resource": ("uri",),
    "list_prompts": (),
    "get_prompt": ("name",),
    "ping": (),
}

logger = logging.getLogger("mcp_client")


class UsageError(Exception):
    """Invalid command-line input, reported before any connection is made."""


@dataclass
class HttpExchange:
    """One POST to the MCP endpoint: the JSON-RPC message it carried and the HTTP status."""

    message: str
    status: int

    def to_json(self) -> dict[str, Any]:
        return {"message": self.message, "status": self.status}


@dataclass
class HttpResponseLog:
    """HTTP responses seen by the client, recorded through an httpx2 response hook."""

    posts: list[HttpExchange] = field(default_factory=list)
    session_id: str | None = None

    async def record(self, response: httpx2.Response) -> None:
        # The SDK keeps the session id inside its transport, so read the header here.
        session_id = response.headers.get("mcp-session-id")
        if session_id is not None:
            self.session_id = session_id
        if response.request.method == "POST":
            self.posts.append(HttpExchange(describe_message(response.request.content), response.status_code))

    def status_of(self, method: str) -> int | None:
        """Return the status of the latest POST that carried a `method` message."""
        for exchange in reversed(self.posts):
            if exchange.message == method:
                return exchange.status
        return None


def describe_message(body: bytes) -> str:
    """Name the JSON-RPC message in a POST body: its method, or "response" or "error" for a reply."""
    try:
        message = json.loads(body)
    except ValueError:
        return "unparsable"
    if not isinstance(message, dict):
        return "batch" if isinstance(message, list) else "unparsable"
    if isinstance(message.get("method"), str):
        return message["method"]
    return "error" if "error" in message else "response"


def dump_model(model: BaseModel) -> dict[str, Any]:
    """Convert a parsed SDK model back to the JSON fields that the server sent.

    exclude_unset drops the SDK's defaults (for example "isError": false or the
    2026-07-28 "resultType"), so the output shows what arrived on the wire.
    """
    return model.model_dump(mode="json", by_alias=True, exclude_none=True, exclude_unset=True)


def describe_error(error: BaseException, timeout_seconds: float) -> dict[str, Any]:
    """Build the "error" object of a failed operation."""
    if isinstance(error, MCPError):
        described: dict[str, Any] = {"kind": "jsonrpc", "code": error.code, "message": error.message}
        if error.data is not None:
            described["data"] = error.data
        return described
    if isinstance(error, TimeoutError):
        return {"kind": "timeout", "code": None, "message": f"operation timed out after {timeout_seconds} s"}
    return {"kind": type(error).__name__, "code": None, "message": str(error)}


def parse_header(text: str) -> tuple[str, str]:
    """Parse a 'Name: value' header argument."""
    name, separator, value = text.partition(":")
    name = name.strip()
    if not separator or not name:
        raise argparse.ArgumentTypeError(f"invalid header {text!r}: expected 'Name: value'")
    return name, value.strip()


def parse_operations(text: str) -> list[dict[str, Any]]:
    """Parse and check the --ops JSON array."""
    try:
        operations = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(f"invalid --ops JSON: {error}") from error
    if not isinstance(operations, list):
        raise UsageError("invalid --ops: expected a JSON array of operation objects")

    for index, operation in enumerate(operations):
        if not isinstance(operation, dict):
            raise UsageError(f"invalid --ops[{index}]: expected an object, got {operation!r}")
        name = operation.get("op")
        if name not in OPERATION_FIELDS:
            known = ", ".join(OPERATION_FIELDS)
            raise UsageError(f"invalid --ops[{index}]: unknown op {name!r}. Expected one of: {known}")
        for required in OPERATION_FIELDS[name]:
            if not isinstance(operation.get(required), str):
                raise UsageError(f"invalid --ops[{index}]: op {name!r} needs a string field {required!r}")
        arguments = operation.get("arguments")
        if arguments is not None and not isinstance(arguments, dict):
            raise UsageError(f"invalid --ops[{index}]: 'arguments' must be an object")
    return operations


async def list_all_pages(list_page: Any, items_field: str) -> list[Any]:
    """Call a paginated list method until the server returns no cursor."""
    items: list[Any] = []
    cursor: str | None = None
    for _ in range(MAX_LIST_PAGES):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor is not None else None
        page = await list_page(params=params)
        items.extend(getattr(page, items_field))
        cursor = page.next_cursor
        if cursor is None:
            return items
    raise RuntimeError(f"server still returned a cursor after {MAX_LIST_PAGES} pages of {items_field}")


async def perform_operation(session: ClientSession, operation: dict[str, Any]) -> dict[str, Any]:
    """Send one operation and return its result fields (without "op" and "ok")."""
    name = operation["op"]

    if name == "list_tools":
        tools = await list_all_pages(session.list_tools, "tools")
        return {"names": [tool.name for tool in tools], "tools": [dump_model(tool) for tool in tools]}
    if name == "call_tool":
        result = await session.call_tool(operation["name"], operation.get("arguments"))
        return {"result": dump_model(result)}
    if name == "list_resources":
        resources = await list_all_pages(session.list_resources, "resources")
        return {"result": {"resources": [dump_model(resource) for resource in resources]}}
    if name == "read_resource":
        return {"result": dump_model(await session.read_resource(operation["uri"]))}
    if name == "list_prompts":
        prompts = await list_all_pages(session.list_prompts, "prompts")
        return {"result": {"prompts": [dump_model(prompt) for prompt in prompts]}}
    if name == "get_prompt":
        return {"result": dump_model(await session.get_prompt(operation["name"], operation.get("arguments")))}
    if name == "ping":
        return {"result": dump_model(await session.send_ping())}
    raise AssertionError(f"operation {name!r} passed validation but has no handler")


async def run_operations(
    session: ClientSession,
    operations: list[dict[str, Any]],
    responses: HttpResponseLog,
    timeout_seconds: float,
    results: list[dict[str, Any]],
) -> None:
    """Run each operation in order and append its outcome to `results`."""
    for operation in operations:
        first_post = len(responses.posts)
        outcome: dict[str, Any] = {"op": operation["op"]}
        try:
            with anyio.fail_after(timeout_seconds):
                fields = await perform_operation(session, operation)
            outcome.update({"ok": True, **fields})
        except Exception as error:  # noqa: BLE001 - every failure is reported per operation.
            logger.info("operation %s failed: %r", operation["op"], error)
            outcome.update({"ok": False, "error": describe_error(error, timeout_seconds)})
        outcome["http"] = [exchange.to_json() for exchange in responses.posts[first_post:]]
        results.append(outcome)


async def run_client(args: argparse.Namespace, operations: list[dict[str, Any]]) -> tuple[dict[str, Any], int]:
    """Connect, initialize, run the operations and return the output document and exit status."""
    responses = HttpResponseLog()
    results: list[dict[str, Any]] = []
    document: dict[str, Any] = {}
    http_client = httpx2.AsyncClient(
        headers=args.header,
        # Same limits as the SDK's default client. The read limit covers SSE
        # streams that a server keeps open, and --timeout bounds each operation.
        timeout=httpx2.Timeout(30.0, read=300.0),
        # Ignore proxy variables, because the tests only talk to servers on this machine.
        trust_env=False,
        event_hooks={"response": [responses.record]},
    )

    try:
        async with (
            http_client,
            streamable_http_client(args.url, http_client=http_client) as (read_stream, write_stream),
            ClientSession(read_stream, write_stream) as session,
        ):
            try:
                with anyio.fail_after(args.timeout):
                    initialize_result = await session.initialize()
            except Exception as error:  # noqa: BLE001 - reported as initialize_error.
                return initialize_error_document(error, responses, args.timeout), EXIT_INITIALIZE_FAILED

            # The SDK posts notifications/initialized without waiting for the
            # response. Wait for it, so its status is reported here and not
            # under the first operation.
            with anyio.move_on_after(args.timeout):
                while responses.status_of("notifications/initialized") is None:
                    await anyio.sleep(0.01)

            document["initialize"] = {
                "result": dump_model(initialize_result),
                "session_id": responses.session_id,
                "http_status": responses.status_of("initialize"),
                "initialized_http_status": responses.status_of("notifications/initialized"),
            }
            await run_operations(session, operations, responses, args.timeout, results)
    except Exception as error:  # noqa: BLE001 - transport failures arrive as exception groups.
        if "initialize" not in document:
            return initialize_error_document(error, responses, args.timeout), EXIT_INITIALIZE_FAILED
        document["results"] = results
        document["connection_error"] = describe_error(unwrap_exception_group(error), args.timeout)
        return document, EXIT_CONNECTION_FAILED

    document["results"] = results
    return document, 0


def unwrap_exception_group(error: BaseException) -> BaseException:
    """Return the single error inside nested exception groups, or `error` itself.

    A transport failure leaves the SDK's task groups wrapped in one or more
    exception groups.
    """
    while isinstance(error, BaseExceptionGroup) and len(error.exceptions) == 1:
        error = error.exceptions[0]
    return error


def initialize_error_document(
    error: BaseException, responses: HttpResponseLog, timeout_seconds: float
) -> dict[str, Any]:
    """Build the output for a failed initialize, with the HTTP status when a response arrived."""
    cause = unwrap_exception_group(error)
    described = describe_error(cause, timeout_seconds)
    return {
        "initialize_error": described["message"] or type(cause).__name__,
        "error": described,
        "http_status": responses.status_of("initialize"),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Run scripted MCP operations against a Streamable HTTP endpoint and print JSON results.",
    )
    parser.add_argument("--url", required=True, help="MCP endpoint URL, for example http://127.0.0.1:38080/mcp")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        type=parse_header,
        metavar="'NAME: VALUE'",
        help="extra HTTP header sent with every request. Repeat the option for more headers",
    )
    parser.add_argument(
        "--ops",
        required=True,
        help="JSON array of operations, for example '[{\"op\":\"list_tools\"}]', or '-' to read it from stdin",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=20.0,
        help="limit in seconds for initialize and for each operation (default: 20)",
    )
    parser.add_argument("--verbose", action="store_true", help="log SDK and HTTP details to stderr")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.timeout <= 0:
        parser.error(f"invalid --timeout {args.timeout}: must be greater than 0")

    ops_text = sys.stdin.read() if args.ops == "-" else args.ops
    try:
        operations = parse_operations(ops_text)
    except UsageError as error:
        parser.error(str(error))

    document, exit_status = anyio.run(run_client, args, operations)
    json.dump(document, sys.stdout)
    sys.stdout.write("\n")
    return exit_status


if __name__ == "__main__":
    sys.exit(main())
