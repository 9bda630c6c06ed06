"""POST /v1/messages (PROTOCOL.md §3.2): what a send stores, and every way its body can be wrong."""

from __future__ import annotations

import io
import json
import os

import pytest
import webob

from ..conftest import b64, register
from .checks import (
    DAY,
    NOTHING_STORED,
    OPAQUE_ID,
    START_MS,
    bad_encodings,
    count,
    error_body,
    error_fields,
    freeze_clock,
    stored_counts,
)


def test_send_returns_id_and_times(clock, alice, bob):
    sent = alice.post("/v1/messages", alice.envelope(bob), status=201)
    assert set(sent.json) == {"id", "sent_at", "expires_at"}
    assert OPAQUE_ID.match(sent.json["id"])
    assert sent.json["sent_at"] == START_MS
    # Default ttl: 7 days.
    assert sent.json["expires_at"] - sent.json["sent_at"] == 604_800_000


def test_null_ttl_is_the_default_ttl(clock, alice, bob):
    sent = alice.post("/v1/messages", {**alice.envelope(bob), "ttl": None}, status=201).json
    assert sent["expires_at"] - sent["sent_at"] == 604_800_000


def test_every_send_gets_a_new_id(alice, bob):
    ids = {alice.send_to(bob) for _ in range(3)}
    assert len(ids) == 3


@pytest.mark.parametrize("ttl", [1, 60, 30 * DAY])
def test_explicit_ttl(clock, alice, bob, ttl):
    sent = alice.post("/v1/messages", alice.envelope(bob, ttl=ttl), status=201)
    assert sent.json == {
        "id": sent.json["id"],
        "sent_at": START_MS,
        "expires_at": START_MS + ttl * 1000,
    }
    [item] = bob.inbox()
    assert item["expires_at"] == START_MS + ttl * 1000


@pytest.mark.parametrize(
    "ttl",
    [0, -1, 30 * DAY + 1, 10**30, 1.5, 60.5, "60", True, False, [60], {"s": 60}],
    ids=[
        "zero",
        "negative",
        "over 30 days",
        "huge",
        "fraction",
        "fraction 2",
        "string",
        "true",
        "false",
        "list",
        "object",
    ],
)
def test_invalid_ttl_gets_400(new_user, ttl):
    alice, bob = new_user("alice"), new_user("bob")
    refused = alice.post("/v1/messages", {**alice.envelope(bob), "ttl": ttl}, status=400)
    assert refused.json == error_body("body", "ttl")
    assert bob.inbox() == []


