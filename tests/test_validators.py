"""Property tests of the validators: base64url, ids, ttl, user ids, cursors.

Each property checks the validator against an independent statement of the
rule (PROTOCOL.md §1), and the OpenAPI document's patterns against the
validator, so the fuzzer and the server agree on what is valid.
"""

import base64
import json
import re

import colander
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from fxchat.encoding import b64decode, b64encode, decode_cursor, encode_cursor
from fxchat.openapi import base64url_pattern
from fxchat.schemas.messages import AckSchema, Recipient, SendSchema
from fxchat.schemas.types import UserId
from fxchat.settings import Settings

PROTOCOL_USER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._%+@-]*")
SETTINGS = Settings()
text = st.text(alphabet=st.characters(codec="utf-8"), max_size=80)
base64ish = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=", max_size=60
)


@given(st.binary(max_size=200))
def test_base64url_round_trips_without_padding(data):
    encoded = b64encode(data)
    assert "=" not in encoded
    assert b64decode(encoded) == data


@given(st.one_of(text, base64ish))
@example("AA==")
@example("AB")  # non-canonical: trailing bits set
@example("A")
def test_base64url_accepts_exactly_the_canonical_unpadded_encodings(candidate):
    try:
        decoded = b64decode(candidate)
    except ValueError:
        accepted = False
    else:
        accepted = True
        assert b64encode(decoded) == candidate
    canonical = (
        re.fullmatch(r"[A-Za-z0-9_-]*", candidate) is not None
        and len(candidate) % 4 != 1
        and base64.urlsafe_b64encode(
            base64.urlsafe_b64decode(candidate + "=" * (-len(candidate) % 4))
        )
        .rstrip(b"=")
        .decode()
        == candidate
    )
    assert accepted == canonical


@pytest.mark.parametrize("length", [None, 0, 1, 2, 3, 32, 60])
@given(candidate=st.one_of(base64ish, st.binary(max_size=64).map(b64encode)))
def test_openapi_base64url_pattern_matches_what_the_server_accepts(length, candidate):
    try:
        decoded = b64decode(candidate)
        accepted = length is None or len(decoded) == length
    except ValueError:
        accepted = False
    assert (re.match(base64url_pattern(length), candidate) is not None) == accepted


@given(st.one_of(text, st.from_regex(PROTOCOL_USER_ID, fullmatch=True)))
@example("a" * 254)
@example("a" * 255)
@example("alice@example.com\n")
def test_user_ids_are_what_the_protocol_says(candidate):
    node = UserId(name="user")
    try:
        node.deserialize(candidate)
        accepted = True
    except colander.Invalid:
        accepted = False
    expected = 1 <= len(candidate) <= 254 and PROTOCOL_USER_ID.fullmatch(candidate) is not None
    assert accepted == expected


@given(st.integers(min_value=0, max_value=10**18 - 1))
def test_cursors_round_trip(position):
    assert decode_cursor(encode_cursor(position)) == position


@given(st.one_of(text, st.integers().map(lambda n: f"c1.{n}"), st.just("c1.007")))
def test_a_cursor_is_either_refused_or_one_this_server_could_have_made(candidate):
    try:
        position = decode_cursor(candidate)
    except ValueError:
        return
    assert encode_cursor(position) == candidate


def send_body(**changes):
    body = {
        "suite": "fxchat-1",
        "encrypted_message": b64encode(bytes(40)),
        "recipients": [
            {
                "user": "bob@example.com",
                "device_id": "d1",
                "encrypted_aes_key": b64encode(bytes(60)),
                "msg_sig": b64encode(bytes(32)),
                "msg_pub_key": b64encode(bytes(32)),
            }
        ],
    }
    body.update(changes)
    return body


@given(
    st.one_of(
        st.integers(min_value=-10, max_value=SETTINGS.max_ttl + 10),
        st.booleans(),
        st.floats(allow_nan=False),
        st.text(max_size=5),
        st.none(),
    )
)
@example(0)
@example(1)
@example(SETTINGS.max_ttl)
@example(SETTINGS.max_ttl + 1)
def test_ttl_is_an_integer_in_range(ttl):
    schema = SendSchema().bind(settings=SETTINGS)
    try:
        validated = schema.deserialize(send_body(ttl=ttl))
        accepted = True
    except colander.Invalid:
        accepted = False
    if ttl is None:  # JSON null: the server default
        assert accepted and validated["ttl"] is None
        return
    expected = isinstance(ttl, int) and not isinstance(ttl, bool) and 1 <= ttl <= SETTINGS.max_ttl
    assert accepted == expected


