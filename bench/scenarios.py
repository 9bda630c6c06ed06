"""The scenarios of a benchmark run, against one server and one database at a time.

:func:`measure_baseline` serves the bare Pyramid view; :class:`DatabaseRun`
does everything else for one database kind, in two phases: a fresh
database for the request-rate figures, and a second one into which the
1k/1M queued copies are bulk-loaded for the flat-cost and purge figures.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from fxchat.purger import PACES
from fxchat.settings import Settings

from . import bulkload, floor, loadgen, machine, profiling, requestcpu, storage
from .population import MESSAGE_BYTES, Device, Population, send_body, write_rows
from .servers import ROOT, Database, Server, WorkerModel
from .summary import ok_rate

if TYPE_CHECKING:
    from .driver import Plan

DAY_MS = 24 * 60 * 60 * 1000
# Fan-out sends go to this many groups in turn: up to 4 x 10,000 sends per run
# before any member's queue is full.
FANOUT_GROUPS = 4


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def now_ms() -> int:
    return int(time.time() * 1000)


class Measurements:
    """The runs against one server: wrk runs with the CPU use of everyone meanwhile."""

    def __init__(self, server: Server, raw: Path, label: str):
        self.server = server
        self.raw = raw
        self.label = label
        self.nonce = secrets.token_hex(4)

    def wrk(
        self,
        name: str,
        script: str,
        *,
        concurrency: int,
        duration_s: float,
        env: dict[str, str] | None = None,
        path: str = "",
    ) -> dict:
        probe_before = machine.cpu_probe_ms()
        meter = machine.CpuMeter(self.server.process.pid)
        log_start = requestcpu.log_offset(self.server.log)
        commits_before = self.server.group_commits()
        result = loadgen.run(
            f"{self.label}-{name}",
            self.server.url + path,
            script,
            concurrency=concurrency,
            duration_s=duration_s,
            env={"BENCH_KEY_PREFIX": f"{self.nonce}-{name}", **(env or {})},
            log_dir=self.raw,
        )
        summary = result.as_json()
        summary["cpu"] = meter.stop(result.wrk_cpu_s)
        summary["cpu_probe_ms"] = {"before": probe_before, "after": machine.cpu_probe_ms()}
        request_cpu = requestcpu.request_cpu_ms(self.server.log, log_start)
        if request_cpu:
            summary["request_thread_cpu_ms"] = request_cpu
        commits_after = self.server.group_commits()
        if commits_before and commits_after:
            # SQLite: how many commits each sync of the WAL covered.
            commits, syncs = (a - b for a, b in zip(commits_after, commits_before, strict=True))
            summary["group_commit"] = {"commits": commits, "syncs": syncs}
        log(
            f"{self.label} {name}: {summary['requests_per_s']}/s, p50 "
            f"{summary['latency_ms']['p50']} ms, p99 {summary['latency_ms']['p99']} ms, "
            f"statuses {summary['statuses']}, cpu {summary['cpu']}, "
            f"probe {summary['cpu_probe_ms']}"
        )
        return summary


# -- the bare baseline --------------------------------------------------------


def measure_baseline(plan: Plan, model: WorkerModel, raw: Path) -> dict:
    log("baseline: bare Pyramid view on the same stack")
    points = []
    with Server.baseline(raw, model) as server:
        runs = Measurements(server, raw, "baseline")
        for concurrency in plan.concurrencies:
            duration = plan.long_run_s if concurrency in (1, 8) else plan.run_s
            points.append(
                runs.wrk(
                    f"bare-c{concurrency}",
                    "get.lua",
                    concurrency=concurrency,
                    duration_s=duration,
                    env={"BENCH_PATH": "/bare"},
                    path="/bare",
                )
            )
    return {"path": "/bare", "points": points}


# -- one database -------------------------------------------------------------


class DatabaseRun:
    def __init__(self, kind: str, plan: Plan, model: WorkerModel, raw: Path, only: frozenset[str]):
        self.only = only
        self.kind = kind
        self.plan = plan
        self.model = model
        self.raw = raw / kind
        self.raw.mkdir(parents=True, exist_ok=True)
        self.results: dict = {"kind": kind}

    def run(self) -> dict:
        self.phase_fresh()
        self.phase_large()
        return self.results

    # Phase A: a fresh database, the request-rate figures.
    def wants(self, *scenarios: str) -> bool:
        return any(scenario in self.only for scenario in scenarios)

    def phase_fresh(self) -> None:
        plan = self.plan
        if not self.wants("send", "send4", "fanout", "profile", "drain"):
            return
        database = Database.create(self.kind, self.raw)
        self.results["server_version"] = database.server_version()
        try:
            with Server.fxchat(self.raw, database, self.model) as server:
                runs = Measurements(server, self.raw, self.kind)
                population = Population(server.url)
                log(f"{self.kind}: creating accounts and devices")
                send_rows = self.send_pairs(population, plan.send_pairs, "send-1.tsv")
                self.results["noop"] = runs.wrk(
                    "noop-c8",
                    "get.lua",
                    concurrency=8,
                    duration_s=plan.run_s,
                    env={"BENCH_PATH": "/__lbheartbeat__"},
                    path="/__lbheartbeat__",
                )
                if self.wants("send", "send4"):
                    # The bare view serves beside fxchat, so that the rate
                    # targets' rounds alternate between the two.
                    with Server.baseline(self.raw, self.model) as bare_server:
                        bare = Measurements(bare_server, self.raw, f"{self.kind}-bare")
                        if self.wants("send"):
                            self.results["send"] = self.send_sweep(
                                runs, send_rows, plan.concurrencies, bare=bare, database=database
                            )
                        if self.wants("send4"):
                            self.results["send_4_devices"] = self.send_to_four(
                                runs, population, bare
                            )
                group_sender = population.user("group-sender")[0]
                if self.wants("fanout"):
                    self.results["fanout"] = self.fanout(runs, database, population, group_sender)
                if self.wants("profile"):
                    profile = self.profile(server, runs, send_rows) if plan.profile_s else {}
                    profile["statement_count"] = profiling.count_statements(database.url)
                    profile["in_process_cpu_ms"] = profiling.in_process_cpu_ms(
                        database.url, sends=plan.in_process_sends
                    )
                    self.results["profile"] = profile
                if self.wants("drain"):
                    drainers = [population.user("drainer")[0] for _ in range(plan.drain_devices)]
                    self.results["drain"] = self.drain(runs, database, group_sender, drainers)
        finally:
            database.drop()
        if self.kind == "sqlite" and self.wants("send") and plan.sqlite_normal_variant:
            self.results["send_synchronous_normal"] = self.sqlite_normal()

    def send_pairs(self, population: Population, count: int, name: str) -> Path:
        """``count`` sender/recipient pairs, one prepared send body each."""
        pairs = [
            (population.user("sender")[0], population.user("recipient")[0]) for _ in range(count)
        ]
        return write_rows(self.raw / name, [(s.token, send_body([r])) for s, r in pairs])

    def send_sweep(
        self,
        runs: Measurements,
        rows: Path,
        concurrencies,
        bare: Measurements | None = None,
        database: Database | None = None,
    ) -> dict:
        """Sends at each concurrency; with ``database``, bench.floor's apps in the rounds at
        ``plan.floor_concurrency``."""
        points = []
        for concurrency in concurrencies:
            if concurrency in (1, 8) and bare is not None:
                name = f"send-c{concurrency}"
                if database is None or concurrency != self.plan.floor_concurrency:
                    points.append(self.rounds(runs, bare, name, rows, concurrency))
                    continue
                floor.create_rows_table(database.url)
                with (
                    Server.floor(self.raw, database, self.model) as floor_server,
                    Server.floor(self.raw, database, self.model, "one_row") as row_server,
                ):
                    beside = {
                        "floor": Measurements(floor_server, self.raw, f"{self.kind}-floor"),
                        "one_row": Measurements(row_server, self.raw, f"{self.kind}-one-row"),
                    }
                    points.append(self.rounds(runs, bare, name, rows, concurrency, beside))
                continue
            duration = self.plan.long_run_s if concurrency in (1, 8) else self.plan.run_s
            points.append(
                runs.wrk(
                    f"send-c{concurrency}",
                    "send.lua",
                    concurrency=concurrency,
                    duration_s=duration,
                    env={"BENCH_DATA": str(rows)},
                )
            )
        return {
            "recipient_devices": 1,
            "message_bytes": MESSAGE_BYTES,
            "idempotency_key": True,
            "points": points,
        }

    def send_to_four(self, runs: Measurements, population: Population, bare) -> dict:
        four = [
            (population.user("sender4")[0], population.user("recipient4", 4))
            for _ in range(self.plan.four_device_pairs)
        ]
        rows = write_rows(self.raw / "send-4.tsv", [(s.token, send_body(r)) for s, r in four])
        point = self.rounds(runs, bare, "send4-c8", rows, 8)
        point["device_copies_per_s"] = round(4 * ok_rate(point, 201), 1)
        return point

    def rounds(
        self,
        runs: Measurements,
        bare: Measurements,
        name: str,
        rows: Path,
        concurrency: int,
        beside: dict[str, Measurements] | None = None,
    ) -> dict:
        """The median of ``plan.rounds`` runs, each after a run of the bare view at the same
        concurrency; the ratio to the bare view is the median of the rounds' ratios.

        ``beside`` (bench.floor's apps, by name) get the same requests in each
        round, after fxchat's run, and their figures under their names: how
        near the bare view a send could come were fxchat's layers free."""
        beside = beside or {}
        rounds, bare_rounds = [], []
        beside_rounds: dict[str, list[dict]] = {app: [] for app in beside}
        for n in range(self.plan.rounds):
            bare_rounds.append(
                bare.wrk(
                    f"bare-c{concurrency}-before-{name}-{n}",
                    "get.lua",
                    concurrency=concurrency,
                    duration_s=self.plan.run_s,
                    env={"BENCH_PATH": "/bare"},
                    path="/bare",
                )
            )
            rounds.append(
                runs.wrk(
                    f"{name}-{n}",
                    "send.lua",
                    concurrency=concurrency,
                    duration_s=self.plan.long_run_s,
                    env={"BENCH_DATA": str(rows)},
                )
            )
            for app, measurements in beside.items():
                beside_rounds[app].append(
                    measurements.wrk(
                        f"{name}-{app}-{n}",
                        "send.lua",
                        concurrency=concurrency,
                        duration_s=self.plan.run_s,
                        env={"BENCH_DATA": str(rows)},
                    )
                )
        point = {
            **_median_round(rounds, key=lambda run: ok_rate(run, 201)),
            "bare_rounds": bare_rounds,
            "ratio_to_bare": _median_ratio(rounds, bare_rounds),
        }
        for app, runs_of_app in beside_rounds.items():
            point[app] = {
                **_median_round(runs_of_app, key=lambda run: ok_rate(run, 201)),
                "ratio_to_bare": _median_ratio(runs_of_app, bare_rounds),
            }
        return point

    def sqlite_normal(self) -> dict:
        """Sends on SQLite with ``fxchat.sqlite_synchronous = normal``, for comparison."""
        database = Database.create(self.kind, self.raw)
        try:
            extra = {"fxchat.sqlite_synchronous": "normal"}
            with Server.fxchat(self.raw, database, self.model, extra) as server:
                runs = Measurements(server, self.raw, f"{self.kind}-normal")
                rows = self.send_pairs(Population(server.url), self.plan.send_pairs, "send-n.tsv")
                return {"settings": extra, **self.send_sweep(runs, rows, (1, 8))}
        finally:
            database.drop()

    def fanout(
        self, runs: Measurements, database: Database, population: Population, sender: Device
    ) -> dict:
        points = []
        for fanout in self.plan.fanouts:
            # Each level sends to groups of its own, in turn: one group would
            # fill its members' queues (10,000 copies by default) within the
            # run on a fast machine, and then every send is refused (409).
            groups = [
                [population.user(f"member{fanout}")[0] for _ in range(fanout)]
                for _ in range(FANOUT_GROUPS)
            ]
            rows = write_rows(
                self.raw / f"fanout-{fanout}.tsv",
                [(sender.token, send_body(group)) for group in groups],
            )
            before = storage.table_bytes(database)
            summary = runs.wrk(
                f"fanout-{fanout}",
                "send.lua",
                concurrency=1,
                duration_s=self.plan.fanout_run_s,
                env={"BENCH_DATA": str(rows)},
            )
            grown = storage.growth(before, storage.table_bytes(database))
            sent = summary["statuses"].get("201", 0)
            summary.update(
                fanout=fanout,
                sends=sent,
                ms_per_send=round(1000 * summary["duration_s"] / max(1, summary["requests"]), 3),
                bytes_grown=grown,
                copies_bytes_per_copy=round(grown["copies"] / max(1, sent * fanout), 1),
                message_bytes_per_send=round(
                    (grown["messages"] + grown["bodies"] + grown["idempotency_keys"])
                    / max(1, sent),
                    1,
                ),
                total_bytes_per_copy=round(sum(grown.values()) / max(1, sent * fanout), 1),
            )
            points.append(summary)
        return {
            "recipients": f"one device each of N users (a group); {FANOUT_GROUPS} groups in turn",
            "wrapped_key_bytes": bulkload.WRAPPED_KEY_BYTES,
            "points": points,
        }

    def profile(self, server: Server, runs: Measurements, send_rows: Path) -> dict:
        output = self.raw / "profile-send-c1.txt"
        spy = profiling.start_recording(server.process.pid, output, self.plan.profile_s)
        if spy is None:
            return {"error": "py-spy is not installed"}
        time.sleep(0.5)
        summary = runs.wrk(
            "send-c1-profiled",
            "send.lua",
            concurrency=1,
            duration_s=self.plan.profile_s - 1,
            env={"BENCH_DATA": str(send_rows)},
        )
        _, errors = spy.communicate(timeout=60)
        if not output.exists():
            return {"error": f"py-spy failed: {errors.strip()[-500:]}"}
        return {"run": summary, **profiling.summarize(output)}

    def drain(
        self, runs: Measurements, database: Database, sender: Device, drainers: list[Device]
    ) -> dict:
        loader = bulkload.Loader(database)
        try:
            now = now_ms()
            load = loader.load_queues(
                loader.sender(sender.device_id),
                loader.device_pks([d.device_id for d in drainers]),
                copies_per_device=self.plan.drain_copies,
                fanout=1,
                body_bytes=MESSAGE_BYTES + 28,
                sent_at=now,
                expires_at=now + DAY_MS,
            )
        finally:
            loader.close()
        rows = write_rows(self.raw / "drain.tsv", [(d.token,) for d in drainers])
        summary = runs.wrk(
            "drain",
            "drain.lua",
            concurrency=1,
            duration_s=120,
            env={"BENCH_DATA": str(rows), "BENCH_LIMIT": "500"},
        )
        counters = summary.get("counters", {})
        acked = counters.get("acked", 0)
        # The drain's own clock (drain.lua), from its first request to its
        # last response; wrk's duration only if it never got that far.
        drain_s = counters["drain_us"] / 1e6 if "drain_us" in counters else summary["duration_s"]
        summary.update(
            page_size=500,
            loaded=load,
            acked=acked,
            drain_s=round(drain_s, 3),
            messages_per_s=round(acked / drain_s, 1),
            complete=acked == load["copies"],
        )
        return summary

    # Phase B: another fresh database, then 1k and 1M queued copies elsewhere.
    def phase_large(self) -> None:
        if not self.wants("flat", "purge"):
            return
        database = Database.create(self.kind, self.raw)
        try:
            with Server.fxchat(self.raw, database, self.model) as server:
                runs = Measurements(server, self.raw, f"{self.kind}-large")
                population = Population(server.url)
                send_rows = self.send_pairs(population, 8, "send-large.tsv")
                readers = [population.user("reader")[0] for _ in range(4)]
                reader_rows = write_rows(self.raw / "readers.tsv", [(d.token,) for d in readers])
                bulk_sender = population.user("bulk-sender")[0]
                loader = bulkload.Loader(database)
                try:
                    self.others = loader.add_devices(
                        self.plan.flat_devices, prefix=f"bulk-{runs.nonce}", now_ms=now_ms()
                    )
                    if self.wants("flat"):
                        self.results["flat"] = self.flat(
                            runs, loader, bulk_sender, readers, send_rows, reader_rows
                        )
                    if self.wants("purge"):
                        self.results["purge"] = self.purge(
                            runs, loader, database, server, bulk_sender, send_rows
                        )
                finally:
                    loader.close()
                self.results["invariants_after_purge"] = bulkload.check_invariants(database)
        finally:
            database.drop()

    def flat(self, runs, loader, bulk_sender, readers, send_rows, reader_rows) -> dict:
        plan = self.plan
        now = now_ms()
        sender = loader.sender(bulk_sender.device_id)
        # The readers' own queues: one page of 100 (the default page size).
        loader.load_queues(
            sender,
            loader.device_pks([d.device_id for d in readers]),
            copies_per_device=100,
            fanout=len(readers),
            body_bytes=MESSAGE_BYTES + 28,
            sent_at=now,
            expires_at=now + DAY_MS,
        )
        cases = {}
        queued = 0
        for label, target in (("small", plan.flat_small), ("large", plan.flat_large)):
            per_device = (target - queued) // plan.flat_devices
            load = loader.load_queues(
                sender,
                self.others,
                copies_per_device=per_device,
                fanout=plan.flat_fanout,
                body_bytes=MESSAGE_BYTES + 28,
                sent_at=now,
                expires_at=now + 7 * DAY_MS,
            )
            queued += load["copies"]
            log(f"{self.kind}: {queued} copies queued on other devices ({load})")
            # Rounds of fetches and sends in turn, the median round of each
            # kept: the CPUs' speed changes from one moment to the next
            # (``docs/performance.rst``), and the two sizes cannot alternate.
            fetches, sends = [], []
            for n in range(plan.rounds):
                fetches.append(
                    runs.wrk(
                        f"fetch-{label}-{n}",
                        "fetch.lua",
                        concurrency=1,
                        duration_s=plan.long_run_s,
                        env={"BENCH_DATA": str(reader_rows), "BENCH_LIMIT": "100"},
                    )
                )
                sends.append(
                    runs.wrk(
                        f"send-{label}-{n}",
                        "send.lua",
                        concurrency=1,
                        duration_s=plan.long_run_s,
                        env={"BENCH_DATA": str(send_rows)},
                    )
                )
            cases[label] = {
                "queued_elsewhere": queued,
                "load": load,
                "fetch": _median_round(fetches, key=_p50),
                "send": _median_round(sends, key=_p50),
            }
        ratios = {
            f"{what}_{stat}": round(
                cases["large"][what]["latency_ms"][stat] / cases["small"][what]["latency_ms"][stat],
                3,
            )
            for what in ("fetch", "send")
            for stat in ("p50", "p99")
        }
        return {"page_size": 100, **cases, "large_over_small": ratios}

    def purge(self, runs, loader, database, server, bulk_sender, send_rows) -> dict:
        plan = self.plan
        now = now_ms()
        # Expired longer ago than the receipt retention (7 days): the purge
        # both expires these copies and deletes them with their messages.
        expires_at = now - 8 * DAY_MS
        per_device = plan.purge_copies // plan.flat_devices
        load = loader.load_queues(
            loader.sender(bulk_sender.device_id),
            self.others,
            copies_per_device=per_device,
            fanout=plan.flat_fanout,
            body_bytes=MESSAGE_BYTES + 28,
            sent_at=expires_at - DAY_MS,
            expires_at=expires_at,
        )
        log(f"{self.kind}: {load['copies']} expired copies loaded ({load})")
        quiet = runs.wrk(
            "send-before-purge",
            "send.lua",
            concurrency=1,
            duration_s=plan.long_run_s,
            env={"BENCH_DATA": str(send_rows)},
        )
        probe_before = machine.cpu_probe_ms()
        meter = machine.CpuMeter(server.process.pid)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        purge_started = time.monotonic()
        purger = subprocess.Popen(
            [sys.executable, "-m", "bench.purge_run", str(server.ini)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        wrk = loadgen.WrkRun(
            f"{self.kind}-send-during-purge",
            server.url,
            "send.lua",
            concurrency=1,
            duration_s=plan.purge_max_s,
            env={"BENCH_DATA": str(send_rows), "BENCH_KEY_PREFIX": f"{runs.nonce}-purge"},
            log_dir=self.raw,
        )
        finished = True
        try:
            stdout, stderr = purger.communicate(timeout=plan.purge_max_s)
        except subprocess.TimeoutExpired:
            finished = False
            purger.kill()
            stdout, stderr = purger.communicate()
        except BaseException:
            # The run was stopped (Ctrl-C, SIGTERM): so are the purge and its sends.
            purger.kill()
            purger.wait()
            wrk.interrupt()
            raise
        purge_s = time.monotonic() - purge_started
        wrk.interrupt()
        during = wrk.wait().as_json()
        during["cpu"] = meter.stop()
        during["cpu"]["includes_purge"] = True  # the purge process counts as "other"
        during["cpu_probe_ms"] = {"before": probe_before, "after": machine.cpu_probe_ms()}
        (self.raw / "purge.out").write_text(stdout + "\n--- stderr\n" + stderr)
        lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
        if finished and lines and "progress" not in lines[-1]:
            report = lines[-1]
        elif lines:
            # Stopped at the time bound: what it did until then.
            steps = lines[-1].get("progress", {})
            report = {
                "finished": False,
                "seconds": round(purge_s, 1),
                "steps": steps,
                # Pending copies of messages past retention are deleted outright.
                "expired_copies": steps.get("expire_copies", {}).get("rows", 0)
                + steps.get("delete_old_messages", {}).get("pending_copies", 0),
            }
        else:
            report = {"error": (stderr or stdout).strip()[-1000:]}
        report.setdefault("finished", finished)
        log(
            f"{self.kind}: purge {report}; sends during it: p99 "
            f"{during['latency_ms']['p99']} ms vs {quiet['latency_ms']['p99']} ms"
        )
        pace = PACES[self.kind]
        return {
            "loaded": load,
            "batch_size": Settings().purge_batch_size,
            "pace": {"batch_seconds": pace.batch_seconds, "rest": pace.rest},
            "report": report,
            "send_without_purge": quiet,
            "send_during_purge": during,
            "p99_during_over_without": round(
                during["latency_ms"]["p99"] / quiet["latency_ms"]["p99"], 3
            ),
        }


def _median_round(rounds: list[dict], *, key) -> dict:
    """The round with the median ``key``, with every round beside it."""
    middle = sorted(rounds, key=key)[len(rounds) // 2]
    return {**middle, "rounds": rounds}


def _median_ratio(sends: list[dict], bare_rounds: list[dict]) -> float:
    """The median over rounds of the send rate over the bare view's rate."""
    ratios = [
        ok_rate(send, 201) / max(ok_rate(other, 200), 1e-9)
        for send, other in zip(sends, bare_rounds, strict=True)
    ]
    return round(sorted(ratios)[len(ratios) // 2], 4)


def _p50(run: dict) -> float:
    return run["latency_ms"]["p50"]
