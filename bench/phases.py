"""Timed load phases: one wrk run with the CPU, memory and disk readings around it, the
medians over rounds, and the Markdown tables of both."""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import resource
import statistics
import tempfile
from dataclasses import dataclass, field

from calls import open_mcp_sessions
from gateways import Gateway
from measure import cpu_seconds, machine_ticks, probe_fdatasync, thread_cpu_seconds
from wrk_runner import Load, check_result, run_wrk

# Name of the gateway's thread that writes the audit store and audit.log.
WRITER_THREAD = "sqlite-writer"
# Numbers for the session id prefixes of REST phases, so that every REST call of a run that
# does not reuse sessions starts a new session.
SESSION_PREFIXES = itertools.count(1)
MIX_NAMES = {0: "allowed", 100: "denied"}


@dataclass
class Phase:
    """One kind of timed phase: what wrk sends and the gateway that serves it.

    `gateway` is None for calls straight to the upstream. `size` is the policy's rule count or
    the store's session count in a scaling phase.
    """

    label: str
    load: Load
    gateway: Gateway | None
    size: int | None = None

    @property
    def mix(self) -> str:
        return MIX_NAMES.get(self.load.denied_percent, f"{self.load.denied_percent}% denied")


@dataclass
class PhaseResult:
    """One wrk run and the resources used during it."""

    label: str
    mode: str
    mix: str
    size: int | None
    concurrency: int
    round_index: int
    calls: int
    allowed: int
    denied: int
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
    """The medians over rounds of one phase kind at one concurrency."""

    label: str
    mode: str
    mix: str
    size: int | None
    concurrency: int
    calls_per_second: float
    p50_us: float
    p99_us: float
    p999_us: float
    denied_fraction: float
    gateway_cpu_us_per_call: float | None
    writer_cpu_us_per_call: float | None
    upstream_cpu_us_per_call: float
    client_cpu_us_per_call: float
    machine_busy_fraction: float
    fdatasync_seconds: float | None
    rounds: list = field(default_factory=list)


def prepare_load(phase: Phase, concurrency: int, max_calls: int, calls_per_session: int, model_key: str) -> tuple[Load, str | None]:
    """Return the load of one run, with a new session prefix for REST calls that do not reuse
    sessions, or with freshly opened MCP sessions, and the sessions file to delete afterwards."""
    load = dataclasses.replace(phase.load)
    if load.mode == "rest" and load.session_count is None:
        # Sessions of calls_per_session calls each, as on the MCP route: an agent makes many
        # calls in one session. The growth phase measures what each new session costs.
        load.session_prefix = f"bench{next(SESSION_PREFIXES)}"
        load.calls_per_session = calls_per_session
    if load.mode != "mcp":
        return load, None
    # Enough sessions that none gets more than calls_per_session calls, counting the calls still
    # in flight when the thread stops.
    count = math.ceil((max_calls + concurrency) / calls_per_session) + 1
    sessions = open_mcp_sessions(load.url, model_key, count)
    with tempfile.NamedTemporaryFile("w", prefix="bench-sessions-", suffix=".txt", delete=False) as sessions_file:
        sessions_file.write("\n".join(sessions) + "\n")
    load.sessions_file = sessions_file.name
    load.calls_per_session = calls_per_session
    return load, sessions_file.name


def run_phase(args, phase: Phase, concurrency: int, round_index: int, duration: float, upstream_pid: int,
              probe_disk: bool = True) -> PhaseResult:
    """Run one phase and measure it. For a gateway phase with `probe_disk`, probe the sync
    latency of its DATA_DIR first."""
    gateway = phase.gateway
    pid = gateway.pid if gateway else None
    fdatasync_seconds = probe_fdatasync(gateway.data_dir) if gateway and probe_disk else None
    load, sessions_path = prepare_load(phase, concurrency, args.max_calls, args.calls_per_session, args.model_key)
    try:
        gateway_cpu_before = cpu_seconds(pid) if pid else None
        threads_before = thread_cpu_seconds(pid) if pid else {}
        upstream_cpu_before = cpu_seconds(upstream_pid)
        children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        busy_before, total_before = machine_ticks()
        if gateway:
            gateway.begin_phase()
        result = run_wrk(load, concurrency, duration, args.timeout, args.max_calls, args.model_key)
        if gateway:
            gateway.sample()
        busy_after, total_after = machine_ticks()
        children_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        upstream_cpu = cpu_seconds(upstream_pid) - upstream_cpu_before
        gateway_cpu = cpu_seconds(pid) - gateway_cpu_before if pid else None
        threads_after = thread_cpu_seconds(pid) if pid else {}
    finally:
        if sessions_path is not None:
            os.unlink(sessions_path)

    check_result(phase.label, concurrency, load, result, args.max_calls)
    client_cpu = (children_after.ru_utime + children_after.ru_stime) - (children_before.ru_utime + children_before.ru_stime)
    writer_cpu = None
    if WRITER_THREAD in threads_after:
        writer_cpu = threads_after[WRITER_THREAD] - threads_before.get(WRITER_THREAD, 0.0)
    return PhaseResult(
        label=phase.label,
        mode=load.mode,
        mix=phase.mix,
        size=phase.size,
        concurrency=concurrency,
        round_index=round_index,
        calls=result["requests"],
        allowed=result["allowed"],
        denied=result["denied"],
        seconds=result["duration_us"] / 1e6,
        latency_us=result["latency_us"],
        gateway_cpu_seconds=gateway_cpu,
        writer_cpu_seconds=writer_cpu,
        upstream_cpu_seconds=upstream_cpu,
        client_cpu_seconds=client_cpu,
        machine_busy_fraction=(busy_after - busy_before) / max(1, total_after - total_before),
        peak_rss_bytes=gateway.phase_peak_rss if gateway else None,
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
        mix=first.mix,
        size=first.size,
        concurrency=first.concurrency,
        calls_per_second=statistics.median(result.calls_per_second for result in results),
        p50_us=statistics.median(result.latency_us["p50"] for result in results),
        p99_us=statistics.median(result.latency_us["p99"] for result in results),
        p999_us=statistics.median(result.latency_us["p999"] for result in results),
        denied_fraction=sum(result.denied for result in results) / calls,
        gateway_cpu_us_per_call=gateway_cpu,
        writer_cpu_us_per_call=writer_cpu,
        upstream_cpu_us_per_call=sum(result.upstream_cpu_seconds for result in results) / calls * 1e6,
        client_cpu_us_per_call=sum(result.client_cpu_seconds for result in results) / calls * 1e6,
        machine_busy_fraction=statistics.median(result.machine_busy_fraction for result in results),
        fdatasync_seconds=None if first.fdatasync_seconds is None else statistics.median(result.fdatasync_seconds for result in results),
        rounds=[result.__dict__ for result in results],
    )


