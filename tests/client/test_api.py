"""The client library against the in-memory relay, network faults included."""

import json

import pytest

from fxchat import crypto
from fxchat.client import (
    Client,
    ClientError,
    DeviceListChanged,
    NoRecipientDevices,
    ProfileError,
    ServerUnreachable,
    Unauthorized,
    UnusableRecipientKey,
    api,
    load_profile,
)
from fxchat.crypto import DeviceAddress

from .fake_relay import DAY_MS, URL


def addresses(*clients):
    return {DeviceAddress(c.profile.user, c.profile.device_id) for c in clients}


def texts(messages):
    return [m.text for m in messages]


def test_register_saves_a_profile_matching_the_server(register, relay):
    alice = register("alice@example.com")

    saved = load_profile(alice._profile_path)
    server_key = relay.devices[("alice@example.com", saved.device_id)].public_key
    assert saved.user == "alice@example.com"
    assert saved.server == URL
    assert server_key == crypto.b64encode(saved.public_key)
    assert relay.tokens[saved.token] == ("alice@example.com", saved.device_id)


def test_register_refuses_an_existing_profile_before_asking_the_server(relay, tmp_path):
    path = tmp_path / "profile.json"
    path.write_text("{}")

    with pytest.raises(ProfileError, match="already exists"):
        Client.register(URL, "alice", profile_path=path, session=relay.session())

    assert relay.requests == []
    assert path.read_text() == "{}"


