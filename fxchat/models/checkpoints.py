"""SQLite: copying the write-ahead log into the database (a checkpoint) beside the writers.

SQLite's own checkpoint runs in the commit that takes the log past
``wal_autocheckpoint`` pages, inside that writer's turn: every writer queued
behind it waits while it copies the log and syncs the database file (15 to
30 ms, docs/performance.rst). fxchat copies the log itself instead, from a
thread of the server (fxchat.checkpointer) and from the purge, which write
the most: the copy and the sync run beside the writers, and only the few
pages written meanwhile are copied in the writers' queue, so that the next
writer finds the log all copied and starts it over.

A larger log between checkpoints also writes less: a page that several
commits changed is copied into the database once. The purge, which changes
a page of the queue index per copy it deletes, writes a fraction of the
pages it did when it had to checkpoint under SQLite's 1,000.
"""

from __future__ import annotations

import fcntl
import os

from sqlalchemy.engine import Engine

from . import sqlite
from .prepared import PooledConnection, pooled

# Passes of the copy beside the writers at most, each copying what the
# writers added during the one before, before the rest is copied in their
# queue: while something writes as fast as the purge (a page every few
# microseconds), one pass leaves as many pages as it copied.
BESIDE_PASSES = 4
# What is left little enough to copy in the writers' queue (a millisecond
# or so on an SSD).
TAIL_PAGES = 200


def checkpointing_lock_file(database: str) -> str:
    """The file whose ``flock`` lets one copy of ``database``'s log run at a time."""
    return f"{database}-checkpoint"


def copy_log(engine: Engine, database: str, *, wait: bool = False) -> bool:
    """Copy the log of ``database`` into it; False if another copy was running.

    ``engine`` is one of fxchat's (its connections queue for the writers'
    lock, fxchat.models.sqlite). Two copies at once would only take turns on
    SQLite's checkpoint lock (the second reporting busy), so the second of
    the server's checkpointer and a purge lets the first do it, unless told
    to ``wait`` for its turn (for what must be in the database file when it
    returns).
    """
    descriptor = os.open(checkpointing_lock_file(database), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        with pooled(engine) as connection:
            _copy(connection, database)
        return True
    finally:
        os.close(descriptor)  # and with it the lock


def _copy(connection: PooledConnection, database: str) -> None:
    # On the driver's connection: SQLAlchemy's would begin a transaction,
    # and so take the write lock, first.
    copy = connection.driver_connection.execute
    for _ in range(BESIDE_PASSES):
        copy("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        left = sqlite.log_pages(database)
        if left is not None and left <= TAIL_PAGES:
            break
    # What the copy in the writers' queue would otherwise sync there.
    sqlite.sync_database_file(database)
    # SQLite starts the log over only after a checkpoint that copied all of
    # it, which one beside writers seldom does; the log would then grow
    # until a commit checkpoints it in the writers' turn after all.
    with sqlite.writers_turn(connection):
        copy("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
