"""The server purges by itself while it runs: a purger thread per process."""

import contextlib
import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
import time

import pytest
from sqlalchemy import func, select

from fxchat import purger
from fxchat.models import Body, Copy, CopyState, sqlite
from fxchat.models.prepared import pooled

from .conftest import register


def test_a_running_server_expires_copies_and_drops_bodies_by_itself(make_app):
    app = make_app(purge_interval=1)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    message_id = alice.send_to(bob, ttl=1)
    engine = app.app.registry["db_engine"]

    def pending_and_bodies():
        with engine.connect() as connection:
            pending = connection.scalar(
                select(func.count()).select_from(Copy).where(Copy.state == CopyState.PENDING)
            )
            bodies = connection.scalar(select(func.count()).select_from(Body))
        return pending, bodies

    assert pending_and_bodies() == (1, 1)
    deadline = time.monotonic() + 15
    while pending_and_bodies() != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pending_and_bodies() == (0, 0)
    [receipt] = alice.get(f"/v1/messages/{message_id}/receipts").json["receipts"]
    assert receipt["status"] == "expired"


def test_purging_can_be_turned_off(make_app):
    app = make_app(purge_interval=0)
    app.get("/__lbheartbeat__")
    assert app.app.registry["fxchat.purger"].pid is None


def test_one_purge_at_a_time_on_a_database(make_app):
    # Every worker has a purger (and cron may run fxchat-purge): while one
    # purges, the others skip their round and change nothing.
    app = make_app(purge_interval=0)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    alice.send_to(bob, ttl=1)
    registry = app.app.registry
    later = int(time.time() * 1000) + 5_000
    with purger._the_only_purge(registry["db_engine"]) as alone:
        assert alone
        report = purger.run_purge(registry, now=later)
        assert report.skipped and report.as_json()["skipped"] is True
        assert report.expired_copies == 0
        # Another process's purge is refused too, not only this thread's.
        assert _purge_in_another_process(registry) == "skipped"
    report = purger.run_purge(registry, now=later)
    assert not report.skipped and report.expired_copies == 1


def _purge_in_another_process(registry) -> str:
    engine = registry["db_engine"]
    code = (
        "import sys; from sqlalchemy import create_engine; from fxchat import purger\n"
        "with purger._the_only_purge(create_engine(sys.argv[1])) as alone:\n"
        "    print('purged' if alone else 'skipped')\n"
    )
    url = engine.url.render_as_string(hide_password=False)
    done = subprocess.run(
        [sys.executable, "-c", code, url], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.strip()


def test_a_sqlite_purge_leaves_its_writes_checkpointed(make_app, database_kind):
    # The purge's connections never checkpoint in a commit: the purge copies
    # the log into the database itself, every few batches and when it ends,
    # so that no request's commit finds the log full of the purge's pages.
    if database_kind != "sqlite":
        return
    app = make_app(purge_interval=0, purge_batch_size=1)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    for _ in range(5):
        alice.send_to(bob, ttl=1)
    later = int(time.time() * 1000) + 5_000
    report = purger.run_purge(app.app.registry, now=later, wait=lambda seconds: None)
    assert report.expired_copies == 5
    # The database file itself, without the log (immutable: no WAL read).
    path = sqlite.database_file(app.app.registry["db_engine"])
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as file_only:
        states = file_only.execute("SELECT state, count(*) FROM copies GROUP BY state").fetchall()
    assert states == [(CopyState.EXPIRED, report.expired_copies)]


def test_log_pages_is_what_sqlite_counts_in_its_log(make_app, database_kind):
    if database_kind != "sqlite":
        return
    app = make_app(purge_interval=0)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    path = sqlite.database_file(app.app.registry["db_engine"])
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as other:
        assert other.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0] == 0  # not busy
        assert sqlite.log_pages(path) == 0
        alice.send_to(bob)
        after_one = sqlite.log_pages(path)
        alice.send_to(bob)
        after_two = sqlite.log_pages(path)
        assert 0 < after_one < after_two
        # SQLite's own count, which a checkpoint reports: pages in the log, copied.
        busy, in_log, copied = other.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        assert (busy, in_log, copied) == (0, after_two, after_two)
        assert sqlite.log_pages(path) == 0


def test_log_pages_of_a_wal_index_it_cannot_read_is_unknown(tmp_path):
    path = str(tmp_path / "fxchat.sqlite")
    assert sqlite.log_pages(path) == 0  # no wal-index: no log in use
    (tmp_path / "fxchat.sqlite-shm").write_bytes(bytes(136))  # never initialised
    assert sqlite.log_pages(path) is None


def _purge_counting_checkpoints(app, monkeypatch) -> tuple[purger.PurgeReport, list, list]:
    """Purge; for each rest, the log's pages and the checkpoints made so far."""
    path = sqlite.database_file(app.app.registry["db_engine"])
    checkpoints, rests = [], []
    sync_database_file = sqlite.sync_database_file

    def counting(synced: str) -> None:
        checkpoints.append(synced)  # the database file: the purge's checkpoints
        sync_database_file(synced)

    def wait(seconds: float) -> None:
        rests.append((sqlite.log_pages(path), len(checkpoints)))

    monkeypatch.setattr(sqlite, "sync_database_file", counting)
    later = int(time.time() * 1000) + 5_000
    report = purger.run_purge(app.app.registry, now=later, wait=wait)
    return report, checkpoints, rests


