"""POST /v1/messages/ack (PROTOCOL.md §3.4): leaving the queue, disclosing mac_keys."""

from __future__ import annotations

import os

import pytest

from ..conftest import b64, register
from .checks import START_MS, bad_encodings, count, error_body, rows


def ack(device, *acks, status=200):
    return device.post("/v1/messages/ack", {"acks": list(acks)}, status=status)


def test_batch_ack(alice, bob):
    first, second, third = (alice.send_to(bob) for _ in range(3))
    answer = ack(bob, {"id": first}, {"id": third}, {"id": "no-such-message"})
    assert answer.json == {"acked": [first, third], "unknown": ["no-such-message"]}
    assert [m["id"] for m in bob.inbox()] == [second]


def test_second_ack_is_harmless(alice, bob):
    msg_id = alice.send_to(bob)
    assert bob.ack(msg_id) == {"acked": [msg_id], "unknown": []}
    assert bob.ack(msg_id) == {"acked": [], "unknown": [msg_id]}
    assert bob.inbox() == []


def test_empty_ack(alice):
    assert ack(alice).json == {"acked": [], "unknown": []}


def test_same_id_twice_in_one_ack_is_acknowledged_once(alice, bob):
    msg_id = alice.send_to(bob)
    mac_key = os.urandom(32)
    answer = ack(bob, {"id": msg_id}, {"id": msg_id, "mac_key": b64(mac_key)})
    assert answer.json == {"acked": [msg_id], "unknown": []}
    [receipt] = alice.get(f"/v1/messages/{msg_id}/receipts").json["receipts"]
    assert receipt["mac_key"] == b64(mac_key)


def test_mac_key_is_kept_for_the_receipts(clock, alice, bob):
    msg_id = alice.send_to(bob)
    mac_key = os.urandom(32)
    clock.advance(5)
    assert bob.ack(msg_id, mac_key=mac_key) == {"acked": [msg_id], "unknown": []}
    assert alice.get(f"/v1/messages/{msg_id}/receipts").json == {
        "id": msg_id,
        "receipts": [
            {
                **bob.address,
                "status": "acked",
                "acked_at": START_MS + 5000,
                "mac_key": b64(mac_key),
            }
        ],
    }


def test_null_mac_key_is_no_mac_key(alice, bob):
    msg_id = alice.send_to(bob)
    assert ack(bob, {"id": msg_id, "mac_key": None}).json == {"acked": [msg_id], "unknown": []}
    [receipt] = alice.get(f"/v1/messages/{msg_id}/receipts").json["receipts"]
    assert "mac_key" not in receipt


@pytest.mark.parametrize("case", sorted(bad_encodings(32)))
def test_invalid_mac_key_gets_400(new_user, case):
    alice, bob = new_user("alice"), new_user("bob")
    msg_id = alice.send_to(bob)
    refused = ack(bob, {"id": msg_id, "mac_key": bad_encodings(32)[case]}, status=400)
    assert refused.json == error_body("body", "acks.0.mac_key")
    # Nothing was acknowledged.
    assert [m["id"] for m in bob.inbox()] == [msg_id]


@pytest.mark.parametrize(
    ("entry", "name"),
    [
        ({"id": ""}, "acks.0.id"),
        ({"id": "x" * 65}, "acks.0.id"),
        ({"id": "a/b"}, "acks.0.id"),
        ({"id": 12}, "acks.0.id"),
        ({"id": None}, "acks.0.id"),
        ({}, "acks.0.id"),
        ("an-id", "acks.0"),
    ],
    ids=["empty id", "65 characters", "slash", "number", "null", "no id", "not an object"],
)
def test_invalid_ack_entries_get_400(new_user, entry, name):
    bob = new_user("bob")
    refused = ack(bob, entry, status=400)
    assert refused.json == error_body("body", name)


@pytest.mark.parametrize(
    "body", [{}, {"acks": "x"}, {"acks": {"id": "x"}}, {"acks": None}], ids=repr
)
def test_acks_must_be_a_list(new_user, body):
    bob = new_user("bob")
    refused = bob.post("/v1/messages/ack", body, status=400)
    assert refused.json == error_body("body", "acks")


def test_at_most_500_acks(new_user):
    bob = new_user("bob")
    ids = [f"id-{n}" for n in range(501)]
    refused = ack(bob, *({"id": i} for i in ids), status=400)
    assert refused.json == error_body("body", "acks")
    assert ack(bob, *({"id": i} for i in ids[:500])).json == {"acked": [], "unknown": ids[:500]}


def test_one_devices_ack_never_touches_another_devices_copy(alice, bob):
    phone = bob.add_device()
    msg_id = alice.send_to(bob, phone)
    assert bob.ack(msg_id, mac_key=os.urandom(32)) == {"acked": [msg_id], "unknown": []}
    assert [m["id"] for m in phone.inbox()] == [msg_id]
    statuses = {
        r["device_id"]: r["status"]
        for r in alice.get(f"/v1/messages/{msg_id}/receipts").json["receipts"]
    }
    assert statuses == {bob.device_id: "acked", phone.device_id: "pending"}
    assert phone.ack(msg_id) == {"acked": [msg_id], "unknown": []}


def test_acking_someone_elses_message_is_unknown(app, alice, bob):
    carol = register(app, "carol@example.com")
    msg_id = alice.send_to(bob)
    assert carol.ack(msg_id) == {"acked": [], "unknown": [msg_id]}
    # Nor may the sender acknowledge its own message for the recipient.
    assert alice.ack(msg_id) == {"acked": [], "unknown": [msg_id]}
    assert [m["id"] for m in bob.inbox()] == [msg_id]
    [receipt] = alice.get(f"/v1/messages/{msg_id}/receipts").json["receipts"]
    assert receipt["status"] == "pending"


def test_acking_an_expired_copy_is_unknown(clock, alice, bob):
    msg_id = alice.send_to(bob, ttl=60)
    clock.advance(61)
    assert bob.ack(msg_id) == {"acked": [], "unknown": [msg_id]}
    [receipt] = alice.get(f"/v1/messages/{msg_id}/receipts").json["receipts"]
    assert receipt["status"] == "expired"


def test_body_is_kept_while_a_copy_is_pending_and_deleted_after(app, alice, bob):
    phone = bob.add_device()
    msg_id = alice.send_to(bob, phone)
    other = alice.send_to(bob, phone)
    bob.ack(msg_id)
    assert count(app, "bodies") == 2
    phone.ack(msg_id)
    message_pks = {r["message_id"]: r["pk"] for r in rows(app, "messages")}
    assert [r["message_pk"] for r in rows(app, "bodies")] == [message_pks[other]]
    # The message itself stays, for the receipts.
    assert count(app, "messages") == 2


def test_acknowledged_copy_keeps_no_key_material(app, alice, bob):
    msg_id = alice.send_to(bob)
    bob.ack(msg_id, mac_key=os.urandom(32))
    [copy] = rows(app, "copies")
    assert (copy["encrypted_aes_key"], copy["msg_sig"], copy["msg_pub_key"]) == (None, None, None)
    assert msg_id == alice.get(f"/v1/messages/{msg_id}/receipts").json["id"]


def test_ack_makes_room_in_a_full_queue(make_app):
    app = make_app(max_queued_per_device=1)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    msg_id = alice.send_to(bob)
    alice.post("/v1/messages", alice.envelope(bob), status=409)
    bob.ack(msg_id)
    alice.send_to(bob)