def test_configured_ttls(make_app):
    app = make_app(default_ttl=50, max_ttl=100)
    freeze_clock(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    default = alice.post("/v1/messages", alice.envelope(bob), status=201).json
    assert (default["sent_at"], default["expires_at"]) == (START_MS, START_MS + 50_000)
    alice.post("/v1/messages", alice.envelope(bob, ttl=100), status=201)
    refused = alice.post("/v1/messages", alice.envelope(bob, ttl=101), status=400)
    assert refused.json == error_body("body", "ttl")


@pytest.mark.parametrize("suite", ["fxchat-2", "FXCHAT-1", "fxchat-1 ", "", 1, None], ids=repr)
def test_suite_other_than_fxchat_1_gets_400(new_user, suite):
    alice, bob = new_user("alice"), new_user("bob")
    refused = alice.post("/v1/messages", {**alice.envelope(bob), "suite": suite}, status=400)
    assert refused.json == error_body("body", "suite")
    assert bob.inbox() == []


def test_missing_suite_gets_400(new_user):
    alice, bob = new_user("alice"), new_user("bob")
    body = alice.envelope(bob)
    del body["suite"]
    refused = alice.post("/v1/messages", body, status=400)
    assert refused.json == error_body("body", "suite")


RECIPIENT_FIELDS = {"encrypted_aes_key": 60, "msg_sig": 32, "msg_pub_key": 32}
BASE64_CASES = [
    (field, case, value)
    for field, length in RECIPIENT_FIELDS.items()
    for case, value in bad_encodings(length).items()
]


@pytest.mark.parametrize(
    ("field", "case", "value"), BASE64_CASES, ids=[f"{f}-{c}" for f, c, _ in BASE64_CASES]
)
def test_invalid_recipient_field_gets_400_naming_it(new_user, field, case, value):
    alice, bob, carol = new_user("alice"), new_user("bob"), new_user("carol")
    body = alice.envelope(bob, carol)
    body["recipients"][1][field] = value
    refused = alice.post("/v1/messages", body, status=400)
    assert refused.json == error_body("body", f"recipients.1.{field}")
    assert bob.inbox() == [] and carol.inbox() == []


@pytest.mark.parametrize("field", sorted(RECIPIENT_FIELDS))
def test_missing_recipient_field_gets_400_naming_it(new_user, field):
    alice, bob = new_user("alice"), new_user("bob")
    body = alice.envelope(bob)
    del body["recipients"][0][field]
    refused = alice.post("/v1/messages", body, status=400)
    assert refused.json == error_body("body", f"recipients.0.{field}")


MESSAGE_CASES = {
    "padding": b64(os.urandom(40)) + "==",
    "alphabet": "+/" + b64(os.urandom(40))[2:],
    "non-canonical": bad_encodings(40)["non-canonical"],
    "shorter than nonce and tag": b64(os.urandom(27)),
    "empty": "",
    "not a string": 42,
}


@pytest.mark.parametrize("case", sorted(MESSAGE_CASES))
def test_invalid_encrypted_message_gets_400(new_user, case):
    alice, bob = new_user("alice"), new_user("bob")
    body = {**alice.envelope(bob), "encrypted_message": MESSAGE_CASES[case]}
    refused = alice.post("/v1/messages", body, status=400)
    assert refused.json == error_body("body", "encrypted_message")


def test_message_size_limit(alice, bob):
    """256 KiB of encrypted_message by default; one byte more is refused."""
    alice.send_to(bob, message=os.urandom(256 * 1024))
    refused = alice.post(
        "/v1/messages", alice.envelope(bob, message=os.urandom(256 * 1024 + 1)), status=400
    )
    assert refused.json == error_body("body", "encrypted_message")
    assert len(bob.inbox()) == 1


def test_configured_message_size_limit(make_app):
    app = make_app(max_message_bytes=100)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    alice.send_to(bob, message=os.urandom(100))
    refused = alice.post("/v1/messages", alice.envelope(bob, message=os.urandom(101)), status=400)
    assert refused.json == error_body("body", "encrypted_message")


def test_body_over_the_limit_gets_413_and_stores_nothing(app, alice, bob):
    body = alice.envelope(bob, message=os.urandom(400 * 1024))  # > 512 KiB once encoded
    assert len(json.dumps(body)) > 512 * 1024
    refused = alice.post("/v1/messages", body, status=413)
    assert refused.content_type == "application/json"
    assert refused.json == error_body("body", "body")
    assert stored_counts(app) == NOTHING_STORED


def test_body_size_is_checked_before_parsing(make_app):
    app = make_app(max_body_bytes=1000)
    too_large = app.post(
        "/v1/accounts", b"{" * 1001, headers={"Content-Type": "application/json"}, status=413
    )
    assert too_large.json == error_body("body", "body")
    # Without a token too: the size is checked first.
    app.post("/v1/messages", b"x" * 1001, status=413)
    app.post("/v1/accounts", b"{" * 1000, headers={"Content-Type": "application/json"}, status=400)


def _chunked_request(device, body: bytes) -> webob.Response:
    """POST /v1/messages without a Content-Length, as a chunked upload arrives."""
    request = webob.Request.blank("/v1/messages", method="POST")
    request.headers.update({**device.headers, "Content-Type": "application/json"})
    request.headers["Transfer-Encoding"] = "chunked"
    request.environ.pop("CONTENT_LENGTH", None)
    request.environ["wsgi.input"] = io.BytesIO(body)
    return request.get_response(device.app.app)


def test_chunked_body_over_the_limit_gets_413(make_app):
    app = make_app(max_body_bytes=2000)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    small = _chunked_request(alice, json.dumps(alice.envelope(bob)).encode())
    assert small.status_int == 201
    large = _chunked_request(
        alice, json.dumps(alice.envelope(bob, message=os.urandom(2000))).encode()
    )
    assert large.status_int == 413
    assert large.json == error_body("body", "body")
    assert count(app, "messages") == 1


# Recipients


def test_empty_recipients_gets_400(new_user):
    alice = new_user("alice")
    refused = alice.post("/v1/messages", alice.envelope(), status=400)
    assert refused.json == error_body("body", "recipients")


@pytest.mark.parametrize("recipients", [None, "bob", {"user": "bob"}, 1], ids=repr)
def test_recipients_must_be_a_list(new_user, recipients):
    alice, bob = new_user("alice"), new_user("bob")
    body = {**alice.envelope(bob), "recipients": recipients}
    refused = alice.post("/v1/messages", body, status=400)
    assert ("body", "recipients") in error_fields(refused)


def test_duplicate_recipients_get_400(new_user):
    alice, bob = new_user("alice"), new_user("bob")
    body = alice.envelope(bob, bob)
    refused = alice.post("/v1/messages", body, status=400)
    assert refused.json == error_body("body", "recipients")
    assert bob.inbox() == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("user", ".bob"),
        ("user", ""),
        ("user", 7),
        ("device_id", ""),
        ("device_id", "x" * 65),
        ("device_id", "a/b"),
        ("device_id", 7),
    ],
    ids=repr,
)
def test_invalid_recipient_address_gets_400(new_user, field, value):
    alice, bob = new_user("alice"), new_user("bob")
    body = alice.envelope(bob)
    body["recipients"][0][field] = value
    refused = alice.post("/v1/messages", body, status=400)
    assert refused.json == error_body("body", f"recipients.0.{field}")


def test_too_many_recipients_gets_400(make_app):
    app = make_app(max_recipients=2)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    phone = bob.add_device()
    alice.send_to(bob, phone)
    tablet = bob.add_device()
    refused = alice.post("/v1/messages", alice.envelope(bob, phone, tablet), status=400)
    assert refused.json == error_body("body", "recipients")
    assert len(bob.inbox()) == 1 and tablet.inbox() == []


# Fan-out


def test_fan_out_stores_the_body_once(app, alice, bob):
    phones = [bob.add_device() for _ in range(4)]
    devices = [bob, *phones]
    body = alice.envelope(*devices)
    message_id = alice.post("/v1/messages", body, status=201).json["id"]
    assert stored_counts(app) == {"messages": 1, "bodies": 1, "copies": 5}
    for device, recipient in zip(devices, body["recipients"], strict=True):
        [item] = device.inbox()
        assert item["id"] == message_id
        assert item["encrypted_message"] == body["encrypted_message"]
        assert (item["encrypted_aes_key"], item["msg_sig"], item["msg_pub_key"]) == (
            recipient["encrypted_aes_key"],
            recipient["msg_sig"],
            recipient["msg_pub_key"],
        )


def test_fan_out_to_several_users(app, alice, bob):
    carol = register(app, "carol@example.com")
    phone = carol.add_device()
    message_id = alice.send_to(bob, carol, phone)
    for device in (bob, carol, phone):
        assert [m["id"] for m in device.inbox()] == [message_id]
    assert stored_counts(app) == {"messages": 1, "bodies": 1, "copies": 3}
