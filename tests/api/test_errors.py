"""Errors (PROTOCOL.md §3, §3.7): one JSON format for every 4xx, headers on every answer."""

from __future__ import annotations

import os
import re

import pytest

from ..conftest import b64
from .checks import assert_json_error, error_body, error_fields, random_key


def reused_idempotency_key(app, alice, bob):
    alice.post("/v1/messages", alice.envelope(bob), headers={"Idempotency-Key": "k"}, status=201)
    return alice.post(
        "/v1/messages", alice.envelope(bob), headers={"Idempotency-Key": "k"}, status="*"
    )


def another_devices_key(app, alice, bob):
    phone = alice.add_device()
    return alice.put(f"/v1/devices/{phone.device_id}/key", {"public_key": random_key()}, status="*")


def too_large(app, alice, bob):
    body = b" " * (512 * 1024 + 1)
    return app.post("/v1/accounts", body, headers={"Content-Type": "application/json"}, status="*")


# Each case makes one request that must fail, on the app with alice and bob.
FAILURES = {
    "400 invalid body": (
        400,
        lambda app, alice, bob: app.post_json("/v1/accounts", {}, status="*"),
    ),
    "400 invalid query": (
        400,
        lambda app, alice, bob: alice.get("/v1/messages?limit=0", status="*"),
    ),
    "400 invalid header": (
        400,
        lambda app, alice, bob: alice.post(
            "/v1/messages", alice.envelope(bob), headers={"Idempotency-Key": "k" * 65}, status="*"
        ),
    ),
    "401 no token": (401, lambda app, alice, bob: app.get("/v1/messages", status="*")),
    "403 another device's key": (403, another_devices_key),
    "404 unknown path": (404, lambda app, alice, bob: app.get("/v1/nothing-here", status="*")),
    "404 unknown user": (
        404,
        lambda app, alice, bob: alice.get("/v1/users/nobody/devices", status="*"),
    ),
    "404 unknown message": (
        404,
        lambda app, alice, bob: alice.get("/v1/messages/nothing/receipts", status="*"),
    ),
    "405 wrong method": (405, lambda app, alice, bob: app.put_json("/v1/accounts", {}, status="*")),
    "409 user exists": (
        409,
        lambda app, alice, bob: app.post_json(
            "/v1/accounts", {"user": alice.user, "public_key": random_key()}, status="*"
        ),
    ),
    "409 device list": (
        409,
        lambda app, alice, bob: alice.post("/v1/messages", alice.envelope(alice), status="*"),
    ),
    "413 body too large": (413, too_large),
    "422 idempotency key reused": (422, reused_idempotency_key),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_every_error_is_json_in_cornices_format(app, alice, bob, case):
    status, make_request = FAILURES[case]
    response = make_request(app, alice, bob)
    assert_json_error(response, status)
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["X-Request-Id"]


@pytest.mark.parametrize(
    "path",
    ["/", "/nope", "/v1", "/v1/", "/v2/messages", "/v1/messages/x/receipts/more", "/v1/users/"],
)
def test_unknown_route_gets_404_json(shared_app, path):
    response = shared_app.get(path, status=404)
    assert_json_error(response, 404)


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("PUT", "/v1/accounts", {"POST"}),
        ("GET", "/v1/accounts", {"POST"}),
        ("DELETE", "/v1/messages", {"GET", "POST"}),
        ("PATCH", "/v1/devices/abc", {"DELETE"}),
        ("POST", "/__heartbeat__", {"GET"}),
    ],
)
def test_wrong_method_gets_405_json(shared_app, method, path, allowed):
    response = shared_app.request(path, method=method, status=405)
    assert_json_error(response, 405)
    assert allowed <= {m.strip() for m in response.headers["Allow"].split(",")}


def test_401_carries_www_authenticate_bearer(shared_app):
    response = shared_app.get("/v1/messages", status=401)
    assert response.json == error_body("header", "Authorization")
    assert re.match(r"^Bearer\b", response.headers["WWW-Authenticate"])


@pytest.mark.parametrize(
    "authorization",
    [
        "",
        "Bearer",
        "Bearer ",
        "Basic YWxpY2U6c2VjcmV0",
        "Token {token}",
        "{token}",
        "Bearer {token}=",
        "Bearer {token}x",
        "Bearer {short}",
        "Bearer !{short}",
        "Bearer {token} extra",
        "Bearer {unknown}",
    ],
    ids=repr,
)
def test_malformed_or_unknown_tokens_get_401(new_user, authorization):
    alice = new_user("alice")
    value = authorization.format(
        token=alice.token, short=alice.token[:-1], unknown=b64(os.urandom(32))
    )
    response = alice.app.get("/v1/messages", headers={"Authorization": value}, status=401)
    assert response.json == error_body("header", "Authorization")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_auth_scheme_is_case_insensitive(new_user):
    alice = new_user("alice")
    alice.app.get("/v1/messages", headers={"Authorization": f"bearer {alice.token}"}, status=200)


