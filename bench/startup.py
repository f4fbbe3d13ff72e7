"""Start-up benchmark of the container binary and the four Lambda functions.

Measures, for each binary, the time from spawning the process to the first response to a call:

* Container: `mcpsec serve` on the embedded store with the example keys and policy and
  `bench/upstream.js` as the upstream. The script polls `POST /mcp/toolcall` with an allowed
  call every millisecond until one returns 200 with `"status": "ok"`. It runs once with a new
  `DATA_DIR` each time (the store is created and the example files imported) and once on a
  `DATA_DIR` that a previous run created (a restart).
* Lambda: each `bootstrap` from `cargo lambda build --release`, started with
  `AWS_LAMBDA_RUNTIME_API` pointing at a Lambda Runtime API that this script serves
  (`RuntimeApi`), with the AWS stores in moto and `bench/upstream.js` as the upstream. As on a
  cold start, the invocation is queued before the process is spawned. Per process: *init* runs
  from the spawn to the first `GET .../invocation/next`, which is where Lambda's init phase
  ends. *First* runs from the spawn to the arrival of the response, so it adds the first
  invocation with empty caches. For a tool call, that is the key lookup in DynamoDB, the policy
  from S3, the upstream's MCP session and the audit write. *Warm* is a second invocation of
  the same process. Moto's response times are part of *first* and *warm*.

The Runtime API of `cargo lambda watch --only-lambda-apis` (cargo-lambda 1.9.2) is not used
because it sends an event's headers and body in two TCP segments. On a kept-alive connection
the body then waits for the function's delayed ACK, which added about 40 ms to some
invocations (seen with strace). That delay belongs to the emulator, not to the function.

Every server binds 127.0.0.1 and every client connects to 127.0.0.1. The AWS SDK in the
functions gets static dummy credentials and `AWS_ENDPOINT_URL` pointing at moto, with the
instance metadata lookup turned off. Prints Markdown tables on standard output and progress
on standard error. bench/startup.sh builds the binaries and runs this script.
"""

from __future__ import annotations

import argparse
import copy
import http.client
import http.server
import json
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "shared/gateway/tests/fixtures"
FUNCTIONS = ("toolcall", "admin", "session", "stream")

MODEL_KEY = "modelkey-abc123"
ADMIN_KEY = "admin-key-for-tests"  # the key that the session fixture sends
SESSION_SECRET = "startup-benchmark-secret-0123456789abcdef"

POLL_INTERVAL = 0.001
START_TIMEOUT = 30.0
INVOKE_TIMEOUT = 60.0


def log(message: str) -> None:
    print(f"startup: {message}", file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Every process this script starts, stopped in reverse order by `stop_all`."""

    def __init__(self) -> None:
        self.started: list[subprocess.Popen] = []

    def start(self, args: list[str], log_path: Path, **kwargs) -> subprocess.Popen:
        output = open(log_path, "ab")  # noqa: SIM115 - closed by stop()
        process = subprocess.Popen(args, stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, **kwargs)
        process.log_file = output  # type: ignore[attr-defined]
        self.started.append(process)
        return process

    def stop(self, process: subprocess.Popen) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        process.log_file.close()  # type: ignore[attr-defined]
        if process in self.started:
            self.started.remove(process)

    def stop_all(self) -> None:
        for process in reversed(list(self.started)):
            self.stop(process)


def wait_for_text(process: subprocess.Popen, log_path: Path, marker: str) -> str:
    """Waits until `marker` appears in the log and returns the rest of that line."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        text = log_path.read_text(errors="replace") if log_path.exists() else ""
        if marker in text:
            return text.split(marker, 1)[1].splitlines()[0]
        if process.poll() is not None:
            raise SystemExit(f"startup: {process.args[0]} exited with {process.returncode} before printing `{marker}`; see {log_path}")
        time.sleep(0.02)
    raise SystemExit(f"startup: {process.args[0]} did not print `{marker}` within {START_TIMEOUT:.0f} s; see {log_path}")


def request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
            timeout: float = INVOKE_TIMEOUT) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def summary(seconds: list[float]) -> str:
    milliseconds = [value * 1000 for value in seconds]
    return f"{statistics.median(milliseconds):.1f} / {max(milliseconds):.1f}"


