"""The server purges expired data by itself: a daemon thread per process.

Started lazily by the first request a process serves, so that a server
which forks its workers after loading the application still gets one
purger per worker. Purge steps are idempotent and batched, so several
processes purging at once only share the work.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from contextlib import contextmanager

import transaction
from pyramid.events import NewRequest

from .models import get_tm_session
from .services.retention import purge

logger = logging.getLogger(__name__)


def run_purge(registry, *, now: int | None = None):
    """One full purge with the registry's database and settings."""
    settings = registry.fxchat
    session_factory = registry["dbsession_factory"]

    @contextmanager
    def one_transaction():
        manager = transaction.TransactionManager(explicit=True)
        with manager:
            yield get_tm_session(session_factory, manager)

    return purge(
        one_transaction,
        now=now if now is not None else int(time.time() * 1000),
        receipt_retention=settings.receipt_retention,
        idempotency_window=settings.idempotency_window,
        batch_size=settings.purge_batch_size,
    )


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
                report = run_purge(self.registry)
                if any(report.as_json().values()):
                    logger.info("purged", extra={"fields": report.as_json()})
            except Exception:
                # The database may be down; the next round will try again.
                logger.warning("purge failed", exc_info=True)


def includeme(config) -> None:
    purger = Purger(config.registry)
    config.registry["fxchat.purger"] = purger
    config.add_subscriber(lambda event: purger.ensure_running(), NewRequest)
