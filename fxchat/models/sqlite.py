"""SQLite specifics: WAL, durability, foreign keys, and one writer at a time.

SQLite lets one transaction write at a time. When several threads or
processes want to write, the losers of the race poll SQLite's busy handler,
which sleeps between tries (up to 100 ms), so latency and throughput
collapse under load. Writers here first queue on an ``flock`` of a lock
file beside the database: the kernel wakes the next one as soon as the lock
is released, and a process that dies releases its lock with it.

With ``fxchat.sqlite_synchronous = full`` a commit does not sync the
write-ahead log inside that lock: the writers' requests sync it together
once they are out of it (fxchat.models.group_commit).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Dialect, Engine

from . import group_commit
from .prepared import PooledConnection, run_command

# The execution option that marks a connection used only for reading.
READ_ONLY = "fxchat_read_only"
_LOCK_FD = "fxchat_writer_lock_fd"
_LOCK_HELD = "fxchat_writer_lock_held"
_COMMIT_NUMBER = "fxchat_commit_number"
_READ = "fxchat_read_in_transaction"
# The commit log of each engine's dialect (shared by the engines that
# execution_options derives) when its group commit is on.
_commit_logs: weakref.WeakKeyDictionary[Dialect, group_commit.CommitLog] = (
    weakref.WeakKeyDictionary()
)


def database_file(engine: Engine) -> str | None:
    """The path of ``engine``'s SQLite file; None for another database or one in memory."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    return database


def writers_lock_file(database: str) -> str:
    """The file whose ``flock`` queues the writers of the SQLite file ``database``."""
    return f"{database}-writers"


# The wal-index header as SQLite's unix VFS lays it out at the start of the
# "-shm" file (https://www.sqlite.org/walformat.html): two copies of a 48-byte
# header, then the checkpoint information. Native byte order.
_WAL_INDEX_VERSION = 3007000
_WAL_INDEX = struct.Struct("=I4xI?xHII24x")  # iVersion, iChange, isInit, szPage, mxFrame, nPage
_BACKFILLED = struct.Struct("=I")  # nBackfill, at offset 96
_WAL_INDEX_START = 2 * _WAL_INDEX.size + _BACKFILLED.size


def log_pages(database: str) -> int | None:
    """Pages in the write-ahead log of ``database`` not yet copied into it; None if unknown.

    Counted as SQLite counts them for its automatic checkpoint: frames, one per
    page a commit wrote, so a page written by two commits counts twice. SQLite
    exposes no such count short of a checkpoint, so it is read from the
    wal-index: its last valid frame less the frames copied. Read
    without SQLite's locks, so a commit may be writing it meanwhile: SQLite
    writes the header twice, and a count is given only when both copies agree
    (as SQLite's own readers require). None for a wal-index of another layout.
    """
    try:
        start = os.pread(_kept_open(f"{database}-shm"), _WAL_INDEX_START, 0)
    except FileNotFoundError:
        return 0  # no log in use: nothing to copy
    except OSError:
        return None
    if len(start) < _WAL_INDEX_START:
        return None
    header, copy = start[: _WAL_INDEX.size], start[_WAL_INDEX.size : 2 * _WAL_INDEX.size]
    version, _change, initialised, _page_size, frames, _pages = _WAL_INDEX.unpack(header)
    if header != copy or version != _WAL_INDEX_VERSION or not initialised:
        return None
    (backfilled,) = _BACKFILLED.unpack_from(start, 2 * _WAL_INDEX.size)
    return max(frames - backfilled, 0)


def sync_database_file(database: str) -> None:
    """Write what was copied into the SQLite file ``database`` to disk (``fdatasync``)."""
    os.fdatasync(_kept_open(database))


# SQLite locks a database's files with POSIX advisory locks, and a process
# loses all of its locks on a file when it closes any descriptor of that file
# (https://www.sqlite.org/howtocorrupt.html, 2.2): a read of the wal-index
# that opened and closed it would drop this process's readers' and writer's
# locks in it, and another process could start the log over under them. So
# fxchat reads the wal-index and syncs the database file through descriptors
# it opens once per process and keeps open while the file is there.
_kept: dict[str, tuple[int, int]] = {}  # path: (descriptor, inode)
_kept_lock = threading.Lock()


def _kept_open(path: str) -> int:
    """This process's descriptor of ``path``, opened once (FileNotFoundError if none)."""
    inode = os.stat(path).st_ino
    kept = _kept.get(path)
    if kept is not None and kept[1] == inode:
        return kept[0]
    with _kept_lock:
        kept = _kept.get(path)
        if kept is None or kept[1] != inode:
            descriptor = os.open(path, os.O_RDONLY)
            _kept[path] = (descriptor, os.fstat(descriptor).st_ino)
            if kept is not None:
                # The file was replaced: SQLite deletes the wal-index with the
                # last connection to the database, so no lock is left on it.
                os.close(kept[0])
            kept = _kept[path]
        return kept[0]


def commit_log(dialect: Dialect) -> group_commit.CommitLog | None:
    """The counters of the group commit of an engine's ``dialect``; None when it has none."""
    return _commit_logs.get(dialect)


