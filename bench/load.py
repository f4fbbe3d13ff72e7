#!/usr/bin/env python3
"""Run the HTTP load phases of the gateway benchmark, print tables and draw plots.

bench/run.sh starts the upstream and calls this script. The script starts the gateways itself,
each with a DATA_DIR of its own, checks each route once, runs the phases with wrk (Debian
package `wrk`) through bench/wrk.lua, and stops the gateways at the end. It samples CPU time
and memory from /proc and compares every gateway phase with the direct phase at the same
concurrency.

Latency phases (--phases latency), in interleaved rounds at each concurrency:
  direct                   JSON-RPC tools/call POSTed straight to the upstream MCP server
  gateway REST             POST /mcp/toolcall, every call allowed, each with a new session id
  gateway REST denied      the same route, every call denied by examples/policies.yaml
  gateway REST 50% denied  allowed and denied calls in turn
  gateway MCP ...          the same three mixes as tools/call on POST /mcp, 100 calls per session
Then REST and MCP once on a second gateway with DATA_DIR on /dev/shm (--shm-dir), and a run of
REST calls with new session ids that shows the memory each session costs.

Scaling phases (--phases scaling), REST at --scaling-concurrency, one fresh gateway per size:
  rules N     a generated policy of N rules
  sessions N  N sessions created through the gateway before the phase, which then spreads its
              calls over them

Every reply is checked. Only loopback URLs are accepted. Exits 1 when a check, a reply, a
process or a wrk run fails.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import sys
import time

from calls import DENIED_RULE, DEFAULT_MODEL_KEY, BenchError, check_routes, require_loopback
from gateways import Gateway, MemoryReport
from measure import count_lines, memory_status
from phases import Phase, PhaseResult, format_latency_table, format_scaling_table, run_phase, summarize_groups
from scaling import ScalingSetup, rules_policy_text, run_rule_scaling, run_session_scaling, sessions_policy_text, start_gateways
from wrk_runner import Load, check_result, run_wrk

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_DIR = os.path.dirname(BENCH_DIR)
KEYS_FILE = os.path.join(REPO_DIR, "examples", "model_keys.yaml")
POLICY_FILE = os.path.join(REPO_DIR, "examples", "policies.yaml")
# Connections and time cap of the session growth phase, which stops when its calls are done.
SESSION_GROWTH_CONCURRENCY = 16
SESSION_GROWTH_MAX_SECONDS = 300
PHASE_GROUPS = ("latency", "scaling")
# Share of denied calls in percent, and the suffix of the phase label, of each mix.
MIXES = ((0, ""), (100, " denied"), (50, " 50% denied"))
MEBIBYTE = 1024 * 1024

# Settings of a full run and of --smoke. An option given on the command line overrides both.
FULL_SETTINGS = {
    "duration": 8.0,
    "warmup": 2.0,
    "rounds": 3,
    "concurrency": "1,16,64",
    "extra_concurrency": "1,16",
    "session_growth_calls": 200_000,
    "rule_counts": "10,100,1000,10000",
    "session_counts": "1,1000,10000,100000",
    "scaling_concurrency": 16,
}
SMOKE_SETTINGS = {
    "duration": 1.0,
    "warmup": 1.0,
    "rounds": 1,
    "concurrency": "1,4",
    "extra_concurrency": "1,4",
    "session_growth_calls": 1000,
    "rule_counts": "10,100",
    "session_counts": "1,100",
    "scaling_concurrency": 4,
}


def number_list(text: str, option: str, parser: argparse.ArgumentParser) -> list[int]:
    try:
        values = [int(value) for value in text.split(",") if value.strip()]
    except ValueError:
        parser.error(f"{option} must be comma-separated whole numbers, not `{text}`")
    if not values or min(values) < 1:
        parser.error(f"{option} needs at least one number, each at least 1")
    return values


def parse_arguments() -> argparse.Namespace:
    """Parse and check the command line."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--upstream", required=True, help="MCP endpoint of the upstream, e.g. http://127.0.0.1:9000/mcp")
    parser.add_argument("--upstream-pid", type=int, required=True, help="process id of the upstream, for its CPU time")
    parser.add_argument("--binary", required=True, help="the mcpsec binary that the gateways run")
    parser.add_argument("--work-dir", required=True, help="folder for the gateways' DATA_DIR, logs and policy files, on the disk to measure")
    parser.add_argument("--shm-dir", default="", help="folder on tmpfs for the extra gateway on /dev/shm (default: none, skip it)")
    parser.add_argument(
        "--phases", default=",".join(PHASE_GROUPS),
        help="comma-separated phase groups to run: latency, scaling (default: both)",
    )
    parser.add_argument(
        "--smoke", action="store_true",
        help="run every phase briefly (1 s, concurrency 1 and 4, 10 and 100 rules, 1 and 100 sessions) to check the "
        "harness; plots go into --work-dir unless --plot or --scaling-plot is given",
    )

    parser.add_argument("--model-key", default=DEFAULT_MODEL_KEY, help="X-Model-Key of model gpt-4o (default: the example key)")
    parser.add_argument("--concurrency", help="comma-separated numbers of connections (default: 1,16,64)")
    parser.add_argument("--extra-concurrency", help="concurrencies for the /dev/shm gateway (default: 1,16)")
    parser.add_argument("--duration", type=float, help="seconds per phase, the time cap (default: 8)")
    parser.add_argument("--warmup", type=float, help="seconds of unmeasured load per route before the rounds (default: 2)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds; the tables show medians (default: 3)")
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
        "--session-growth-calls", type=int,
        help="after the latency phases, send this many REST calls with new session ids and report the gateway's memory "
        "growth; 0 skips it (default: 200000)",
    )

    parser.add_argument("--rule-counts", help="policy sizes of the rule scaling phase (default: 10,100,1000,10000)")
    parser.add_argument("--session-counts", help="store sizes of the session scaling phase (default: 1,1000,10000,100000)")
    parser.add_argument("--scaling-concurrency", type=int, help="connections in the scaling phases (default: 16)")

    parser.add_argument("--plot", help="PNG of latency and throughput against concurrency (default: docs/bench-latency.png)")
    parser.add_argument("--scaling-plot", help="PNG of throughput against rules and sessions (default: docs/bench-scaling.png)")
    parser.add_argument("--no-plots", action="store_true", help="draw no plots, so matplotlib is not needed")
    parser.add_argument("--json", help="also write all results to this JSON file")
    args = parser.parse_args()

    settings = SMOKE_SETTINGS if args.smoke else FULL_SETTINGS
    for name, value in settings.items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    plot_dir = args.work_dir if args.smoke else os.path.join(REPO_DIR, "docs")
    args.plot = args.plot or os.path.join(plot_dir, "bench-latency.png")
    args.scaling_plot = args.scaling_plot or os.path.join(plot_dir, "bench-scaling.png")

    args.phase_groups = [group.strip() for group in args.phases.split(",") if group.strip()]
    unknown = set(args.phase_groups) - set(PHASE_GROUPS)
    if unknown or not args.phase_groups:
        parser.error(f"--phases takes a comma-separated list of {', '.join(PHASE_GROUPS)}, not `{args.phases}`")
    args.concurrency_levels = number_list(args.concurrency, "--concurrency", parser)
    args.extra_concurrency_levels = number_list(args.extra_concurrency, "--extra-concurrency", parser)
    args.rule_counts = number_list(args.rule_counts, "--rule-counts", parser)
    args.session_counts = number_list(args.session_counts, "--session-counts", parser)
    if min(args.rule_counts) < 2:
        parser.error("--rule-counts must each be at least 2, for the two rules that the benchmark's call matches")
    if not 0 < args.duration <= 60:
        parser.error("--duration must be more than 0 and at most 60 seconds")
    if args.rounds < 1 or args.max_calls < 1 or args.calls_per_session < 1 or args.scaling_concurrency < 1:
        parser.error("--rounds, --max-calls, --calls-per-session and --scaling-concurrency must be at least 1")
    if not os.access(args.binary, os.X_OK):
        parser.error(f"--binary `{args.binary}` is not an executable file")
    try:
        require_loopback(args.upstream)
    except BenchError as error:
        parser.error(str(error))
    return args


