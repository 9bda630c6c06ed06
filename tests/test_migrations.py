"""Alembic migrations: on an empty database, ``upgrade head`` makes exactly the models' schema."""

from __future__ import annotations

import re

import pytest
import sqlalchemy
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from fxchat.models import Base

from . import databases


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request, tmp_path):
    """The URL of a database with nothing in it: a new SQLite file, a new PostgreSQL database."""
    if request.param == "sqlite":
        yield databases.sqlite_url(tmp_path)
        return
    if request.config.getoption("--sqlite-only"):
        pytest.skip("--sqlite-only")
    try:
        url = databases.create_postgresql_database()
    except databases.PostgreSQLUnavailable as error:
        if databases.REQUIRE_POSTGRESQL:
            pytest.fail(f"PostgreSQL is required (FXCHAT_REQUIRE_POSTGRESQL=1): {error}")
        pytest.skip(str(error))
    try:
        yield url
    finally:
        databases.drop_postgresql_database(url)


def _inspect(url: str, look):
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as connection:
            return look(connection)
    finally:
        engine.dispose()


def schema_differences(url: str) -> list:
    def compare(connection):
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return compare_metadata(context, Base.metadata)

    return _inspect(url, compare)


def table_names(url: str) -> set[str]:
    return _inspect(url, lambda connection: set(sqlalchemy.inspect(connection).get_table_names()))


def _predicate(where) -> str | None:
    """A partial index's WHERE clause, spelled the same whatever reflected it."""
    if where is None:
        return None
    text = str(where).lower()
    return re.sub(r"[\s()]", "", text)


def model_indexes(dialect: str) -> dict[tuple[str, str], tuple]:
    indexes = {}
    for table in Base.metadata.sorted_tables:
        for index in table.indexes:
            where = index.dialect_options[dialect].get("where")
            indexes[(table.name, index.name)] = (
                tuple(column.name for column in index.columns),
                bool(index.unique),
                _predicate(where),
            )
    return indexes


def database_indexes(url: str, dialect: str) -> dict[tuple[str, str], tuple]:
    def look(connection):
        inspector = sqlalchemy.inspect(connection)
        indexes = {}
        for table in Base.metadata.sorted_tables:
            for index in inspector.get_indexes(table.name):
                if index.get("duplicates_constraint"):
                    continue  # PostgreSQL's index behind a unique constraint
                where = index.get("dialect_options", {}).get(f"{dialect}_where")
                indexes[(table.name, index["name"])] = (
                    tuple(index["column_names"]),
                    bool(index["unique"]),
                    _predicate(where),
                )
        return indexes

    return _inspect(url, look)


def constraint_names(url: str) -> dict[str, set]:
    """Names of the unique and foreign-key constraints, with what they bind."""

    def look(connection):
        inspector = sqlalchemy.inspect(connection)
        found = {"unique": set(), "foreign": set()}
        for table in Base.metadata.sorted_tables:
            for unique in inspector.get_unique_constraints(table.name):
                found["unique"].add((table.name, unique["name"], tuple(unique["column_names"])))
            for foreign in inspector.get_foreign_keys(table.name):
                found["foreign"].add(
                    (
                        table.name,
                        foreign["name"],
                        tuple(foreign["constrained_columns"]),
                        foreign["referred_table"],
                        (foreign.get("options") or {}).get("ondelete"),
                    )
                )
        return found

    return _inspect(url, look)


def model_constraint_names() -> dict[str, set]:
    found = {"unique": set(), "foreign": set()}
    for table in Base.metadata.sorted_tables:
        for constraint in table.constraints:
            if isinstance(constraint, sqlalchemy.UniqueConstraint):
                found["unique"].add(
                    (table.name, constraint.name, tuple(c.name for c in constraint.columns))
                )
            elif isinstance(constraint, sqlalchemy.ForeignKeyConstraint):
                found["foreign"].add(
                    (
                        table.name,
                        constraint.name,
                        tuple(c.name for c in constraint.columns),
                        constraint.referred_table.name,
                        constraint.ondelete,
                    )
                )
    return found


def dialect_of(url: str) -> str:
    return sqlalchemy.engine.make_url(url).get_backend_name()


def assert_schema_is_the_models(url: str) -> None:
    assert schema_differences(url) == []
    assert table_names(url) == set(Base.metadata.tables) | {"alembic_version"}
    dialect = dialect_of(url)
    assert database_indexes(url, dialect) == model_indexes(dialect)
    assert constraint_names(url) == model_constraint_names()


def test_upgrade_head_makes_the_models_schema(empty_database):
    assert table_names(empty_database) == set()
    databases.migrate(empty_database)
    assert_schema_is_the_models(empty_database)


def test_partial_indexes_exist_with_their_predicates(empty_database):
    databases.migrate(empty_database)
    indexes = database_indexes(empty_database, dialect_of(empty_database))
    assert indexes[("copies", "ix_copies_queue")] == (("device_pk", "pk"), False, "state=0")
    assert indexes[("copies", "ix_copies_pending_expiry")] == (("expires_at",), False, "state=0")
    assert indexes[("devices", "ix_devices_active_by_user")] == (
        ("user_pk", "pk"),
        False,
        "revoked_atisnull",
    )


def test_downgrade_base_leaves_nothing_and_upgrade_works_again(empty_database):
    databases.migrate(empty_database)
    databases.downgrade(empty_database, "base")
    assert table_names(empty_database) == {"alembic_version"}
    assert (
        _inspect(
            empty_database,
            lambda connection: connection.exec_driver_sql(
                "SELECT count(*) FROM alembic_version"
            ).scalar(),
        )
        == 0
    )
    databases.migrate(empty_database)
    assert_schema_is_the_models(empty_database)
