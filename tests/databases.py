"""Test databases: a fresh SQLite file or a fresh PostgreSQL database per run.

The schema is always made by ``alembic upgrade head``, as in production.
PostgreSQL comes from ``FXCHAT_TEST_POSTGRESQL`` (a server URL, default
the local trust-auth server); where none answers, its tests skip, unless
``FXCHAT_REQUIRE_POSTGRESQL=1`` (set by CI) makes that a failure.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import sqlalchemy
from alembic import command
from alembic.config import Config

ROOT = Path(__file__).resolve().parent.parent
POSTGRESQL_SERVER = os.environ.get(
    "FXCHAT_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REQUIRE_POSTGRESQL = os.environ.get("FXCHAT_REQUIRE_POSTGRESQL") == "1"


def alembic_config(url: str) -> Config:
    config = Config(str(ROOT / "development.ini"))
    config.set_main_option("script_location", str(ROOT / "migrations"))
    config.cmd_opts = type("opts", (), {"x": [f"url={url}"]})()
    config.attributes["configure_logging"] = False
    return config


def migrate(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)


class PostgreSQLUnavailable(Exception):
    pass


def create_postgresql_database() -> str:
    """A new, empty database on the test server; its URL."""
    name = f"fxchat_test_{secrets.token_hex(6)}"
    admin = sqlalchemy.create_engine(
        POSTGRESQL_SERVER, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sqlalchemy.exc.OperationalError as error:
        raise PostgreSQLUnavailable(
            f"no PostgreSQL server at {POSTGRESQL_SERVER} ({error.orig})"
        ) from None
    finally:
        admin.dispose()
    return str(
        sqlalchemy.engine.make_url(POSTGRESQL_SERVER)
        .set(database=name)
        .render_as_string(hide_password=False)
    )


def drop_postgresql_database(url: str) -> None:
    name = sqlalchemy.engine.make_url(url).database
    admin = sqlalchemy.create_engine(POSTGRESQL_SERVER, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def sqlite_url(directory: Path) -> str:
    return f"sqlite:///{directory / 'fxchat.sqlite'}"


def empty_tables(engine: sqlalchemy.Engine) -> None:
    """Delete every row, children first: each test starts from nothing."""
    from fxchat.models import Base

    with engine.begin() as connection:
        for table in reversed(Base.metadata.sorted_tables):
            connection.execute(table.delete())