@given(st.one_of(text, st.from_regex(r"[A-Za-z0-9_-]{1,70}", fullmatch=True)))
def test_message_ids_in_acks_are_url_safe_and_short(candidate):
    schema = AckSchema().bind(settings=SETTINGS)
    try:
        schema.deserialize({"acks": [{"id": candidate}]})
        accepted = True
    except colander.Invalid:
        accepted = False
    assert accepted == (re.fullmatch(r"[A-Za-z0-9_-]{1,64}", candidate) is not None)


def _colander_walk(schema, cstruct):
    """What colander's own walk of the nodes gives: a result, or the errors."""
    try:
        return colander.MappingSchema.deserialize(schema, cstruct)
    except colander.Invalid as invalid:
        return invalid.asdict()


def _fast_or_walk(schema, cstruct):
    try:
        return schema.deserialize(cstruct)
    except colander.Invalid as invalid:
        return invalid.asdict()


def _b64(n: int) -> str:
    return b64encode(bytes(range(n)))


WELL_FORMED_RECIPIENT = {
    "user": "bob@example.com",
    "device_id": "d-1_x",
    "encrypted_aes_key": _b64(60),
    "msg_sig": _b64(32),
    "msg_pub_key": _b64(32),
}
recipient_values = st.one_of(
    st.none(),
    st.integers(),
    text,
    base64ish,
    st.sampled_from([_b64(60), _b64(32), _b64(31), _b64(33), "bob@example.com", "x" * 65]),
)


@given(
    st.dictionaries(
        st.sampled_from([*WELL_FORMED_RECIPIENT, "extra"]), recipient_values, max_size=7
    ).map(lambda changes: {**WELL_FORMED_RECIPIENT, **changes}),
    st.sets(st.sampled_from(list(WELL_FORMED_RECIPIENT)), max_size=2),
)
@example(dict(WELL_FORMED_RECIPIENT), set())
@example({**WELL_FORMED_RECIPIENT, "user": "-bob"}, set())
@example({**WELL_FORMED_RECIPIENT, "device_id": "d/1"}, set())
@example({**WELL_FORMED_RECIPIENT, "msg_sig": _b64(31)}, set())
@example({**WELL_FORMED_RECIPIENT, "msg_pub_key": _b64(32) + "A"}, set())
@example(dict(WELL_FORMED_RECIPIENT), {"encrypted_aes_key"})
def test_a_recipient_entry_is_read_as_colander_would(entry, dropped):
    for name in dropped:
        entry.pop(name, None)
    schema = Recipient()
    assert _fast_or_walk(schema, entry) == _colander_walk(schema, entry)


class _Request:
    """What the body validators use of a request."""

    def __init__(self, body: bytes):
        from cornice.errors import Errors
        from pyramid.i18n import Localizer

        self.body = body
        self.errors = Errors()
        self.validated = {}
        self.registry = type("Registry", (dict,), {"fxchat": SETTINGS})()
        self.localizer = Localizer("en", None)


def _validated_by(validator, body: bytes):
    request = _Request(body)
    validator(request, schema=SendSchema())
    return request.validated, list(request.errors)


def _cornice_alone(request, schema):
    from cornice.validators import colander_body_validator

    from fxchat.views.validation import _bound, json_body

    colander_body_validator(request, schema=_bound(request, schema), deserializer=json_body)


WELL_FORMED_SEND = {
    "suite": "fxchat-1",
    "ttl": 60,
    "encrypted_message": _b64(40),
    "recipients": [WELL_FORMED_RECIPIENT],
}


@given(
    st.dictionaries(
        st.sampled_from([*WELL_FORMED_SEND, "extra"]),
        st.one_of(recipient_values, st.just([]), st.just([WELL_FORMED_RECIPIENT] * 2)),
        max_size=3,
    ).map(lambda changes: {**WELL_FORMED_SEND, **changes}),
)
@example(dict(WELL_FORMED_SEND))
@example({**WELL_FORMED_SEND, "ttl": None})
def test_the_body_validator_stores_what_cornice_would(body):
    from fxchat.views.validation import body as body_validator

    raw = json.dumps(body).encode()
    assert _validated_by(body_validator, raw) == _validated_by(_cornice_alone, raw)


@pytest.mark.parametrize("raw", [b"", b"{", b"[]", b'"text"', b"\xff"])
def test_the_body_validator_reports_bad_json_as_cornice_would(raw):
    from fxchat.views.validation import body as body_validator

    assert _validated_by(body_validator, raw) == _validated_by(_cornice_alone, raw)