# The page size of a new database file; an existing one keeps its own
# (docs/operations.rst, "Purging", says how to convert one). The purge
# writes about a page of log, and then of database file, per copy it
# deletes: a page of the queue index, where each device's copies lie apart
# from other devices'. Pages of 2 KiB instead of SQLite's 4 KiB halve those
# writes: runs of the purge of 1M copies alone took 51 and 55 s against 67
# with 4 KiB pages, sends waiting less meanwhile. The price is on reads of
# bodies: one of 1 KiB fills a page where three shared one, and a device
# drained its queue at 19,500 messages/s against 23,000 (docs/performance.rst).
PAGE_SIZE = 2048


def configure(engine: Engine, synchronous: str) -> None:
    database = database_file(engine)
    on_disk = database is not None
    # FULL: a commit is on disk before the client hears 201, by a group
    # commit of fxchat's own; SQLite itself then syncs only at checkpoints.
    # NORMAL keeps that promise against process crashes, not power loss.
    log = (
        group_commit.commit_log(database, writers_lock_file(database))
        if on_disk and synchronous == "full"
        else None
    )
    if log is not None:
        _commit_logs[engine.dialect] = log

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, record):
        cursor = dbapi_connection.cursor()
        if on_disk:
            # Only a file with no table yet takes it: SQLite ignores it otherwise.
            cursor.execute(f"PRAGMA page_size={PAGE_SIZE:d}")
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={'NORMAL' if log else synchronous.upper()}")
            # One lock-file descriptor per connection: flock() locks belong to
            # open files, so connections of one process queue like others.
            record.info[_LOCK_FD] = os.open(
                writers_lock_file(database), os.O_RDWR | os.O_CREAT, 0o600
            )
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        # Writers take the write lock up front: a transaction that read first
        # and upgraded later could fail with SQLITE_BUSY_SNAPSHOT instead of
        # waiting. Readers keep a plain deferred BEGIN and never block writers.
        options = connection.get_execution_options()
        info = connection.connection.info
        if options.get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
            info[_READ] = True
            return
        _take_write_lock(info)
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    if log is not None:

        @event.listens_for(engine, "commit")
        def _commit(connection):
            # Before the driver's COMMIT.
            _count_commit(connection.connection.info, log)

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection, record):
        # Back in the pool: its transaction has been committed or rolled back.
        _end_of_transaction(record.info, log)

    @event.listens_for(engine, "close")
    def _close(dbapi_connection, record):
        _end_of_transaction(record.info, log)
        if _LOCK_FD in record.info:
            os.close(record.info.pop(_LOCK_FD))


def _take_write_lock(info: dict) -> None:
    """Queue for the write lock, unless this connection holds it or has no lock file."""
    if _LOCK_FD in info and not info.get(_LOCK_HELD):
        fcntl.flock(info[_LOCK_FD], fcntl.LOCK_EX)
        info[_LOCK_HELD] = True


def _count_commit(info: dict, log: group_commit.CommitLog | None) -> None:
    """Number the commit about to run, under the write lock, for the group commit."""
    if log is not None and info.get(_LOCK_HELD):
        info[_COMMIT_NUMBER] = log.count_commit()


def _end_of_transaction(info: dict, log: group_commit.CommitLog | None) -> None:
    """Releases the write lock if held, and notes what the request must wait for."""
    number = info.pop(_COMMIT_NUMBER, None)
    read = info.pop(_READ, False)
    if info.pop(_LOCK_HELD, False):
        if log is not None:
            log.writes_returned()
        fcntl.flock(info[_LOCK_FD], fcntl.LOCK_UN)
        read = number is None
    if log is None:
        return
    if number is not None:
        group_commit.note_commit(log, number)
    elif read:
        group_commit.note_read(log)


@contextmanager
def writers_turn(connection: PooledConnection) -> Iterator[None]:
    """Hold the writers' queue on ``connection`` without a transaction: no write
    transaction runs meanwhile (a checkpoint then copies all of the log)."""
    info = connection.info
    _take_write_lock(info)
    try:
        yield
    finally:
        if info.pop(_LOCK_HELD, False):
            fcntl.flock(info[_LOCK_FD], fcntl.LOCK_UN)


@contextmanager
def write_transaction(connection: PooledConnection) -> Iterator[None]:
    """A write transaction on a pooled connection (fxchat.models.prepared.pooled).

    The same writers' queue and ``BEGIN IMMEDIATE`` as a Session's writes,
    but nothing else inside: the lock is held from here to the end of the
    COMMIT, not until a transaction manager gets round to committing.
    """
    info = connection.info
    log = commit_log(connection.dialect)
    _take_write_lock(info)
    try:
        run_command(connection, "BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            # A broken connection can't roll back: the pool drops it.
            with contextlib.suppress(connection.dialect.loaded_dbapi.Error):
                connection.driver_connection.rollback()
            raise
        _count_commit(info, log)
        run_command(connection, "COMMIT")
    finally:
        _end_of_transaction(info, log)
