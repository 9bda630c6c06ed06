"""Group commit on SQLite: one sync of the write-ahead log for all the commits waiting on it.

With SQLite's own ``PRAGMA synchronous = FULL`` every commit syncs the WAL
while it holds the database's only write lock: the writers queued behind it
wait for the disk, and each sync costs the kernel about as much CPU as the
transaction itself. Instead, fxchat's connections run with ``synchronous =
NORMAL`` (a commit writes the WAL, a checkpoint syncs it) and a writer,
after it has released the write lock and before it answers, waits until the
WAL has been synced since its commit: by itself, or by another process that
synced once for every commit waiting then. That is PostgreSQL's group
commit, between the server's processes; the promise is the same as FULL's:
a write is on disk before its request is answered.

Counters in a small file that every process maps (``<database>-commits``)
say how far that is:

- ``started``: commits begun, counted under the write lock just before COMMIT;
- ``finished``: set to ``started`` under the write lock once COMMIT (or a
  rollback) returned, so every commit it counts is in the WAL;
- ``synced``: the ``finished`` count that the latest sync of the WAL covered;
- ``syncs``: how many syncs that took (``commits / syncs`` is the grouping).

One process at a time syncs (an ``flock`` of ``<database>-sync``); the others
wait for that lock and most then find their commit covered. Before it syncs,
it lets the commit under way, if any, return (at most a millisecond), so
that under load each sync covers several. A sync covers
every commit before it whatever happened to the WAL meanwhile: a checkpoint
syncs the WAL before copying it into the database and the database after,
and SQLite only starts the WAL over once a checkpoint has copied all of it.

Requests that only read wait too, for every commit they could have seen
(``started`` once they are done): they must not hand out what a power loss
could still take back. The connections' pool listeners (fxchat.models.sqlite)
note what the thread's request must wait for; :func:`durability_tween_factory`,
above pyramid_tm, waits once its transaction is over and its locks are
released, before the response leaves.
"""

from __future__ import annotations

import fcntl
import logging
import mmap
import os
import threading
import time

from ..errors import service_unavailable

logger = logging.getLogger(__name__)

# started, finished, synced, and the number of syncs (for operators and
# tests): 8-byte counters, aligned, so that each is read and written whole.
_COUNTERS = 4
_SIZE = 8 * _COUNTERS
_STARTED, _FINISHED, _SYNCED, _SYNCS = range(_COUNTERS)

# How often a reader looks again while the commit it may have seen is still
# running (a commit holds the write lock for a fraction of a millisecond).
_POLL_SECONDS = 0.0002
# How long a sync may wait for the commits under way to join it.
_GATHER_SECONDS = 0.001