def megabytes(path: Path) -> str:
    return f"{path.stat().st_size / 1e6:.2f} MB ({path.stat().st_size} bytes)"


# ---------------------------------------------------------------- container


def toolcall_body(session: str) -> bytes:
    call = {"model_id": "gpt-4o", "session_id": session, "tool_name": "search.web", "input": {"query": "mcp"}}
    return json.dumps(call).encode()


def first_tool_call(binary: Path, env: dict, log_path: Path, processes: Processes) -> float:
    """Spawns `mcpsec serve` and returns the seconds until a tool call returns `"status": "ok"`."""
    port = int(env["PORT"])
    body = toolcall_body(f"startup-{uuid.uuid4()}")
    headers = {"Content-Type": "application/json", "X-Model-Key": MODEL_KEY}

    started = time.perf_counter()
    process = processes.start([str(binary), "serve"], log_path, env=env)
    try:
        deadline = started + START_TIMEOUT
        while time.perf_counter() < deadline:
            try:
                status, response_body = request(port, "POST", "/mcp/toolcall", body, headers, timeout=5)
            except (OSError, http.client.HTTPException):
                status, response_body = 0, b""
            if status == 200:
                elapsed = time.perf_counter() - started
                result = json.loads(response_body)
                if result.get("status") != "ok":
                    raise SystemExit(f"startup: the tool call returned 200 without status ok: {result}")
                return elapsed
            if process.poll() is not None:
                raise SystemExit(f"startup: mcpsec serve exited with {process.returncode}; see {log_path}")
            time.sleep(POLL_INTERVAL)
        raise SystemExit(f"startup: no tool call returned 200 within {START_TIMEOUT:.0f} s; last status {status}; see {log_path}")
    finally:
        processes.stop(process)


def measure_container(binary: Path, upstream: str, runs: int, work: Path, processes: Processes) -> dict:
    base_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOST": "127.0.0.1",
        "MODEL_KEYS_FILE": str(REPO / "examples/model_keys.yaml"),
        "POLICY_FILE": str(REPO / "examples/policies.yaml"),
        "TOOL_SERVER_URL": upstream,
        "ADMIN_KEY": ADMIN_KEY,
        "SESSION_SECRET": SESSION_SECRET,
    }
    fresh = []
    for run in range(runs):
        env = dict(base_env, PORT=str(free_port()), DATA_DIR=str(work / f"container-new-{run}"))
        fresh.append(first_tool_call(binary, env, work / "container.log", processes))
    log(f"container, new DATA_DIR: {summary(fresh)} ms (median / max)")

    restart_dir = work / "container-restart"
    warm_up = dict(base_env, PORT=str(free_port()), DATA_DIR=str(restart_dir))
    first_tool_call(binary, warm_up, work / "container.log", processes)
    restart = []
    for _ in range(runs):
        env = dict(base_env, PORT=str(free_port()), DATA_DIR=str(restart_dir))
        restart.append(first_tool_call(binary, env, work / "container.log", processes))
    log(f"container, existing DATA_DIR: {summary(restart)} ms (median / max)")
    return {"new": fresh, "restart": restart}


# ---------------------------------------------------------------- Lambda


def aws_env(moto: str, work: Path) -> dict:
    """Returns the environment that keeps the AWS SDK on moto: dummy static credentials, no
    profile files, no instance metadata lookup."""
    empty = work / "empty-aws-config"
    empty.write_text("")
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(empty),
        "AWS_SHARED_CREDENTIALS_FILE": str(empty),
        "AWS_ENDPOINT_URL": moto,
        "KEYS_TABLE": "startup-keys",
        "SESSIONS_TABLE": "startup-sessions",
        "POLICY_BUCKET": "startup-policy",
        "COUNTERS_TABLE": "startup-counters",
    }


