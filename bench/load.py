#!/usr/bin/env python3
"""Run the HTTP load phases of the gateway benchmark and print a table.

wrk (Debian package `wrk`) generates the load through bench/wrk.lua. This script checks each
route once and runs the phases. It samples the processes' CPU time and the gateway's memory
from /proc, and compares every gateway phase with the direct phase at the same concurrency.

Phases, repeated in interleaved rounds at each concurrency:
  direct  JSON-RPC tools/call POSTed straight to the upstream MCP server
  rest    the gateway's POST /mcp/toolcall
  mcp     the gateway's POST /mcp (JSON-RPC tools/call with Mcp-Session-Id)

Every phase is bounded by a duration and by a maximum number of replies. Only loopback URLs
are accepted. Exits 1 when a check, a reply or a wrk run fails.
"""

from __future__ import annotations

import argparse
import http.client
import ipaddress
import itertools
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from dataclasses import dataclass, field

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
WRK_SCRIPT = os.path.join(BENCH_DIR, "wrk.lua")
CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
MODEL_ID = "gpt-4o"
PROTOCOL_VERSION = "2025-06-18"
TOOL_CALL = {"name": "search.web", "arguments": {"query": "q"}}
MEMORY_SAMPLE_SECONDS = 0.2
# Name of the gateway's thread that writes the audit store and audit.log.
WRITER_THREAD = "sqlite-writer"
# Appends with fdatasync that probe the disk's sync latency before each phase.
FSYNC_PROBE_WRITES = 20
# Connections and time cap of the session growth phase.
SESSION_GROWTH_CONCURRENCY = 16
SESSION_GROWTH_MAX_SECONDS = 60
# Numbers for the session id prefixes of REST phases.
SESSION_PREFIXES = itertools.count(1)


class BenchError(Exception):
    """A check, a reply or a wrk run failed, so the benchmark stops."""


@dataclass
class Target:
    """A URL under load and the process that serves it."""

    name: str
    url: str
    pid: int
    data_dir: str | None = None


@dataclass
class PhaseResult:
    """One wrk run and the resources used during it."""

    label: str
    mode: str
    concurrency: int
    round_index: int
    calls: int
    seconds: float
    latency_us: dict
    gateway_cpu_seconds: float | None
    writer_cpu_seconds: float | None
    upstream_cpu_seconds: float
    client_cpu_seconds: float
    machine_busy_fraction: float
    peak_rss_bytes: int | None
    fdatasync_seconds: float | None

    @property
    def calls_per_second(self) -> float:
        return self.calls / self.seconds


@dataclass
class Summary:
    """The median over rounds of one phase kind at one concurrency."""

    label: str
    mode: str
    concurrency: int
    calls_per_second: float
    p50_us: float
    p99_us: float
    gateway_cpu_us_per_call: float | None
    writer_cpu_us_per_call: float | None
    upstream_cpu_us_per_call: float
    client_cpu_us_per_call: float
    machine_busy_fraction: float
    fdatasync_seconds: float | None
    rounds: list = field(default_factory=list)


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


