"""On SQLite a server thread copies the write-ahead log into the database, not the commits."""

import contextlib
import sqlite3
import time

import pytest
import webtest

from fxchat import checkpointer, main
from fxchat.models import sqlite

from . import databases
from .conftest import TEST_SETTINGS, register


def _wait_for(condition, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture
def make_sqlite_app(tmp_path):
    """Apps on a database file of this test's own: no other test's server
    (some never stop their threads) can be watching it."""
    url = databases.sqlite_url(tmp_path)
    databases.migrate(url)
    apps = []

    def make(**settings) -> webtest.TestApp:
        merged = {"sqlalchemy.url": url, **TEST_SETTINGS}
        merged.update({f"fxchat.{k}": str(v) for k, v in settings.items()})
        apps.append(webtest.TestApp(main({}, **merged)))
        return apps[-1]

    yield make
    for app in apps:
        app.app.registry["fxchat.checkpointer"].stop()
        app.app.registry["db_engine"].dispose()


def _autocheckpoint(app) -> int:
    with app.app.registry["db_engine"].connect() as connection:
        return connection.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar()


def test_commits_checkpoint_only_if_the_server_thread_falls_behind(make_app, database_kind):
    app = make_app(sqlite_checkpoint_pages=50)
    if database_kind == "postgresql":
        register(app, "alice@example.com")
        assert app.app.registry["fxchat.checkpointer"].pid is None  # nothing to copy
        return
    assert _autocheckpoint(app) == sqlite.AUTOCHECKPOINT_TIMES * 50
    # Turned off: SQLite's own checkpoint, in a commit, at its default.
    app = make_app(sqlite_checkpoint_pages=0)
    register(app, "alice@example.com")
    assert app.app.registry["fxchat.checkpointer"].pid is None
    assert _autocheckpoint(app) == 1000


def test_the_server_copies_the_log_once_it_holds_enough_pages(make_sqlite_app, monkeypatch):
    # Commits that never checkpoint, so that only the thread can have copied.
    monkeypatch.setattr(sqlite, "AUTOCHECKPOINT_TIMES", 10_000)
    app = make_sqlite_app(sqlite_checkpoint_pages=20)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    watcher = app.app.registry["fxchat.checkpointer"]
    assert _wait_for(watcher.watching.is_set)
    path = sqlite.database_file(app.app.registry["db_engine"])
    sent = [alice.send_to(bob) for _ in range(6)]  # several pages each
    assert _wait_for(lambda: sqlite.log_pages(path) < 20)
    # In the database file itself, without the log (immutable: no WAL read).
    with contextlib.closing(sqlite3.connect(f"file:{path}?immutable=1", uri=True)) as file_only:
        in_file = {id for (id,) in file_only.execute("SELECT message_id FROM messages")}
    assert set(sent) <= in_file


def test_one_thread_watches_a_database_and_another_takes_over(make_sqlite_app, monkeypatch):
    monkeypatch.setattr(checkpointer, "TAKE_OVER_SECONDS", 0.05)
    apps = [make_sqlite_app(sqlite_checkpoint_pages=1000) for _ in range(3)]
    for n, app in enumerate(apps):
        register(app, f"user{n}@example.com")  # each starts its thread
    watchers = [app.app.registry["fxchat.checkpointer"] for app in apps]

    def watching():
        return [watcher for watcher in watchers if watcher.watching.is_set()]

    assert _wait_for(lambda: len(watching()) == 1)
    time.sleep(0.2)  # the others tried meanwhile, and wait
    [first] = watching()
    first.stop()
    assert _wait_for(lambda: len(watching()) == 1 and first not in watching())


def test_a_server_whose_database_directory_is_missing_keeps_trying(tmp_path, monkeypatch):
    monkeypatch.setattr(checkpointer, "TAKE_OVER_SECONDS", 0.05)
    missing = tmp_path / "not-yet"
    app = webtest.TestApp(
        main({}, **{"sqlalchemy.url": databases.sqlite_url(missing), **TEST_SETTINGS})
    )
    watcher = app.app.registry["fxchat.checkpointer"]
    try:
        app.get("/__heartbeat__", status=503)  # starts the thread
        time.sleep(0.2)
        assert not watcher.watching.is_set()
        missing.mkdir()
        assert _wait_for(watcher.watching.is_set)
    finally:
        watcher.stop()
        app.app.registry["db_engine"].dispose()
