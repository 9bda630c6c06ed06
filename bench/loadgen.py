"""The load generator: ``wrk`` (C, event-driven) with the Lua scripts of bench/wrk/.

Each run is bounded by ``--duration`` (and ``--timeout``), targets a loopback
URL only, and reports through the ``BENCH_RESULT`` line of
``bench/wrk/common.lua``. Latencies are wrk's, which corrects for coordinated
omission (latencies over twice the mean interval add virtual samples), so
percentiles are on the conservative side.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from .servers import require_tool

WRK_DIR = Path(__file__).resolve().parent / "wrk"
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class WrkResult:
    name: str
    concurrency: int
    duration_s: float
    requests: int
    statuses: dict[str, int]
    counters: dict[str, int]
    errors: dict[str, int]
    latency_ms: dict[str, float]
    wrk_cpu_s: float
    raw: dict = field(repr=False, default_factory=dict)

    def ok(self, status: int) -> int:
        return self.statuses.get(str(status), 0)

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    def rate_of(self, status: int) -> float:
        return self.ok(status) / self.duration_s if self.duration_s else 0.0

    @property
    def failures(self) -> int:
        socket_errors = sum(v for k, v in self.errors.items() if k != "status")
        return self.errors.get("status", 0) + socket_errors

    def as_json(self) -> dict:
        return {
            "concurrency": self.concurrency,
            "duration_s": round(self.duration_s, 3),
            "requests": self.requests,
            "requests_per_s": round(self.rate, 1),
            "statuses": self.statuses,
            "errors": self.errors,
            "latency_ms": self.latency_ms,
            # The load generator's own CPU use, in cores: it shares the machine.
            "wrk_cpu_cores": round(self.wrk_cpu_s / self.duration_s, 3) if self.duration_s else 0,
            **({"counters": self.counters} if self.counters else {}),
        }


class WrkRun:
    """One wrk process; ``wait()`` for its result, or ``interrupt()`` it first."""

    def __init__(
        self,
        name: str,
        url: str,
        script: str,
        *,
        concurrency: int,
        duration_s: float,
        env: dict[str, str] | None = None,
        threads: int | None = None,
        log_dir: Path | None = None,
        timeout_s: int = 10,
    ):
        host = urlsplit(url).hostname
        if host not in LOOPBACK:
            raise ValueError(f"the benchmarks target loopback only, not {host}")
        self.name = name
        self.concurrency = concurrency
        threads = threads or min(concurrency, 2)
        self.log_dir = log_dir
        command = [
            require_tool("wrk"),
            "--threads",
            str(threads),
            "--connections",
            str(concurrency),
            "--duration",
            f"{max(1, round(duration_s))}s",
            "--timeout",
            f"{timeout_s}s",
            "--script",
            str(WRK_DIR / script),
            url,
        ]
        run_env = {**os.environ, "LUA_PATH": f"{WRK_DIR}/?.lua;;", **(env or {})}
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=run_env, text=True
        )

    def interrupt(self) -> None:
        """End the run now; wrk reports what it measured so far."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)

    def wait(self) -> WrkResult:
        # The CPU time of wrk itself, to show it is not the bottleneck: the
        # driver reaps no other child while it waits here.
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        try:
            stdout, stderr = self.process.communicate()
        except BaseException:
            # The run was stopped (Ctrl-C, SIGTERM): wrk stops now, not at
            # the end of its duration against a server that is going away.
            self.process.kill()
            self.process.wait()
            raise
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if self.log_dir is not None:
            (self.log_dir / f"wrk-{self.name}.out").write_text(stdout + "\n--- stderr\n" + stderr)
        line = next(
            (line for line in stdout.splitlines() if line.startswith("BENCH_RESULT ")), None
        )
        if line is None:
            raise RuntimeError(f"wrk {self.name} gave no result:\n{stdout}\n{stderr}")
        raw = json.loads(line[len("BENCH_RESULT ") :])
        latency = raw["latency_us"]
        latency_ms = {f"p{k}": round(v / 1000, 3) for k, v in latency["percentiles"].items()}
        latency_ms.update(
            mean=round(latency["mean"] / 1000, 3), max=round(latency["max"] / 1000, 3)
        )
        return WrkResult(
            name=self.name,
            concurrency=self.concurrency,
            duration_s=raw["duration_us"] / 1e6,
            requests=raw["requests"],
            statuses=raw.get("statuses") or {},
            counters=raw.get("counters") or {},
            errors=raw.get("errors") or {},
            latency_ms=latency_ms,
            wrk_cpu_s=cpu,
            raw=raw,
        )


def run(name: str, url: str, script: str, **kw) -> WrkResult:
    """Run wrk to completion (its --duration, or until the script stops it)."""
    return WrkRun(name, url, script, **kw).wait()
