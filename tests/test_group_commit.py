"""SQLite's group commit: no answer before what it wrote, or read, is synced to disk."""

from __future__ import annotations

import concurrent.futures
import fcntl
import logging
import multiprocessing
import os
import time

import pytest
import webtest

from fxchat import main
from fxchat.models import get_engine, group_commit, sqlite
from fxchat.models.prepared import pooled, run_command

from .conftest import TEST_SETTINGS, empty_database, register


@pytest.fixture
def sqlite_app(sqlite_url, _engines):
    """Apps on the SQLite test database, emptied (the group commit is SQLite's alone)."""
    empty_database(sqlite_url, _engines)
    apps = []

    def make(**settings) -> webtest.TestApp:
        merged = {"sqlalchemy.url": sqlite_url, **TEST_SETTINGS}
        merged |= {f"fxchat.{k}": str(v) for k, v in settings.items()}
        apps.append(webtest.TestApp(main({}, **merged)))
        return apps[-1]

    yield make
    for app in apps:
        app.app.registry["db_engine"].dispose()


@pytest.fixture
def syncs(monkeypatch):
    """Each sync of the WAL, as the ``finished`` count of commits when it ran."""
    seen = []
    real = group_commit._sync

    def recording(wal):
        seen.append(group_commit._logs[wal.removesuffix("-wal")].finished)
        real(wal)

    monkeypatch.setattr(group_commit, "_sync", recording)
    return seen


def commit_log(app) -> group_commit.CommitLog:
    log = sqlite.commit_log(app.app.registry["db_engine"].dialect)
    assert log is not None
    return log


def test_commits_are_synced_by_fxchat_not_inside_sqlites_lock(sqlite_app):
    app = sqlite_app()
    engine = app.app.registry["db_engine"]
    with pooled(engine) as connection:
        cursor = connection.driver_connection.execute("PRAGMA synchronous")
        # NORMAL (1): SQLite syncs at checkpoints; each commit is synced by
        # the request that made it, outside the write lock.
        assert cursor.fetchone()[0] == 1


