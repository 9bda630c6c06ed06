"""GET /v1/messages/{id}/receipts (PROTOCOL.md §3.5): for the sending user's devices only."""

from __future__ import annotations

import os

from ..conftest import b64, register
from .checks import START_MS, by_address, error_body


def receipts(device, msg_id, status=200):
    return device.get(f"/v1/messages/{msg_id}/receipts", status=status)


def test_pending_receipts(alice, bob):
    phone = bob.add_device()
    msg_id = alice.send_to(bob, phone)
    answer = receipts(alice, msg_id).json
    assert answer["id"] == msg_id
    assert by_address(answer["receipts"]) == by_address(
        [{**bob.address, "status": "pending"}, {**phone.address, "status": "pending"}]
    )


def test_every_status(clock, app, alice, bob):
    phone = bob.add_device()
    carol = register(app, "carol@example.com")
    msg_id = alice.send_to(bob, phone, carol, ttl=600)
    mac_key = os.urandom(32)
    clock.advance(10)
    bob.ack(msg_id, mac_key=mac_key)
    clock.advance(10)
    phone.ack(msg_id)
    acked = [
        {**bob.address, "status": "acked", "acked_at": START_MS + 10_000, "mac_key": b64(mac_key)},
        {**phone.address, "status": "acked", "acked_at": START_MS + 20_000},
    ]
    answer = receipts(alice, msg_id).json
    assert answer["id"] == msg_id
    assert by_address(answer["receipts"]) == by_address(
        [*acked, {**carol.address, "status": "pending"}]
    )
    # Once the message expires, what was still pending is expired; the rest stays.
    clock.advance(600)
    answer = receipts(alice, msg_id).json
    assert by_address(answer["receipts"]) == by_address(
        [*acked, {**carol.address, "status": "expired"}]
    )


def test_another_device_of_the_sending_user_sees_them(alice, bob):
    phone = alice.add_device()
    msg_id = alice.send_to(bob)
    assert receipts(phone, msg_id).json == receipts(alice, msg_id).json
    # Also after the sending device is gone.
    phone.delete(f"/v1/devices/{alice.device_id}")
    assert receipts(phone, msg_id).json == {
        "id": msg_id,
        "receipts": [{**bob.address, "status": "pending"}],
    }


def test_a_device_added_later_sees_them(alice, bob):
    msg_id = alice.send_to(bob)
    laptop = alice.add_device()
    assert receipts(laptop, msg_id).json["id"] == msg_id


def test_recipient_gets_404(alice, bob):
    msg_id = alice.send_to(bob)
    refused = receipts(bob, msg_id, status=404)
    assert refused.json == error_body("path", "id")


def test_unrelated_user_gets_the_same_404_as_for_an_unknown_id(app, alice, bob):
    carol = register(app, "carol@example.com")
    msg_id = alice.send_to(bob)
    refused = receipts(carol, msg_id, status=404)
    unknown = receipts(carol, "no-such-message", status=404)
    assert refused.json == error_body("path", "id")
    assert unknown.json == error_body("path", "id")
    # The descriptions may name the id asked for, nothing else.
    assert refused.json["errors"][0]["description"].replace(msg_id, "X") == unknown.json["errors"][
        0
    ]["description"].replace("no-such-message", "X")


def test_unknown_id_gets_404(alice):
    refused = receipts(alice, "no-such-message", status=404)
    assert refused.json == error_body("path", "id")


def test_message_to_ones_own_other_device(alice):
    phone = alice.add_device()
    msg_id = alice.send_to(phone)
    assert receipts(alice, msg_id).json == {
        "id": msg_id,
        "receipts": [{**phone.address, "status": "pending"}],
    }
    assert receipts(phone, msg_id).json == receipts(alice, msg_id).json
