"""SQLite: a server thread copies the write-ahead log into the database, beside the writers.

So that no request's commit does it while the writers queue behind it
(fxchat.models.checkpoints). Each server process has one, started by the
first request it serves, so that a server which forks its workers after
loading the application still gets one per worker; of those on one
database, one watches the log at a time (the holder of an ``flock`` of
``<database>-checkpointer``) and, if its process ends, another takes over.
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading

from pyramid.events import NewRequest

from .models import checkpoints, sqlite

logger = logging.getLogger(__name__)

# How often the watching thread reads the log's size (from SQLite's
# wal-index: a read of a small file). The purge writes a few hundred pages
# in that time, the most any writer does.
WATCH_SECONDS = 0.01
# How often the others try to take over the watch.
TAKE_OVER_SECONDS = 1.0


def watcher_lock_file(database: str) -> str:
    """The file whose ``flock`` the one thread watching ``database``'s log holds."""
    return f"{database}-checkpointer"


class Checkpointer:
    def __init__(self, registry):
        self.engine = registry["db_engine"]
        self.database = sqlite.database_file(self.engine)
        self.pages = registry.fxchat.sqlite_checkpoint_pages
        self.pid: int | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.watching = threading.Event()  # for tests and operators: this one copies

    @property
    def wanted(self) -> bool:
        return self.database is not None and self.pages > 0

    def ensure_running(self) -> None:
        if not self.wanted or self.pid == os.getpid() or self.stopping.is_set():
            return
        with self.lock:
            if self.pid == os.getpid():
                return
            self.pid = os.getpid()
            self.watching.clear()  # a forked copy's flag was its parent's
            threading.Thread(target=self._run, name="fxchat-checkpointer", daemon=True).start()

    def stop(self) -> None:
        """Ask the thread to end within a moment (for tests and shutdown)."""
        self.stopping.set()

    def _run(self) -> None:
        descriptor = None
        try:
            while True:
                if descriptor is None:
                    descriptor = self._open_watch()
                if descriptor is not None and self._take_the_watch(descriptor):
                    break
                if self.stopping.wait(TAKE_OVER_SECONDS):
                    return
            self.watching.set()
            self._watch()
        finally:
            self.watching.clear()
            if descriptor is not None:
                os.close(descriptor)  # and with it the watch

    def _open_watch(self) -> int | None:
        try:
            return os.open(watcher_lock_file(self.database), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            # Its directory may not be there yet: the server answers 503
            # until it is, and this thread tries again meanwhile.
            return None

    @staticmethod
    def _take_the_watch(descriptor: int) -> bool:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _watch(self) -> None:
        while not self.stopping.wait(WATCH_SECONDS):
            pages = sqlite.log_pages(self.database)
            # Unknown (a wal-index this code cannot read): SQLite's own
            # checkpoint, at a few times as many pages, takes over.
            if pages is None or pages < self.pages:
                continue
            try:
                checkpoints.copy_log(self.engine, self.database)
            except Exception:
                # The database may be gone or locked for long; the next look
                # tries again, and meanwhile SQLite's own checkpoint stands in.
                logger.warning("checkpoint failed", exc_info=True)
                self.stopping.wait(TAKE_OVER_SECONDS)


def includeme(config) -> None:
    checkpointer = Checkpointer(config.registry)
    config.registry["fxchat.checkpointer"] = checkpointer
    if checkpointer.wanted:
        config.add_subscriber(lambda event: checkpointer.ensure_running(), NewRequest)
