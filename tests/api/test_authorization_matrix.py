"""Who may call what (PROTOCOL.md §3, §3.1, §3.5): every authenticated endpoint × every caller.

The world of a cell: alice (the device acting on its own things), her
second device, a revoked device of hers, and one message she sent to carol;
bob (another user) and carol are shared by all cells of a database. Every
target belongs to alice; a refused call must change none of it. Cells whose
caller is authenticated get a world of their own; the unauthenticated ones,
all refused, share one.
"""

from __future__ import annotations

import itertools
import os

import pytest

from ..conftest import b64, register
from .checks import assert_json_error, random_key

_serial = itertools.count()

CALLERS = (
    "no token",
    "malformed token",
    "unknown token",
    "revoked device",
    "other user",
    "same user, other device",
    "the device itself",
)

# fmt: off
MATRIX = {
    #                                  no      mal-    un-     re-     other   same    the
    #                                  token   formed  known   voked   user    user    device
    "POST /v1/devices":               (401,    401,    401,    401,    201,    201,    201),
    "GET /v1/users/{user}/devices":   (401,    401,    401,    401,    200,    200,    200),
    "PUT /v1/devices/{id}/key":       (401,    401,    401,    401,    404,    403,    200),
    "DELETE /v1/devices/{id}":        (401,    401,    401,    401,    404,    204,    204),
    "POST /v1/messages":              (401,    401,    401,    401,    201,    201,    201),
    "GET /v1/messages":               (401,    401,    401,    401,    200,    200,    200),
    "POST /v1/messages/ack":          (401,    401,    401,    401,    200,    200,    200),
    "GET /v1/messages/{id}/receipts": (401,    401,    401,    401,    404,    200,    200),
}
# fmt: on


@pytest.fixture(scope="module")
def bystanders(module_app):
    """Bob and carol, registered once per database."""
    n = next(_serial)  # other modules' tests may have left a bob@example.com
    return register(module_app, f"bob-{n}@example.com"), register(
        module_app, f"carol-{n}@example.com"
    )


class World:
    def __init__(self, app, bob, carol):
        self.app, self.bob, self.carol = app, bob, carol
        self.alice = register(app, f"alice-{next(_serial)}@example.com")
        self.alice2 = self.alice.add_device()
        revoked = self.alice.add_device()
        self.alice.delete(f"/v1/devices/{revoked.device_id}")
        self.revoked_token = revoked.token
        self.message_id = self.alice.send_to(self.carol)

    def authorization(self, caller: str) -> dict:
        token = {
            "no token": None,
            "malformed token": "not a token!",
            "unknown token": b64(os.urandom(32)),
            "revoked device": self.revoked_token,
            "other user": self.bob.token,
            "same user, other device": self.alice2.token,
            "the device itself": self.alice.token,
        }[caller]
        return {} if token is None else {"Authorization": f"Bearer {token}"}

    def state(self) -> tuple:
        """What a refused call must leave as it was: alice's devices, keys and message."""
        devices = self.alice2.get(f"/v1/users/{self.alice.user}/devices").json
        receipts = self.alice2.get(f"/v1/messages/{self.message_id}/receipts").json
        from_alice = [
            message
            for message in self.carol.inbox(limit=500)
            if message["sender"]["user"] == self.alice.user
        ]
        return devices, receipts, from_alice

    def request(self, endpoint: str, headers: dict):
        app, alice = self.app, self.alice
        if endpoint == "POST /v1/devices":
            return app.post_json(
                "/v1/devices", {"public_key": random_key()}, headers=headers, status="*"
            )
        if endpoint == "GET /v1/users/{user}/devices":
            return app.get(f"/v1/users/{alice.user}/devices", headers=headers, status="*")
        if endpoint == "PUT /v1/devices/{id}/key":
            return app.put_json(
                f"/v1/devices/{alice.device_id}/key",
                {"public_key": random_key()},
                headers=headers,
                status="*",
            )
        if endpoint == "DELETE /v1/devices/{id}":
            return app.delete(f"/v1/devices/{alice.device_id}", headers=headers, status="*")
        if endpoint == "POST /v1/messages":
            return app.post_json(
                "/v1/messages", alice.envelope(self.carol), headers=headers, status="*"
            )
        if endpoint == "GET /v1/messages":
            return app.get("/v1/messages", headers=headers, status="*")
        if endpoint == "POST /v1/messages/ack":
            return app.post_json(
                "/v1/messages/ack", {"acks": [{"id": self.message_id}]}, headers=headers, status="*"
            )
        if endpoint == "GET /v1/messages/{id}/receipts":
            return app.get(f"/v1/messages/{self.message_id}/receipts", headers=headers, status="*")
        raise AssertionError(endpoint)


CELLS = [
    pytest.param(endpoint, caller, status, id=f"{endpoint} | {caller}")
    for endpoint, statuses in MATRIX.items()
    for caller, status in zip(CALLERS, statuses, strict=True)
]


@pytest.fixture(scope="module")
def untouched_world(module_app, bystanders):
    """One world for all unauthenticated calls, which must all leave it as it was."""
    world = World(module_app, *bystanders)
    return world, world.state()


@pytest.mark.parametrize(("endpoint", "caller", "expected"), CELLS)
def test_authorization(module_app, bystanders, untouched_world, endpoint, caller, expected):
    refused = expected >= 400
    if expected == 401:
        world, before = untouched_world
    else:
        world = World(module_app, *bystanders)
        before = world.state() if refused else None
    response = world.request(endpoint, world.authorization(caller))
    assert response.status_int == expected, response.text
    if refused:
        assert world.state() == before, "a refused call changed nothing"
    if expected == 401:
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    if expected >= 400:
        assert_json_error(response, expected)
    if expected == 204:
        assert response.body == b""


def test_matrix_covers_every_authenticated_operation(module_app):
    document = module_app.get("/v1/__api__").json
    secured = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if isinstance(operation, dict) and operation.get("security")
    }
    named = {
        endpoint.replace("{id}/key", "{device_id}/key").replace(
            "devices/{id}", "devices/{device_id}"
        )
        for endpoint in MATRIX
    }
    assert secured == named
