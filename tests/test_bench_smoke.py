"""The benchmark suite cannot rot: every scenario runs for a few requests.

Nothing here is timed or compared with a target; the tests check that the
bench code still drives the real server (gunicorn + wrk), that every
request of every scenario succeeded, that bulk loads keep the schema's
invariants, and that the report can be written. ``make bench`` (bench/) has
the real runs.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import sqlalchemy

from bench import driver, loadgen, profiling, report, requestcpu, servers, summary
from bench.servers import BIN, WorkerModel

pytestmark = pytest.mark.slow

# CI sets this after `bash bench/setup.sh`, so that missing tools fail there.
REQUIRED = os.environ.get("FXCHAT_REQUIRE_BENCH") == "1"


def _missing_tools() -> list[str]:
    missing = [] if shutil.which("wrk") else ["wrk"]
    if not (BIN / "gunicorn").exists():
        missing.append("gunicorn")
    return missing


def _require_tools() -> None:
    missing = _missing_tools()
    if missing:
        message = f"benchmark tools missing: {', '.join(missing)} (bash bench/setup.sh)"
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)


@pytest.fixture(scope="module")
def smoke_results(tmp_path_factory):
    _require_tools()
    raw = tmp_path_factory.mktemp("bench-raw")
    # Two small workers are enough to exercise the multi-process server.
    model = WorkerModel(workers=2, threads=2, source="smoke test")
    return driver.run(
        driver.SMOKE,
        databases=("sqlite", "postgresql"),
        output=None,
        raw_root=raw,
        model=model,
        crypto=True,
    )


def _all_succeeded(run: dict, status: int) -> None:
    assert run["requests"] > 0
    assert run["statuses"] == {str(status): run["requests"]}, run["statuses"]
    assert not any(run["errors"].values()), run["errors"]


def test_baseline_answers(smoke_results):
    for point in smoke_results["baseline"]["points"]:
        _all_succeeded(point, 200)
    assert smoke_results["machine"]["cpu_count"] >= 1
    assert smoke_results["machine"]["versions"]["pyramid"]
    sync = smoke_results["machine"]["disk_sync_ms"]
    assert 0 < sync["p50"] <= sync["p99"], sync


def _databases(smoke_results):
    databases = smoke_results["databases"]
    assert "sqlite" in databases
    if "postgresql" not in databases:
        assert "postgresql" in smoke_results["skipped"]
    return databases.items()


def test_sends_of_every_scenario_succeed(smoke_results):
    for _kind, db in _databases(smoke_results):
        for point in db["send"]["points"]:
            _all_succeeded(point, 201)
        _all_succeeded(db["send_4_devices"], 201)


def test_rate_targets_alternate_with_the_bare_view(smoke_results):
    rounds = smoke_results["plan"]["rounds"]
    for _kind, db in _databases(smoke_results):
        for point in (db["send"]["points"][0], db["send_4_devices"]):
            assert len(point["rounds"]) == len(point["bare_rounds"]) == rounds
            for run in point["rounds"]:
                _all_succeeded(run, 201)
            for run in point["bare_rounds"]:
                _all_succeeded(run, 200)
            assert point["ratio_to_bare"] > 0
        for point in db["fanout"]["points"]:
            _all_succeeded(point, 201)
            assert point["bytes_grown"]["copies"] > 0
        _all_succeeded(db["noop"], 200)


def test_the_floor_apps_send_in_the_same_rounds(smoke_results):
    plan = smoke_results["plan"]
    for _kind, db in _databases(smoke_results):
        (point,) = [
            p for p in db["send"]["points"] if p["concurrency"] == plan["floor_concurrency"]
        ]
        for app in ("floor", "one_row"):
            beside = point[app]
            assert len(beside["rounds"]) == len(point["bare_rounds"]) == plan["rounds"]
            for run in beside["rounds"]:
                _all_succeeded(run, 201)
            assert beside["ratio_to_bare"] > 0
            assert all(app not in p for p in db["send"]["points"] if p is not point)


def test_drain_empties_every_queue(smoke_results):
    for _kind, db in _databases(smoke_results):
        drain = db["drain"]
        _all_succeeded(drain, 200)
        assert drain["complete"], drain["counters"]
        assert drain["acked"] == drain["loaded"]["copies"]
        # The script stopped the run (wrk's bound is 120 s), and the rate is
        # over the drain's own time, which lies within wrk's: wrk reads its
        # clock just after starting its threads, so the first request may
        # come a moment before it (hence the 10 ms).
        assert drain["duration_s"] < 60
        assert 0 < drain["drain_s"] <= drain["duration_s"] + 0.01
        drain_s = drain["counters"]["drain_us"] / 1e6
        assert drain["messages_per_s"] == pytest.approx(drain["acked"] / drain_s, rel=1e-3)


def test_flat_cost_and_purge(smoke_results):
    for kind, db in _databases(smoke_results):
        for case in ("small", "large"):
            _all_succeeded(db["flat"][case]["fetch"], 200)
            _all_succeeded(db["flat"][case]["send"], 201)
            # Every fetch returned the reader's full first page.
            fetch = db["flat"][case]["fetch"]
            assert fetch["counters"]["messages"] == 100 * fetch["requests"]
            # The figures are the median round's of several.
            for what in ("fetch", "send"):
                kept = db["flat"][case][what]
                p50s = sorted(r["latency_ms"]["p50"] for r in kept["rounds"])
                assert len(p50s) == smoke_results["plan"]["rounds"] > 1
                assert kept["latency_ms"]["p50"] == p50s[len(p50s) // 2]
        purge = db["purge"]
        if kind == "postgresql":
            # The load was written out before anything was measured on it.
            assert purge["loaded"]["checkpointed"] and db["flat"]["large"]["load"]["checkpointed"]
        assert purge["report"]["finished"], purge["report"]
        assert purge["report"]["expired_copies"] >= purge["loaded"]["copies"]
        _all_succeeded(purge["send_during_purge"], 201)
        assert db["invariants_after_purge"]["devices_with_wrong_queued"] == 0
        assert db["invariants_after_purge"]["pending_messages_without_body"] == 0


def test_send_path_statements_are_counted(smoke_results):
    for kind, db in _databases(smoke_results):
        count = db["profile"]["statement_count"]
        if kind == "postgresql":
            # The send function in autocommit, which checks the sender's token
            # itself: the sender is remembered from the first send.
            assert (count["statements_per_send"], count["commits_per_send"]) == (1, 0)
        else:
            # The send's own transaction, the token's check included.
            assert count["statements_per_send"] >= 8
            assert count["commits_per_send"] == 1
            assert not any(
                "users.user_id, devices.token_hash" in s["sql"] for s in count["statements"]
            )


def test_request_threads_cpu_is_read_from_the_access_log(smoke_results):
    for _kind, db in _databases(smoke_results):
        for run in [*db["send"]["points"], db["noop"]]:
            thread = run["request_thread_cpu_ms"]
            assert thread["requests"] > 0
            assert thread["p50"] > 0 and 0 < thread["mean"] < 1000
        # The bare view's server has no access log: nothing to read there.
        assert all(
            "request_thread_cpu_ms" not in run for run in db["send"]["points"][0]["bare_rounds"]
        )
        alone = db["profile"]["in_process_cpu_ms"]
        assert alone["sends"] == smoke_results["plan"]["in_process_sends"]
        assert alone["mean"] > 0


def test_request_cpu_reads_only_the_runs_successful_access_lines(tmp_path):
    log = tmp_path / "server.log"
    before = {"logger": "fxchat.access", "status": 201, "cpu_ms": 50.0}
    log.write_text(json.dumps(before) + "\n")
    since = requestcpu.log_offset(log)
    lines = [
        {"logger": "fxchat.access", "status": 201, "cpu_ms": 1.0},
        {"logger": "fxchat.access", "status": 200, "cpu_ms": 3.0},
        {"logger": "fxchat.access", "status": 400, "cpu_ms": 9.0},
        {"logger": "fxchat.purger", "status": 200, "cpu_ms": 9.0},
    ]
    # The last line was still being written when the run ended.
    log.write_text(log.read_text() + "".join(json.dumps(x) + "\n" for x in lines) + '{"logg')
    assert requestcpu.request_cpu_ms(log, since) == {"requests": 2, "mean": 2.0, "p50": 2.0}
    assert requestcpu.request_cpu_ms(tmp_path / "absent.log", 0) is None


def test_report_splits_a_sends_cpu(smoke_results):
    # The smoke run has no concurrency 8: its concurrency-1 points stand in.
    results = copy.deepcopy(smoke_results)
    bare = results["baseline"]["points"]
    bare.append({**bare[0], "concurrency": 8})
    for db in results["databases"].values():
        c1 = db["send"]["points"][0]
        db["send"]["points"].append({**c1, "concurrency": 8, "ratio_to_bare": 0.2})
        assert " / " in summary._cpu_split(db["send"]["points"][-1])
    text = report.explanations(results)
    assert text.count("fxchat's own code, timed in the request thread") == len(results["databases"])
    assert "bench.profiling.in_process_cpu_ms" in text


def test_every_load_run_says_how_fast_the_cpus_were(smoke_results):
    runs = summary._runs(smoke_results)
    assert runs
    for run in runs:
        probe = run["cpu_probe_ms"]
        assert probe["before"] > 0 and probe["after"] > 0, probe
    # The table gives the probes' range around the rounds at concurrency 8
    # (the smoke run's concurrency-1 points stand in for them).
    results = copy.deepcopy(smoke_results)
    bare = results["baseline"]["points"]
    bare.append({**bare[0], "concurrency": 8})
    for db in results["databases"].values():
        c1 = db["send"]["points"][0]
        c1["bare_rounds"][0]["cpu_probe_ms"] = {"before": 7.0, "after": 13.5}
        c1["rounds"][0]["cpu_probe_ms"] = {"before": 7.0, "after": 7.0}
        for run in [*c1["bare_rounds"][1:], *c1["rounds"][1:]]:
            run["cpu_probe_ms"] = {"before": 9.0, "after": 9.0}
        db["send"]["points"].append({**c1, "concurrency": 8, "ratio_to_bare": 0.2})
    fastest = summary.fastest_cpu_probe(results)
    assert 0 < fastest <= 7.0
    rows = dict(summary.figures(results))
    label = next(label for label in rows if label.startswith("CPU probe around the c8 rounds"))
    assert f"the run's fastest {fastest:.1f}" in label
    assert set(rows[label].values()) == {"7.0 to 13.5; 7.0 to 9.0"}
    text = report.explanations(results)
    assert text.count(f"took 7.0 to 13.5 ms, against {fastest:.1f} ms") == len(results["databases"])


def test_no_purge_verdict_against_stalled_sends(smoke_results):
    results = copy.deepcopy(smoke_results)
    for db in results["databases"].values():
        purge = db["purge"]
        purge["send_without_purge"]["latency_ms"]["p99"] = 150.0
        purge["p99_during_over_without"] = 0.5  # would pass, against a stalled baseline
    shown = [v for v in summary.verdicts(results) if v.figure == "send p99 during purge / without"]
    assert shown and all(v.met is None and "150 ms" in v.note for v in shown)
    assert "no verdict: p99 without a purge was 150 ms" in summary.text_table(results)


def test_no_fanout_verdict_from_refused_sends(smoke_results):
    results = copy.deepcopy(smoke_results)
    for db in results["databases"].values():
        widest = db["fanout"]["points"][-1]
        widest["sends"] = widest["requests"] - 5  # refused: queues full
    shown = [v for v in summary.verdicts(results) if v.figure.startswith("fan-out: bytes")]
    assert shown and all(v.met is None and "5 of" in v.note for v in shown)


def test_crypto_figures(smoke_results):
    crypto = smoke_results["crypto"]
    assert crypto["encrypt_1_device_per_s"] > crypto["encrypt_100_devices_per_s"] > 0
    assert crypto["x25519_generate_plus_exchange_us"] > 0


def test_table_and_report(smoke_results, tmp_path):
    table = summary.text_table(smoke_results)
    assert "send 1 KiB to 1 device, c1" in table
    assert all(
        v.met is not None or v.note
        for v in summary.verdicts(smoke_results)
        if v.figure.startswith("send")
    )
    pytest.importorskip("matplotlib")
    written = report.write(smoke_results, tmp_path)
    page = (tmp_path / "performance.rst").read_text()
    assert report.CONCURRENCY_PNG in page and "How to reproduce" in page
    assert all(path.exists() for path in written)


def test_a_missed_target_says_by_how_much():
    def missed(measured, target):
        return report._missed_by(summary.Verdict("figure", "-", measured, "x", target, False))

    assert missed(1.35, "<= 1.3x") == "4% over the limit (1.04x)"
    assert missed(70.0, "< 60 s") == "17% over the limit (1.17x)"
    assert missed(7038, ">= 10,000 msg/s") == "at 70% of the target (1.4x short)"


def test_profile_summary_assigns_layers(tmp_path: Path):
    raw = tmp_path / "stacks.txt"
    raw.write_text(
        "handle_request (gunicorn/workers/gthread.py:1);send (fxchat/views/messages.py:2);"
        "DefaultDialect.do_execute (sqlalchemy/engine/default.py:3) 3\n"
        "handle_request (gunicorn/workers/gthread.py:1);loads (json/__init__.py:4) 1\n"
        "Arbiter.run (gunicorn/arbiter.py:5) 7\n"
    )
    profile = profiling.summarize(raw)
    assert profile["samples"] == 4  # the arbiter is not on the request path
    layers = {x["name"]: x["share"] for x in profile["layers"]}
    assert layers["database calls (driver, round trips, lock and fsync waits)"] == 0.75
    assert layers["JSON parse and render"] == 0.25


def _processes_of_run(raw: Path) -> dict[int, str]:
    """The command lines that name the run's raw directory: the run and its servers."""
    found = {}
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # gone meanwhile
            continue
        if str(raw) in args:
            found[int(cmdline.parent.name)] = args
    return found


