"""Devices (PROTOCOL.md §3.1): adding, listing, key rotation, revocation, the device limit."""

from __future__ import annotations

import pytest

from ..conftest import b64, register
from .checks import (
    OPAQUE_ID,
    START_MS,
    TOKEN,
    bad_encodings,
    error_body,
    freeze_clock,
    random_key,
    rows,
)


def listing(device) -> list[dict]:
    """The devices of ``device``'s user, as that device sees them."""
    return device.get(f"/v1/users/{device.user}/devices").json["devices"]


def entry(device, created_at=START_MS) -> dict:
    return {
        "device_id": device.device_id,
        "public_key": b64(device.public_key),
        "created_at": created_at,
    }


# Adding a device


def test_add_device_returns_a_new_device_of_the_same_user(alice):
    created = alice.post("/v1/devices", {"public_key": random_key()}, status=201)
    assert set(created.json) == {"user", "device_id", "token"}
    assert created.json["user"] == alice.user
    assert OPAQUE_ID.match(created.json["device_id"])
    assert created.json["device_id"] != alice.device_id
    assert TOKEN.match(created.json["token"])
    assert created.json["token"] != alice.token


def test_added_device_can_act_with_its_own_token(alice, bob):
    phone = alice.add_device(name="phone")
    message_id = bob.send_to(alice, phone)
    assert [m["id"] for m in phone.inbox()] == [message_id]
    assert phone.get(f"/v1/users/{bob.user}/devices").json["user"] == bob.user


def test_add_device_keeps_its_name(alice):
    laptop = alice.add_device(name="laptop")
    names = {row["device_id"]: row["name"] for row in rows(alice.app, "devices")}
    assert names == {alice.device_id: None, laptop.device_id: "laptop"}


@pytest.mark.parametrize("case", sorted(bad_encodings(32)))
def test_add_device_with_invalid_public_key_gets_400(new_user, case):
    alice = new_user("alice")
    refused = alice.post("/v1/devices", {"public_key": bad_encodings(32)[case]}, status=400)
    assert refused.json == error_body("body", "public_key")
    assert len(listing(alice)) == 1


def test_device_limit(make_app):
    app = make_app(max_devices_per_user=2)
    alice = register(app, "alice@example.com")
    second = alice.add_device()
    refused = alice.post("/v1/devices", {"public_key": random_key()}, status=409)
    assert refused.json == error_body("body", "devices")
    assert {d["device_id"] for d in listing(alice)} == {alice.device_id, second.device_id}
    # Other users are not concerned, and a revoked device frees its place.
    register(app, "bob@example.com").add_device()
    alice.delete(f"/v1/devices/{second.device_id}")
    alice.add_device()


# Listing a user's devices


def test_list_devices(app, clock, alice, bob):
    clock.advance(60)
    phone = alice.add_device()
    listed = bob.get(f"/v1/users/{alice.user}/devices").json
    assert set(listed) == {"user", "devices"}
    assert listed["user"] == alice.user
    assert by_device(listed["devices"]) == by_device(
        [entry(alice), entry(phone, START_MS + 60_000)]
    )


def test_any_device_may_list_any_user(alice, bob):
    assert bob.get(f"/v1/users/{alice.user}/devices").json["user"] == alice.user
    assert alice.get(f"/v1/users/{alice.user}/devices").json["user"] == alice.user


def test_list_devices_of_unknown_user_gets_404(alice):
    refused = alice.get("/v1/users/nobody@example.com/devices", status=404)
    assert refused.json == error_body("path", "user")


def test_revoked_devices_are_not_listed(clock, alice, bob):
    phone = alice.add_device()
    laptop = alice.add_device()
    alice.delete(f"/v1/devices/{phone.device_id}")
    listed = bob.get(f"/v1/users/{alice.user}/devices").json["devices"]
    assert by_device(listed) == by_device([entry(alice), entry(laptop)])


def by_device(entries):
    return sorted(entries, key=lambda e: e["device_id"])


# Rotating a key


def test_rotate_key(alice, bob):
    new_key = random_key()
    rotated = alice.put(f"/v1/devices/{alice.device_id}/key", {"public_key": new_key})
    assert rotated.json == {"device_id": alice.device_id, "public_key": new_key}
    [listed] = bob.get(f"/v1/users/{alice.user}/devices").json["devices"]
    assert listed["public_key"] == new_key
    # The token is unchanged: the device goes on working.
    alice.get("/v1/messages")


def test_rotate_key_of_another_device_of_the_same_user_gets_403(alice):
    phone = alice.add_device()
    refused = alice.put(
        f"/v1/devices/{phone.device_id}/key", {"public_key": random_key()}, status=403
    )
    assert refused.content_type == "application/json"
    assert refused.json == error_body("path", "device_id")
    [listed] = [d for d in listing(alice) if d["device_id"] == phone.device_id]
    assert listed["public_key"] == b64(phone.public_key)


def test_rotate_key_of_another_users_device_gets_404(alice, bob):
    refused = alice.put(
        f"/v1/devices/{bob.device_id}/key", {"public_key": random_key()}, status=404
    )
    assert refused.json == error_body("path", "device_id")
    [listed] = listing(bob)
    assert listed["public_key"] == b64(bob.public_key)


