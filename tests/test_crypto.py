"""The fxchat-1 suite against the shared test vectors, and its refusals."""

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fxchat import crypto
from fxchat.crypto import DeviceAddress, RecipientEntry

VECTORS = json.loads((Path(__file__).parent / "vectors" / "fxchat-1.json").read_text())

# Each tampering the vectors describe, and the refusal it must meet.
EXPECTED_REFUSAL = {
    "encrypted_message tag flipped": crypto.BadMessageTag,
    "encrypted_aes_key flipped": crypto.BadAesKeyTag,
    "msg_sig flipped": crypto.BadSignature,
    "msg_pub_key is a low-order point (all-zero shared secret)": crypto.LowOrderPublicKey,
}

P = 2**255 - 19
# Canonical encodings of the points of small order on Curve25519 (RFC 7748).
LOW_ORDER_POINTS = [
    0,
    1,
    325606250916557431795983626356110631294008115727848805560023387167927233504,
    39382357235489614581723060781553021112529911719440698176882885853963445705823,
    P - 1,
]


def b64(text):
    return crypto.b64decode(text)


def vector_cases():
    return [pytest.param(case, id=f"case{i}") for i, case in enumerate(VECTORS["cases"])]


def vector_recipients(case):
    """The (address, vector recipient) pairs of a case, in the vector's order."""
    return [(DeviceAddress("user", f"device-{i}"), r) for i, r in enumerate(case["recipients"])]


def new_device():
    private_key = crypto.generate_private_key()
    return private_key, crypto.public_key_bytes(private_key)


def test_vectors_are_for_this_suite():
    assert VECTORS["suite"] == crypto.SUITE
    assert VECTORS["cases"] and VECTORS["must_reject"]


@pytest.mark.parametrize("case", vector_cases())
def test_vector_decrypts_to_plaintext_and_mac_key(case):
    encrypted_message = crypto.decode_encrypted_message(case["encrypted_message"])
    for recipient in case["recipients"]:
        private_key = crypto.load_private_key(b64(recipient["device_private_key"]))
        entry = RecipientEntry.from_wire(recipient)

        message, mac_key = crypto.decrypt(private_key, encrypted_message, entry)

        assert message == b64(case["message"])
        assert mac_key == b64(recipient["mac_key"])


@pytest.mark.parametrize("case", vector_cases())
def test_vector_derived_keys_match_from_both_sides(case):
    for recipient in case["recipients"]:
        device = crypto.load_private_key(b64(recipient["device_private_key"]))
        ephemeral = crypto.load_private_key(b64(recipient["ephemeral_private_key"]))
        expected = (b64(recipient["encryption_key"]), b64(recipient["mac_key"]))

        sender_side = crypto.derive_keys(ephemeral, b64(recipient["device_public_key"]))
        receiver_side = crypto.derive_keys(device, b64(recipient["msg_pub_key"]))

        assert sender_side == expected
        assert receiver_side == expected
        assert crypto.public_key_bytes(device) == b64(recipient["device_public_key"])


@pytest.mark.parametrize("case", vector_cases())
def test_vector_reencrypts_byte_for_byte(case):
    recipients = vector_recipients(case)
    encrypted_message = b64(case["encrypted_message"])

    envelope = crypto._encrypt_with(
        b64(case["message"]),
        {address: b64(r["device_public_key"]) for address, r in recipients},
        aes_key=b64(case["aes_key"]),
        message_nonce=encrypted_message[: crypto.NONCE_LENGTH],
        ephemeral_keys=[
            crypto.load_private_key(b64(r["ephemeral_private_key"])) for _, r in recipients
        ],
        key_nonces=[b64(r["encrypted_aes_key"])[: crypto.NONCE_LENGTH] for _, r in recipients],
    )

    assert crypto.b64encode(envelope.encrypted_message) == case["encrypted_message"]
    assert list(envelope.entries) == [address for address, _ in recipients]
    for address, r in recipients:
        wire = envelope.entries[address].to_wire()
        assert wire == {
            field: r[field] for field in ("encrypted_aes_key", "msg_sig", "msg_pub_key")
        }


@pytest.mark.parametrize(
    "tampered", VECTORS["must_reject"], ids=[t["why"] for t in VECTORS["must_reject"]]
)
def test_must_reject_vectors_are_refused(tampered):
    recipient = tampered["recipient"]
    private_key = crypto.load_private_key(b64(recipient["device_private_key"]))

    with pytest.raises(EXPECTED_REFUSAL[tampered["why"]]):
        crypto.decrypt(
            private_key,
            crypto.decode_encrypted_message(tampered["encrypted_message"]),
            RecipientEntry.from_wire(recipient),
        )


@pytest.mark.parametrize("size", [0, 1, 100, 1024 * 1024])
def test_round_trip_sizes(size):
    private_key, public_key = new_device()
    address = DeviceAddress("bob@example.com", "phone")
    message = bytes(i % 251 for i in range(size))

    envelope = crypto.encrypt(message, {address: public_key})
    opened = crypto.decrypt(private_key, envelope.encrypted_message, envelope.entries[address])

    assert opened.message == message
    assert len(envelope.encrypted_message) == crypto.MIN_ENCRYPTED_MESSAGE_LENGTH + size
    assert (
        opened.mac_key == crypto.derive_keys(private_key, envelope.entries[address].msg_pub_key)[1]
    )


