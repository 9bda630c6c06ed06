"""The baseline: a bare Pyramid view returning a small JSON document.

Served by the same gunicorn worker model as fxchat, it tells what the
framework and the server stack alone can do on this machine; every fxchat
figure is also given as a ratio to it.
"""

from __future__ import annotations

from pyramid.config import Configurator

DOCUMENT = {"id": "bWVzc2FnZS1pZC0wMDAwMDAw", "sent_at": 1800000000000, "expires_at": 1800604800000}


def bare(request):
    return DOCUMENT


def main(global_config, **settings):
    """Paste app factory (``use = call:bench.baseline:main``)."""
    config = Configurator(settings=settings)
    config.add_route("bare", "/bare")
    config.add_view(bare, route_name="bare", renderer="json")
    # The readiness probe of bench.servers.Server.
    config.add_route("lbheartbeat", "/__lbheartbeat__")
    config.add_view(lambda request: {}, route_name="lbheartbeat", renderer="json")
    return config.make_wsgi_app()
