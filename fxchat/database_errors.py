"""What a database error means for the request: retry it, or answer 503.

A tween between pyramid_retry's execution policy and pyramid_tm sees every
database error, including those raised at commit, before any view renders it.
"""

from __future__ import annotations

import logging

from pyramid_retry import is_last_attempt, mark_error_retryable
from sqlalchemy import exc as sa_exc

from .errors import service_unavailable

logger = logging.getLogger(__name__)

# PostgreSQL SQLSTATEs worth another attempt: serialization failure,
# deadlock, lock timeout.
RETRYABLE_SQLSTATES = {"40001", "40P01", "55P03"}
# Statement timeout and connection-class errors: the database is unwell.
UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "57")


def _sqlstate(error: sa_exc.DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)


def is_retryable(error: Exception) -> bool:
    if isinstance(error, sa_exc.IntegrityError):
        # A unique key taken by a concurrent request (the same Idempotency-Key
        # or user id): on a new attempt the request sees the winner's row.
        return True
    if isinstance(error, sa_exc.DBAPIError):
        if _sqlstate(error) in RETRYABLE_SQLSTATES:
            return True
        message = str(error.orig).lower()
        return "database is locked" in message or "database table is locked" in message
    return False


def is_unavailable(error: Exception) -> bool:
    if isinstance(error, sa_exc.TimeoutError):  # the connection pool is exhausted
        return True
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated or isinstance(error, sa_exc.InterfaceError):
        return True
    state = _sqlstate(error)
    if state and state.startswith(UNAVAILABLE_SQLSTATE_PREFIXES):
        return True
    if isinstance(error, sa_exc.OperationalError):
        message = str(error.orig).lower()
        return any(
            sign in message
            for sign in (
                "connection",
                "could not connect",
                "server closed",
                "timeout",
                "unable to open",
                "disk i/o error",
                "terminating",
            )
        )
    return False


def database_errors_tween_factory(handler, registry):
    def database_errors_tween(request):
        try:
            return handler(request)
        except (sa_exc.DBAPIError, sa_exc.TimeoutError) as error:
            if is_retryable(error):
                if not is_last_attempt(request):
                    mark_error_retryable(error)
                    raise
                logger.warning("giving up after repeated conflicts: %s", error.orig)
                raise service_unavailable("the server is busy, try again") from None
            if is_unavailable(error):
                logger.warning("database unavailable: %s", error)
                raise service_unavailable("the database is unavailable") from None
            raise

    return database_errors_tween
