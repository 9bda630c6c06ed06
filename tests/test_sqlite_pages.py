"""SQLite: a new database is made with fxchat's page size; an existing one keeps its own."""

import contextlib
import sqlite3
from collections.abc import Iterator

import webtest

from fxchat import main
from fxchat.models import sqlite

from . import databases
from .api.checks import rows
from .conftest import TEST_SETTINGS, register

SQLITES_DEFAULT_PAGE_SIZE = 4096


def _made_with_sqlites_default_pages(path) -> None:
    """A database file made before fxchat chose its page size: WAL, one table."""
    with contextlib.closing(sqlite3.connect(path)) as connection:
        connection.execute(f"PRAGMA page_size={SQLITES_DEFAULT_PAGE_SIZE}")
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("CREATE TABLE made_earlier (x)")


def _page_size(path) -> int:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute("PRAGMA page_size").fetchone()[0]


@contextlib.contextmanager
def _app_on(url: str) -> Iterator[webtest.TestApp]:
    """The app on the database at ``url``, its connections closed afterwards."""
    app = webtest.TestApp(main({}, **{"sqlalchemy.url": url, **TEST_SETTINGS}))
    try:
        yield app
    finally:
        app.app.registry["fxchat.purger"].stop()
        app.app.registry["db_engine"].dispose()


def _exchange_a_message(url: str) -> None:
    with _app_on(url) as app:
        alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
        sent = alice.send_to(bob)
        assert [message["id"] for message in bob.inbox()] == [sent]
        bob.ack(sent)
        assert bob.inbox() == []


def test_a_new_database_has_fxchats_page_size(tmp_path):
    assert sqlite.PAGE_SIZE != SQLITES_DEFAULT_PAGE_SIZE
    url = databases.sqlite_url(tmp_path)
    databases.migrate(url)  # as make serve and fxchat's deployment docs create it
    path = tmp_path / "fxchat.sqlite"
    assert _page_size(path) == sqlite.PAGE_SIZE
    _exchange_a_message(url)
    assert _page_size(path) == sqlite.PAGE_SIZE


def test_an_existing_database_keeps_its_page_size(tmp_path):
    # SQLite ignores the setting once a file has tables; the database works as before.
    path = tmp_path / "fxchat.sqlite"
    _made_with_sqlites_default_pages(path)
    url = databases.sqlite_url(tmp_path)
    databases.migrate(url)
    _exchange_a_message(url)
    assert _page_size(path) == SQLITES_DEFAULT_PAGE_SIZE


def test_an_existing_database_converts_as_the_operations_guide_says(tmp_path):
    path = tmp_path / "fxchat.sqlite"
    _made_with_sqlites_default_pages(path)
    url = databases.sqlite_url(tmp_path)
    databases.migrate(url)
    _exchange_a_message(url)
    assert _page_size(path) == SQLITES_DEFAULT_PAGE_SIZE
    # docs/operations.rst, "Purging": with the server stopped.
    with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as connection:
        for statement in (
            "PRAGMA journal_mode=DELETE",
            f"PRAGMA page_size={sqlite.PAGE_SIZE}",
            "VACUUM",
            "PRAGMA journal_mode=WAL",
        ):
            connection.execute(statement)
    assert _page_size(path) == sqlite.PAGE_SIZE
    with _app_on(url) as app:
        # What was there before the conversion still is.
        assert len(rows(app, "users")) == 2
        carol, dave = register(app, "carol@example.com"), register(app, "dave@example.com")
        sent = carol.send_to(dave)
        assert [message["id"] for message in dave.inbox()] == [sent]
