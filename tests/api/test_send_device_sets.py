"""POST /v1/messages (PROTOCOL.md §3.2): the addressed users' current devices, or nothing."""

from __future__ import annotations

import os

import pytest

from ..conftest import b64, register
from .checks import (
    NOTHING_STORED,
    by_address,
    count,
    error_body,
    freeze_clock,
    stored_counts,
)

# The device sets (409)


def conflict(missing=(), extra=()) -> dict:
    return error_body(
        "body",
        "recipients",
        missing_devices=by_address(list(missing)),
        extra_devices=by_address(list(extra)),
    )


def sorted_conflict(response) -> dict:
    body = dict(response.json)
    for member in ("missing_devices", "extra_devices"):
        if member in body:
            body[member] = by_address(body[member])
    return body


def ghost(user: str, device_id: str = "no-such-device") -> dict:
    return {
        "user": user,
        "device_id": device_id,
        "encrypted_aes_key": b64(os.urandom(60)),
        "msg_sig": b64(os.urandom(32)),
        "msg_pub_key": b64(os.urandom(32)),
    }


def test_missing_device_gets_409(alice, bob):
    phone = bob.add_device()
    refused = alice.post("/v1/messages", alice.envelope(bob), status=409)
    assert sorted_conflict(refused) == conflict(missing=[phone.address])


def test_unknown_device_id_is_extra(alice, bob):
    body = alice.envelope(bob)
    body["recipients"].append(ghost(bob.user))
    refused = alice.post("/v1/messages", body, status=409)
    assert sorted_conflict(refused) == conflict(
        extra=[{"user": bob.user, "device_id": "no-such-device"}]
    )


def test_another_users_device_listed_under_the_wrong_user_is_extra(app, alice, bob):
    carol = register(app, "carol@example.com")
    body = alice.envelope(bob)
    body["recipients"].append(ghost(bob.user, carol.device_id))
    refused = alice.post("/v1/messages", body, status=409)
    assert sorted_conflict(refused) == conflict(
        extra=[{"user": bob.user, "device_id": carol.device_id}]
    )


def test_revoked_device_is_extra(alice, bob):
    phone = bob.add_device()
    bob.delete(f"/v1/devices/{phone.device_id}")
    refused = alice.post("/v1/messages", alice.envelope(bob, phone), status=409)
    assert sorted_conflict(refused) == conflict(extra=[phone.address])


def test_unknown_users_devices_are_all_extra(alice, bob):
    body = alice.envelope(bob)
    body["recipients"] += [ghost("nobody@example.com", "one"), ghost("nobody@example.com", "two")]
    refused = alice.post("/v1/messages", body, status=409)
    assert sorted_conflict(refused) == conflict(
        extra=[
            {"user": "nobody@example.com", "device_id": "one"},
            {"user": "nobody@example.com", "device_id": "two"},
        ]
    )


def test_user_ids_of_recipients_are_compared_exactly(alice, bob):
    body = alice.envelope(bob)
    body["recipients"][0]["user"] = bob.user.upper()
    refused = alice.post("/v1/messages", body, status=409)
    # BOB@EXAMPLE.COM is another (unknown) user, and bob is not addressed at all.
    assert sorted_conflict(refused) == conflict(
        extra=[{"user": bob.user.upper(), "device_id": bob.device_id}]
    )


def test_missing_and_extra_together(app, alice, bob):
    phone = bob.add_device()
    carol = register(app, "carol@example.com")
    laptop = carol.add_device()
    body = alice.envelope(bob, carol)
    body["recipients"].append(ghost(carol.user))
    refused = alice.post("/v1/messages", body, status=409)
    assert sorted_conflict(refused) == conflict(
        missing=[phone.address, laptop.address],
        extra=[{"user": carol.user, "device_id": "no-such-device"}],
    )


def test_writing_to_ones_own_user_leaves_out_the_sending_device(alice, bob):
    phone = alice.add_device()
    message_id = alice.send_to(bob, phone)
    assert [m["id"] for m in phone.inbox()] == [message_id]
    assert alice.inbox() == []


