"""SQLite specifics: WAL, durability, foreign keys, and one writer at a time.

SQLite lets one transaction write at a time. When several threads or
processes want to write, the losers of the race poll SQLite's busy handler,
which sleeps between tries (up to 100 ms), so latency and throughput
collapse under load. Writers here first queue on an ``flock`` of a lock
file beside the database: the kernel wakes the next one as soon as the lock
is released, and a process that dies releases its lock with it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event
from sqlalchemy.engine import Engine

from .prepared import PooledConnection, run_command

# The execution option that marks a connection used only for reading.
READ_ONLY = "fxchat_read_only"
_LOCK_FD = "fxchat_writer_lock_fd"
_LOCK_HELD = "fxchat_writer_lock_held"


def database_file(engine: Engine) -> str | None:
    """The path of ``engine``'s SQLite file; None for another database or one in memory."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or database in (None, "", ":memory:"):
        return None
    return database


def configure(engine: Engine, synchronous: str) -> None:
    database = database_file(engine)
    on_disk = database is not None

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, record):
        cursor = dbapi_connection.cursor()
        if on_disk:
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL: a commit is on disk before the client hears 201. NORMAL
            # keeps that promise against process crashes, not power loss.
            cursor.execute(f"PRAGMA synchronous={synchronous.upper()}")
            # One lock-file descriptor per connection: flock() locks belong to
            # open files, so connections of one process queue like others.
            record.info[_LOCK_FD] = os.open(f"{database}-writers", os.O_RDWR | os.O_CREAT, 0o600)
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection):
        # Writers take the write lock up front: a transaction that read first
        # and upgraded later could fail with SQLITE_BUSY_SNAPSHOT instead of
        # waiting. Readers keep a plain deferred BEGIN and never block writers.
        options = connection.get_execution_options()
        if options.get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
            return
        info = connection.connection.info
        if _LOCK_FD in info and not info.get(_LOCK_HELD):
            fcntl.flock(info[_LOCK_FD], fcntl.LOCK_EX)
            info[_LOCK_HELD] = True
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    @event.listens_for(engine, "checkin")
    def _checkin(dbapi_connection, record):
        # Back in the pool: its transaction has been committed or rolled back.
        if record.info.pop(_LOCK_HELD, False):
            fcntl.flock(record.info[_LOCK_FD], fcntl.LOCK_UN)

    @event.listens_for(engine, "close")
    def _close(dbapi_connection, record):
        if record.info.pop(_LOCK_HELD, False):
            fcntl.flock(record.info[_LOCK_FD], fcntl.LOCK_UN)
        if _LOCK_FD in record.info:
            os.close(record.info.pop(_LOCK_FD))


@contextmanager
def write_transaction(connection: PooledConnection) -> Iterator[None]:
    """A write transaction on a pooled connection (fxchat.models.prepared.pooled).

    The same writers' queue and ``BEGIN IMMEDIATE`` as a Session's writes,
    but nothing else inside: the lock is held from here to the end of the
    COMMIT, not until a transaction manager gets round to committing.
    """
    info = connection.info
    if _LOCK_FD in info and not info.get(_LOCK_HELD):
        fcntl.flock(info[_LOCK_FD], fcntl.LOCK_EX)
        info[_LOCK_HELD] = True
    try:
        run_command(connection, "BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            # A broken connection can't roll back: the pool drops it.
            with contextlib.suppress(connection.dialect.loaded_dbapi.Error):
                connection.driver_connection.rollback()
            raise
        run_command(connection, "COMMIT")
    finally:
        if info.pop(_LOCK_HELD, False):
            fcntl.flock(info[_LOCK_FD], fcntl.LOCK_UN)