def test_a_profile_that_cannot_be_saved_is_reported_as_a_lost_key(relay, tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")

    with pytest.raises(ProfileError, match="was created, but its key is lost"):
        Client.register(URL, "alice", profile_path=blocker / "p.json", session=relay.session())


def test_send_reaches_every_device_of_the_recipients_and_no_one_else(register):
    alice = register("alice@example.com")
    bob_phone = register("bob@example.com")
    bob_laptop = bob_phone.add_device(name="laptop")
    carol = register("carol@example.com")

    sent = alice.send("bob@example.com", "hi bob")

    assert set(sent.recipients) == addresses(bob_phone, bob_laptop)
    assert texts(bob_phone.fetch()) == ["hi bob"]
    assert texts(bob_laptop.fetch()) == ["hi bob"]
    assert carol.fetch() == []
    assert alice.fetch() == []


def test_sending_to_ones_own_user_skips_the_sending_device(register):
    phone = register("bob@example.com")
    laptop = phone.add_device()

    sent = phone.send(["bob@example.com"], b"note to self")

    assert set(sent.recipients) == addresses(laptop)
    assert [m.body for m in laptop.fetch()] == [b"note to self"]
    assert phone.fetch() == []


def test_sending_to_oneself_without_another_device_is_refused(register):
    alone = register("alice@example.com")
    with pytest.raises(NoRecipientDevices):
        alone.send("alice@example.com", "hello?")


def test_send_to_unknown_user_reports_the_server_error(register):
    alice = register("alice@example.com")
    with pytest.raises(ClientError) as refused:
        alice.send("nobody@example.com", "hello")
    assert refused.value.status == 404
    assert "unknown user nobody@example.com" in str(refused.value)


def test_send_refreshes_device_lists_once_after_a_conflict(register, relay):
    alice = register("alice@example.com")
    bob = register("bob@example.com")
    new_bob_devices = []

    def bob_adds_a_device_meanwhile(sender):
        if not new_bob_devices:
            new_bob_devices.append(bob.add_device())

    relay.before_send = bob_adds_a_device_meanwhile

    sent = alice.send("bob@example.com", "hi")

    assert set(sent.recipients) == addresses(bob, *new_bob_devices)
    stale, fresh = relay.requests_to("POST", "/v1/messages")
    # A new body needs a new key: the server ties a key to one exact body.
    assert stale.headers["Idempotency-Key"] != fresh.headers["Idempotency-Key"]
    assert texts(new_bob_devices[0].fetch()) == ["hi"]


def test_send_gives_up_after_a_second_conflict(register, relay):
    alice = register("alice@example.com")
    bob = register("bob@example.com")
    relay.before_send = lambda sender: bob.add_device()

    with pytest.raises(DeviceListChanged) as conflict:
        alice.send("bob@example.com", "hi")

    assert conflict.value.status == 409
    assert len(conflict.value.missing) == 1
    assert conflict.value.missing[0][0] == "bob@example.com"


def test_a_lost_answer_never_sends_twice(register, relay, sleeps):
    alice = register("alice@example.com")
    bob = register("bob@example.com")
    relay.fail("lost_answer", times=2, applies=lambda method, path: path == "/v1/messages")

    sent = alice.send("bob@example.com", "exactly once")

    posts = relay.requests_to("POST", "/v1/messages")
    assert len(posts) == 3
    assert len({p.headers["Idempotency-Key"] for p in posts}) == 1
    assert len({p.body for p in posts}) == 1
    assert [m.id for m in bob.fetch()] == [sent.id]
    assert len(sleeps) == 2


def test_rate_limit_waits_as_long_as_the_server_asks(register, relay, sleeps):
    alice = register("alice@example.com")
    relay.fail("status", status=429, headers={"Retry-After": "7"})

    assert alice.devices() != []
    assert sleeps == [7.0]


def test_too_long_a_retry_after_is_not_waited_for(register, relay, sleeps):
    alice = register("alice@example.com")
    relay.fail("status", status=429, headers={"Retry-After": "3600"})

    with pytest.raises(ClientError) as refused:
        alice.devices()

    assert refused.value.status == 429
    assert "retry after 3600 s" in str(refused.value)
    assert sleeps == []


def test_unavailable_server_is_retried_a_bounded_number_of_times(register, relay, sleeps):
    alice = register("alice@example.com", retries=2)
    relay.fail("status", status=503, times=10)

    with pytest.raises(ClientError) as refused:
        alice.devices()

    assert refused.value.status == 503
    assert len(relay.requests_to("GET", "/v1/users/alice%40example.com/devices")) == 3
    assert len(sleeps) == 2
    assert sleeps[0] < sleeps[1]  # backing off


def test_refused_connections_end_as_server_unreachable(register, relay):
    alice = register("alice@example.com", retries=2)
    relay.fail("refused", times=10)

    with pytest.raises(ServerUnreachable):
        alice.fetch()

    assert len(relay.requests_to("GET", "/v1/messages")) == 3


def test_device_creation_is_not_repeated_after_a_lost_answer(register, relay):
    alice = register("alice@example.com")
    relay.fail("lost_answer")

    with pytest.raises(ServerUnreachable):
        alice.add_device()

    assert len(relay.requests_to("POST", "/v1/devices")) == 1


def test_device_creation_is_repeated_when_the_connection_was_refused(register, relay):
    alice = register("alice@example.com")
    relay.fail("refused")

    laptop = alice.add_device()

    assert len(relay.requests_to("POST", "/v1/devices")) == 2
    assert laptop.profile.user == "alice@example.com"


def test_fetch_reads_every_page_in_order_without_acknowledging(register):
    alice = register("alice@example.com")
    bob = register("bob@example.com")
    for i in range(5):
        alice.send("bob@example.com", f"message {i}")

    first = bob.fetch(page_size=2)
    again = bob.fetch()

    assert texts(first) == [f"message {i}" for i in range(5)]
    assert [m.id for m in again] == [m.id for m in first]
    assert {m.sender for m in first} == addresses(alice)


def test_tampered_messages_are_reported_not_dropped(register, relay):
    alice = register("alice@example.com")
    bob = register("bob@example.com")
    alice.send("bob@example.com", "first")
    alice.send("bob@example.com", "forged")
    alice.send("bob@example.com", "third")
    forged = relay.devices[("bob@example.com", bob.profile.device_id)].queue[1]
    forged["msg_sig"] = crypto.b64encode(bytes(32))

    messages = bob.fetch()

    assert texts(messages) == ["first", None, "third"]
    assert [m.verified for m in messages] == [True, False, True]
    assert "msg_sig" in messages[1].error
    assert messages[1].body is None and messages[1].mac_key is None


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("suite", "fxchat-99", "unsupported suite"),
        ("encrypted_message", "not base64!", "encrypted_message"),
        ("msg_pub_key", crypto.b64encode(bytes(31)), "msg_pub_key"),
    ],
)
def test_malformed_items_are_reported_with_a_reason(register, relay, field, value, reason):
    alice = register("alice@example.com")
    bob = register("bob@example.com")
    alice.send("bob@example.com", "hello")
    relay.devices[("bob@example.com", bob.profile.device_id)].queue[0][field] = value

    [message] = bob.fetch()

    assert not message.verified
    assert reason in message.error


def test_acknowledge_discloses_mac_keys_only_for_verified_messages(register, relay):
    alice = register("alice@example.com")
    bob = register("bob@example.com")
    good = alice.send("bob@example.com", "good")
    bad = alice.send("bob@example.com", "bad")
    queue = relay.devices[("bob@example.com", bob.profile.device_id)].queue
    good_pub_key = crypto.b64decode(queue[0]["msg_pub_key"])
    queue[1]["msg_sig"] = crypto.b64encode(bytes(32))

    result = bob.acknowledge(bob.fetch())

    assert result.acked == [good.id, bad.id] and result.unknown == []
    [ack_request] = relay.requests_to("POST", "/v1/messages/ack")
    assert json.loads(ack_request.body)["acks"][1] == {"id": bad.id}
    [good_receipt] = alice.receipts(good.id)
    expected_mac_key = crypto.derive_keys(bob.profile.private_key, good_pub_key)[1]
    assert good_receipt.status == "acked"
    assert good_receipt.mac_key == expected_mac_key
    assert alice.receipts(bad.id)[0].mac_key is None
    assert bob.fetch() == []