def test_listing_the_sending_device_makes_it_extra(alice, bob):
    phone = alice.add_device()
    refused = alice.post("/v1/messages", alice.envelope(bob, phone, alice), status=409)
    assert sorted_conflict(refused) == conflict(extra=[alice.address])


def test_leaving_out_ones_other_device_makes_it_missing(alice, bob):
    phone = alice.add_device()
    laptop = alice.add_device()
    refused = alice.post("/v1/messages", alice.envelope(bob, phone), status=409)
    assert sorted_conflict(refused) == conflict(missing=[laptop.address])


def test_a_user_not_named_is_not_addressed(alice, bob):
    """Alice's other devices need not be listed when she does not write to her own user."""
    alice.add_device()
    alice.send_to(bob)


def test_writing_only_to_ones_own_other_device(alice):
    phone = alice.add_device()
    message_id = alice.send_to(phone)
    assert [m["id"] for m in phone.inbox()] == [message_id]


def test_a_single_device_user_cannot_write_to_itself(alice):
    refused = alice.post("/v1/messages", alice.envelope(alice), status=409)
    assert sorted_conflict(refused) == conflict(extra=[alice.address])


# All or nothing


def plus(body: dict, *entries: dict) -> dict:
    """``body`` with more recipient entries."""
    return {**body, "recipients": body["recipients"] + list(entries)}


def refuse_missing_device(alice, bob, carol):
    bob.add_device()
    return alice.envelope(bob, carol), 409


def refuse_unknown_device(alice, bob, carol):
    return plus(alice.envelope(bob, carol), ghost(carol.user)), 409


def refuse_unknown_user(alice, bob, carol):
    return plus(alice.envelope(bob, carol), ghost("nobody@example.com")), 409


def refuse_sending_device_listed(alice, bob, carol):
    return alice.envelope(bob, carol, alice), 409


def refuse_invalid_last_recipient(alice, bob, carol):
    invalid = {**alice.envelope(carol)["recipients"][0], "msg_sig": "x"}
    return plus(alice.envelope(bob), invalid), 400


def refuse_duplicate_recipient(alice, bob, carol):
    return alice.envelope(bob, carol, carol), 400


REFUSALS = {
    "missing device": refuse_missing_device,
    "unknown device": refuse_unknown_device,
    "unknown user": refuse_unknown_user,
    "sending device listed": refuse_sending_device_listed,
    "invalid last recipient": refuse_invalid_last_recipient,
    "duplicate recipient": refuse_duplicate_recipient,
}


@pytest.mark.parametrize("refusal", list(REFUSALS))
def test_refused_send_stores_nothing(app, alice, bob, refusal):
    carol = register(app, "carol@example.com")
    body, status = REFUSALS[refusal](alice, bob, carol)
    alice.post("/v1/messages", body, status=status)
    assert stored_counts(app) == NOTHING_STORED
    assert bob.inbox() == [] and carol.inbox() == []


# Full queues


def test_full_queue_gets_409_and_stores_nothing(make_app):
    app = make_app(max_queued_per_device=2)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    first = alice.send_to(bob)
    phone = bob.add_device()
    alice.send_to(bob, phone)
    # Bob's queue is full, the phone's is not: nothing is stored for either.
    refused = alice.post("/v1/messages", alice.envelope(bob, phone), status=409)
    assert refused.json == error_body("body", "queue_full", full_devices=[bob.address])
    assert count(app, "messages") == 2
    assert len(phone.inbox()) == 1
    # An acknowledgement makes room again.
    bob.ack(first)
    alice.send_to(bob, phone)
    both_full = alice.post("/v1/messages", alice.envelope(bob, phone), status=409)
    assert sorted_conflict(both_full) == error_body(
        "body", "queue_full", full_devices=by_address([bob.address, phone.address])
    )
    assert count(app, "messages") == 3


def test_expired_copies_do_not_fill_the_queue(make_app):
    app = make_app(max_queued_per_device=1)
    clock = freeze_clock(app)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    alice.send_to(bob, ttl=60)
    clock.advance(61)
    assert bob.inbox() == []
    alice.post("/v1/messages", alice.envelope(bob), status=201)
