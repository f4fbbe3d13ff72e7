"""Readings from /proc and the file system that the benchmark takes around each phase."""

from __future__ import annotations

import os
import statistics
import tempfile
import time

CLOCK_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
# Appends with fdatasync that probe the disk's sync latency before each phase.
FSYNC_PROBE_WRITES = 20


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


def machine_ticks() -> tuple[int, int]:
    """Return (busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as stat_file:
        values = [int(value) for value in stat_file.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def memory_status(pid: int) -> dict[str, int]:
    """Return VmRSS and VmHWM (the peak of VmRSS over the process's life) of process `pid`,
    in bytes."""
    result = {}
    with open(f"/proc/{pid}/status") as status_file:
        for line in status_file:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                result[name] = int(value.split()[0]) * 1024
    return result


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


def count_lines(path: str) -> int:
    """Return the number of newline characters in the file at `path`."""
    count = 0
    with open(path, "rb") as log_file:
        while chunk := log_file.read(1 << 20):
            count += chunk.count(b"\n")
    return count