def _bench_databases() -> set[str]:
    admin = sqlalchemy.create_engine(servers.POSTGRESQL_SERVER)
    try:
        with admin.connect() as connection:
            return set(
                connection.exec_driver_sql(
                    "SELECT datname FROM pg_database WHERE starts_with(datname, 'fxchat_bench_')"
                ).scalars()
            )
    finally:
        admin.dispose()


def test_a_run_stopped_by_sigterm_stops_its_servers_and_drops_its_database(tmp_path):
    _require_tools()
    on_postgresql = servers.postgresql_available() is None
    before = _bench_databases() if on_postgresql else set()
    raw = tmp_path / "raw"
    run = subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--smoke", "--only", "send", "--no-crypto"]
        + ["--databases", "postgresql" if on_postgresql else "sqlite", "--raw", str(raw)],
        cwd=servers.ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(120, run.kill)
    watchdog.start()
    try:
        # Once accounts are being made, its server runs and its database exists.
        for line in run.stderr:
            if "creating accounts and devices" in line:
                break
        assert run.poll() is None, "the run ended before its server started"
        servers_running = [a for a in _processes_of_run(raw).values() if "gunicorn" in a]
        assert servers_running, "no server of the run was found"
        if on_postgresql:
            assert _bench_databases() - before
        run.send_signal(signal.SIGTERM)
        run.communicate(timeout=60)
        assert run.returncode != 0
        assert not _processes_of_run(raw)
        if on_postgresql:
            assert _bench_databases() == before
    finally:
        watchdog.cancel()
        if run.poll() is None:
            run.kill()
        _clean_up(raw, _bench_databases() - before if on_postgresql else set())


def _clean_up(raw: Path, databases: set[str]) -> None:
    """What a failed run left behind, so that a failing test does not leave it too."""
    for pid in _processes_of_run(raw):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    for name in databases:
        servers._drop_postgresql_database(servers.postgresql_database_url(name))


class _Stopped(Exception):
    pass


def test_a_stopped_run_stops_its_load_generator():
    # Ctrl-C or SIGTERM arrives while the driver waits for wrk: wrk must not
    # go on for the rest of its duration.
    _require_tools()

    def stop(signum, frame):
        raise _Stopped()

    # A server that takes connections and never answers: wrk waits on.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        run = loadgen.WrkRun("stopped", url, "get.lua", concurrency=1, duration_s=60)
        previous = signal.signal(signal.SIGALRM, stop)
        signal.setitimer(signal.ITIMER_REAL, 0.5)
        try:
            with pytest.raises(_Stopped):
                run.wait()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
            still_running = run.process.poll() is None
            if still_running:
                run.process.kill()
        assert not still_running, "wrk was still running once the wait was stopped"