def latency_phases(gateway: Gateway, upstream: str) -> list[Phase]:
    """Return the direct phase and each mix of both gateway routes."""
    phases = [Phase(label="direct", load=Load(mode="direct", url=upstream), gateway=None)]
    for mode, route, path in (("rest", "REST", "/mcp/toolcall"), ("mcp", "MCP", "/mcp")):
        for denied_percent, suffix in MIXES:
            load = Load(mode=mode, url=gateway.url + path, denied_percent=denied_percent,
                        denied_rule=DENIED_RULE if denied_percent else None)
            phases.append(Phase(label=f"{gateway.name} {route}{suffix}", load=load, gateway=gateway))
    return phases


def print_progress(prefix: str, result: PhaseResult) -> None:
    extra = "" if result.peak_rss_bytes is None else f" gateway VmRSS {result.peak_rss_bytes / MEBIBYTE:5.1f} MiB"
    if result.fdatasync_seconds is not None:
        extra += f" fdatasync {result.fdatasync_seconds * 1000:.2f} ms"
    print(
        f"{prefix} {result.label:>32} c={result.concurrency:<3} {result.calls_per_second:9,.0f} calls/s "
        f"p50 {result.latency_us['p50'] / 1000:7.3f} ms p99 {result.latency_us['p99'] / 1000:7.3f} ms "
        f"p99.9 {result.latency_us['p999'] / 1000:7.3f} ms denied {result.denied:,} machine busy "
        f"{result.machine_busy_fraction:4.0%}{extra}",
        flush=True,
    )


