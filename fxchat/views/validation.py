"""Cornice validators whose schemas are bound to the running server's settings."""

from cornice.validators import colander_body_validator, colander_validator


def _bound(request, schema):
    # Binding clones the schema tree: do it once per schema and server.
    cache = request.registry.setdefault("fxchat.bound_schemas", {})
    bound = cache.get(id(schema))
    if bound is None:
        bound = cache[id(schema)] = schema.bind(settings=request.registry.fxchat)
    return bound


def body(request, schema=None, **kwargs):
    """Validate the JSON body."""
    colander_body_validator(request, schema=_bound(request, schema), **kwargs)


def querystring(request, schema=None, **kwargs):
    """Validate the query string; its values land directly in ``request.validated``."""
    colander_validator(request, schema=_bound(request, schema), **kwargs)
    request.validated = request.validated.get("querystring", {})