def check_routes(upstream: str, gateway: str, model_key: str) -> None:
    """Send one call on each route and check that each returns the upstream's tool result."""
    expected = None
    connection = Connection(upstream)
    try:
        status, _, reply = connection.post({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": TOOL_CALL}, {})
    finally:
        connection.close()
    if status != 200 or reply is None or "result" not in reply:
        raise BenchError(f"direct tools/call on {upstream} failed: HTTP {status}, reply {reply}")
    expected = reply["result"]

    gateway_base = gateway.rstrip("/")
    connection = Connection(gateway_base + "/mcp/toolcall")
    try:
        body = {"model_id": MODEL_ID, "session_id": "bench-check", "tool_name": TOOL_CALL["name"], "input": TOOL_CALL["arguments"]}
        status, _, reply = connection.post(body, {"X-Model-Key": model_key})
    finally:
        connection.close()
    if status != 200 or reply is None or reply.get("status") != "ok" or reply.get("result") != expected:
        raise BenchError(f"REST call through the gateway failed: HTTP {status}, reply {reply}")

    session = open_mcp_sessions(gateway_base + "/mcp", model_key, 1)[0]
    connection = Connection(gateway_base + "/mcp")
    try:
        headers = {"X-Model-Key": model_key, "Mcp-Session-Id": session, "MCP-Protocol-Version": PROTOCOL_VERSION}
        status, _, reply = connection.post({"jsonrpc": "2.0", "method": "notifications/initialized"}, headers)
        if status != 202:
            raise BenchError(f"notifications/initialized through the gateway returned HTTP {status}; expected 202")
        status, _, reply = connection.post({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": TOOL_CALL}, headers)
    finally:
        connection.close()
    if status != 200 or reply is None or reply.get("result") != expected:
        raise BenchError(f"MCP tools/call through the gateway failed: HTTP {status}, reply {reply}")


def cpu_seconds(pid: int) -> float:
    """Return the user plus system CPU time of process `pid`, in seconds."""
    with open(f"/proc/{pid}/stat") as stat_file:
        text = stat_file.read()
    fields = text[text.rindex(")") + 2 :].split()
    user_ticks, system_ticks = int(fields[11]), int(fields[12])
    return (user_ticks + system_ticks) / CLOCK_TICKS_PER_SECOND


def thread_cpu_seconds(pid: int) -> dict[str, float]:
    """Return the CPU time of the threads of process `pid` in seconds, summed by thread name."""
    totals: dict[str, float] = {}
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat_file:
                text = stat_file.read()
        except FileNotFoundError:
            continue
        name = text[text.index("(") + 1 : text.rindex(")")]
        fields = text[text.rindex(")") + 2 :].split()
        totals[name] = totals.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_SECOND
    return totals


def probe_fdatasync(directory: str, count: int = FSYNC_PROBE_WRITES) -> float:
    """Append `count` audit-sized lines to a scratch file in `directory`, each followed by
    fdatasync, and return the median time of one append and sync in seconds."""
    times = []
    descriptor, path = tempfile.mkstemp(prefix="bench-fsync-probe-", dir=directory)
    try:
        for _ in range(count):
            started = time.perf_counter()
            os.write(descriptor, b"x" * 319 + b"\n")
            os.fdatasync(descriptor)
            times.append(time.perf_counter() - started)
    finally:
        os.close(descriptor)
        os.unlink(path)
    return statistics.median(times)


def machine_ticks() -> tuple[int, int]:
    """Return (busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as stat_file:
        values = [int(value) for value in stat_file.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def memory_status(pid: int) -> dict[str, int]:
    """Return VmRSS and VmHWM of process `pid`, in bytes."""
    result = {}
    with open(f"/proc/{pid}/status") as status_file:
        for line in status_file:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                result[name] = int(value.split()[0]) * 1024
    return result


class MemorySampler:
    """Samples the VmRSS of a process every MEMORY_SAMPLE_SECONDS in a thread and keeps the peak."""

    def __init__(self, pid: int | None):
        self.pid = pid
        self.peak = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(MEMORY_SAMPLE_SECONDS)

    def sample(self) -> None:
        if self.pid is not None:
            self.peak = max(self.peak, memory_status(self.pid)["VmRSS"])

    def __enter__(self) -> MemorySampler:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopped.set()
        self.thread.join()
        self.sample()


def run_wrk(url: str, args: argparse.Namespace, concurrency: int, duration: float, wrk_arguments: list[str]) -> dict:
    """Run wrk with one thread and return the JSON line that wrk.lua prints."""
    seconds = max(1, round(duration))
    command = [
        "wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", f"--timeout={args.timeout}s",
        "-s", WRK_SCRIPT, url, "--", *wrk_arguments,
    ]
    try:
        completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 30, check=False)
    except subprocess.TimeoutExpired as error:
        raise BenchError(f"wrk did not finish within {seconds + 30} s: {' '.join(command)}") from error
    for line in completed.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line.removeprefix("BENCH_RESULT "))
            break
    else:
        raise BenchError(f"wrk exited with {completed.returncode} without a result line: {completed.stderr.strip() or completed.stdout.strip()}")
    if completed.returncode != 0:
        raise BenchError(f"wrk exited with {completed.returncode}: {completed.stderr.strip()}")
    return result


def check_wrk_result(label: str, concurrency: int, max_calls: int | None, result: dict) -> None:
    """Raise BenchError when a run had failed replies or socket errors."""
    errors = {name: count for name, count in result["errors"].items() if count}
    if result["bad_replies"] or errors:
        raise BenchError(
            f"{label} at concurrency {concurrency}: {result['bad_replies']} bad replies, socket errors {errors}; "
            f"first bad reply: {result['first_bad_reply']!r}"
        )
    if result["requests"] == 0:
        raise BenchError(f"{label} at concurrency {concurrency}: no reply arrived")
    if max_calls is not None and result["requests"] >= max_calls:
        # wrk divides by the whole -d duration even when every thread stopped early.
        raise BenchError(
            f"{label} at concurrency {concurrency}: reached --max-calls {max_calls} before the time cap, "
            "so its rate is not valid; raise --max-calls or lower --duration"
        )


def run_phase(args: argparse.Namespace, label: str, mode: str, url: str, concurrency: int, round_index: int,
              gateway_pid: int | None, upstream_pid: int, duration: float, data_dir: str | None) -> PhaseResult:
    """Run one phase and measure it. When `data_dir` is set, probe its sync latency first."""
    fdatasync_seconds = probe_fdatasync(data_dir) if data_dir else None
    wrk_arguments = [mode, str(args.max_calls), "1"]
    sessions_file = None
    if mode != "direct":
        wrk_arguments.append(args.model_key)
    if mode == "rest":
        # A prefix per phase makes every REST call of the run start a new session.
        wrk_arguments.append(f"bench{next(SESSION_PREFIXES)}")
    if mode == "mcp":
        # Enough sessions that none gets more than CALLS_PER_SESSION calls, counting the calls
        # still in flight when a thread stops.
        count = math.ceil((args.max_calls + concurrency) / args.calls_per_session) + 1
        sessions = open_mcp_sessions(url, args.model_key, count)
        sessions_file = tempfile.NamedTemporaryFile("w", prefix="bench-sessions-", suffix=".txt", delete=False)
        sessions_file.write("\n".join(sessions) + "\n")
        sessions_file.close()
        wrk_arguments += [sessions_file.name, str(args.calls_per_session)]

    try:
        gateway_cpu_before = cpu_seconds(gateway_pid) if gateway_pid else None
        threads_before = thread_cpu_seconds(gateway_pid) if gateway_pid else {}
        upstream_cpu_before = cpu_seconds(upstream_pid)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy_before, total_before = machine_ticks()
        with MemorySampler(gateway_pid) as sampler:
            result = run_wrk(url, args, concurrency, duration, wrk_arguments)
        busy_after, total_after = machine_ticks()
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        upstream_cpu = cpu_seconds(upstream_pid) - upstream_cpu_before
        gateway_cpu = cpu_seconds(gateway_pid) - gateway_cpu_before if gateway_pid else None
        threads_after = thread_cpu_seconds(gateway_pid) if gateway_pid else {}
    finally:
        if sessions_file is not None:
            os.unlink(sessions_file.name)

    check_wrk_result(label, concurrency, args.max_calls, result)
    client_cpu = (children_after.ru_utime + children_after.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    busy_fraction = (busy_after - busy_before) / max(1, total_after - total_before)
    writer_cpu = None
    if WRITER_THREAD in threads_after:
        writer_cpu = threads_after[WRITER_THREAD] - threads_before.get(WRITER_THREAD, 0.0)
    return PhaseResult(
        label=label,
        mode=mode,
        concurrency=concurrency,
        round_index=round_index,
        calls=result["requests"],
        seconds=result["duration_us"] / 1e6,
        latency_us=result["latency_us"],
        gateway_cpu_seconds=gateway_cpu,
        writer_cpu_seconds=writer_cpu,
        upstream_cpu_seconds=upstream_cpu,
        client_cpu_seconds=client_cpu,
        machine_busy_fraction=busy_fraction,
        peak_rss_bytes=sampler.peak if gateway_pid else None,
        fdatasync_seconds=fdatasync_seconds,
    )


def summarize(results: list[PhaseResult]) -> Summary:
    """Return the medians over the rounds of one phase kind at one concurrency."""
    first = results[0]
    calls = sum(result.calls for result in results)
    gateway_cpu = writer_cpu = None
    if first.gateway_cpu_seconds is not None:
        gateway_cpu = sum(result.gateway_cpu_seconds for result in results) / calls * 1e6
    if first.writer_cpu_seconds is not None:
        writer_cpu = sum(result.writer_cpu_seconds or 0.0 for result in results) / calls * 1e6
    return Summary(
        label=first.label,
        mode=first.mode,
        concurrency=first.concurrency,
        calls_per_second=statistics.median(result.calls_per_second for result in results),
        p50_us=statistics.median(result.latency_us["p50"] for result in results),
        p99_us=statistics.median(result.latency_us["p99"] for result in results),
        gateway_cpu_us_per_call=gateway_cpu,
        writer_cpu_us_per_call=writer_cpu,
        upstream_cpu_us_per_call=sum(result.upstream_cpu_seconds for result in results) / calls * 1e6,
        client_cpu_us_per_call=sum(result.client_cpu_seconds for result in results) / calls * 1e6,
        machine_busy_fraction=statistics.median(result.machine_busy_fraction for result in results),
        fdatasync_seconds=None if first.fdatasync_seconds is None else statistics.median(result.fdatasync_seconds for result in results),
        rounds=[result.__dict__ for result in results],
    )


def format_table(summaries: list[Summary]) -> str:
    """Format the summaries as a Markdown table, with each gateway phase compared with direct."""
    direct = {summary.concurrency: summary for summary in summaries if summary.mode == "direct"}
    header = (
        "| phase | conc. | calls/s | p50 ms | p99 ms | added p50 ms | added p99 ms | throughput vs direct "
        "| gateway CPU µs/call | of which writer thread | upstream CPU µs/call | wrk CPU µs/call | machine busy "
        "| fdatasync ms |"
    )
    lines = [header, "|" + " --- |" * 14]
    for summary in summaries:
        base = direct.get(summary.concurrency)
        if summary.mode == "direct" or base is None:
            added_p50 = added_p99 = ratio = "–"
        else:
            added_p50 = f"{(summary.p50_us - base.p50_us) / 1000:+.3f}"
            added_p99 = f"{(summary.p99_us - base.p99_us) / 1000:+.3f}"
            ratio = f"{summary.calls_per_second / base.calls_per_second:.2f}"
        gateway_cpu = "–" if summary.gateway_cpu_us_per_call is None else f"{summary.gateway_cpu_us_per_call:.0f}"
        writer_cpu = "–" if summary.writer_cpu_us_per_call is None else f"{summary.writer_cpu_us_per_call:.0f}"
        sync = "–" if summary.fdatasync_seconds is None else f"{summary.fdatasync_seconds * 1000:.2f}"
        lines.append(
            f"| {summary.label} | {summary.concurrency} | {summary.calls_per_second:,.0f} | {summary.p50_us / 1000:.3f} "
            f"| {summary.p99_us / 1000:.3f} | {added_p50} | {added_p99} | {ratio} | {gateway_cpu} | {writer_cpu} "
            f"| {summary.upstream_cpu_us_per_call:.0f} | {summary.client_cpu_us_per_call:.0f} "
            f"| {summary.machine_busy_fraction:.0%} | {sync} |"
        )
    return "\n".join(lines)


def parse_gateway(value: str) -> Target:
    """Parse NAME=URL@PID[@DATA_DIR], as given to --gateway."""
    try:
        name, rest = value.split("=", 1)
        url, pid, *data_dir = rest.split("@", 2)
        target = Target(name=name, url=url.rstrip("/"), pid=int(pid), data_dir=data_dir[0] if data_dir else None)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"invalid gateway `{value}`: expected NAME=http://127.0.0.1:PORT@PID[@DATA_DIR]") from error
    require_loopback(target.url + "/")
    return target


def parse_arguments() -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="MCP endpoint of the upstream, e.g. http://127.0.0.1:9000/mcp")
    parser.add_argument("--upstream-pid", type=int, required=True, help="process id of the upstream, for its CPU time")
    parser.add_argument(
        "--gateway", type=parse_gateway, required=True,
        help="main gateway as NAME=http://127.0.0.1:PORT@PID[@DATA_DIR]. With DATA_DIR, the sync latency of its file system is probed before each phase",
    )
    parser.add_argument(
        "--extra-gateway", type=parse_gateway, action="append", default=[],
        help="another gateway run once per route after the main rounds, as NAME=URL@PID[@DATA_DIR] (repeatable)",
    )

    parser.add_argument("--model-key", default="modelkey-abc123", help="X-Model-Key of model gpt-4o (default: the example key)")
    parser.add_argument("--concurrency", default="1,16,64", help="comma-separated numbers of connections (default: 1,16,64)")
    parser.add_argument("--extra-concurrency", default="1,16", help="concurrencies for --extra-gateway (default: 1,16)")

    parser.add_argument("--duration", type=float, default=8, help="seconds per phase, the time cap (default: 8)")
    parser.add_argument("--warmup", type=float, default=2, help="seconds of unmeasured load per route before the rounds (default: 2)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the table shows medians (default: 3)")
    parser.add_argument(
        "--max-calls", type=int, default=600_000,
        help="maximum replies per phase, the count cap; a phase that reaches it fails, because wrk then reports a rate "
        "over the whole duration (default: 600000)",
    )
    parser.add_argument(
        "--calls-per-session", type=int, default=100,
        help="MCP calls per session before the next session; keep under the policy's per-session limit (default: 100)",
    )
    parser.add_argument("--timeout", type=int, default=10, help="wrk's per-request timeout in seconds (default: 10)")
    parser.add_argument(
        "--session-growth-calls", type=int, default=0,
        help="after the phases, send this many REST calls with new session ids to the last gateway and report its "
        f"memory growth; capped at {SESSION_GROWTH_MAX_SECONDS} s (default: 0, skip)",
    )

    parser.add_argument("--audit-log", help="the main gateway's audit.log, to count its lines per call")
    parser.add_argument("--json", help="also write all results to this JSON file")
    args = parser.parse_args()

    args.concurrency_levels = [int(value) for value in args.concurrency.split(",") if value]
    args.extra_concurrency_levels = [int(value) for value in args.extra_concurrency.split(",") if value]
    if not 0 < args.duration <= 60:
        parser.error("--duration must be more than 0 and at most 60 seconds")
    if args.rounds < 1 or args.max_calls < 1 or args.calls_per_session < 1:
        parser.error("--rounds, --max-calls and --calls-per-session must be at least 1")
    require_loopback(args.upstream)
    return args


def phases_for(gateway: Target, upstream: str) -> list[tuple[str, str, str]]:
    """Return (label, mode, URL) for the direct phase and the two gateway routes."""
    return [
        ("direct", "direct", upstream),
        (f"{gateway.name} REST", "rest", gateway.url + "/mcp/toolcall"),
        (f"{gateway.name} MCP", "mcp", gateway.url + "/mcp"),
    ]


def count_lines(path: str) -> int:
    """Return the number of newline characters in the file at `path`."""
    count = 0
    with open(path, "rb") as log_file:
        while chunk := log_file.read(1 << 20):
            count += chunk.count(b"\n")
    return count


def measure_session_growth(args: argparse.Namespace, target: Target) -> dict:
    """Send --session-growth-calls REST calls, each with a new session id, and return the
    gateway's VmRSS before and after, in bytes."""
    before = memory_status(target.pid)["VmRSS"]
    wrk_arguments = ["rest", str(args.session_growth_calls), "1", args.model_key, f"bench{next(SESSION_PREFIXES)}"]
    result = run_wrk(target.url + "/mcp/toolcall", args, SESSION_GROWTH_CONCURRENCY, SESSION_GROWTH_MAX_SECONDS, wrk_arguments)
    check_wrk_result(f"{target.name} session growth", SESSION_GROWTH_CONCURRENCY, None, result)
    time.sleep(1)
    after = memory_status(target.pid)["VmRSS"]
    return {"gateway": target.name, "calls": result["requests"], "rss_before": before, "rss_after": after}


def print_progress(prefix: str, result: PhaseResult) -> None:
    rss = "" if result.peak_rss_bytes is None else f" gateway VmRSS {result.peak_rss_bytes / 2**20:5.1f} MiB"
    if result.fdatasync_seconds is not None:
        rss += f" fdatasync {result.fdatasync_seconds * 1000:.2f} ms"
    print(
        f"{prefix} {result.label:>24} c={result.concurrency:<3} {result.calls_per_second:9,.0f} calls/s "
        f"p50 {result.latency_us['p50'] / 1000:7.3f} ms p99 {result.latency_us['p99'] / 1000:7.3f} ms "
        f"machine busy {result.machine_busy_fraction:4.0%}{rss}",
        flush=True,
    )


def run(args: argparse.Namespace) -> dict:
    gateway = args.gateway
    for target in [gateway, *args.extra_gateway]:
        check_routes(args.upstream, target.url, args.model_key)
    print("checked: direct, REST and MCP routes return the upstream's result", flush=True)
    # check_routes sends one REST call and one MCP call to each gateway.
    gateway_calls = 2

    rss_before = memory_status(gateway.pid)
    phases = phases_for(gateway, args.upstream)
    for label, mode, url in phases:
        pid = None if mode == "direct" else gateway.pid
        result = run_phase(args, label, mode, url, max(args.concurrency_levels), 0, pid, args.upstream_pid, args.warmup, None)
        if mode != "direct":
            gateway_calls += result.calls
    print(f"warmed up: {args.warmup:g} s per route", flush=True)

    results: list[PhaseResult] = []
    for round_index in range(1, args.rounds + 1):
        for concurrency in args.concurrency_levels:
            for label, mode, url in phases:
                pid = None if mode == "direct" else gateway.pid
                data_dir = None if mode == "direct" else gateway.data_dir
                result = run_phase(args, label, mode, url, concurrency, round_index, pid, args.upstream_pid, args.duration, data_dir)
                results.append(result)
                if mode != "direct":
                    gateway_calls += result.calls
                print_progress(f"round {round_index}", result)

    peak_rss = max(result.peak_rss_bytes or 0 for result in results)
    time.sleep(2)
    rss_after = memory_status(gateway.pid)
    audit_lines = count_lines(args.audit_log) if args.audit_log else None

    extra_results: list[PhaseResult] = []
    for target in args.extra_gateway:
        for concurrency in args.extra_concurrency_levels:
            for label, mode, url in phases_for(target, args.upstream)[1:]:
                result = run_phase(args, label, mode, url, concurrency, 1, target.pid, args.upstream_pid, args.duration, target.data_dir)
                extra_results.append(result)
                print_progress("extra", result)

    growth = None
    if args.session_growth_calls:
        growth_target = args.extra_gateway[-1] if args.extra_gateway else gateway
        growth = measure_session_growth(args, growth_target)

    groups: dict[tuple[str, int], list[PhaseResult]] = {}
    for result in results + extra_results:
        groups.setdefault((result.label, result.concurrency), []).append(result)
    mode_order = {"direct": 0, "rest": 1, "mcp": 2}
    main_labels = {label for label, _, _ in phases}
    summaries = sorted(
        (summarize(group) for group in groups.values()),
        key=lambda summary: (summary.label not in main_labels, summary.concurrency, mode_order[summary.mode], summary.label),
    )

    mib = 1024 * 1024
    print()
    print(format_table(summaries))
    print()
    print(
        f"gateway memory: VmRSS {rss_before['VmRSS'] / mib:.1f} MiB before load, peak sampled VmRSS {peak_rss / mib:.1f} MiB, "
        f"VmRSS {rss_after['VmRSS'] / mib:.1f} MiB 2 s after load, VmHWM {rss_after['VmHWM'] / mib:.1f} MiB"
    )
    if growth is not None:
        added = growth["rss_after"] - growth["rss_before"]
        print(
            f"{growth['gateway']} memory: VmRSS {growth['rss_before'] / mib:.1f} MiB -> {growth['rss_after'] / mib:.1f} MiB after "
            f"{growth['calls']:,} REST calls with new session ids ({added / growth['calls']:.0f} bytes per session)"
        )
    if audit_lines is not None:
        # Calls still in flight when wrk stops are handled but not counted, so the ratio can
        # be slightly above the true number of lines per call.
        print(
            f"gateway audit.log: {audit_lines:,} lines for about {gateway_calls:,} calls "
            f"({audit_lines / gateway_calls:.2f} lines per call)"
        )
    return {
        "summaries": [summary.__dict__ for summary in summaries],
        "memory_bytes": {"rss_before": rss_before["VmRSS"], "peak_rss": peak_rss, "rss_after": rss_after["VmRSS"], "hwm": rss_after["VmHWM"]},
        "gateway_calls": gateway_calls,
        "session_growth": growth,
        "audit_log_lines": audit_lines,
        "settings": {key: value for key, value in vars(args).items() if key not in ("gateway", "extra_gateway")},
    }


def main() -> int:
    args = parse_arguments()
    try:
        report = run(args)
    except BenchError as error:
        print(f"load.py: {error}", file=sys.stderr)
        return 1
    except (OSError, http.client.HTTPException) as error:
        print(f"load.py: request or process read failed: {error}", file=sys.stderr)
        return 1
    if args.json:
        with open(args.json, "w") as json_file:
            json.dump(report, json_file, indent=2, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
