"""Alembic environment: the database is the one in the ini file's [app:main].

``alembic -c development.ini upgrade head``; ``-x url=…`` points it at
another database (the tests do).
"""

from alembic import context
from pyramid.paster import get_appsettings, setup_logging
from sqlalchemy import create_engine

from fxchat.models import get_engine
from fxchat.models.meta import Base

config = context.config
if config.config_file_name and config.attributes.get("configure_logging", True):
    setup_logging(config.config_file_name)


def database_url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url")
    if url:
        return url
    return get_appsettings(config.config_file_name, name="main")["sqlalchemy.url"]


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=Base.metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = database_url()
    engine = (
        create_engine(url) if not url.startswith("sqlite") else get_engine({"sqlalchemy.url": url})
    )
    with engine.connect() as connection:
        _run(connection)
    engine.dispose()


def _run(connection) -> None:
    # render_as_batch: SQLite can only ALTER a table by copying it.
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