def test_a_sqlite_purge_checkpoints_once_its_log_holds_enough_pages(
    make_app, database_kind, monkeypatch
):
    # Never near the 1,000 pages at which a send's commit would checkpoint
    # inside the writers' lock, and not after every batch either: small
    # batches share a checkpoint.
    if database_kind != "sqlite":
        return
    app = make_app(purge_interval=0, purge_batch_size=1)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    for _ in range(12):
        alice.send_to(bob, ttl=1)
    monkeypatch.setattr(purger, "CHECKPOINT_PAGES", 30)  # a batch of 1 writes about 10
    report, _, rests = _purge_counting_checkpoints(app, monkeypatch)
    assert report.expired_copies == 12 and len(rests) >= 11
    assert max(pages for pages, _ in rests) < 30
    in_rests = rests[-1][1]
    assert 1 < in_rests < len(rests)


def test_a_sqlite_purge_that_cannot_count_its_log_checkpoints_after_every_batch(
    make_app, database_kind, monkeypatch
):
    if database_kind != "sqlite":
        return
    app = make_app(purge_interval=0, purge_batch_size=1)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    for _ in range(4):
        alice.send_to(bob, ttl=1)
    monkeypatch.setattr(sqlite, "log_pages", lambda database: None)
    report, _, rests = _purge_counting_checkpoints(app, monkeypatch)
    assert report.expired_copies == 4
    assert [made for _, made in rests] == list(range(1, len(rests) + 1))


def test_a_sqlite_purge_checkpoint_copies_what_requests_wrote_meanwhile(
    make_app, database_kind, monkeypatch
):
    # The slow part of the purge's checkpoint runs beside the requests'
    # writes; its end, in the writers' queue, copies what they wrote
    # meanwhile, so that SQLite can start the log over.
    if database_kind != "sqlite":
        return
    app = make_app(purge_interval=0)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    alice.send_to(bob, ttl=1)
    written_meanwhile = []
    sync_database_file = sqlite.sync_database_file
    path = sqlite.database_file(app.app.registry["db_engine"])

    def send_while_syncing(synced: str) -> None:
        # Between copying the log and syncing the database file: a send, once.
        if not written_meanwhile:
            written_meanwhile.append(None)
            written_meanwhile[0] = alice.send_to(bob)
        sync_database_file(synced)

    monkeypatch.setattr(sqlite, "sync_database_file", send_while_syncing)
    later = int(time.time() * 1000) + 5_000
    report = purger.run_purge(app.app.registry, now=later, wait=lambda seconds: None)

    assert report.expired_copies == 1 and written_meanwhile
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as file_only:
        in_file = {id for (id,) in file_only.execute("SELECT message_id FROM messages")}
    assert written_meanwhile[0] in in_file


@contextlib.contextmanager
def _writer_holding_the_lock(database: str):
    """Another writer, mid-transaction: the writers' lock held on a descriptor of its own."""
    descriptor = os.open(sqlite.writers_lock_file(database), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield descriptor
    finally:
        os.close(descriptor)


def test_writers_turn_waits_for_the_writer_ahead_and_keeps_the_next_out(make_app, database_kind):
    if database_kind != "sqlite":
        return
    app = make_app(purge_interval=0)
    engine = app.app.registry["db_engine"]
    in_turn, done = threading.Event(), threading.Event()

    def take_turn() -> None:
        with pooled(engine) as connection, sqlite.writers_turn(connection):
            in_turn.set()
            done.wait(10)

    with _writer_holding_the_lock(sqlite.database_file(engine)) as ahead:
        turn = threading.Thread(target=take_turn)
        turn.start()
        try:
            assert not in_turn.wait(0.3), "took its turn while another writer held the lock"
            fcntl.flock(ahead, fcntl.LOCK_UN)
            assert in_turn.wait(10)
            # The next writer queues behind it...
            with pytest.raises(BlockingIOError):
                fcntl.flock(ahead, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            done.set()
            turn.join(10)
        # ...and gets it once the turn is over.
        fcntl.flock(ahead, fcntl.LOCK_EX | fcntl.LOCK_NB)


def test_a_sqlite_purge_checkpoint_ends_in_the_writers_queue(make_app, database_kind, monkeypatch):
    # The last copy of the log runs holding the writers' lock (so the next
    # writer starts the log over): with a writer mid-transaction, the purge
    # cannot end before that writer lets go.
    if database_kind != "sqlite":
        return
    app = make_app(purge_interval=0)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    alice.send_to(bob, ttl=1)
    path = sqlite.database_file(app.app.registry["db_engine"])
    sync_database_file = sqlite.sync_database_file
    released_at, letting_go = [], []
    holding = contextlib.ExitStack()

    def writer_arrives_while_syncing(synced: str) -> None:
        # Between the copy beside the requests and the one in the queue.
        if not letting_go:
            ahead = holding.enter_context(_writer_holding_the_lock(path))

            def let_go() -> None:
                time.sleep(0.3)
                released_at.append(time.monotonic())
                fcntl.flock(ahead, fcntl.LOCK_UN)

            letting_go.append(threading.Thread(target=let_go))
            letting_go[0].start()
        sync_database_file(synced)

    monkeypatch.setattr(sqlite, "sync_database_file", writer_arrives_while_syncing)
    later = int(time.time() * 1000) + 5_000
    with holding:
        report = purger.run_purge(app.app.registry, now=later, wait=lambda seconds: None)
        finished_at = time.monotonic()
        for thread in letting_go:
            thread.join(10)
    assert report.expired_copies == 1
    assert released_at and finished_at >= released_at[0]
