"""GET /v1/messages (PROTOCOL.md §3.3): the calling device's queue, oldest first, in pages."""

from __future__ import annotations

import os

import pytest

from ..conftest import b64, register
from .checks import START_MS, error_body


def ids(page) -> list[str]:
    return [message["id"] for message in page["messages"]]


def test_fetched_message_is_exactly_what_was_sent(clock, alice, bob):
    body = alice.envelope(bob, ttl=3600)
    sent = alice.post("/v1/messages", body, status=201).json
    [recipient] = body["recipients"]
    page = bob.get("/v1/messages").json
    assert page == {
        "messages": [
            {
                "id": sent["id"],
                "sender": {"user": alice.user, "device_id": alice.device_id},
                "sent_at": START_MS,
                "expires_at": START_MS + 3_600_000,
                "suite": "fxchat-1",
                "encrypted_message": body["encrypted_message"],
                "encrypted_aes_key": recipient["encrypted_aes_key"],
                "msg_sig": recipient["msg_sig"],
                "msg_pub_key": recipient["msg_pub_key"],
            }
        ],
        "next": None,
    }


def test_empty_queue(alice):
    assert alice.get("/v1/messages").json == {"messages": [], "next": None}


def test_oldest_first(app, clock, alice, bob):
    carol = register(app, "carol@example.com")
    sent = []
    for sender in (alice, carol, alice, carol):
        sent.append(sender.send_to(bob))
        clock.advance(1)
    assert ids(bob.get("/v1/messages").json) == sent


def test_sender_is_the_authenticated_device_not_the_claimed_one(app, alice, bob):
    phone = alice.add_device()
    body = phone.envelope(bob)
    # Whatever a client adds to claim another sender is ignored.
    body["sender"] = {"user": "mallory@example.com", "device_id": "mallory"}
    body["recipients"][0]["sender"] = {"user": "mallory@example.com", "device_id": "mallory"}
    body["from"] = alice.address
    phone.post("/v1/messages", body, status=201)
    [item] = bob.inbox()
    assert item["sender"] == {"user": alice.user, "device_id": phone.device_id}


def test_sender_stays_the_same_after_the_sending_device_is_revoked(alice, bob):
    phone = alice.add_device()
    phone.send_to(bob)
    alice.delete(f"/v1/devices/{phone.device_id}")
    [item] = bob.inbox()
    assert item["sender"] == phone.address


def test_paging_with_next_does_not_acknowledge(alice, bob):
    sent = [alice.send_to(bob) for _ in range(5)]
    first = bob.get("/v1/messages", params={"limit": 2}).json
    assert ids(first) == sent[:2]
    assert isinstance(first["next"], str) and first["next"]
    second = bob.get("/v1/messages", params={"limit": 2, "after": first["next"]}).json
    assert ids(second) == sent[2:4]
    third = bob.get("/v1/messages", params={"limit": 2, "after": second["next"]}).json
    assert ids(third) == sent[4:]
    assert third["next"] is None
    # Nothing was acknowledged: without `after`, the queue starts again at the oldest.
    assert ids(bob.get("/v1/messages", params={"limit": 2}).json) == sent[:2]


def test_paging_collects_every_message_once(alice, bob):
    sent = [alice.send_to(bob) for _ in range(7)]
    seen, after = [], None
    for _ in range(10):
        params = {"limit": 3} | ({"after": after} if after else {})
        page = bob.get("/v1/messages", params=params).json
        assert len(page["messages"]) <= 3
        seen += ids(page)
        after = page["next"]
        if after is None:
            break
    assert seen == sent


def test_fetching_again_starts_at_the_oldest_unacknowledged(alice, bob):
    sent = [alice.send_to(bob) for _ in range(4)]
    page = bob.get("/v1/messages", params={"limit": 2}).json
    bob.ack(*ids(page))
    assert ids(bob.get("/v1/messages").json) == sent[2:]


def test_messages_arriving_while_paging_come_on_later_pages(alice, bob):
    sent = [alice.send_to(bob) for _ in range(3)]
    first = bob.get("/v1/messages", params={"limit": 2}).json
    sent.append(alice.send_to(bob))
    rest = bob.get("/v1/messages", params={"limit": 10, "after": first["next"]}).json
    assert ids(first) + ids(rest) == sent


def test_default_limit_is_100(alice, bob):
    sent = [alice.send_to(bob, message=b"\0" * 28) for _ in range(101)]
    page = bob.get("/v1/messages").json
    assert ids(page) == sent[:100]
    assert page["next"] is not None
    rest = bob.get("/v1/messages", params={"after": page["next"]}).json
    assert rest == {"messages": rest["messages"], "next": None}
    assert ids(rest) == sent[100:]


