"""What machine the figures were measured on, and who used its CPUs meanwhile."""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PACKAGES = (
    "fxchat",
    "pyramid",
    "cornice",
    "colander",
    "SQLAlchemy",
    "psycopg",
    "gunicorn",
    "WebOb",
    "pyramid_tm",
    "zope.sqlalchemy",
    "cryptography",
    "matplotlib",
)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_gib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    return 0.0


def tool_version(command: list[str]) -> str:
    if shutil.which(command[0]) is None:
        return "not installed"
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return ((out.stdout or out.stderr).strip().splitlines() or ["unknown"])[0]


def code_version(root: Path) -> dict:
    """The commit measured, and the files of fxchat/ that differ from it."""

    def git(*args: str) -> str:
        try:
            out = subprocess.run(
                ["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return out.stdout.strip()

    changed = [
        line.split(maxsplit=1)[1]
        for line in git("status", "--porcelain", "--", "fxchat").splitlines()
        if line.strip()
    ]
    return {
        "commit": git("rev-parse", "--short", "HEAD") or "unknown",
        "uncommitted_fxchat_files": changed,
    }


def describe() -> dict:
    """CPU count and model, memory, OS, and the versions of everything measured."""
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        versions["openssl"] = backend.openssl_version_text()
    except Exception:  # only informative
        versions["openssl"] = "unknown"
    versions["wrk"] = tool_version(["wrk", "-v"])
    return {
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "memory_gib": memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "distribution": _os_release(),
        "python_executable": sys.executable,
        "versions": versions,
        "loadavg_at_start": load_average(),
    }


def cpu_probe_ms(tries: int = 3) -> float:
    """This thread's CPU time for a fixed piece of Python work: the best of ``tries``, in ms.

    The virtual CPUs' speed changes within seconds, on an idle machine too
    (on 2026-12-04, this loop took 22 to 42 ms of CPU time every few seconds
    while nothing else ran), and neither the steal time nor the other
    processes' CPU shows it. Taken before and after every load run, it says
    how fast the CPUs were around that run. Its loop fits in the CPU's own
    caches, so it misses slowdowns that only larger working sets feel (a send
    can run slow between two full-speed probes: docs/performance.rst).
    """
    best = float("inf")
    for _ in range(tries):
        started = time.thread_time()
        table: dict[int, int] = {}
        for i in range(100_000):
            table[i & 1023] = i
        best = min(best, time.thread_time() - started)
    return round(best * 1000, 2)


def disk_sync_ms(directory: Path, count: int = 200) -> dict:
    """How long this disk takes to sync a small append, as a commit does: p50 and p99 in ms.

    The sends' rate and latency on SQLite and PostgreSQL follow it, and it
    differs between machines that look alike (the same virtual CPU and
    kernel), so the results state it with the CPUs.
    """
    took = []
    with tempfile.TemporaryFile(dir=directory) as file:
        block = b"\0" * 4096
        for _ in range(count):
            started = time.perf_counter()
            file.write(block)
            file.flush()
            os.fdatasync(file.fileno())
            took.append((time.perf_counter() - started) * 1000)
    cuts = statistics.quantiles(took, n=100)
    return {"count": count, "p50": round(cuts[49], 3), "p99": round(cuts[98], 3)}


def _os_release() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return "unknown"


def load_average() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def _busy_ticks() -> tuple[int, int]:
    """All CPUs' busy time since boot, in clock ticks (not idle, not iowait), and of it the
    time the hypervisor gave to other machines (steal)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return user + nice + system + irq + softirq + steal, steal


def _process_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    # utime, stime, cutime, cstime: fields 14-17 of stat(5), here 11-14.
    return sum(int(x) for x in fields[11:15])


def _tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        try:
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            children = []
        queue.extend(int(child) for child in children)
    return pids


def _postgres_ticks() -> dict[int, int]:
    ticks = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    ticks[int(entry.name)] = _process_ticks(int(entry.name))
            except OSError:
                continue
    return ticks


class CpuMeter:
    """CPU used during a run: by the server's processes, and by the whole machine.

    ``other_cores`` (machine minus server minus load generator) tells whether
    something else competed for the CPUs during the run; ``steal_cores``, the
    part of it the hypervisor took for other virtual machines.
    """

    def __init__(self, server_pid: int | None):
        self.server_pid = server_pid
        self.pids = _tree(server_pid) if server_pid else []
        self.start_busy, self.start_steal = _busy_ticks()
        self.start_server = sum(_process_ticks(pid) for pid in self.pids)
        self.start_postgres = _postgres_ticks()
        self.started = os.times().elapsed

    def stop(self, load_generator_cpu_s: float = 0.0) -> dict:
        elapsed = os.times().elapsed - self.started
        pids = set(self.pids) | set(_tree(self.server_pid) if self.server_pid else [])
        server = (sum(_process_ticks(pid) for pid in pids) - self.start_server) / CLOCK_TICKS
        busy_ticks, steal_ticks = _busy_ticks()
        busy = (busy_ticks - self.start_busy) / CLOCK_TICKS
        steal = (steal_ticks - self.start_steal) / CLOCK_TICKS
        postgres = (
            sum(ticks - self.start_postgres.get(pid, 0) for pid, ticks in _postgres_ticks().items())
            / CLOCK_TICKS
        )
        if elapsed <= 0:
            return {}
        other = busy - server - postgres - load_generator_cpu_s
        return {
            "server_cores": round(server / elapsed, 2),
            "postgresql_cores": round(postgres / elapsed, 2),
            "load_generator_cores": round(load_generator_cpu_s / elapsed, 2),
            "other_cores": round(max(0.0, other) / elapsed, 2),
            "steal_cores": round(steal / elapsed, 2),
        }