def test_round_trip_fifty_devices_each_with_its_own_ephemeral_key():
    devices = {DeviceAddress(f"user{i % 7}", f"device-{i}"): new_device() for i in range(50)}

    envelope = crypto.encrypt(b"to everyone", {a: pub for a, (_, pub) in devices.items()})

    assert list(envelope.entries) == list(devices)
    for address, (private_key, _) in devices.items():
        entry = envelope.entries[address]
        assert crypto.decrypt(private_key, envelope.encrypted_message, entry).message == (
            b"to everyone"
        )
    ephemeral_keys = {entry.msg_pub_key for entry in envelope.entries.values()}
    assert len(ephemeral_keys) == len(devices)


def test_encrypt_is_randomized():
    _, public_key = new_device()
    address = DeviceAddress("bob", "d")
    first = crypto.encrypt(b"same", {address: public_key})
    second = crypto.encrypt(b"same", {address: public_key})
    assert first.encrypted_message != second.encrypted_message
    assert first.entries[address] != second.entries[address]


def test_another_devices_key_cannot_open_the_entry():
    _, public_key = new_device()
    stranger, _ = new_device()
    address = DeviceAddress("bob", "d")
    envelope = crypto.encrypt(b"secret", {address: public_key})
    with pytest.raises(crypto.BadAesKeyTag):
        crypto.decrypt(stranger, envelope.encrypted_message, envelope.entries[address])


def test_encrypt_needs_a_recipient():
    with pytest.raises(ValueError):
        crypto.encrypt(b"hello", {})


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=range(len(LOW_ORDER_POINTS)))
def test_encrypt_refuses_low_order_device_key(point):
    low_order = point.to_bytes(32, "little")
    with pytest.raises(crypto.LowOrderPublicKey):
        crypto.encrypt(b"hello", {DeviceAddress("bob", "d"): low_order})


@pytest.mark.parametrize("point", LOW_ORDER_POINTS, ids=range(len(LOW_ORDER_POINTS)))
def test_decrypt_refuses_low_order_msg_pub_key(point):
    private_key, public_key = new_device()
    address = DeviceAddress("bob", "d")
    envelope = crypto.encrypt(b"hello", {address: public_key})
    entry = envelope.entries[address]
    forged = RecipientEntry(entry.encrypted_aes_key, entry.msg_sig, point.to_bytes(32, "little"))
    with pytest.raises(crypto.LowOrderPublicKey):
        crypto.decrypt(private_key, envelope.encrypted_message, forged)


@pytest.mark.parametrize(
    "value",
    [P, P + 1, 2**255 + 9, 2**256 - 1],
    ids=["p", "p+1", "top-bit+9", "all-ones"],
)
def test_non_canonical_public_keys_are_refused(value):
    with pytest.raises(crypto.InvalidPublicKey):
        crypto.load_public_key(value.to_bytes(32, "little"))


@pytest.mark.parametrize(
    "field, length",
    [("encrypted_aes_key", 60), ("msg_sig", 32), ("msg_pub_key", 32)],
)
@pytest.mark.parametrize("delta", [-1, 1])
def test_entry_fields_of_wrong_length_are_refused(field, length, delta):
    good = {
        "encrypted_aes_key": bytes(60),
        "msg_sig": bytes(32),
        "msg_pub_key": bytes(32),
    }
    wire = {name: crypto.b64encode(value) for name, value in good.items()}
    wire[field] = crypto.b64encode(bytes(length + delta))

    with pytest.raises(crypto.WrongLength, match=field):
        RecipientEntry.from_wire(wire)
    with pytest.raises(crypto.WrongLength, match=field):
        RecipientEntry(**{**good, field: bytes(length + delta)})


def test_encrypted_message_shorter_than_nonce_and_tag_is_refused():
    private_key, public_key = new_device()
    address = DeviceAddress("bob", "d")
    envelope = crypto.encrypt(b"", {address: public_key})
    truncated = envelope.encrypted_message[:-1]

    with pytest.raises(crypto.WrongLength):
        crypto.decode_encrypted_message(crypto.b64encode(truncated))
    with pytest.raises(crypto.WrongLength):
        crypto.decrypt(private_key, truncated, envelope.entries[address])


@pytest.mark.parametrize("size", [31, 33, 0])
def test_keys_of_wrong_length_are_refused(size):
    with pytest.raises(crypto.WrongLength):
        crypto.load_private_key(bytes(size))
    with pytest.raises(crypto.WrongLength):
        crypto.load_public_key(bytes(size))
    with pytest.raises(crypto.WrongLength):
        crypto.encrypt(b"hi", {DeviceAddress("bob", "d"): bytes(size)})