def test_configured_page_sizes(make_app):
    app = make_app(default_page_size=2, max_page_size=3)
    alice, bob = register(app, "alice@example.com"), register(app, "bob@example.com")
    sent = [alice.send_to(bob) for _ in range(4)]
    assert ids(bob.get("/v1/messages").json) == sent[:2]
    assert ids(bob.get("/v1/messages", params={"limit": 3}).json) == sent[:3]
    refused = bob.get("/v1/messages", params={"limit": 4}, status=400)
    assert refused.json == error_body("querystring", "limit")


@pytest.mark.parametrize("limit", ["1", "500"])
def test_limits_up_to_500_are_accepted(alice, bob, limit):
    sent = [alice.send_to(bob) for _ in range(2)]
    assert ids(bob.get("/v1/messages", params={"limit": limit}).json) == sent[: int(limit)]


@pytest.mark.parametrize(
    "limit",
    [
        "0",
        "501",
        "-1",
        "abc",
        "",
        "1.5",
        "1e2",
        " 5",
        "+5",
        "0x10",
        "\u0665",
        "99999999999999999999",
    ],
    ids=repr,
)
def test_invalid_limit_gets_400(new_user, limit):
    bob = new_user("bob")
    refused = bob.get("/v1/messages", params={"limit": limit}, status=400)
    assert refused.json == error_body("querystring", "limit")


@pytest.mark.parametrize(
    "after",
    ["", "garbage", "c1.", "c1.-1", "c1.abc", "c2.5", "not a cursor", "\u00e9", "1" * 100],
    ids=repr,
)
def test_invalid_cursor_gets_400(new_user, after):
    bob = new_user("bob")
    refused = bob.get("/v1/messages", params={"after": after}, status=400)
    assert refused.json == error_body("querystring", "after")


def test_expired_copies_are_never_served(clock, alice, bob):
    short = alice.send_to(bob, ttl=60)
    long = alice.send_to(bob, ttl=3600)
    clock.advance(59)
    assert ids(bob.get("/v1/messages").json) == [short, long]
    clock.advance(2)
    assert ids(bob.get("/v1/messages").json) == [long]
    clock.advance(3600)
    assert bob.get("/v1/messages").json == {"messages": [], "next": None}


def test_expired_copies_are_skipped_when_paging(clock, alice, bob):
    first = alice.send_to(bob, ttl=3600)
    alice.send_to(bob, ttl=60)
    third = alice.send_to(bob, ttl=3600)
    page = bob.get("/v1/messages", params={"limit": 1}).json
    clock.advance(61)
    rest = bob.get("/v1/messages", params={"after": page["next"]}).json
    assert ids(page) + ids(rest) == [first, third]


def test_each_device_sees_only_its_own_copy(alice, bob):
    phone = bob.add_device()
    body = alice.envelope(bob, phone)
    message_id = alice.post("/v1/messages", body, status=201).json["id"]
    for device, recipient in zip((bob, phone), body["recipients"], strict=True):
        [item] = device.inbox()
        assert item["id"] == message_id
        assert item["encrypted_aes_key"] == recipient["encrypted_aes_key"]
        assert item["msg_pub_key"] == recipient["msg_pub_key"]
    # The sender's queue holds nothing of it.
    assert alice.inbox() == []


def test_another_devices_queue_is_never_visible(app, alice, bob):
    carol = register(app, "carol@example.com")
    for_bob = [alice.send_to(bob) for _ in range(3)]
    for_carol = alice.send_to(carol)
    assert ids(bob.get("/v1/messages").json) == for_bob
    assert ids(carol.get("/v1/messages").json) == [for_carol]
    # A cursor from bob's queue only moves carol within her own.
    bobs_cursor = bob.get("/v1/messages", params={"limit": 1}).json["next"]
    carols_page = carol.get("/v1/messages", params={"after": bobs_cursor}).json
    assert set(ids(carols_page)) <= {for_carol}


def test_acknowledged_by_one_device_stays_for_the_other(alice, bob):
    phone = bob.add_device()
    message_id = alice.send_to(bob, phone)
    bob.ack(message_id)
    assert bob.inbox() == []
    assert [m["id"] for m in phone.inbox()] == [message_id]


def test_body_bytes_come_back_unchanged(alice, bob):
    message = os.urandom(1000)
    alice.send_to(bob, message=message)
    [item] = bob.inbox()
    assert item["encrypted_message"] == b64(message)


@pytest.mark.parametrize("size", [28, 29, 30, 1024])
def test_bodies_of_every_length_come_back_unchanged(alice, bob, size):
    # Lengths of each remainder modulo 3: base64url pads none, one or two.
    message = os.urandom(size)
    alice.send_to(bob, message=message)
    [item] = bob.inbox()
    assert item["encrypted_message"] == b64(message)


def test_a_cursor_at_the_start_pages_from_the_oldest(alice, bob):
    sent = [alice.send_to(bob) for _ in range(3)]
    page = bob.get("/v1/messages", params={"limit": "2", "after": "c1.0"}).json
    assert ids(page) == sent[:2]
    assert ids(bob.get("/v1/messages", params={"after": page["next"]}).json) == sent[2:]