def prepare_aws_stores(mcpsec: Path, env: dict, work: Path, processes: Processes) -> None:
    """Creates the tables and the bucket with `mcpsec aws-init`, then imports the example keys
    and policy by starting `mcpsec serve` on the AWS stores once."""
    with open(work / "aws-init.log", "wb") as output:
        created = subprocess.run([str(mcpsec), "aws-init"], env=env, stdout=output, stderr=subprocess.STDOUT,
                                 timeout=120, check=False)
    if created.returncode != 0:
        raise SystemExit(f"startup: mcpsec aws-init failed with exit code {created.returncode}; see {work / 'aws-init.log'}")
    serve_env = dict(env, GATEWAY_STORE="aws", HOST="127.0.0.1", PORT="0",
                     MODEL_KEYS_FILE=str(REPO / "examples/model_keys.yaml"),
                     POLICY_FILE=str(REPO / "examples/policies.yaml"))
    log_path = work / "aws-import.log"
    process = processes.start([str(mcpsec), "serve"], log_path, env=serve_env)
    wait_for_text(process, log_path, "listening on ")
    processes.stop(process)


class Receiver(http.server.BaseHTTPRequestHandler):
    """Stands in for the SIEM and the alert webhook, returning 200 for every POST."""

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the signature http.server calls
        pass


class LoopbackServer(http.server.ThreadingHTTPServer):
    """An HTTP server on a free loopback port that ignores clients that reset their connection,
    as a function process does when the benchmark stops it."""

    daemon_threads = True

    def handle_error(self, request, client_address) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def serve_in_thread(handler: type) -> LoopbackServer:
    server = LoopbackServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def toolcall_event() -> dict:
    event = json.loads((FIXTURES / "apigw_v2_default_stage_toolcall.json").read_text())
    event["body"] = toolcall_body(f"startup-{uuid.uuid4()}").decode()
    event["headers"]["content-length"] = str(len(event["body"]))
    return event


def admin_event() -> dict:
    """`GET /api/config` as an HTTP API event, derived from the tool-call fixture."""
    event = json.loads((FIXTURES / "apigw_v2_default_stage_toolcall.json").read_text())
    event["rawPath"] = "/api/config"
    event["requestContext"]["http"]["method"] = "GET"
    event["requestContext"]["http"]["path"] = "/api/config"
    event["headers"] = {"accept": "application/json", "host": event["headers"]["host"], "x-admin-key": ADMIN_KEY}
    event.pop("body")
    return event


def session_event() -> dict:
    return json.loads((FIXTURES / "apigw_v1_prod_stage_sessions.json").read_text())


def stream_event() -> dict:
    """The first record of the stream fixture, with a new event id so that every run stores
    and counts a new call."""
    batch = json.loads((FIXTURES / "dynamodb_stream_batch.json").read_text())
    record = copy.deepcopy(batch["Records"][0])
    image = record["dynamodb"]["NewImage"]
    audit = json.loads(image["event"]["S"])
    audit["event_id"] = str(uuid.uuid4())
    image["event"]["S"] = json.dumps(audit)
    image["sk"]["S"] = record["dynamodb"]["Keys"]["sk"]["S"] = f"E#{audit['event_id']}"
    record["eventID"] = uuid.uuid4().hex
    return {"Records": [record]}


def check_http(result: dict) -> None:
    if result.get("statusCode") != 200:
        raise SystemExit(f"startup: the function returned {result.get('statusCode')}: {result.get('body')}")


def check_toolcall(result: dict) -> None:
    check_http(result)
    if json.loads(result["body"]).get("status") != "ok":
        raise SystemExit(f"startup: the tool call returned no status ok: {result['body']}")


def check_stream(result: dict) -> None:
    if result.get("batchItemFailures"):
        raise SystemExit(f"startup: the stream function reported failed records: {result}")


EVENTS: dict[str, tuple[Callable[[], dict], Callable[[dict], None]]] = {
    "toolcall": (toolcall_event, check_toolcall),
    "admin": (admin_event, check_http),
    "session": (session_event, check_http),
    "stream": (stream_event, check_stream),
}


class RuntimeApi(LoopbackServer):
    """The Lambda Runtime API for one function process, on a free loopback port.

    It hands out the invocations in `events`, puts each response or error into `responses` with
    the time it arrived, and records when the first `GET .../invocation/next` arrived, which
    is where Lambda's init phase ends. A server serves one process only, so a `next` request
    that a stopped process left waiting can take no event meant for the next process.
    """

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), RuntimeHandler)
        self.events: queue.Queue = queue.Queue()
        self.responses: queue.Queue = queue.Queue()
        self.first_next_at: float | None = None
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def address(self) -> str:
        """Returns the value of `AWS_LAMBDA_RUNTIME_API`, in the form Lambda sets it."""
        return f"127.0.0.1:{self.server_address[1]}"

    def queue_invocation(self, event: dict) -> None:
        self.events.put((str(uuid.uuid4()), json.dumps(event).encode()))

    def close(self) -> None:
        self.events.put((None, b""))
        self.shutdown()
        self.server_close()