def test_key_pair_serialization_round_trips():
    private_key = crypto.generate_private_key()
    raw = crypto.private_key_bytes(private_key)
    loaded = crypto.load_private_key(raw)
    assert len(raw) == crypto.KEY_LENGTH
    assert crypto.public_key_bytes(loaded) == crypto.public_key_bytes(private_key)
    public = crypto.load_public_key(crypto.public_key_bytes(private_key))
    assert crypto.public_key_bytes(public) == crypto.public_key_bytes(private_key)


def test_b64_round_trips_without_padding():
    for size in range(70):
        data = bytes(range(256))[:size]
        text = crypto.b64encode(data)
        assert "=" not in text
        assert crypto.b64decode(text) == data


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("AAE=", id="padding"),
        pytest.param("+/8", id="standard alphabet"),
        pytest.param("AA E", id="whitespace"),
        pytest.param("AAE\n", id="newline"),
        pytest.param("AAF", id="non-zero trailing bits"),
        pytest.param("A", id="impossible length"),
        pytest.param("AAAAA", id="impossible length 5"),
        pytest.param("\u00c4AE", id="non-ASCII"),
    ],
)
def test_b64decode_is_strict(text):
    with pytest.raises(crypto.BadEncoding):
        crypto.b64decode(text)


def test_b64decode_checks_length():
    assert crypto.b64decode(crypto.b64encode(bytes(32)), length=32) == bytes(32)
    with pytest.raises(crypto.WrongLength):
        crypto.b64decode(crypto.b64encode(bytes(31)), length=32)


@pytest.mark.parametrize("value", [None, 42, b"AAE"])
def test_wire_field_that_is_not_a_string_is_refused(value):
    wire = {"encrypted_aes_key": value, "msg_sig": "", "msg_pub_key": ""}
    with pytest.raises(crypto.BadEncoding, match="encrypted_aes_key"):
        RecipientEntry.from_wire(wire)


def test_refusals_never_contain_key_material():
    private_key, public_key = new_device()
    address = DeviceAddress("bob", "d")
    envelope = crypto.encrypt(b"hello", {address: public_key})
    entry = envelope.entries[address]
    secret_values = [
        crypto.private_key_bytes(private_key),
        *crypto.derive_keys(private_key, entry.msg_pub_key),
    ]
    secrets = [crypto.b64encode(value) for value in secret_values] + [
        value.hex() for value in secret_values
    ]
    bad_sig = RecipientEntry(entry.encrypted_aes_key, bytes(32), entry.msg_pub_key)

    with pytest.raises(crypto.BadSignature) as refused:
        crypto.decrypt(private_key, envelope.encrypted_message, bad_sig)

    text = str(refused.value)
    assert text and not any(secret in text for secret in secrets)


# A fixed device and envelope for the property test: hypothesis wants
# module-level data rather than function-scoped fixtures.
_DEVICE_KEY, _DEVICE_PUBLIC = new_device()
_ADDRESS = DeviceAddress("bob@example.com", "phone")
_ENVELOPE = crypto.encrypt(b"a small message", {_ADDRESS: _DEVICE_PUBLIC})
_ENTRY = _ENVELOPE.entries[_ADDRESS]
_FIELDS = {
    "encrypted_message": _ENVELOPE.encrypted_message,
    "encrypted_aes_key": _ENTRY.encrypted_aes_key,
    "msg_sig": _ENTRY.msg_sig,
    "msg_pub_key": _ENTRY.msg_pub_key,
}


def test_untampered_property_envelope_opens():
    assert crypto.decrypt(_DEVICE_KEY, _ENVELOPE.encrypted_message, _ENTRY).message == (
        b"a small message"
    )


@settings(max_examples=200, deadline=None)
@given(field=st.sampled_from(sorted(_FIELDS)), data=st.data())
def test_any_flipped_bit_is_refused(field, data):
    original = _FIELDS[field]
    bit = data.draw(st.integers(min_value=0, max_value=len(original) * 8 - 1), label="bit")
    tampered = bytearray(original)
    tampered[bit // 8] ^= 1 << (bit % 8)
    fields = {**_FIELDS, field: bytes(tampered)}

    with pytest.raises(crypto.InvalidEnvelope):
        crypto.decrypt(
            _DEVICE_KEY,
            fields["encrypted_message"],
            RecipientEntry(fields["encrypted_aes_key"], fields["msg_sig"], fields["msg_pub_key"]),
        )


@pytest.mark.parametrize("field", sorted(_FIELDS))
def test_flipping_the_top_bit_of_each_field_is_refused(field):
    # The top bit of a public key is ignored by X25519 itself; pin it down.
    tampered = bytearray(_FIELDS[field])
    tampered[-1] ^= 0x80
    fields = {**_FIELDS, field: bytes(tampered)}
    with pytest.raises(crypto.InvalidEnvelope):
        crypto.decrypt(
            _DEVICE_KEY,
            fields["encrypted_message"],
            RecipientEntry(fields["encrypted_aes_key"], fields["msg_sig"], fields["msg_pub_key"]),
        )
