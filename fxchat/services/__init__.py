"""The relay's rules, without HTTP: accounts, sending, inbox, receipts, retention.

Services raise :class:`ServiceError` subclasses; the views turn them into
JSON errors. They take the time as ``now`` (milliseconds) so tests can set it.
"""


class ServiceError(Exception):
    """A request the rules refuse; ``status`` is the HTTP status it maps to."""

    status = 400
    name = "body"
    location = "body"

    def __init__(self, description: str, *, name: str | None = None, **extra):
        super().__init__(description)
        self.description = description
        if name is not None:
            self.name = name
        self.extra = extra


class Forbidden(ServiceError):
    status = 403
    name = "device"
    location = "path"


class NotFound(ServiceError):
    status = 404
    location = "path"


class Conflict(ServiceError):
    status = 409


class LimitReached(ServiceError):
    """A configured limit (devices per user, queued copies per device) is reached.

    409, not 507: a full store is the state of the resource, and no request
    may be answered with a 5xx.
    """

    status = 409