class RuntimeHandler(http.server.BaseHTTPRequestHandler):
    """Serves the Runtime API routes that `lambda_runtime` calls. Every reply goes out in one
    write on a socket with `TCP_NODELAY`, so that no reply waits for the function's delayed
    ACK."""

    protocol_version = "HTTP/1.1"
    server: RuntimeApi

    def setup(self) -> None:
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        if not self.path.endswith("/runtime/invocation/next"):
            self.reply(404, b"")
            return
        if self.server.first_next_at is None:
            self.server.first_next_at = time.perf_counter()
        request_id, event = self.server.events.get()
        if request_id is None:
            self.reply(410, b"")
            return
        deadline_ms = int(time.time() * 1000) + 30_000
        self.reply(200, event, {
            "Lambda-Runtime-Aws-Request-Id": request_id,
            "Lambda-Runtime-Deadline-Ms": str(deadline_ms),
            "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:startup",
            "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
        })

    def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        arrived = time.perf_counter()
        kind = self.path.rsplit("/", 1)[-1]  # `response` or `error`
        self.server.responses.put((arrived, kind, body))
        self.reply(202, b"")

    def reply(self, status: int, body: bytes, headers: dict | None = None) -> None:
        lines = [f"HTTP/1.1 {status} {self.responses[status][0]}", f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the signature http.server calls
        pass


def function_env(function: str, aws: dict, upstream: str, receiver: str) -> dict:
    env = dict(
        aws,
        AWS_LAMBDA_FUNCTION_NAME=f"startup-{function}",
        AWS_LAMBDA_FUNCTION_VERSION="$LATEST",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="256",
        SESSION_SECRET=SESSION_SECRET,
        ADMIN_KEY=ADMIN_KEY,
        TOOL_SERVER_URL=upstream,
    )
    if function == "stream":
        env.update(SIEM_URL=f"{receiver}/siem", ALERT_WEBHOOK_URL=f"{receiver}/hook")
    return env


def wait_for_response(api: RuntimeApi, process: subprocess.Popen, function: str, log_path: Path) -> tuple[float, dict]:
    """Waits for the function's response to one invocation and returns its arrival time and JSON."""
    deadline = time.perf_counter() + INVOKE_TIMEOUT
    while time.perf_counter() < deadline:
        try:
            arrived, kind, body = api.responses.get(timeout=0.1)
        except queue.Empty:
            if process.poll() is not None:
                raise SystemExit(f"startup: {function} exited with {process.returncode}; see {log_path}") from None
            continue
        if kind != "response":
            raise SystemExit(f"startup: {function} reported an error: {body.decode(errors='replace')}; see {log_path}")
        return arrived, json.loads(body)
    raise SystemExit(f"startup: {function} sent no response within {INVOKE_TIMEOUT:.0f} s; see {log_path}")


def start_function(bootstrap: Path, env: dict, function: str, log_path: Path, processes: Processes) -> dict:
    """Runs one process of `function` through a cold and a warm invocation.

    Returns the seconds from the spawn to the end of the init phase (`init`) and to the first
    response (`first`), and the seconds of the warm invocation (`warm`).
    """
    make_event, check = EVENTS[function]
    api = RuntimeApi()
    env = dict(env, AWS_LAMBDA_RUNTIME_API=api.address())
    api.queue_invocation(make_event())  # waiting before the spawn, as for a cold start on Lambda

    started = time.perf_counter()
    process = processes.start([str(bootstrap)], log_path, env=env)
    try:
        responded_at, result = wait_for_response(api, process, function, log_path)
        check(result)
        first_next = api.first_next_at

        warm_started = time.perf_counter()
        api.queue_invocation(make_event())
        warm_responded_at, warm_result = wait_for_response(api, process, function, log_path)
        check(warm_result)
    finally:
        processes.stop(process)
        api.close()
    return {"init": first_next - started, "first": responded_at - started, "warm": warm_responded_at - warm_started}


def measure_lambda(lambda_dir: Path, mcpsec: Path, upstream: str, runs: int, work: Path,
                   processes: Processes) -> dict:
    moto_log = work / "moto.log"
    moto = processes.start([str(REPO / "infra/.venv/bin/moto_server"), "-H", "127.0.0.1", "-p", "0"], moto_log,
                           env=dict(os.environ, MOTO_RECORDER_FILEPATH=str(work / "moto-recording.jsonl")))
    moto_url = "http://127.0.0.1:" + wait_for_text(moto, moto_log, "Running on http://127.0.0.1:").split()[0]
    log(f"moto: {moto_url}")
    aws = aws_env(moto_url, work)
    prepare_aws_stores(mcpsec, aws, work, processes)
    receiver = serve_in_thread(Receiver)
    receiver_url = f"http://127.0.0.1:{receiver.server_address[1]}"

    results = {}
    for function in FUNCTIONS:
        bootstrap = lambda_dir / function / "bootstrap"
        env = function_env(function, aws, upstream, receiver_url)
        runs_of_function = [start_function(bootstrap, env, function, work / f"{function}.log", processes)
                            for _ in range(runs)]
        results[function] = {name: [run[name] for run in runs_of_function] for name in ("init", "first", "warm")}
        figures = results[function]
        log(f"{function}: init {summary(figures['init'])}, first {summary(figures['first'])}, "
            f"warm {summary(figures['warm'])} ms (median / max)")
    receiver.shutdown()
    return results


# ---------------------------------------------------------------- report


def print_report(args: argparse.Namespace, container: dict | None, lambdas: dict | None) -> None:
    print(f"Runs per figure: {args.runs}. Each cell: median / max in milliseconds.\n")
    if container is not None:
        print("| binary | size | spawn to first tool call response, new `DATA_DIR` | restart on the same `DATA_DIR` |")
        print("| --- | --- | --- | --- |")
        print(f"| `mcpsec serve` | {megabytes(args.mcpsec)} | {summary(container['new'])} | {summary(container['restart'])} |")
        print()
    if lambdas is not None:
        print("| function | `bootstrap` size | init: spawn to first `next` | spawn to first response | warm invocation |")
        print("| --- | --- | --- | --- | --- |")
        for function, figures in lambdas.items():
            size = megabytes(args.lambda_dir / function / "bootstrap")
            print(f"| `{function}` | {size} | {summary(figures['init'])} | {summary(figures['first'])} | {summary(figures['warm'])} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mcpsec", type=Path, required=True, help="the release `mcpsec` binary")
    parser.add_argument("--lambda-dir", type=Path, required=True, help="folder with one `FUNCTION/bootstrap` per function")
    parser.add_argument("--runs", type=int, default=20, help="process starts per figure (default 20)")
    parser.add_argument("--only", choices=["container", "lambda"], help="measure one deployment only")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}")
    for function in FUNCTIONS:
        if not (args.lambda_dir / function / "bootstrap").is_file() and args.only != "container":
            parser.error(f"{args.lambda_dir / function / 'bootstrap'} not found; build it with `cargo lambda build --release`")
    if not (REPO / "infra/.venv/bin/moto_server").is_file() and args.only != "container":
        parser.error("infra/.venv/bin/moto_server not found; run `bash infra/install-test-deps.sh`")

    processes = Processes()
    work = Path(tempfile.mkdtemp(prefix="mcpsec-startup."))
    try:
        upstream_log = work / "upstream.log"
        upstream = processes.start(["node", str(REPO / "bench/upstream.js"), "0"], upstream_log)
        upstream_url = "http://" + wait_for_text(upstream, upstream_log, "listening on http://").split()[0]
        log(f"upstream: {upstream_url}; logs in {work}")

        container = None if args.only == "lambda" else measure_container(args.mcpsec, upstream_url, args.runs, work, processes)
        lambdas = None if args.only == "container" else measure_lambda(args.lambda_dir, args.mcpsec, upstream_url, args.runs, work, processes)
        print_report(args, container, lambdas)
    finally:
        processes.stop_all()
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
