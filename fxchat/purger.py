"""The server purges expired data by itself: a daemon thread per process.

Started lazily by the first request a process serves, so that a server
which forks its workers after loading the application still gets one
purger per worker. One purge runs at a time on a database: the others
skip their round (see _the_only_purge).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pyramid.events import NewRequest
from sqlalchemy import event, text

from .models import get_engine, get_session_factory, sqlite
from .services.retention import Pace, PurgeReport, purge

logger = logging.getLogger(__name__)

# How hard a purge pushes on each database (docs/operations.rst, "Purging").
PACES = {
    # One writer at a time: batches short enough that a send waiting for one
    # is not held up for long, and a rest after each (half as long, and at
    # least the checkpoint) in which the writers queued behind it go first.
    "sqlite": Pace(batch_seconds=0.002, rest=0.5, first_batch=20),
    # Row locks: a send waits for a batch only if they share a device. But
    # while a batch runs, its backend takes a processor and fills the log
    # that every commit syncs: short batches with twice their time of rest
    # slow fewer sends than long ones (docs/performance.rst, "Purge").
    "postgresql": Pace(batch_seconds=0.02, rest=2.0, first_batch=100),
}
# On SQLite, the shortest rest: time for a writer waiting on the lock to take it.
HANDOVER_SECONDS = 0.001
# On SQLite, the pages in the log at which the purge copies it into the
# database itself. A commit that leaves more than 1,000 pages in the log
# (SQLite's wal_autocheckpoint) copies them there and then, holding the
# writers' lock, and during a purge that is most often a send's: 15 to 30 ms.
# A batch writes about a page per copy it deletes (each in another device's
# part of the queue index), so how many pages a batch writes depends on the
# machine's speed and the data, and only the log's own count keeps it under
# that mark. Well under: a checkpoint's writes and sync of the database file
# share the disk with the sends' syncs of the log, so the smaller each is,
# the shorter a send waits behind it (with 3 ms batches, sends' p99 during
# a purge was 2.8 to 3.1 times the p99 without at 400 pages, 1.9 to 2.0 at
# 150; docs/performance.rst). At 2 ms a batch, that is a checkpoint after
# nearly every batch on a 2-core machine; smaller batches share one.
CHECKPOINT_PAGES = 150
# PostgreSQL advisory lock held by the one purge running on a database
# (any 64-bit number no other application on the database uses).
PURGE_LOCK_KEY = 0x66786368_70757267  # "fxchpurg"


def run_purge(
    registry,
    *,
    now: int | None = None,
    pace: Pace | None = None,
    wait: Callable[[float], object] = time.sleep,
) -> PurgeReport:
    """One full purge with the registry's database and settings.

    ``wait(seconds)`` rests between batches; a true answer stops the purge.
    If another purge of the database is running, does nothing and says so
    (``skipped``).
    """
    settings = registry.fxchat
    engine = registry["db_engine"]
    if pace is None:
        pace = PACES.get(engine.dialect.name, Pace())
    with _the_only_purge(engine) as alone:
        if not alone:
            return PurgeReport(skipped=True)
        with _purging_sessions(registry) as (session_factory, rest):

            @contextmanager
            def one_transaction():
                with session_factory() as dbsession, dbsession.begin():
                    yield dbsession

            return purge(
                one_transaction,
                now=now if now is not None else int(time.time() * 1000),
                receipt_retention=settings.receipt_retention,
                idempotency_window=settings.idempotency_window,
                batch_size=settings.purge_batch_size,
                pace=pace,
                wait=lambda seconds: rest(seconds, wait),
            )


@contextmanager
def _the_only_purge(engine) -> Iterator[bool]:
    """Whether no other purge of this database is running; if so, none starts until this ends.

    Every worker process has a purger, and a cron job may run fxchat-purge
    too: they would only share the work, but on SQLite each batch holds the
    only write lock, and eight purgers resting in turn leave the requests no
    rest at all. The others skip their round. The lock goes with its process
    (an flock, a PostgreSQL session), so a purge that dies frees it.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            key = {"key": PURGE_LOCK_KEY}
            if not connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), key):
                yield False
                return
            try:
                yield True
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), key)
        return
    database = sqlite.database_file(engine)
    if database is None:
        yield True  # SQLite in memory: one process
        return
    descriptor = os.open(f"{database}-purge", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(descriptor)  # and with it the lock


@contextmanager
def _purging_sessions(registry):
    """A session factory for the purge, and how to rest between its batches."""
    engine = registry["db_engine"]
    database = sqlite.database_file(engine)
    if database is None:
        yield registry["dbsession_factory"], lambda seconds, wait: wait(seconds)
        return
    # SQLite: connections of the purge's own, which leave copying the WAL into
    # the database file (checkpointing) to the rests between batches, mostly
    # outside the write lock. Otherwise the commit that takes the WAL past its
    # limit does it while holding the lock, and it is often a send's.
    purging = get_engine(
        {"sqlalchemy.url": engine.url.render_as_string(hide_password=False)},
        db_timeout=registry.fxchat.db_timeout,
        sqlite_synchronous=registry.fxchat.sqlite_synchronous,
    )

    @event.listens_for(purging, "connect")
    def _connect(dbapi_connection, record):
        dbapi_connection.execute("PRAGMA wal_autocheckpoint=0")

    def checkpoint() -> None:
        """Copy the log into the database, the last few pages in the writers' queue.

        Copying the purge's pages and syncing the database file take the
        time (the disk writes every page a batch changed), so they run beside
        the requests. But SQLite starts the log over only after a checkpoint
        that copied all of it, which one beside writers seldom does; the log
        then grows, and every commit past its 1,000 pages checkpoints inside
        the write lock (where sends spent 15 to 30 ms). So what requests wrote
        meanwhile is copied holding the lock: the next writer finds the log
        all copied and starts it over.
        """
        # On the driver's connection: SQLAlchemy's would begin a transaction,
        # and so take the write lock, first.
        connection = purging.raw_connection()
        try:
            copy = connection.driver_connection.execute
            copy("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            # What the checkpoint under the lock would otherwise sync there.
            sqlite.sync_database_file(database)
            with sqlite.writers_turn(connection):
                copy("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        finally:
            connection.close()

    def rest(seconds: float, wait) -> object:
        started = time.perf_counter()
        pages = sqlite.log_pages(database)
        # Unknown (a wal-index this code cannot read): after every batch.
        if pages is None or pages >= CHECKPOINT_PAGES:
            checkpoint()
        return wait(max(seconds - (time.perf_counter() - started), HANDOVER_SECONDS))

    try:
        yield get_session_factory(purging), rest
    finally:
        try:
            checkpoint()
        finally:
            purging.dispose()


class Purger:
    def __init__(self, registry):
        self.registry = registry
        self.interval = registry.fxchat.purge_interval
        self.pid: int | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()

    def ensure_running(self) -> None:
        if self.interval <= 0 or self.pid == os.getpid():
            return
        with self.lock:
            if self.pid == os.getpid():
                return
            self.pid = os.getpid()
            threading.Thread(target=self._loop, name="fxchat-purger", daemon=True).start()

    def stop(self) -> None:
        """Ask the thread to end after its current round (for tests and shutdown)."""
        self.stopping.set()

    def _loop(self) -> None:
        while not self.stopping.wait(self.interval):
            try:
                report = run_purge(self.registry, wait=self.stopping.wait)
                if not report.skipped and any(report.as_json().values()):
                    logger.info("purged", extra={"fields": report.as_json()})
            except Exception:
                # The database may be down; the next round will try again.
                logger.warning("purge failed", exc_info=True)


def includeme(config) -> None:
    purger = Purger(config.registry)
    config.registry["fxchat.purger"] = purger
    config.add_subscriber(lambda event: purger.ensure_running(), NewRequest)
