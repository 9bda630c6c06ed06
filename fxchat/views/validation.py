"""Cornice validators whose schemas are bound to the running server's settings."""

import json

import colander
from cornice.validators import colander_body_validator, colander_validator

from ..errors import not_found


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
    raw = request.body  # read once: WebOb reads the body file again on every access
    if not raw:
        return {"body": {}}
    try:
        body = json.loads(raw)
    except ValueError as error:  # includes bodies that are not UTF-8
        request.errors.add("body", "", f"Invalid JSON: {error}")
        return {}
    except RecursionError:
        request.errors.add("body", "", "Invalid JSON: nested too deeply")
        return {}
    if not isinstance(body, dict):
        request.errors.add("body", "", "Should be a JSON object")
        return {}
    return {"body": body}


def body(request, schema=None, **kwargs):
    """Validate the JSON body."""
    bound = _bound(request, schema)
    parsed = json_body(request)
    if "body" in parsed:
        # What Cornice's validator would store, without the schema class it
        # builds around ``bound`` on every request (a tenth of a send's time
        # in validation): a well-formed body is deserialized directly, and
        # only an invalid one goes through Cornice, for its error entries.
        try:
            request.validated.update(bound.deserialize(parsed["body"]))
            return
        except colander.Invalid:
            pass
    kwargs["deserializer"] = lambda request: parsed
    colander_body_validator(request, schema=bound, **kwargs)


def querystring(request, schema=None, **kwargs):
    """Validate the query string; its values land directly in ``request.validated``."""
    try:
        request.GET  # noqa: B018 (decoding it is what may fail)
    except UnicodeDecodeError:
        request.errors.add("querystring", "", "the query string is not valid UTF-8")
        return
    colander_validator(request, schema=_bound(request, schema), **kwargs)
    request.validated = request.validated.get("querystring", {})


def path_matches(**patterns):
    """A validator answering 404 for path values that cannot name anything.

    Such values (a NUL byte, say) must not reach a query: some databases
    refuse them with an error rather than finding nothing.
    """

    def validator(request, **kwargs):
        for name, pattern in patterns.items():
            if not pattern.match(request.matchdict[name]):
                raise not_found(name, f"no such {name.replace('_', ' ')}")

    return validator
