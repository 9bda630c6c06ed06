"""fxchat: an end-to-end-encrypted chat relay server."""

from __future__ import annotations

import time

from pyramid.config import Configurator
from pyramid.events import ContextFound

from . import rendering
from .middleware import RequestMiddleware
from .request import bake_request_extensions
from .settings import load_settings


def now_ms(request) -> int:
    """The one clock of a request, in milliseconds since the epoch.

    ``registry["fxchat.clock"]`` replaces ``time.time`` where tests need to
    move time forward.
    """
    clock = request.registry.get("fxchat.clock", time.time)
    return int(clock() * 1000)


def _expose_route(event) -> None:
    # For the access log, which runs outside Pyramid.
    route = event.request.matched_route
    if route is not None:
        event.request.environ["fxchat.route"] = route.pattern


def make_config(settings: dict) -> Configurator:
    settings = {
        # Conflicts between concurrent requests are retried, never shown.
        "retry.attempts": 5,
        "tm.activate_hook": "fxchat.views.messages.needs_request_transaction",
        **settings,
    }
    config = Configurator(settings=settings)
    config.registry.fxchat = load_settings(settings)
    config.include("cornice")
    # Here, not in an include: the root's action overrides Cornice's renderer.
    config.add_renderer("cornicejson", rendering.json_renderer())
    config.include(".models")
    config.include(".security")
    config.include(".ratelimit")
    config.include(".purger")
    config.add_request_method(now_ms, "now", reify=True)
    config.add_subscriber(_expose_route, ContextFound)
    config.add_tween(
        "fxchat.database_errors.database_errors_tween_factory", over="pyramid_tm.tm_tween_factory"
    )
    from .views.operations import read_version

    config.registry["fxchat.version"] = read_version(config.registry.fxchat.version_file)
    # Cornice translates error messages; the default locale negotiator would
    # parse the body as a form to find a locale, and can fail doing so.
    config.set_locale_negotiator(lambda request: None)
    config.scan(".errors")
    config.scan(".database_errors")
    config.scan(".views")
    config.include(".openapi")
    return config


def main(global_config, **settings):
    """The WSGI application of the relay (paste ``main``)."""
    config = make_config(settings)
    bake_request_extensions(config)
    app = config.make_wsgi_app()
    fxchat = config.registry.fxchat
    return RequestMiddleware(
        app, max_body_bytes=fxchat.max_body_bytes, cors_origins=fxchat.cors_origins
    )
