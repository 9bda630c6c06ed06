"""gunicorn's logger for fxchat: gunicorn's own access log off, for good.

fxchat writes one access line per request already (``fxchat.access``, see
fxchat.middleware). gunicorn counts its access log as enabled whenever it is
given a logging configuration (``--paste production.ini`` is one), and then
builds its log atoms for every request, a dictionary of every header and
environ variable, only for a logger that writes nowhere: a few percent of a
small request's CPU. Named by ``logger_class`` in production.ini.
"""

from __future__ import annotations

from gunicorn.glogging import Logger


class ErrorsOnlyLogger(Logger):
    """gunicorn's logger without its access log; its error log as configured."""

    @property
    def access_log_enabled(self) -> bool:
        return False

    def access(self, resp, req, environ, request_time) -> None:
        return None