def test_a_send_is_answered_only_once_its_commit_is_synced(sqlite_app, syncs):
    app = sqlite_app()
    log = commit_log(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    before = log.started
    syncs.clear()
    alice.send_to(bob)
    # One commit, and a sync that ran once it had returned, before the 201.
    assert log.started == before + 1
    assert syncs and max(syncs) >= before + 1
    assert log.synced >= log.started


@pytest.mark.parametrize("write", ["register", "ack", "add_device"])
def test_writes_of_the_request_session_are_synced_before_the_answer(sqlite_app, syncs, write):
    app = sqlite_app()
    log = commit_log(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    message_id = alice.send_to(bob)
    before = log.started
    syncs.clear()
    if write == "register":
        register(app, "carol@example.com")
    elif write == "ack":
        bob.ack(message_id)
    else:
        alice.add_device("laptop")
    assert log.started > before
    assert syncs and max(syncs) >= log.started
    assert log.synced >= log.started


def test_a_read_waits_for_the_commits_it_could_have_seen(sqlite_app, syncs):
    app = sqlite_app()
    log = commit_log(app)
    _alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    engine = app.app.registry["db_engine"]
    # A message committed by someone who has not synced yet (as another
    # process between its COMMIT and its sync).
    with pooled(engine) as connection, sqlite.write_transaction(connection):
        run_command(connection, "UPDATE users SET user_id = user_id WHERE pk < 0")
    group_commit.forget_this_thread()
    unsynced = log.started
    assert log.synced < unsynced
    syncs.clear()
    bob.inbox()
    assert syncs and log.synced >= unsynced


def test_a_read_with_nothing_unsynced_does_not_sync(sqlite_app, syncs):
    app = sqlite_app()
    log = commit_log(app)
    bob = register(app, "bob@example.com")
    syncs.clear()
    bob.inbox()
    assert syncs == []
    assert log.synced >= log.started


def test_a_commit_whose_writer_died_does_not_hold_readers_up(sqlite_app, syncs):
    app = sqlite_app(db_timeout=30)
    log = commit_log(app)
    bob = register(app, "bob@example.com")
    # Counted, then the process died before saying it returned (it holds
    # no lock any more: the kernel released it).
    log.count_commit()
    assert log.finished < log.started
    started = time.monotonic()
    bob.inbox()
    assert time.monotonic() - started < 1
    assert log.finished == log.started
    assert log.synced >= log.started


def test_a_failed_sync_is_a_503_and_the_send_can_be_retried(sqlite_app, monkeypatch, caplog):
    app = sqlite_app()
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    real = group_commit._sync

    def failing(wal):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(group_commit, "_sync", failing)
    body = alice.envelope(bob)
    headers = {"Idempotency-Key": "retry-after-sync-failure"}
    with caplog.at_level(logging.CRITICAL, logger="fxchat.models.group_commit"):
        failed = alice.post("/v1/messages", body, headers=headers, status=503)
    assert failed.json["errors"][0]["description"] == "the database could not be written to disk"
    assert "syncing the SQLite write-ahead log failed" in caplog.text
    monkeypatch.setattr(group_commit, "_sync", real)
    retried = alice.post("/v1/messages", body, headers=headers)
    assert retried.status_int in (200, 201)
    assert [m["id"] for m in bob.inbox()] == [retried.json["id"]]


def test_with_synchronous_normal_there_is_no_group_commit(sqlite_app, syncs):
    app = sqlite_app(sqlite_synchronous="normal")
    assert sqlite.commit_log(app.app.registry["db_engine"].dialect) is None
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    alice.send_to(bob)
    assert syncs == []


# Set in each process of the pool: its commits start once every process is
# ready, so that they overlap. Started one by one, each process pays for its
# imports first, and on a slow machine one could be done before the next begins.
_start_together = None


def _ready_to_commit(barrier) -> None:
    global _start_together
    _start_together = barrier


def _commit_many(url: str, count: int) -> tuple[int, int]:
    """In a process of its own: ``count`` commits, each waited for; (commits, unsynced)."""
    engine = get_engine({"sqlalchemy.url": url})
    if _start_together is not None:
        _start_together.wait(timeout=60)
    log = sqlite.commit_log(engine.dialect)
    unsynced = 0
    for n in range(count):
        with pooled(engine) as connection, sqlite.write_transaction(connection):
            run_command(connection, f"INSERT INTO notes VALUES ({n})")
        number = group_commit._pending.number
        group_commit.wait_for_this_thread(timeout=5)
        unsynced += log.synced < number
    engine.dispose()
    return count, unsynced


def test_processes_committing_together_share_syncs(tmp_path):
    url = f"sqlite:///{tmp_path / 'notes.sqlite'}"
    engine = get_engine({"sqlalchemy.url": url})
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE notes (n INTEGER)")
    log = sqlite.commit_log(engine.dialect)
    before_commits, before_syncs = log.started, log.syncs
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        4, mp_context=spawn, initializer=_ready_to_commit, initargs=(spawn.Barrier(4),)
    ) as pool:
        results = list(pool.map(_commit_many, [url] * 4, [150] * 4))
    assert sum(unsynced for _, unsynced in results) == 0
    commits = log.started - before_commits
    assert commits == 600
    assert log.synced >= log.started
    # Every commit was waited for, yet fewer syncs ran than commits.
    assert log.syncs - before_syncs < commits
    with engine.connect() as connection:
        assert connection.exec_driver_sql("SELECT count(*) FROM notes").scalar() == 600
    engine.dispose()


def test_a_forked_process_does_not_share_its_parents_sync_lock(tmp_path):
    # gunicorn forks its workers: a worker must not hold the lock through a
    # descriptor it inherited (flock locks belong to open files).
    database = str(tmp_path / "forked.sqlite")
    log = group_commit.CommitLog(database, sqlite.writers_lock_file(database))
    sync_lock, _ = log._locks()
    fcntl.flock(sync_lock, fcntl.LOCK_EX)
    log.count_commit()
    log.writes_returned()
    child = os.fork()
    if child == 0:
        started = time.monotonic()
        log.wait_synced(log.started, timeout=5)
        os._exit(0 if time.monotonic() - started >= 0.25 else 1)
    time.sleep(0.4)
    fcntl.flock(sync_lock, fcntl.LOCK_UN)
    _, status = os.waitpid(child, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert log.synced == log.started
