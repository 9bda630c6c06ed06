"""POST /v1/messages/ack (PROTOCOL.md §3.4): leaving the queue, disclosing mac_keys."""

from __future__ import annotations

import base64
import contextlib
import os
import random
import threading
from concurrent.futures import ThreadPoolExecutor

import colander
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from sqlalchemy import event

from fxchat.models import CopyState
from fxchat.schemas.messages import AckSchema
from fxchat.settings import Settings

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


def test_a_full_ack_mixing_every_kind_of_id(clock, app, alice, bob):
    """500 entries: pending, repeated, unknown, expired, already acknowledged, someone else's."""
    carol = register(app, "carol@example.com")
    expiring = [alice.send_to(bob, ttl=60) for _ in range(3)]
    pending = [alice.send_to(bob) for _ in range(300)]
    carols = [alice.send_to(carol) for _ in range(3)]
    already = pending[:10]
    bob.ack(*already)
    clock.advance(61)
    keys = {msg_id: os.urandom(32) for msg_id in pending}
    entries = [
        {"id": msg_id} if n % 7 == 0 else {"id": msg_id, "mac_key": b64(keys[msg_id])}
        for n, msg_id in enumerate(pending)
    ]
    # Repeated ids: after one without a mac_key, the later mac_key is kept;
    # after one with a mac_key, a later one is ignored.
    entries += [{"id": msg_id, "mac_key": b64(os.urandom(32))} for msg_id in pending[10:90]]
    entries += [{"id": msg_id} for msg_id in expiring + carols]
    entries += [{"id": f"no-such-message-{n}"} for n in range(500 - len(entries))]
    random.Random(1).shuffle(entries)
    assert len(entries) == 500

    answer = ack(bob, *entries).json

    order = list(dict.fromkeys(entry["id"] for entry in entries))
    acknowledged = set(pending) - set(already)
    assert answer == {
        "acked": [i for i in order if i in acknowledged],
        "unknown": [i for i in order if i not in acknowledged],
    }
    first_key = {}
    for entry in entries:
        if entry["id"] in acknowledged and first_key.get(entry["id"]) is None:
            first_key[entry["id"]] = entry.get("mac_key")
    assert stored_mac_keys(app, bob) == {
        **{msg_id: None for msg_id in already},
        **{msg_id: key and unb64(key) for msg_id, key in first_key.items()},
    }
    assert bob.inbox() == []
    assert [m["id"] for m in carol.inbox()] == carols
    # Expired copies keep their queue places until the purge sweeps them.
    assert queued(app) == {
        alice.device_id: 0,
        bob.device_id: len(expiring),
        carol.device_id: len(carols),
    }


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def stored_mac_keys(app, device) -> dict[str, bytes | None]:
    """The mac_key of each of the device's acknowledged copies, by message id."""
    device_pk = {d["device_id"]: d["pk"] for d in rows(app, "devices")}[device.device_id]
    message_ids = {m["pk"]: m["message_id"] for m in rows(app, "messages")}
    return {
        message_ids[c["message_pk"]]: c["mac_key"]
        for c in rows(app, "copies")
        if c["device_pk"] == device_pk and c["state"] == CopyState.ACKED
    }


def queued(app) -> dict[str, int]:
    """Each device's count of pending copies, as the devices table keeps it."""
    return {d["device_id"]: d["queued"] for d in rows(app, "devices")}


def ack_at_once(app, *requests):
    """Send each (device, ids) acknowledgement from its own thread, all at once.

    Each request, once it has marked copies acknowledged, waits up to a second
    for the others to get as far: only a request that takes no lock the
    others hold can, so without the locks the requests would interleave.
    """
    started, marked = (
        threading.Barrier(len(requests)),
        threading.Barrier(len(requests), timeout=1.0),
    )

    def wait_for_the_others(conn, cursor, statement, parameters, context, executemany):
        # SQLite's UPDATE, or PostgreSQL's one statement (WITH ... UPDATE copies).
        if "UPDATE copies" in statement:
            with contextlib.suppress(threading.BrokenBarrierError):
                marked.wait()

    def send(device, ids):
        started.wait()
        return device.ack(*ids)

    engine = app.app.registry["db_engine"]
    event.listen(engine, "after_cursor_execute", wait_for_the_others)
    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            futures = [pool.submit(send, device, ids) for device, ids in requests]
            return [future.result() for future in futures]
    finally:
        event.remove(engine, "after_cursor_execute", wait_for_the_others)


def test_two_devices_acknowledging_the_same_messages_at_once_drop_every_body(app, alice, bob):
    phone = bob.add_device()
    ids = [alice.send_to(bob, phone) for _ in range(50)]
    answers = ack_at_once(app, (bob, ids), (phone, ids))
    assert answers == [{"acked": ids, "unknown": []}] * 2
    # Whichever finished last saw no copy pending, and dropped the bodies.
    assert count(app, "bodies") == 0
    assert count(app, "messages") == len(ids)


def test_one_device_acknowledging_twice_at_once_acknowledges_each_message_once(app, alice, bob):
    ids = [alice.send_to(bob) for _ in range(50)]
    first, second = ack_at_once(app, (bob, ids), (bob, ids[::-1]))
    assert sorted(first["acked"] + second["acked"]) == sorted(ids)
    assert sorted(first["unknown"]) == sorted(second["acked"])
    assert queued(app)[bob.device_id] == 0
    assert count(app, "bodies") == 0


ACK_ENTRY = AckSchema().bind(settings=Settings())["acks"].children[0]
json_values = st.one_of(
    st.none(),
    st.integers(),
    st.booleans(),
    st.text(max_size=70),
    st.lists(st.integers(), max_size=2),
)
message_ids = st.one_of(st.from_regex(r"[A-Za-z0-9_-]{1,66}", fullmatch=True), json_values)
mac_keys = st.one_of(
    st.none(),
    st.binary(min_size=31, max_size=33).map(b64),
    st.from_regex(r"[A-Za-z0-9_+/=-]{42,44}", fullmatch=True),
    json_values,
)


@given(
    st.one_of(
        st.fixed_dictionaries(
            {"id": message_ids}, optional={"mac_key": mac_keys, "x": json_values}
        ),
        st.dictionaries(st.sampled_from(["mac_key", "x"]), mac_keys),
        json_values,
    )
)
@example({"id": "a", "mac_key": ""})
@example({"id": "a", "mac_key": 0})
@example({"id": "a", "mac_key": False})
@example({"id": "a", "mac_key": b64(bytes(32))[:-1] + "B"})  # non-canonical
@example({"id": "a\n"})
def test_an_ack_entry_validates_as_its_schema_nodes_say(entry):
    """The entry's shortcut for well-formed entries gives what colander's nodes give."""

    def outcome(deserialize):
        try:
            return "valid", deserialize(entry)
        except colander.Invalid as invalid:
            return "invalid", invalid.asdict()

    expected = outcome(lambda e: colander.SchemaNode.deserialize(ACK_ENTRY, e))
    assert outcome(ACK_ENTRY.deserialize) == expected