def test_acknowledge_can_keep_mac_keys_private(register, relay):
    alice = register("alice@example.com")
    bob = register("bob@example.com")
    sent = alice.send("bob@example.com", "hi")

    bob.acknowledge(bob.fetch(), disclose_mac_keys=False)

    assert alice.receipts(sent.id)[0].mac_key is None


def test_acknowledge_splits_large_batches(register, relay, monkeypatch):
    monkeypatch.setattr(api, "MAX_ACKS_PER_REQUEST", 2)
    alice = register("alice@example.com")
    bob = register("bob@example.com")
    for i in range(5):
        alice.send("bob@example.com", str(i))

    result = bob.acknowledge(bob.fetch())

    assert len(result.acked) == 5
    assert len(relay.requests_to("POST", "/v1/messages/ack")) == 3


def test_repeated_acknowledgement_is_harmless(register):
    alice = register("alice@example.com")
    bob = register("bob@example.com")
    sent = alice.send("bob@example.com", "hi")
    messages = bob.fetch()

    bob.acknowledge(messages)
    again = bob.acknowledge(messages)

    assert again.acked == [] and again.unknown == [sent.id]


def test_rotation_keeps_messages_sealed_for_the_old_key_readable(register, relay):
    alice = register("alice@example.com")
    bob = register("bob@example.com")
    old_public_key = bob.profile.public_key
    alice.send("bob@example.com", "before")

    new_public_key = bob.rotate_key()
    alice.send("bob@example.com", "after")

    server_key = relay.devices[("bob@example.com", bob.profile.device_id)].public_key
    assert server_key == crypto.b64encode(new_public_key) != crypto.b64encode(old_public_key)
    saved = load_profile(bob._profile_path)
    assert saved.public_key == new_public_key
    assert [crypto.public_key_bytes(r.private_key) for r in saved.retired_keys] == [old_public_key]
    assert texts(bob.fetch()) == ["before", "after"]


def test_rotation_interrupted_after_the_server_changed_loses_nothing(register, relay):
    alice = register("alice@example.com")
    bob = register("bob@example.com", retries=0)
    relay.fail("lost_answer", applies=lambda method, path: method == "PUT")

    with pytest.raises(ServerUnreachable):
        bob.rotate_key()
    alice.send("bob@example.com", "sealed for the pending key")

    restarted = Client.from_profile_file(bob._profile_path, session=relay.session())
    assert restarted.profile.pending_private_key is not None
    assert texts(restarted.fetch()) == ["sealed for the pending key"]


def test_rotation_drops_keys_retired_long_ago(register, monkeypatch):
    bob = register("bob@example.com")
    now = api._now_ms()
    monkeypatch.setattr(api, "_now_ms", lambda: now)
    bob.rotate_key()
    first_retired = bob.profile.retired_keys[0]
    monkeypatch.setattr(api, "_now_ms", lambda: now + api.RETIRED_KEY_LIFETIME_MS + DAY_MS)

    bob.rotate_key()

    assert len(bob.profile.retired_keys) == 1
    assert bob.profile.retired_keys[0].private_key != first_retired.private_key


def test_deleting_this_device_revokes_it_and_removes_its_profile(register):
    alice = register("alice@example.com")
    laptop = alice.add_device()
    profile_path = alice._profile_path

    alice.delete_device()

    assert not profile_path.exists()
    with pytest.raises(Unauthorized) as refused:
        alice.devices()
    assert refused.value.status == 401
    assert [d.device_id for d in laptop.devices()] == [laptop.profile.device_id]


def test_deleting_another_device_keeps_this_profile(register):
    phone = register("alice@example.com")
    laptop = phone.add_device()

    phone.delete_device(laptop.profile.device_id)

    assert phone._profile_path.exists()
    with pytest.raises(Unauthorized):
        laptop.fetch()


def test_devices_lists_public_keys(register):
    alice = register("alice@example.com")
    laptop = alice.add_device()

    listed = {d.device_id: d.public_key for d in alice.devices()}

    assert listed == {
        alice.profile.device_id: alice.profile.public_key,
        laptop.profile.device_id: laptop.profile.public_key,
    }


def test_a_low_order_recipient_key_is_refused_by_name(register, relay):
    alice = register("alice@example.com")
    device_id, _ = relay.add_device("mallory@example.com", crypto.b64encode(bytes(32)))

    with pytest.raises(UnusableRecipientKey, match=device_id):
        alice.send("mallory@example.com", "hi")

    assert relay.requests_to("POST", "/v1/messages") == []


def test_malformed_server_answers_raise_client_errors(register, relay):
    alice = register("alice@example.com")
    relay.handle = lambda request: (200, {}, {"user": "alice@example.com", "devices": "?"})

    with pytest.raises(ClientError, match="unexpected answer"):
        alice.devices()
