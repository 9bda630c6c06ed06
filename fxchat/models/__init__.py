"""Database wiring: engine, session factory, one transaction per request."""

from __future__ import annotations

import functools

import sqlalchemy
import zope.sqlalchemy
from sqlalchemy import engine_from_config
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, configure_mappers, sessionmaker

from . import liveness, sqlite
from .accounts import Device, User  # noqa: F401
from .messages import Body, Copy, CopyState, IdempotencyKey, Message  # noqa: F401
from .meta import Base  # noqa: F401
from .sqlite import READ_ONLY

configure_mappers()


def get_engine(
    settings: dict,
    *,
    db_timeout: int = 5,
    sqlite_synchronous: str = "full",
    pg_random_page_cost: float | None = 1.1,
    prefix: str = "sqlalchemy.",
) -> Engine:
    """The engine for ``sqlalchemy.url``, tuned for each database we support."""
    url = sqlalchemy.engine.make_url(settings[prefix + "url"])
    # hide_parameters: SQL errors end up in logs, and parameters hold token
    # hashes and message bytes.
    options: dict = {"hide_parameters": True}
    if url.get_backend_name() == "sqlite":
        # Python's sqlite3 module begins transactions lazily and too late for
        # us; we issue BEGIN ourselves (see models.sqlite).
        options["connect_args"] = {
            "timeout": db_timeout,
            "isolation_level": None,
            "check_same_thread": False,
        }
    elif url.get_backend_name() == "postgresql":
        options["connect_args"] = {
            "connect_timeout": db_timeout,
            # A database host that vanishes without closing its connections
            # is noticed within about db_timeout seconds, not never.
            "keepalives": 1,
            "keepalives_idle": db_timeout,
            "keepalives_interval": 1,
            "keepalives_count": 3,
            "tcp_user_timeout": db_timeout * 1000,
            # A statement or lock wait that outlives this is cancelled, so a
            # request never hangs on a stuck database.
            "options": f"-c statement_timeout={db_timeout * 1000}"
            f" -c lock_timeout={db_timeout * 1000}",
        }
        if pg_random_page_cost is not None:
            # PostgreSQL's default (4.0) prices a random read as on a spinning
            # disk, and then may read a device's queue through the primary key
            # (the heap is in pk order), walking past every acknowledged copy
            # kept for receipts: a fetch that slows down as history grows.
            # At SSD prices the queue index wins (docs/operations.rst).
            options["connect_args"]["options"] += f" -c random_page_cost={pg_random_page_cost}"
        options["pool_timeout"] = db_timeout
    engine = engine_from_config(settings, prefix, **options)
    if engine.dialect.name == "sqlite":
        sqlite.configure(engine, sqlite_synchronous)
    else:
        # A connection the server closed (a restart, an idle timeout) is
        # noticed before a request uses it, not as that request's error.
        liveness.ping_idle_connections(engine)
    return engine


def get_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


# Engines with options are made once: every request needs one.
@functools.cache
def read_only_engine(engine: Engine) -> Engine:
    """``engine`` for sessions that only read."""
    return engine.execution_options(**{READ_ONLY: True})


def get_tm_session(
    session_factory, transaction_manager, request=None, *, read_only: bool = False
) -> Session:
    """A session joined to ``transaction_manager``: committed or aborted with it."""
    options = {"info": {"request": request}}
    if read_only:
        options["bind"] = read_only_engine(session_factory.kw["bind"])
    dbsession = session_factory(**options)
    # Joined now, for the one transaction the session lives in, rather than
    # through zope.sqlalchemy.register: that attaches seven event listeners to
    # every new session, a tenth of a small request's CPU, only to join later
    # or to notice writes. A writing session always commits with its
    # transaction (statements on tables would not tell zope.sqlalchemy that
    # they wrote); a reading one always rolls back.
    zope.sqlalchemy.ZopeTransactionEvents(
        initial_state="active" if read_only else "changed",
        transaction_manager=transaction_manager,
    ).join_transaction(dbsession)
    return dbsession


# Requests that only read: their session never takes SQLite's write lock.
READING_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))


def includeme(config) -> None:
    """Adds ``request.dbsession``: one session per request, one transaction."""
    settings = config.get_settings()
    settings["tm.manager_hook"] = "pyramid_tm.explicit_manager"
    # pyramid_tm would look up the device to note it on the transaction; the
    # access log says who made each request already.
    settings.setdefault("tm.annotate_user", False)
    config.include("pyramid_tm")
    config.include("pyramid_retry")

    fxchat = config.registry.fxchat
    engine = get_engine(
        settings,
        db_timeout=fxchat.db_timeout,
        sqlite_synchronous=fxchat.sqlite_synchronous,
        pg_random_page_cost=fxchat.pg_random_page_cost,
    )
    session_factory = get_session_factory(engine)
    config.registry["dbsession_factory"] = session_factory
    config.registry["db_engine"] = engine

    def dbsession(request):
        # Reads never take SQLite's write lock.
        read_only = request.method in READING_METHODS
        return get_tm_session(session_factory, request.tm, request, read_only=read_only)

    config.add_request_method(dbsession, reify=True)
    if sqlite.commit_log(engine.dialect) is not None:
        # Outside the transaction, so that the sync waits for no lock, and
        # outside the database errors' tween, which answers for those.
        config.add_tween(
            "fxchat.models.group_commit.durability_tween_factory",
            over=(
                "pyramid_tm.tm_tween_factory",
                "fxchat.database_errors.database_errors_tween_factory",
            ),
        )
