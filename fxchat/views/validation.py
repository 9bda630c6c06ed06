"""Cornice validators whose schemas are bound to the running server's settings."""

import json

from cornice.validators import colander_body_validator, colander_validator


def _bound(request, schema):
    # Binding clones the schema tree: do it once per schema and server.
    cache = request.registry.setdefault("fxchat.bound_schemas", {})
    bound = cache.get(id(schema))
    if bound is None:
        bound = cache[id(schema)] = schema.bind(settings=request.registry.fxchat)
    return bound


def json_body(request) -> dict:
    """The body as JSON, whatever Content-Type claims.

    The API speaks only JSON; reading bodies as forms or multipart (Cornice's
    default for those types) would only add ways to fail.
    """
    if not request.body:
        return {"body": {}}
    try:
        body = json.loads(request.body)
    except ValueError as error:  # includes bodies that are not UTF-8
        request.errors.add("body", "", f"Invalid JSON: {error}")
        return {}
    if not isinstance(body, dict):
        request.errors.add("body", "", "Should be a JSON object")
        return {}
    return {"body": body}


def body(request, schema=None, **kwargs):
    """Validate the JSON body."""
    kwargs["deserializer"] = json_body
    colander_body_validator(request, schema=_bound(request, schema), **kwargs)


def querystring(request, schema=None, **kwargs):
    """Validate the query string; its values land directly in ``request.validated``."""
    colander_validator(request, schema=_bound(request, schema), **kwargs)
    request.validated = request.validated.get("querystring", {})