def summarize_groups(results: list[PhaseResult]) -> list[Summary]:
    """Group results by label and concurrency, in the order of their first result, and
    summarize each group."""
    groups: dict[tuple[str, int], list[PhaseResult]] = {}
    for result in results:
        groups.setdefault((result.label, result.concurrency), []).append(result)
    return [summarize(group) for group in groups.values()]


def optional(value: float | None, template: str) -> str:
    return "–" if value is None else template.format(value)


def format_latency_table(summaries: list[Summary]) -> str:
    """Format the summaries as a Markdown table, with each gateway phase compared with direct
    calls at the same concurrency."""
    direct = {summary.concurrency: summary for summary in summaries if summary.mode == "direct"}
    header = (
        "| phase | conc. | calls/s | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | added p99.9 ms "
        "| throughput vs direct | denied replies | gateway CPU µs/call | of which writer thread | upstream CPU µs/call "
        "| wrk CPU µs/call | machine busy | fdatasync ms |"
    )
    lines = [header, "|" + " --- |" * 17]
    for summary in summaries:
        base = direct.get(summary.concurrency)
        if summary.mode == "direct" or base is None:
            added = ["–", "–", "–"]
            ratio = "–"
        else:
            added = [
                f"{(summary.p50_us - base.p50_us) / 1000:+.3f}",
                f"{(summary.p99_us - base.p99_us) / 1000:+.3f}",
                f"{(summary.p999_us - base.p999_us) / 1000:+.3f}",
            ]
            ratio = f"{summary.calls_per_second / base.calls_per_second:.2f}"
        sync_ms = None if summary.fdatasync_seconds is None else summary.fdatasync_seconds * 1000
        lines.append(
            f"| {summary.label} | {summary.concurrency} | {summary.calls_per_second:,.0f} "
            f"| {summary.p50_us / 1000:.3f} | {summary.p99_us / 1000:.3f} | {summary.p999_us / 1000:.3f} "
            f"| {' | '.join(added)} | {ratio} | {summary.denied_fraction:.0%} "
            f"| {optional(summary.gateway_cpu_us_per_call, '{:.0f}')} | {optional(summary.writer_cpu_us_per_call, '{:.0f}')} "
            f"| {summary.upstream_cpu_us_per_call:.0f} | {summary.client_cpu_us_per_call:.0f} "
            f"| {summary.machine_busy_fraction:.0%} | {optional(sync_ms, '{:.2f}')} |"
        )
    return "\n".join(lines)


def format_scaling_table(summaries: list[Summary], size_name: str) -> str:
    """Format scaling summaries as a Markdown table, with each size's throughput relative to
    the smallest size."""
    header = (
        f"| {size_name} | conc. | calls/s | calls/s per round | vs smallest | p50 ms | p99 ms | p99.9 ms "
        "| gateway CPU µs/call | machine busy |"
    )
    lines = [header, "|" + " --- |" * 10]
    smallest = min(summaries, key=lambda summary: summary.size or 0)
    for summary in sorted(summaries, key=lambda summary: summary.size or 0):
        per_round = ", ".join(f"{entry['calls'] / entry['seconds']:,.0f}" for entry in summary.rounds)
        lines.append(
            f"| {summary.size:,} | {summary.concurrency} | {summary.calls_per_second:,.0f} | {per_round} "
            f"| {summary.calls_per_second / smallest.calls_per_second:.2f} | {summary.p50_us / 1000:.3f} "
            f"| {summary.p99_us / 1000:.3f} | {summary.p999_us / 1000:.3f} "
            f"| {optional(summary.gateway_cpu_us_per_call, '{:.0f}')} | {summary.machine_busy_fraction:.0%} |"
        )
    return "\n".join(lines)
