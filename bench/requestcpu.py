"""The CPU that requests took in their own worker thread, from fxchat's access log.

Every access-log line carries ``cpu_ms``: the thread CPU time of that
request, from the middleware's first line to its last. Beside the CPU of the
whole worker processes (:class:`bench.machine.CpuMeter`), it splits what a
request costs between fxchat's own code (Pyramid, Cornice, validation, the
SQL calls) and what surrounds it in the worker: gunicorn's HTTP parsing and
loop, the sockets, and the handing of each request between threads.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

ACCESS_LOGGER = "fxchat.access"


def log_offset(log: Path) -> int:
    """Where the log ends now: the next run's lines start there."""
    try:
        return log.stat().st_size
    except FileNotFoundError:
        return 0


def request_cpu_ms(log: Path, since: int) -> dict | None:
    """The ``cpu_ms`` of the successful requests logged after ``since``; None
    if there are none (the bare view's server, which has no access log)."""
    try:
        with log.open("rb") as f:
            f.seek(since)
            lines = f.read().splitlines()
    except FileNotFoundError:
        return None
    cpu = []
    for line in lines:
        try:
            record = json.loads(line)
        except ValueError:
            continue  # a line still being written when the run ended
        if (
            record.get("logger") == ACCESS_LOGGER
            and 200 <= record.get("status", 0) < 300
            and "cpu_ms" in record
        ):
            cpu.append(record["cpu_ms"])
    if not cpu:
        return None
    return {"requests": len(cpu), **summarize(cpu)}


def summarize(cpu_ms: list[float]) -> dict:
    """Mean and median of CPU samples in milliseconds, as the results give them."""
    return {
        "mean": round(statistics.fmean(cpu_ms), 3),
        "p50": round(statistics.median(cpu_ms), 3),
    }