@pytest.mark.parametrize("device_id", ["unknown-device", "x" * 65, "a%20b"])
def test_rotate_key_of_unknown_device_gets_404(alice, device_id):
    refused = alice.put(f"/v1/devices/{device_id}/key", {"public_key": random_key()}, status=404)
    assert refused.json == error_body("path", "device_id")


@pytest.mark.parametrize("case", sorted(bad_encodings(32)))
def test_rotate_key_with_invalid_public_key_gets_400(new_user, case):
    alice = new_user("alice")
    refused = alice.put(
        f"/v1/devices/{alice.device_id}/key", {"public_key": bad_encodings(32)[case]}, status=400
    )
    assert refused.json == error_body("body", "public_key")
    assert listing(alice)[0]["public_key"] == b64(alice.public_key)


# Revoking a device


def test_delete_device(alice):
    phone = alice.add_device()
    deleted = alice.delete(f"/v1/devices/{phone.device_id}", status=204)
    assert deleted.body == b""
    assert [d["device_id"] for d in listing(alice)] == [alice.device_id]


def test_deleted_devices_token_stops_working(alice):
    phone = alice.add_device()
    alice.delete(f"/v1/devices/{phone.device_id}")
    refused = phone.get("/v1/messages", status=401)
    assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    phone.post("/v1/devices", {"public_key": random_key()}, status=401)


def test_a_revoked_device_cannot_send_where_it_was_authenticated_recently(alice, bob):
    phone = alice.add_device()
    phone.send_to(bob)  # this process now remembers the phone (fxchat.security)
    alice.delete(f"/v1/devices/{phone.device_id}")
    for _ in range(2):  # refused by the send's own check, then by the lookup
        refused = phone.post("/v1/messages", phone.envelope(bob), status=401)
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
        assert refused.json == error_body("header", "Authorization")
    assert [m["sender"]["device_id"] for m in bob.inbox()] == [phone.device_id]


def test_a_revoked_device_recently_authenticated_is_401_even_with_a_bad_body(alice, bob):
    phone = alice.add_device()
    phone.send_to(bob)  # remembered
    alice.delete(f"/v1/devices/{phone.device_id}")
    refused = phone.post("/v1/messages", {"suite": "fxchat-1"}, status=401)
    assert refused.json == error_body("header", "Authorization")
    # A device still valid gets the 400 its body deserves.
    alice.post("/v1/messages", {"suite": "fxchat-1"}, status=400)


def test_a_device_may_delete_itself(alice):
    phone = alice.add_device()
    phone.delete(f"/v1/devices/{phone.device_id}", status=204)
    phone.get("/v1/messages", status=401)
    assert [d["device_id"] for d in listing(alice)] == [alice.device_id]


def test_delete_drops_the_devices_queue(app, alice, bob):
    phone = bob.add_device()
    first = alice.send_to(bob, phone)
    bob.ack(first)  # now only the phone waits for it
    second = alice.send_to(bob, phone)
    bob.delete(f"/v1/devices/{phone.device_id}")
    # Nothing is pending for the revoked device any more; bob's copy is untouched.
    revoked_pk = next(r["pk"] for r in rows(app, "devices") if r["device_id"] == phone.device_id)
    assert [
        r for r in rows(app, "copies") if r["device_pk"] == revoked_pk and r["state"] == 0
    ] == []
    assert [m["id"] for m in bob.inbox()] == [second]
    # The body nobody waits for any more is gone; the other is kept for bob.
    message_pks = {r["message_id"]: r["pk"] for r in rows(app, "messages")}
    assert [r["message_pk"] for r in rows(app, "bodies")] == [message_pks[second]]


def test_deleted_device_is_extra_for_senders(alice, bob):
    phone = bob.add_device()
    bob.delete(f"/v1/devices/{phone.device_id}")
    refused = alice.post("/v1/messages", alice.envelope(bob, phone), status=409)
    assert refused.json == error_body(
        "body", "recipients", missing_devices=[], extra_devices=[phone.address]
    )


def test_delete_another_users_device_gets_404(alice, bob):
    refused = alice.delete(f"/v1/devices/{bob.device_id}", status=404)
    assert refused.json == error_body("path", "device_id")
    bob.get("/v1/messages")
    assert [d["device_id"] for d in listing(bob)] == [bob.device_id]


def test_delete_unknown_or_revoked_device_gets_404(alice):
    phone = alice.add_device()
    alice.delete(f"/v1/devices/{phone.device_id}")
    again = alice.delete(f"/v1/devices/{phone.device_id}", status=404)
    assert again.json == error_body("path", "device_id")
    unknown = alice.delete("/v1/devices/no-such-device", status=404)
    assert unknown.json == error_body("path", "device_id")


def test_key_of_revoked_device_cannot_be_rotated(alice):
    phone = alice.add_device()
    alice.delete(f"/v1/devices/{phone.device_id}")
    refused = alice.put(
        f"/v1/devices/{phone.device_id}/key", {"public_key": random_key()}, status=404
    )
    assert refused.json == error_body("path", "device_id")


def test_device_times_come_from_the_clock(make_app):
    app = make_app()
    clock = freeze_clock(app)
    alice = register(app, "alice@example.com")
    clock.advance(1.5)
    phone = alice.add_device()
    assert sorted(d["created_at"] for d in listing(alice)) == [START_MS, START_MS + 1500]
    assert phone.user == alice.user
