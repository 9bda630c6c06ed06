"""The one JSON error format of the API, and the views that produce it.

Every error, whatever raised it, is Cornice's format::

    {"status": "error", "errors": [{"location", "name", "description"}]}

plus, for some errors, extra top-level members (``missing_devices``, …).
"""

from __future__ import annotations

import json
import logging

from pyramid import httpexceptions
from pyramid.exceptions import URLDecodeError
from pyramid.view import exception_view_config, forbidden_view_config, notfound_view_config

from .services import ServiceError

logger = logging.getLogger(__name__)

STATUS_CLASSES = {
    400: httpexceptions.HTTPBadRequest,
    401: httpexceptions.HTTPUnauthorized,
    403: httpexceptions.HTTPForbidden,
    404: httpexceptions.HTTPNotFound,
    405: httpexceptions.HTTPMethodNotAllowed,
    406: httpexceptions.HTTPNotAcceptable,
    409: httpexceptions.HTTPConflict,
    413: httpexceptions.HTTPRequestEntityTooLarge,
    415: httpexceptions.HTTPUnsupportedMediaType,
    422: httpexceptions.HTTPUnprocessableEntity,
    429: httpexceptions.HTTPTooManyRequests,
    500: httpexceptions.HTTPInternalServerError,
    503: httpexceptions.HTTPServiceUnavailable,
    507: httpexceptions.HTTPInsufficientStorage,
}


def error_body(name: str, description: str, location: str = "body", **extra) -> dict:
    return {
        "status": "error",
        "errors": [{"location": location, "name": name, "description": description}],
        **extra,
    }


def json_error(
    status: int,
    *,
    name: str,
    description: str,
    location: str = "body",
    headers: dict | None = None,
    **extra,
) -> httpexceptions.HTTPException:
    """An HTTP exception whose body is our JSON error; raise or return it."""
    response = STATUS_CLASSES[status](headers=headers)
    response.content_type = "application/json"
    response.text = json.dumps(error_body(name, description, location, **extra))
    return response


def unauthorized(description: str = "a valid bearer token is required"):
    return json_error(
        401,
        name="Authorization",
        description=description,
        location="header",
        headers={"WWW-Authenticate": 'Bearer realm="fxchat"'},
    )


def not_found(name: str, description: str, location: str = "path"):
    return json_error(404, name=name, description=description, location=location)


def service_unavailable(description: str, retry_after: int = 1):
    return json_error(
        503,
        name="database",
        description=description,
        location="server",
        headers={"Retry-After": str(retry_after)},
    )


def too_many_requests(retry_after: int, description: str = "rate limit exceeded"):
    return json_error(
        429,
        name="rate_limit",
        description=description,
        location="server",
        headers={"Retry-After": str(max(1, retry_after))},
    )


def _is_json_error(response) -> bool:
    return response.content_type == "application/json" and response.body.startswith(b"{")


@notfound_view_config()
def not_found_view(exc, request):
    if _is_json_error(exc):  # a 404 of ours, already in shape
        return exc
    return not_found("path", f"{request.path} is not a resource of this server", "url")


@forbidden_view_config()
def forbidden_view(exc, request):
    if _is_json_error(exc):  # a 403 of ours, already in shape
        return exc
    # Pyramid's own denial: without a valid token it is unauthenticated.
    if request.identity is None:
        return unauthorized()
    return json_error(
        403, name="Authorization", description="this device may not do that", location="header"
    )


@exception_view_config(httpexceptions.HTTPException)
def http_exception_view(exc, request):
    """Pyramid's and Cornice's own HTTP errors, reshaped into our format."""
    if exc.status_code < 400 or _is_json_error(exc):
        return exc
    response = json_error(
        exc.status_code if exc.status_code in STATUS_CLASSES else 400,
        name=exc.title.lower().replace(" ", "_"),
        description=exc.explanation or exc.title,
        location="request",
    )
    for header in ("Allow", "Retry-After"):
        if header in exc.headers:
            response.headers[header] = exc.headers[header]
    return response


@exception_view_config(URLDecodeError)
def undecodable_url_view(exc, request):
    return json_error(400, name="url", location="url", description="the URL is not valid UTF-8")


@exception_view_config(Exception)
def unexpected_error_view(exc, request):
    """A bug: log it with its traceback, answer a JSON 500 without details."""
    # PATH_INFO, not request.path: the path may be what failed to decode.
    logger.exception(
        "unexpected error on %s %s", request.method, request.environ.get("PATH_INFO", "")
    )
    return json_error(500, name="server", description="internal error", location="server")


@exception_view_config(ServiceError)
def service_error_view(exc, request):
    """A request the relay's rules refuse (see fxchat.services)."""
    return json_error(
        exc.status, name=exc.name, description=exc.description, location=exc.location, **exc.extra
    )