def measure_session_growth(args: argparse.Namespace, gateway: Gateway) -> dict:
    """Send --session-growth-calls REST calls, each with a new session id, and return the
    gateway's VmRSS before and after, in bytes."""
    before = memory_status(gateway.pid)["VmRSS"]
    load = Load(mode="rest", url=gateway.url + "/mcp/toolcall", session_prefix=f"growth-{time.time_ns()}")
    calls = args.session_growth_calls
    result = run_wrk(load, SESSION_GROWTH_CONCURRENCY, SESSION_GROWTH_MAX_SECONDS, args.timeout, calls, args.model_key, stop_early=True)
    check_result(f"{gateway.name} session growth", SESSION_GROWTH_CONCURRENCY, load, result, calls, stop_early=True)
    time.sleep(1)
    after = memory_status(gateway.pid)["VmRSS"]
    return {"gateway": gateway.name, "calls": result["requests"], "rss_before": before, "rss_after": after}


class Run:
    """The state of one benchmark run: the gateways it started and what it measured."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.gateways: list[Gateway] = []
        self.memory: list[MemoryReport] = []
        self.report: dict = {"settings": {key: value for key, value in vars(args).items()}}

    def start_gateway(self, name: str, folder: str, policy_file: str = POLICY_FILE) -> Gateway:
        gateway = Gateway(name, self.args.binary, folder, self.args.upstream, policy_file, KEYS_FILE)
        self.gateways.append(gateway)
        gateway.start()
        print(
            f"started gateway `{name}` at {gateway.url} in {gateway.start_seconds:.2f} s (pid {gateway.pid}, "
            f"data {gateway.data_dir})",
            flush=True,
        )
        return gateway

    def stop_gateways(self, gateways: list[Gateway]) -> None:
        self.memory += [gateway.stop() for gateway in gateways]

    def close(self) -> None:
        """Stop every gateway still running, after a failure."""
        for gateway in self.gateways:
            gateway.close()

    def run_latency(self) -> None:
        args = self.args
        gateway = self.start_gateway("gateway", os.path.join(args.work_dir, "gateway"))
        shm_gateway = None
        if args.shm_dir:
            shm_gateway = self.start_gateway("gateway on /dev/shm", os.path.join(args.shm_dir, "gateway"))
        for target in [gateway] + ([shm_gateway] if shm_gateway else []):
            check_routes(args.upstream, target.url, args.model_key)
        print("checked: direct, REST and MCP routes return the upstream's result, and the denied tool is denied by "
              f"rule `{DENIED_RULE}`", flush=True)
        # check_routes sends two allowed and two denied tool calls to each gateway.
        gateway_calls = {"allowed": 2, "denied": 2}

        phases = latency_phases(gateway, args.upstream)
        for phase in phases:
            if phase.load.denied_percent == 0:
                result = run_phase(args, phase, max(args.concurrency_levels), 0, args.warmup, args.upstream_pid, probe_disk=False)
                count_gateway_calls(gateway_calls, phase, result)
        print(f"warmed up: {args.warmup:g} s per route", flush=True)

        results: list[PhaseResult] = []
        for round_index in range(1, args.rounds + 1):
            for concurrency in args.concurrency_levels:
                for phase in phases:
                    result = run_phase(args, phase, concurrency, round_index, args.duration, args.upstream_pid)
                    results.append(result)
                    count_gateway_calls(gateway_calls, phase, result)
                    print_progress(f"round {round_index}", result)
        time.sleep(2)
        rss_after_load = memory_status(gateway.pid)["VmRSS"]
        audit_lines = count_lines(os.path.join(gateway.data_dir, "audit.log"))

        if shm_gateway:
            for concurrency in args.extra_concurrency_levels:
                for phase in latency_phases(shm_gateway, args.upstream)[1:]:
                    if phase.load.denied_percent == 0:
                        result = run_phase(args, phase, concurrency, 1, args.duration, args.upstream_pid)
                        results.append(result)
                        print_progress("extra", result)

        if args.session_growth_calls:
            self.report["session_growth"] = measure_session_growth(args, shm_gateway or gateway)
        self.stop_gateways([gateway] + ([shm_gateway] if shm_gateway else []))

        self.report["latency"] = summarize_groups(results)
        self.report["rss_after_load"] = rss_after_load
        self.report["audit_log"] = {"lines": audit_lines, **gateway_calls}

    def run_scaling(self) -> None:
        args = self.args
        setup = ScalingSetup(args.work_dir, args.upstream, args.upstream_pid)

        gateways = start_gateways(setup, "rules", args.rule_counts, rules_policy_text, self.start_gateway)
        self.report["rules"] = run_rule_scaling(args, setup, gateways, print_progress)
        self.stop_gateways(gateways)

        gateways = start_gateways(setup, "sessions", args.session_counts, lambda _: sessions_policy_text(), self.start_gateway)
        self.report["sessions"], self.report["seeding"] = run_session_scaling(args, setup, gateways, print_progress)
        self.stop_gateways(gateways)


def count_gateway_calls(totals: dict, phase: Phase, result: PhaseResult) -> None:
    if phase.gateway is not None:
        totals["allowed"] += result.allowed
        totals["denied"] += result.denied


def print_latency(report: dict) -> None:
    print()
    print(format_latency_table(report["latency"]))
    if "session_growth" in report:
        growth = report["session_growth"]
        added = growth["rss_after"] - growth["rss_before"]
        print(
            f"\n{growth['gateway']} memory: VmRSS {growth['rss_before'] / MEBIBYTE:.1f} MiB -> {growth['rss_after'] / MEBIBYTE:.1f} MiB "
            f"after {growth['calls']:,} REST calls with new session ids ({added / growth['calls']:.0f} bytes per session)"
        )
    audit = report["audit_log"]
    # Calls still in flight when wrk stops are handled but not counted, so the counts are a
    # little low.
    print(
        f"gateway audit.log: {audit['lines']:,} lines for about {audit['allowed']:,} allowed and {audit['denied']:,} "
        "denied calls (an allowed call writes 2 events, a denied call 1)"
    )


def print_scaling(report: dict) -> None:
    if "rules" in report:
        print("\nREST throughput against the number of policy rules:\n")
        print(format_scaling_table(report["rules"], "rules"))
    if "sessions" in report:
        print("\nREST throughput against the number of sessions in the store:\n")
        print(format_scaling_table(report["sessions"], "sessions"))


def format_memory_table(reports: list[MemoryReport]) -> str:
    lines = [
        "| gateway | start s | VmRSS after start MiB | peak sampled VmRSS MiB | VmRSS at end MiB | VmHWM MiB |",
        "|" + " --- |" * 6,
    ]
    for report in reports:
        lines.append(
            f"| {report.gateway} | {report.start_seconds:.2f} | {report.rss_after_start / MEBIBYTE:.1f} "
            f"| {report.peak_sampled_rss / MEBIBYTE:.1f} | {report.rss_at_end / MEBIBYTE:.1f} | {report.hwm / MEBIBYTE:.1f} |"
        )
    return "\n".join(lines)


def plot_caption(args: argparse.Namespace) -> str:
    kind = "smoke run" if args.smoke else f"rounds: {args.rounds} of {args.duration:g} s per phase"
    return f"bench/run.sh, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} CPUs, {kind}"


def write_plots(args: argparse.Namespace, report: dict) -> None:
    from plots import plot_latency, plot_scaling

    caption = plot_caption(args)
    if "latency" in report:
        wanted = {"direct": "direct", "gateway REST": "gateway REST", "gateway MCP": "gateway MCP"}
        series = {name: [summary for summary in report["latency"] if summary.label == label] for name, label in wanted.items()}
        plot_latency(series, caption, args.plot)
    if "rules" in report or "sessions" in report:
        plot_scaling(report.get("rules", []), report.get("sessions", []), caption, args.scaling_plot)


def run(args: argparse.Namespace) -> dict:
    state = Run(args)
    try:
        if "latency" in args.phase_groups:
            state.run_latency()
        if "scaling" in args.phase_groups:
            state.run_scaling()
    finally:
        state.close()

    report = state.report
    if "latency" in report:
        print_latency(report)
    print_scaling(report)
    print("\nGateway memory over each gateway's life (VmRSS sampled every 0.2 s; VmHWM read at the end):\n")
    print(format_memory_table(state.memory))
    report["memory"] = state.memory
    if not args.no_plots:
        write_plots(args, report)
    return report


def main() -> int:
    # SIGTERM ends the run like Ctrl-C, so that the gateways are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_arguments()
    try:
        report = run(args)
    except BenchError as error:
        print(f"load.py: {error}", file=sys.stderr)
        return 1
    except (OSError, http.client.HTTPException) as error:
        print(f"load.py: request or process read failed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("load.py: interrupted; the gateways were stopped", file=sys.stderr)
        return 130
    if args.json:
        with open(args.json, "w") as json_file:
            json.dump(report, json_file, indent=2, default=lambda value: getattr(value, "__dict__", str(value)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
