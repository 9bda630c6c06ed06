"""fxchat's own reads and syncs of SQLite's files leave SQLite's locks in place.

SQLite's locks are POSIX advisory locks, which a process loses when it closes
any descriptor of the file; a reader whose lock is gone can have the log
started over under it by another process.
"""

import contextlib
import os
import sqlite3
from pathlib import Path

import pytest

from fxchat.models import sqlite

pytestmark = pytest.mark.skipif(
    not Path("/proc/locks").exists(), reason="reads the process's locks from Linux's /proc/locks"
)


def _locks_held(*paths: Path) -> set[tuple[str, str, str, str]]:
    """This process's POSIX locks on ``paths``: (file, kind, first byte, last byte)."""
    names = {os.stat(path).st_ino: path.name for path in paths}
    held = set()
    for line in Path("/proc/locks").read_text().splitlines():
        if "->" in line:
            continue  # a lock someone waits for, not one held
        _, kind, _, mode, pid, device_inode, first, last = line.split()[:8]
        inode = int(device_inode.rsplit(":", 1)[1])
        if kind == "POSIX" and pid == str(os.getpid()) and inode in names:
            held.add((names[inode], mode, first, last))
    return held


@pytest.fixture
def reading(tmp_path):
    """A database in WAL mode with a connection in the middle of a read."""
    path = tmp_path / "fxchat.sqlite"
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as reader:
        reader.execute("PRAGMA journal_mode=WAL")
        reader.execute("CREATE TABLE t (x)")
        reader.execute("INSERT INTO t VALUES (1)")
        reader.execute("BEGIN")
        assert reader.execute("SELECT x FROM t").fetchall() == [(1,)]
        yield path
        reader.execute("COMMIT")


def test_reading_the_logs_size_keeps_the_readers_locks(reading):
    wal_index = reading.with_name("fxchat.sqlite-shm")
    before = _locks_held(reading, wal_index)
    assert any(name == wal_index.name for name, *_ in before)
    pages = sqlite.log_pages(str(reading))
    assert pages > 0
    for _ in range(3):
        assert sqlite.log_pages(str(reading)) == pages
    assert _locks_held(reading, wal_index) == before


def test_syncing_the_database_file_keeps_the_readers_locks(reading):
    wal_index = reading.with_name("fxchat.sqlite-shm")
    before = _locks_held(reading, wal_index)
    assert any(name == reading.name for name, *_ in before)
    for _ in range(3):
        sqlite.sync_database_file(str(reading))
    assert _locks_held(reading, wal_index) == before


def test_a_replaced_wal_index_is_read_afresh(tmp_path):
    # SQLite deletes the wal-index with the last connection to the database,
    # and the next connection makes another: the count is of the new one.
    path = tmp_path / "fxchat.sqlite"
    wal_index = path.with_name("fxchat.sqlite-shm")
    for rows in (1, 5):
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("CREATE TABLE IF NOT EXISTS t (x)")
            for _ in range(rows):
                connection.execute("INSERT INTO t VALUES (1)")
            pages = sqlite.log_pages(str(path))
            busy, in_log, copied = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            assert (busy, pages) == (0, in_log) and in_log >= rows
        assert not wal_index.exists()
