"""What a database error means for the request: retry it, or answer 503.

A tween between pyramid_retry's execution policy and pyramid_tm sees every
database error, including those raised at commit, before any view renders it.
"""

from __future__ import annotations

import logging

from pyramid.view import exception_view_config
from pyramid_retry import is_last_attempt, mark_error_retryable
from sqlalchemy import exc as sa_exc

from .errors import service_unavailable, unexpected_error_view

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


def translate(request, error: Exception) -> Exception:
    """What to raise instead of ``error``: itself, marked for another attempt, or a 503."""
    if is_retryable(error):
        if not is_last_attempt(request):
            mark_error_retryable(error)
            return error
        logger.warning("giving up after repeated conflicts: %s", getattr(error, "orig", error))
        return service_unavailable("the server is busy, try again")
    if is_unavailable(error):
        logger.warning("database unavailable: %s", str(getattr(error, "orig", error)).strip())
        return service_unavailable("the database is unavailable")
    return error


def database_errors_tween_factory(handler, registry):
    """Errors raised when pyramid_tm commits, above the exception views."""

    def database_errors_tween(request):
        try:
            return handler(request)
        except (sa_exc.DBAPIError, sa_exc.TimeoutError):
            # Raised above the excview tween (pyramid_tm's annotate_user looks
            # up the device before any view runs): raised from here, anything
            # would reach the WSGI server as an HTML 500. database_error_view
            # answers, and pyramid_retry sees the error it marked retryable.
            return request.invoke_exception_view()

    return database_errors_tween


@exception_view_config(sa_exc.DBAPIError)
@exception_view_config(sa_exc.TimeoutError)
def database_error_view(error, request):
    """Errors raised by a view's own statements, rendered below pyramid_tm.

    A retryable error is marked so, and pyramid_retry discards this response
    and runs the request again.
    """
    replacement = translate(request, error)
    if replacement is error:
        if not is_retryable(error):
            return unexpected_error_view(error, request)
        return service_unavailable("retrying")
    return replacement
