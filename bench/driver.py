"""``python -m bench run``: every measurement of docs/performance.rst, in one bounded run.

The plans (how long, how many) and the run as a whole; the scenarios
themselves are in :mod:`bench.scenarios`.

For each database (a fresh SQLite file, a fresh PostgreSQL database) it
starts the real server (gunicorn workers) and measures, with wrk on
loopback: sends at several concurrencies, sends to 4 devices, fan-out to
1/10/100 devices with the bytes stored, draining a queue, the flat cost of
fetch and send beside 1k and 1M queued copies, and a 1M-copy purge under
load. The bare Pyramid baseline runs on the same stack and worker count.
Results go to bench/results/ (summary JSON and table); raw outputs to
bench/results/raw/<run>/ (git-ignored).
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from fxchat.settings import load_settings

from . import cryptobench, machine
from .scenarios import DatabaseRun, log, measure_baseline
from .servers import (
    BENCH_SETTINGS,
    ROOT,
    DatabaseUnavailable,
    WorkerModel,
    postgresql_available,
)

RESULTS = ROOT / "bench" / "results"
# What ``--only`` can choose from; a full run measures them all.
SCENARIOS = frozenset(
    ("baseline", "send", "send4", "fanout", "profile", "drain", "flat", "purge", "crypto")
)


@dataclasses.dataclass(frozen=True)
class Plan:
    """How much of everything: ``full`` for the published figures, ``smoke`` for CI."""

    name: str
    concurrencies: tuple[int, ...]
    run_s: float  # one load point
    long_run_s: float  # the points the targets are about (concurrency 1 and 8)
    # The points of the rate targets (send c1 and c8, send to 4 devices) are
    # measured this many times, alternating with the bare view, and the
    # median round is the figure: this machine's speed drifts by a third
    # within minutes, and one run would give whichever moment it met.
    rounds: int
    # At this concurrency each send round also serves the same requests
    # through bench.floor's two apps (the send's own work in a bare view, and
    # one row per body).
    floor_concurrency: int
    send_pairs: int
    four_device_pairs: int
    fanouts: tuple[int, ...]
    fanout_run_s: float
    drain_devices: int
    drain_copies: int  # per device; at most the queue limit (10,000)
    flat_devices: int
    flat_small: int  # copies queued across other devices, small case
    flat_large: int  # and large case
    flat_fanout: int
    purge_copies: int
    purge_max_s: float
    crypto_s: float
    profile_s: float
    in_process_sends: int  # timed in a loop without gunicorn, beside the served figures
    sqlite_normal_variant: bool

    def as_json(self) -> dict:
        return dataclasses.asdict(self)


FULL = Plan(
    name="full",
    concurrencies=(1, 2, 4, 8, 16),
    run_s=5,
    long_run_s=6,
    rounds=3,
    floor_concurrency=8,
    send_pairs=32,
    four_device_pairs=16,
    fanouts=(1, 10, 100),
    fanout_run_s=6,
    drain_devices=3,
    drain_copies=10_000,
    flat_devices=1000,
    flat_small=1_000,
    flat_large=1_000_000,
    flat_fanout=10,
    purge_copies=1_000_000,
    # The target is 60 s; past 70 the run stops the purge and records how far
    # it got, which keeps `make bench` under 15 minutes on a slow machine.
    purge_max_s=70,
    crypto_s=2.0,
    profile_s=8,
    in_process_sends=1000,
    sqlite_normal_variant=True,
)
SMOKE = Plan(
    name="smoke",
    concurrencies=(1, 2),
    run_s=1,
    long_run_s=1,
    rounds=2,
    floor_concurrency=1,
    send_pairs=2,
    four_device_pairs=2,
    fanouts=(1, 10),
    fanout_run_s=1,
    drain_devices=2,
    drain_copies=20,
    flat_devices=10,
    flat_small=10,
    flat_large=100,
    flat_fanout=10,
    purge_copies=100,
    purge_max_s=60,
    crypto_s=0.05,
    profile_s=0,
    in_process_sends=5,
    sqlite_normal_variant=False,
)


def run(
    plan: Plan,
    *,
    databases: tuple[str, ...],
    output: Path | None,
    raw_root: Path | None = None,
    model: WorkerModel | None = None,
    crypto: bool = True,
    only: frozenset[str] = SCENARIOS,
) -> dict:
    model = model or WorkerModel.default()
    started = time.monotonic()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    raw = (raw_root or RESULTS / "raw") / f"{stamp}-{plan.name}"
    raw.mkdir(parents=True, exist_ok=True)
    results: dict = {
        "schema": 1,
        "plan": plan.as_json(),
        "started_at": stamp,
        "machine": {**machine.describe(), "disk_sync_ms": machine.disk_sync_ms(raw)},
        # What code was measured: the commit, and fxchat files changed since.
        "code": machine.code_version(ROOT),
        "worker_model": {**model.as_json(), "description": model.describe()},
        "settings": BENCH_SETTINGS,
        # Every fxchat setting as the benchmarked servers had it.
        "fxchat_settings": dataclasses.asdict(load_settings(BENCH_SETTINGS)),
        "raw_dir": str(raw.relative_to(ROOT)) if raw.is_relative_to(ROOT) else str(raw),
        "databases": {},
        "skipped": {},
    }
    log(
        f"{plan.name} run on {results['machine']['cpu_count']} CPUs "
        f"({results['machine']['cpu_model']}), {model.describe()}, raw output in {raw}"
    )
    if "baseline" in only:
        results["baseline"] = measure_baseline(plan, model, raw)
    for kind in databases:
        if kind == "postgresql":
            why = postgresql_available()
            if why:
                log(f"skipping PostgreSQL: {why}")
                results["skipped"]["postgresql"] = why
                continue
        try:
            results["databases"][kind] = DatabaseRun(kind, plan, model, raw, only).run()
        except DatabaseUnavailable as error:
            results["skipped"][kind] = str(error)
    if crypto and "crypto" in only:
        log("crypto: fxchat-1 encrypt/decrypt beside raw X25519")
        results["crypto"] = cryptobench.measure_in_subprocess(plan.crypto_s)
    results["elapsed_s"] = round(time.monotonic() - started, 1)
    at_end = machine.code_version(ROOT)
    if at_end != results["code"]:
        # Someone edited fxchat/ during the run: servers started at different
        # times may have measured different code.
        results["code"]["changed_during_run"] = at_end
    results["machine"]["loadavg_at_end"] = machine.load_average()
    (raw / "results.json").write_text(json.dumps(results, indent=1))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1) + "\n")
    return results
