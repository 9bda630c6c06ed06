"""Fixtures of the API tests: apps built once per module, as building one costs more than a test."""

from __future__ import annotations

import itertools

import pytest
import sqlalchemy
import webtest

from fxchat import main

from .. import databases
from ..conftest import TEST_SETTINGS, Device, register

_serial = itertools.count()


def _build(database_url: str) -> webtest.TestApp:
    return webtest.TestApp(main({}, **{"sqlalchemy.url": database_url, **TEST_SETTINGS}))


@pytest.fixture(scope="session")
def _postgresql_fast_commits(postgresql_url):
    """Commits on the throwaway test database need not wait for the disk.

    ``synchronous_commit = off`` loses nothing unless PostgreSQL itself
    crashes, and halves the time of every write; it applies to the
    connections opened from now on.
    """
    name = sqlalchemy.engine.make_url(postgresql_url).database
    admin = sqlalchemy.create_engine(databases.POSTGRESQL_SERVER, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'ALTER DATABASE "{name}" SET synchronous_commit TO off')
    finally:
        admin.dispose()


@pytest.fixture(scope="module")
def module_app(request, database_kind, database_url):
    """The default app, built once per module and database; its tables are not emptied for it."""
    if database_kind == "postgresql":
        request.getfixturevalue("_postgresql_fast_commits")
    app = _build(database_url)
    yield app
    app.app.registry["db_engine"].dispose()


@pytest.fixture
def app(module_app, clean_database):
    """The default app on emptied tables, with the real clock (overrides tests/conftest.py).

    The app itself is kept for the whole module: it holds no state between
    requests but the clock, which is reset here. Tests that need other
    settings build their own with ``make_app``.
    """
    module_app.app.registry.pop("fxchat.clock", None)
    return module_app


@pytest.fixture(scope="module")
def shared_app(sqlite_url):
    """An app kept for the whole module, on SQLite only, with tables never emptied for it.

    For the many cases of request validation: it happens before any database
    work, so one database is enough. Its tests make their own users
    (``new_user``) and need neither empty tables nor a clock; other tests may
    empty the tables between two of its tests, never during one.
    """
    app = _build(sqlite_url)
    yield app
    app.app.registry["db_engine"].dispose()


@pytest.fixture
def new_user(shared_app):
    """Register a user no other test uses, on ``shared_app``: ``new_user("alice")``."""

    def make(name: str = "user") -> Device:
        return register(shared_app, f"{name}-{next(_serial)}@example.com")

    return make
