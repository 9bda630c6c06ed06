"""POST /v1/accounts (PROTOCOL.md §1, §3.1): registration, user ids, keys, stored tokens."""

from __future__ import annotations

import base64
import hashlib
import os

import pytest
import sqlalchemy

from ..conftest import b64, register
from .checks import (
    OPAQUE_ID,
    START_MS,
    TOKEN,
    bad_encodings,
    count,
    error_body,
    random_key,
    rows,
)


def test_create_account_returns_user_device_and_token(app):
    created = app.post_json(
        "/v1/accounts", {"user": "alice@example.com", "public_key": random_key()}, status=201
    )
    assert set(created.json) == {"user", "device_id", "token"}
    assert created.json["user"] == "alice@example.com"
    assert OPAQUE_ID.match(created.json["device_id"])
    token = created.json["token"]
    assert TOKEN.match(token)
    assert len(base64.urlsafe_b64decode(token + "=")) == 32


def test_new_account_has_exactly_its_first_device(app, clock):
    public_key = random_key()
    created = app.post_json(
        "/v1/accounts", {"user": "alice@example.com", "public_key": public_key}, status=201
    ).json
    listed = app.get(
        "/v1/users/alice@example.com/devices",
        headers={"Authorization": f"Bearer {created['token']}"},
        status=200,
    )
    assert listed.json == {
        "user": "alice@example.com",
        "devices": [
            {"device_id": created["device_id"], "public_key": public_key, "created_at": START_MS}
        ],
    }


def test_tokens_are_different_for_every_device(app):
    tokens = {register(app, f"user{n}@example.com").token for n in range(5)}
    assert len(tokens) == 5


def test_token_is_stored_only_as_its_sha256(app):
    alice = register(app, "alice@example.com")
    token_hash = hashlib.sha256(alice.token.encode("ascii")).digest()
    [device] = rows(app, "devices")
    assert bytes(device["token_hash"]) == token_hash
    # No column of any table holds the token itself, as text or as its bytes.
    secrets = (alice.token, alice.token.encode(), base64.urlsafe_b64decode(alice.token + "="))
    engine = app.app.registry["db_engine"]
    with engine.connect() as connection:
        for table in sqlalchemy.inspect(connection).get_table_names():
            for row in connection.execute(sqlalchemy.text(f'SELECT * FROM "{table}"')):
                for value in row:
                    if isinstance(value, memoryview):
                        value = bytes(value)
                    if isinstance(value, (str, bytes)):
                        assert not any(
                            type(secret) is type(value) and secret in value for secret in secrets
                        ), f"the token is stored in {table}"


def test_existing_user_gets_409(app):
    register(app, "alice@example.com")
    again = app.post_json(
        "/v1/accounts", {"user": "alice@example.com", "public_key": random_key()}, status=409
    )
    assert again.json == error_body("body", "user")
    assert count(app, "users") == 1
    assert count(app, "devices") == 1


def test_user_ids_are_compared_exactly(app):
    alice = register(app, "alice@example.com")
    other = register(app, "Alice@example.com")
    assert other.user == "Alice@example.com"
    assert count(app, "users") == 2
    alice.get("/v1/users/ALICE@EXAMPLE.COM/devices", status=404)


@pytest.mark.parametrize(
    "user",
    [
        "a",
        "7",
        "a" * 254,
        "alice@example.com",
        "15551234567",
        "a.b_c%d+e@f-g",
        "Z" + "._%+@-" * 42,
    ],
    ids=["one letter", "one digit", "254 characters", "e-mail", "phone", "every symbol", "symbols"],
)
def test_valid_user_ids_are_accepted(app, user):
    created = app.post_json("/v1/accounts", {"user": user, "public_key": random_key()}, status=201)
    assert created.json["user"] == user


@pytest.mark.parametrize(
    "user",
    [
        "",
        "a" * 255,
        ".alice",
        "-alice",
        "_alice",
        "%alice",
        "+15551234567",
        "@example.com",
        "alice example",
        "alice/bob",
        "alice#1",
        "alicé",
        "alice\n",
        "alice\u0000",
        12345,
        None,
        ["alice"],
    ],
    ids=[
        "empty",
        "255 characters",
        "leading dot",
        "leading dash",
        "leading underscore",
        "leading percent",
        "leading plus",
        "leading at",
        "space",
        "slash",
        "hash",
        "non-ascii",
        "trailing newline",
        "nul",
        "number",
        "null",
        "list",
    ],
)
def test_invalid_user_ids_get_400(shared_app, user):
    users = count(shared_app, "users")
    refused = shared_app.post_json(
        "/v1/accounts", {"user": user, "public_key": random_key()}, status=400
    )
    assert refused.json == error_body("body", "user")
    assert count(shared_app, "users") == users


def test_missing_user_gets_400(shared_app):
    refused = shared_app.post_json("/v1/accounts", {"public_key": random_key()}, status=400)
    assert refused.json == error_body("body", "user")


@pytest.mark.parametrize("case", sorted(bad_encodings(32)))
def test_invalid_public_keys_get_400(shared_app, case):
    users = count(shared_app, "users")
    value = bad_encodings(32)[case]
    refused = shared_app.post_json(
        "/v1/accounts", {"user": "alice@example.com", "public_key": value}, status=400
    )
    assert refused.json == error_body("body", "public_key")
    assert count(shared_app, "users") == users


def test_missing_public_key_gets_400(shared_app):
    refused = shared_app.post_json("/v1/accounts", {"user": "alice@example.com"}, status=400)
    assert refused.json == error_body("body", "public_key")


def test_public_key_is_stored_as_its_32_bytes(app):
    public_key = os.urandom(32)
    app.post_json(
        "/v1/accounts", {"user": "alice@example.com", "public_key": b64(public_key)}, status=201
    )
    [device] = rows(app, "devices")
    assert bytes(device["public_key"]) == public_key


def test_name_is_optional_and_kept(app):
    app.post_json(
        "/v1/accounts",
        {"user": "alice@example.com", "public_key": random_key(), "name": "Alice's phone"},
        status=201,
    )
    app.post_json(
        "/v1/accounts", {"user": "bob@example.com", "public_key": random_key()}, status=201
    )
    names = {row["name"] for row in rows(app, "devices")}
    assert names == {"Alice's phone", None}


@pytest.mark.parametrize(
    "name", [12, True, ["phone"], {"n": 1}], ids=["number", "bool", "list", "object"]
)
def test_name_must_be_a_string(shared_app, name):
    refused = shared_app.post_json(
        "/v1/accounts",
        {"user": "alice@example.com", "public_key": random_key(), "name": name},
        status=400,
    )
    assert refused.json == error_body("body", "name")


def test_unknown_members_are_ignored(app):
    created = app.post_json(
        "/v1/accounts",
        {"user": "alice@example.com", "public_key": random_key(), "device_id": "mine", "x": 1},
        status=201,
    )
    assert created.json["device_id"] != "mine"


def test_closed_registration_gets_403(make_app):
    app = make_app(registration="closed")
    refused = app.post_json(
        "/v1/accounts", {"user": "alice@example.com", "public_key": random_key()}, status=403
    )
    assert refused.content_type == "application/json"
    assert refused.json == error_body("server", "registration")
    assert count(app, "users") == 0


def test_closed_registration_still_lets_existing_users_add_devices(make_app):
    alice = register(make_app(), "alice@example.com")
    closed = make_app(registration="closed")
    alice.app = closed
    added = alice.add_device()
    assert added.user == "alice@example.com"
