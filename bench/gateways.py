"""Gateway processes that the benchmark starts, each with a DATA_DIR of its own, and their
resident memory over their whole life."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass

from calls import BenchError, require_loopback
from measure import memory_status

# A gateway importing a large policy compiles it before it listens.
READY_TIMEOUT_SECONDS = 60
MEMORY_SAMPLE_SECONDS = 0.2
# `mcpsec serve` gives its outbox consumers up to 10 s to finish after SIGTERM.
STOP_TIMEOUT_SECONDS = 15
READY_LINE = re.compile(r"^mcpsec: listening on (http://\S+)", re.MULTILINE)
# Variables passed on from the benchmark's environment to the gateways. Every other variable is
# left out, so that a SIEM_URL, ALERT_WEBHOOK_URL, UPSTREAMS_FILE or AWS store setting in the
# shell can neither change what is measured nor send traffic off the machine.
PASSED_VARIABLES = ("LOG_LEVEL", "LOG_FORMAT", "AUDIT_WRITES", "AUDIT_TOOL_INPUT", "CACHE_TTL")


@dataclass
class MemoryReport:
    """Resident memory of one gateway process, in bytes, and how long it took to start."""

    gateway: str
    start_seconds: float
    rss_after_start: int
    peak_sampled_rss: int
    rss_at_end: int
    hwm: int


class Gateway:
    """One `mcpsec serve` process on 127.0.0.1 in front of the benchmark's upstream.

    Its files go into `folder`: DATA_DIR is `folder/data`, standard output `folder/stdout.txt`
    and the log `folder/gateway.log`. A thread samples its VmRSS every MEMORY_SAMPLE_SECONDS
    from start to stop.
    """

    def __init__(self, name: str, binary: str, folder: str, upstream_url: str, policy_file: str, keys_file: str):
        self.name = name
        self.binary = binary
        self.folder = os.path.abspath(folder)
        self.data_dir = os.path.join(self.folder, "data")
        self.upstream_url = upstream_url
        self.policy_file = os.path.abspath(policy_file)
        self.keys_file = os.path.abspath(keys_file)
        self.process: subprocess.Popen | None = None
        self.url = ""
        self.start_seconds = 0.0
        self.rss_after_start = 0
        self.peak_rss = 0
        self.phase_peak_rss = 0
        self.stopped = threading.Event()
        self.sampler = threading.Thread(target=self._sample_until_stopped, daemon=True)

    @property
    def pid(self) -> int:
        if self.process is None:
            raise BenchError(f"gateway {self.name} has not been started")
        return self.process.pid

    @property
    def log_path(self) -> str:
        return os.path.join(self.folder, "gateway.log")

    def start(self) -> None:
        """Start the process and wait until it prints the address it listens on."""
        os.makedirs(self.folder, exist_ok=True)
        environment = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOST": "127.0.0.1",
            "PORT": "0",
            "DATA_DIR": self.data_dir,
            "TOOL_SERVER_URL": self.upstream_url,
            "MODEL_KEYS_FILE": self.keys_file,
            "POLICY_FILE": self.policy_file,
        }
        environment.update({name: os.environ[name] for name in PASSED_VARIABLES if name in os.environ})
        stdout_path = os.path.join(self.folder, "stdout.txt")
        started = time.monotonic()
        with open(stdout_path, "w") as stdout_file, open(self.log_path, "w") as log_file:
            self.process = subprocess.Popen(
                [self.binary, "serve"], stdin=subprocess.DEVNULL, stdout=stdout_file, stderr=log_file,
                env=environment, cwd=self.folder,
            )
        self.url = self._wait_until_ready(stdout_path, started)
        require_loopback(self.url + "/")
        self.start_seconds = time.monotonic() - started
        self.rss_after_start = memory_status(self.pid)["VmRSS"]
        self.sampler.start()

    def _wait_until_ready(self, stdout_path: str, started: float) -> str:
        while time.monotonic() - started < READY_TIMEOUT_SECONDS:
            with open(stdout_path) as stdout_file:
                match = READY_LINE.search(stdout_file.read())
            if match:
                return match.group(1).rstrip("/")
            if self.process is not None and self.process.poll() is not None:
                raise BenchError(f"gateway {self.name} exited with {self.process.returncode} before it listened: {self._log_tail()}")
            time.sleep(0.05)
        raise BenchError(f"gateway {self.name} printed no `listening on` line within {READY_TIMEOUT_SECONDS} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as log_file:
                return log_file.read()[-2000:].strip() or "(empty log)"
        except OSError as error:
            return f"(log unreadable: {error})"

    def _sample_until_stopped(self) -> None:
        while not self.stopped.is_set():
            self.sample()
            self.stopped.wait(MEMORY_SAMPLE_SECONDS)

    def sample(self) -> None:
        """Read VmRSS once and raise the peaks."""
        try:
            rss = memory_status(self.pid)["VmRSS"]
        except (OSError, KeyError):
            return
        self.peak_rss = max(self.peak_rss, rss)
        self.phase_peak_rss = max(self.phase_peak_rss, rss)

    def begin_phase(self) -> None:
        """Restart the per-phase peak of VmRSS."""
        self.phase_peak_rss = 0
        self.sample()

    def check_running(self) -> None:
        """Raise BenchError when the process has exited."""
        if self.process is None or self.process.poll() is not None:
            code = None if self.process is None else self.process.returncode
            raise BenchError(f"gateway {self.name} exited with {code} during the benchmark: {self._log_tail()}")

    def stop(self) -> MemoryReport:
        """Read the final memory figures, then stop the process with SIGTERM."""
        self.check_running()
        self.sample()
        final = memory_status(self.pid)
        self.close()
        return MemoryReport(
            gateway=self.name,
            start_seconds=self.start_seconds,
            rss_after_start=self.rss_after_start,
            peak_sampled_rss=max(self.peak_rss, final["VmRSS"]),
            rss_at_end=final["VmRSS"],
            hwm=final["VmHWM"],
        )

    def close(self) -> None:
        """Stop the sampler and the process, with SIGKILL when SIGTERM is not enough."""
        self.stopped.set()
        if self.sampler.is_alive():
            self.sampler.join()
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
