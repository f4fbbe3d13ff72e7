"""Runs of wrk (Debian package `wrk`) with bench/wrk.lua and the checks of what they report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
from dataclasses import dataclass

from calls import BenchError, require_loopback

WRK_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrk.lua")
# wrk.lua writes this line to stderr when a thread has received its maximum number of replies.
THREAD_DONE_LINE = "BENCH_THREAD_DONE"
# One wrk thread drives every connection, which keeps the client's CPU use low on a small machine.
WRK_THREADS = 1
# Time that wrk gets beyond its -d duration before it is killed.
WRK_GRACE_SECONDS = 30


@dataclass
class Load:
    """The calls of one wrk run: the route, the share of denied calls and the sessions.

    `mode` is `direct`, `rest` or `mcp`, as in wrk.lua. REST calls get a new session id each
    unless `session_count` is set, and then cycle over `session_prefix-session_first` onwards.
    MCP calls take their sessions from `sessions_file`.
    """

    mode: str
    url: str
    denied_percent: int = 0
    denied_rule: str | None = None
    session_prefix: str | None = None
    session_count: int | None = None
    session_first: int = 0
    sessions_file: str | None = None
    calls_per_session: int | None = None

    def script_arguments(self, model_key: str, max_replies: int) -> list[str]:
        """Return the KEY=VALUE arguments of wrk.lua for this load."""
        values = {
            "mode": self.mode,
            "max_replies": max_replies,
            "threads": WRK_THREADS,
            "model_key": None if self.mode == "direct" else model_key,
            "denied_percent": self.denied_percent,
            "denied_rule": self.denied_rule,
            "session_prefix": self.session_prefix,
            "session_count": self.session_count,
            "session_first": self.session_first,
            "sessions_file": self.sessions_file,
            "calls_per_session": self.calls_per_session,
        }
        return [f"{key}={value}" for key, value in values.items() if value is not None]


def run_wrk(load: Load, concurrency: int, duration: float, timeout: int, max_replies: int, model_key: str,
            stop_early: bool = False) -> dict:
    """Run wrk and return the JSON line that wrk.lua prints.

    With `stop_early`, wrk is sent SIGINT as soon as its thread has received `max_replies`
    replies, so `duration` is only a cap. wrk then reports the time it really ran.
    """
    require_loopback(load.url)
    seconds = max(1, round(duration))
    command = [
        "wrk", f"-t{WRK_THREADS}", f"-c{concurrency}", f"-d{seconds}s", f"--timeout={timeout}s",
        "-s", WRK_SCRIPT, load.url, "--", *load.script_arguments(model_key, max_replies),
    ]
    process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout_lines: list[str] = []
    stderr_lines: list[str] = []

    def read_stderr() -> None:
        threads_done = 0
        for line in process.stderr:
            if line.strip() != THREAD_DONE_LINE:
                stderr_lines.append(line)
                continue
            threads_done += 1
            if stop_early and threads_done == WRK_THREADS:
                process.send_signal(signal.SIGINT)

    readers = [
        threading.Thread(target=lambda: stdout_lines.extend(process.stdout), daemon=True),
        threading.Thread(target=read_stderr, daemon=True),
    ]
    for reader in readers:
        reader.start()
    try:
        process.wait(seconds + WRK_GRACE_SECONDS)
    except subprocess.TimeoutExpired as error:
        process.kill()
        process.wait()
        raise BenchError(f"wrk did not finish within {seconds + WRK_GRACE_SECONDS} s: {' '.join(command)}") from error
    finally:
        for reader in readers:
            reader.join()

    errors = "".join(stderr_lines).strip()
    for line in stdout_lines:
        if line.startswith("BENCH_RESULT "):
            result = json.loads(line.removeprefix("BENCH_RESULT "))
            break
    else:
        raise BenchError(f"wrk exited with {process.returncode} without a result line: {errors or ''.join(stdout_lines).strip()}")
    if process.returncode != 0:
        raise BenchError(f"wrk exited with {process.returncode}: {errors}")
    return result


def check_result(label: str, concurrency: int, load: Load, result: dict, max_replies: int, stop_early: bool = False) -> None:
    """Raise BenchError when a run had bad replies, socket errors, the wrong share of denied
    replies, or, for a timed phase, reached `max_replies`."""
    replies = result["requests"]
    where = f"{label} at concurrency {concurrency}"
    # wrk counts every reply with status 400 or more as a status error, and REST denials are 403.
    expected_status_errors = result["denied"] if load.mode == "rest" else 0
    errors = {name: count for name, count in result["errors"].items() if count and name != "status"}
    if result["errors"]["status"] != expected_status_errors:
        errors["status"] = result["errors"]["status"]
    if result["bad_replies"] or errors:
        raise BenchError(
            f"{where}: {result['bad_replies']} bad replies, socket or status errors {errors}; "
            f"first bad reply: {result['first_bad_reply']!r}"
        )
    if replies == 0:
        raise BenchError(f"{where}: no reply arrived")

    expected_denied = replies * load.denied_percent / 100
    # Calls still in flight when wrk stops are not counted, so a mixed share can miss by at
    # most one call per connection. A phase of one kind of call must match exactly.
    tolerance = 0 if load.denied_percent in (0, 100) else concurrency + 1
    if abs(result["denied"] - expected_denied) > tolerance:
        raise BenchError(
            f"{where}: {result['denied']} of {replies} replies were denials, expected {load.denied_percent}%; "
            "check the policy that the gateway loaded"
        )

    if stop_early and replies < max_replies:
        raise BenchError(f"{where}: only {replies} of {max_replies} replies arrived before the time cap; raise the cap")
    if not stop_early and replies >= max_replies:
        # wrk divides by the whole -d duration even when every thread stopped early.
        raise BenchError(
            f"{where}: reached --max-calls {max_replies} before the time cap, "
            "so its rate is not valid; raise --max-calls or lower --duration"
        )