@pytest.mark.parametrize(
    "body",
    ["{", "not json", '{"user": "alice@example.com",}', "\xff\xfe", "{'user': 'a'}"],
    ids=repr,
)
def test_invalid_json_gets_400(shared_app, body):
    response = shared_app.post(
        "/v1/accounts",
        body.encode("latin-1"),
        headers={"Content-Type": "application/json"},
        status=400,
    )
    assert_json_error(response, 400)


@pytest.mark.parametrize("body", ["[]", '["user"]', "1", '"user"', "null", "true"])
def test_json_that_is_not_an_object_gets_400(shared_app, body):
    response = shared_app.post(
        "/v1/accounts", body, headers={"Content-Type": "application/json"}, status=400
    )
    assert_json_error(response, 400)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("text/plain", "user=someone"),
        ("application/xml", "<account><user>someone</user></account>"),
        ("application/octet-stream", "\x00\x01"),
    ],
)
def test_body_that_is_not_json_gets_400_whatever_its_type(shared_app, content_type, body):
    response = shared_app.post(
        "/v1/accounts", body, headers={"Content-Type": content_type}, status=400
    )
    assert_json_error(response, 400)


def test_form_encoded_body_gets_400(shared_app):
    response = shared_app.post(
        "/v1/accounts", {"user": "form-user", "public_key": random_key()}, status=400
    )
    assert_json_error(response, 400)
    assert response.json["errors"][0]["location"] == "body"


def test_empty_body_gets_400_naming_the_missing_fields(shared_app):
    response = shared_app.post(
        "/v1/accounts", b"", headers={"Content-Type": "application/json"}, status=400
    )
    assert error_fields(response) == {("body", "user"), ("body", "public_key")}


def test_every_answer_carries_the_common_headers(app, alice, bob):
    phone = alice.add_device()
    answers = [
        app.get("/__lbheartbeat__"),
        alice.post("/v1/messages", alice.envelope(bob), status=201),
        alice.delete(f"/v1/devices/{phone.device_id}", status=204),
        app.get("/v1/messages", status=401),
        app.get("/nowhere", status=404),
        app.post("/v1/accounts", b"x" * (512 * 1024 + 1), status=413),
    ]
    request_ids = set()
    for answer in answers:
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert re.match(r"^[A-Za-z0-9._-]{1,64}$", answer.headers["X-Request-Id"])
        request_ids.add(answer.headers["X-Request-Id"])
    assert len(request_ids) == len(answers), "every request gets its own id"


def test_sane_request_id_is_echoed_and_others_replaced(shared_app):
    echoed = shared_app.get("/__lbheartbeat__", headers={"X-Request-Id": "trace-42.a_b"})
    assert echoed.headers["X-Request-Id"] == "trace-42.a_b"
    for insane in ("x" * 65, "two words", "<script>"):
        replaced = shared_app.get("/__lbheartbeat__", headers={"X-Request-Id": insane})
        assert replaced.headers["X-Request-Id"] not in ("", insane)


# No input, however malformed, produces a 5xx (PROTOCOL.md §3.7).


def _nul_name(alice):
    return alice.post("/v1/devices", {"public_key": random_key(), "name": "a\u0000b"}, status="*")


MALFORMED = {
    # case: (request, accepted statuses)
    "NUL in a user id in the path": (
        lambda alice: alice.get("/v1/users/a%00b/devices", status="*"),
        {404},
    ),
    "NUL in a message id in the path": (
        lambda alice: alice.get("/v1/messages/a%00b/receipts", status="*"),
        {404},
    ),
    "NUL in a device id to delete": (
        lambda alice: alice.delete("/v1/devices/a%00b", status="*"),
        {404},
    ),
    "NUL in a device id to rotate": (
        lambda alice: alice.put("/v1/devices/a%00b/key", {"public_key": random_key()}, status="*"),
        {404},
    ),
    "NUL in a device name": (_nul_name, {201, 400}),
    "lone surrogate in a device name": (
        lambda alice: alice.post(
            "/v1/devices", {"public_key": random_key(), "name": "\ud800"}, status="*"
        ),
        {400},
    ),
    "undecodable percent-encoding in the query": (
        lambda alice: alice.get("/v1/messages?limit=%FF", status="*"),
        {400},
    ),
    "undecodable percent-encoding in the path": (
        lambda alice: alice.get("/v1/users/%FF/devices", status="*"),
        {400, 404},
    ),
    "deeply nested JSON": (
        lambda alice: alice.app.post(
            "/v1/accounts",
            "[" * 100_000 + "]" * 100_000,
            headers={"Content-Type": "application/json"},
            status="*",
        ),
        {400},
    ),
    "invalid body sent as multipart without boundary": (
        lambda alice: alice.app.post(
            "/v1/accounts", "x", headers={"Content-Type": "multipart/form-data"}, status="*"
        ),
        {400},
    ),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_never_gets_a_5xx(app, alice, case):
    make_request, statuses = MALFORMED[case]
    response = make_request(alice)
    assert response.status_int in statuses, response.text
    if response.status_int >= 400:
        assert_json_error(response, response.status_int)