class CommitLog:
    """The commit counters of one SQLite database, shared by every process using it."""

    def __init__(self, database: str, writers_lock: str):
        self.database = database
        self.wal = f"{database}-wal"
        # The file whose flock queues the writers (fxchat.models.sqlite).
        self.writers_lock = writers_lock
        self._thread = threading.local()
        self._mapping: memoryview | None = None
        self._mapping_lock = threading.Lock()

    @property
    def _counters(self) -> memoryview:
        # Mapped when first used, by a connection that opened the database:
        # a server may start before its database's directory exists.
        if self._mapping is None:
            with self._mapping_lock:
                if self._mapping is None:
                    self._mapping = self._map_counters()
        return self._mapping

    def _map_counters(self) -> memoryview:
        descriptor = os.open(f"{self.database}-commits", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            # Processes racing here all grow it to the same size, never shrink it.
            if os.fstat(descriptor).st_size < _SIZE:
                os.ftruncate(descriptor, _SIZE)
            mapped = mmap.mmap(descriptor, _SIZE)
        finally:
            os.close(descriptor)
        return memoryview(mapped).cast("Q")

    def _locks(self) -> tuple[int, int]:
        """This thread's descriptors of the sync lock and of the writers' lock.

        One per thread: flock locks belong to open files, so threads sharing
        one descriptor would not keep each other out.
        """
        locks = getattr(self._thread, "locks", None)
        # A process forked from this thread shares its open files, and with
        # them its locks: it opens its own.
        if locks is None or self._thread.pid != os.getpid():
            locks = self._thread.locks = tuple(
                os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
                for path in (f"{self.database}-sync", self.writers_lock)
            )
            self._thread.pid = os.getpid()
        return locks

    @property
    def started(self) -> int:
        return self._counters[_STARTED]

    @property
    def finished(self) -> int:
        return self._counters[_FINISHED]

    @property
    def synced(self) -> int:
        return self._counters[_SYNCED]

    @property
    def syncs(self) -> int:
        return self._counters[_SYNCS]

    def count_commit(self) -> int:
        """The number of the commit about to run; call under the write lock, before COMMIT."""
        number = self._counters[_STARTED] + 1
        self._counters[_STARTED] = number
        return number

    def writes_returned(self) -> None:
        """Under the write lock, once COMMIT or ROLLBACK returned: every counted commit is done."""
        self._counters[_FINISHED] = self._counters[_STARTED]

    def wait_synced(self, number: int, *, timeout: float) -> None:
        """Return once commit ``number`` and all before it are on disk.

        ``number`` may be of a commit still running (a reader's bound, taken
        from ``started``): then this waits for it to return first. A process
        that died in its commit never says it did: once nobody holds the
        write lock, whatever was counted is over. Raises OSError if the sync fails.
        """
        if self._counters[_SYNCED] >= number:
            return
        sync_lock, writer_lock = self._locks()
        deadline = time.monotonic() + timeout
        while True:
            fcntl.flock(sync_lock, fcntl.LOCK_EX)
            try:
                if self._counters[_SYNCED] >= number:
                    return
                finished = self._counters[_FINISHED]
                if finished >= number:
                    finished = self._gather(finished)
                if finished >= number or time.monotonic() > deadline:
                    # Everything written by then goes in this one sync.
                    _sync(self.wal)
                    self._counters[_SYNCS] += 1
                    if finished > self._counters[_SYNCED]:
                        self._counters[_SYNCED] = finished
                    return
            finally:
                fcntl.flock(sync_lock, fcntl.LOCK_UN)
            if not self._settle(writer_lock):
                time.sleep(_POLL_SECONDS)

    def _gather(self, finished: int) -> int:
        """Wait for the commits under way to return, briefly: one sync then covers them too.

        Under load a writer holds the write lock almost all the time, and
        its commit returns within a fraction of a millisecond; syncing
        without it would cost it a sync of its own (the kernel's CPU, not
        only the disk's time). Without other writers this waits for nothing.
        """
        under_way = self._counters[_STARTED]
        deadline = time.monotonic() + _GATHER_SECONDS
        while finished < under_way and time.monotonic() < deadline:
            time.sleep(_POLL_SECONDS)
            finished = self._counters[_FINISHED]
        return finished

    def _settle(self, writer_lock: int) -> bool:
        """If no one holds the write lock, mark every counted commit as returned."""
        try:
            fcntl.flock(writer_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        try:
            self.writes_returned()
        finally:
            fcntl.flock(writer_lock, fcntl.LOCK_UN)
        return True

    def wait_visible(self, *, timeout: float) -> None:
        """For a reader that is done: every commit it could have seen is on disk."""
        self.wait_synced(self._counters[_STARTED], timeout=timeout)


def _sync(wal: str) -> None:
    # Opened afresh: SQLite deletes the WAL when its last connection closes
    # (after checkpointing all of it into the synced database), so a
    # descriptor kept open could be of a file no longer in use.
    sync_file(wal)


def sync_file(path: str) -> None:
    """Write ``path``'s data to disk, as SQLite syncs its files; nothing if it is gone."""
    try:
        descriptor = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        # The data and the size, not the times.
        os.fdatasync(descriptor)
    finally:
        os.close(descriptor)


_logs: dict[str, CommitLog] = {}
_logs_lock = threading.Lock()


def commit_log(database: str, writers_lock: str) -> CommitLog:
    """The process's one mapping of ``database``'s counters."""
    with _logs_lock:
        log = _logs.get(database)
        if log is None:
            log = _logs[database] = CommitLog(database, writers_lock)
        return log


class _Pending(threading.local):
    """What the request on this thread must wait for before it answers."""

    log: CommitLog | None = None
    number: int = 0  # its latest commit
    visible: bool = False  # it read: every commit it could have seen


_pending = _Pending()


def note_commit(log: CommitLog, number: int) -> None:
    """This thread's request committed ``number`` (the pool's listeners call this)."""
    _pending.log = log
    _pending.number = max(_pending.number, number)


def note_read(log: CommitLog) -> None:
    """This thread's request read in a transaction, or rolled one back."""
    _pending.log = log
    _pending.visible = True


def wait_for_this_thread(*, timeout: float) -> None:
    """Return once what this thread's request committed or read is on disk."""
    log, number, visible = _pending.log, _pending.number, _pending.visible
    if log is None:
        return
    forget_this_thread()
    if visible:
        log.wait_visible(timeout=timeout)
    else:
        log.wait_synced(number, timeout=timeout)


def forget_this_thread() -> None:
    _pending.log, _pending.number, _pending.visible = None, 0, False


def durability_tween_factory(handler, registry):
    """Answers only once the request's commits, and what it read, are on disk."""
    timeout = registry.fxchat.db_timeout

    def durability_tween(request):
        # Whatever an earlier request of this thread left (one that raised)
        # is not this one's to wait for.
        forget_this_thread()
        response = handler(request)
        try:
            wait_for_this_thread(timeout=timeout)
        except OSError:
            # The disk refused the sync: what was written may not be there.
            # Never answer as if it were (a retry with the same
            # Idempotency-Key is safe).
            logger.critical("syncing the SQLite write-ahead log failed", exc_info=True)
            return service_unavailable("the database could not be written to disk")
        return response

    return durability_tween
