"""The request class: configured methods and properties, without a class per request."""

import webtest
from pyramid.config import Configurator
from pyramid.interfaces import IContextFound

from fxchat.request import bake_request_extensions


def test_baked_methods_and_properties_behave_as_pyramids_own():
    config = Configurator()
    config.add_request_method(lambda request, x: [request.path, x], "echo")
    calls = []
    config.add_request_method(lambda request: calls.append(1) or len(calls), "counted", reify=True)
    config.add_route("here", "/here")
    config.add_view(
        lambda request: {"echo": request.echo(5), "counted": [request.counted, request.counted]},
        route_name="here",
        renderer="json",
    )
    bake_request_extensions(config)
    app = webtest.TestApp(config.make_wsgi_app())
    assert app.get("/here").json == {"echo": ["/here", 5], "counted": [1, 1]}
    # Reified once per request, not once for the class.
    assert app.get("/here").json["counted"] == [2, 2]


def test_fxchat_requests_share_one_class_that_has_every_property(app, alice):
    seen = []
    registry = app.app.registry

    def note(event):
        seen.append(event.request)

    registry.registerHandler(note, (IContextFound,))
    try:
        alice.get("/v1/messages")
        app.get("/__lbheartbeat__")
    finally:
        registry.unregisterHandler(note, (IContextFound,))
    first, second = seen
    assert type(first) is type(second)
    for name in ("now", "dbsession", "tm", "client_address", "current_service"):
        assert hasattr(type(first), name), name
    assert first.now != 0 and "now" in vars(first) and "now" not in vars(second)


def test_only_a_send_runs_without_a_request_transaction(app, alice, bob):
    active = {}
    registry = app.app.registry

    def note(event):
        request = event.request
        active[request.method, request.path_info] = "tm.active" in request.environ

    registry.registerHandler(note, (IContextFound,))
    try:
        alice.send_to(bob)
        bob.get("/v1/messages")
        alice.add_device()
    finally:
        registry.unregisterHandler(note, (IContextFound,))
    # The send is a transaction of its own (fxchat.services.storing).
    assert active == {
        ("POST", "/v1/messages"): False,
        ("GET", "/v1/messages"): True,
        ("POST", "/v1/devices"): True,
    }
