"""What the API tests check the same way: error bodies, stored rows, the clock, encodings."""

from __future__ import annotations

import base64
import os
import re

import sqlalchemy

from fxchat.models import Base

from ..conftest import Clock, b64

# Server-chosen ids: URL-safe, at most 64 characters (PROTOCOL.md §1).
OPAQUE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A bearer token: 32 random bytes, base64url without padding.
TOKEN = re.compile(r"^[A-Za-z0-9_-]{43}$")
# The start of the test clock, in seconds (as the ``clock`` fixture).
START = 1_800_000_000.0
START_MS = int(START * 1000)
DAY = 24 * 60 * 60


class _Description:
    """Equal to any non-empty string: descriptions are for people, so tests don't pin them."""

    def __eq__(self, other) -> bool:
        return isinstance(other, str) and other != ""

    def __repr__(self) -> str:
        return "<any description>"


DESCRIPTION = _Description()


def error_body(location: str, name: str, **extra) -> dict:
    """The exact JSON of a one-error answer, whatever its description."""
    return {
        "status": "error",
        "errors": [{"location": location, "name": name, "description": DESCRIPTION}],
        **extra,
    }


def assert_json_error(response, status: int) -> list[dict]:
    """``response`` is Cornice's JSON error format with ``status``; its errors."""
    assert response.status_int == status, response.text
    assert response.content_type == "application/json"
    body = response.json
    assert set(body) >= {"status", "errors"}
    assert body["status"] == "error"
    assert body["errors"], "an error answer names at least one error"
    for error in body["errors"]:
        assert set(error) == {"location", "name", "description"}
        assert all(isinstance(value, str) for value in error.values())
        assert error["description"]
    return body["errors"]


def error_fields(response) -> set[tuple[str, str]]:
    """The (location, name) of every error in a JSON error answer."""
    return {(error["location"], error["name"]) for error in response.json["errors"]}


def by_address(entries: list[dict]) -> list[dict]:
    """Lists of devices compared whatever their order: the protocol names none."""
    return sorted(entries, key=lambda entry: (entry["user"], entry["device_id"]))


def rows(app, table: str) -> list[dict]:
    """Every row of one of the app's tables, as dicts."""
    engine = app.app.registry["db_engine"]
    with engine.connect() as connection:
        result = connection.execute(sqlalchemy.select(Base.metadata.tables[table]))
        return [dict(row._mapping) for row in result]


def count(app, table: str, *where) -> int:
    """How many rows of one of the app's tables there are (that match ``where``)."""
    engine = app.app.registry["db_engine"]
    with engine.connect() as connection:
        return connection.scalar(
            sqlalchemy.select(sqlalchemy.func.count())
            .select_from(Base.metadata.tables[table])
            .where(*where)
        )


NOTHING_STORED = {"messages": 0, "bodies": 0, "copies": 0}


def stored_counts(app) -> dict[str, int]:
    """How many messages, bodies and copies the database holds."""
    return {table: count(app, table) for table in ("messages", "bodies", "copies")}


def freeze_clock(app, start: float = START) -> Clock:
    """Give ``app`` a settable clock (the ``clock`` fixture does this for ``app`` only)."""
    clock = Clock(start)
    app.app.registry["fxchat.clock"] = clock
    return clock


def random_key() -> str:
    """A well-formed public key."""
    return b64(os.urandom(32))


def padded(data: bytes) -> str:
    """base64url *with* padding (at least one "=" even where none is due)."""
    text = base64.urlsafe_b64encode(data).decode()
    return text if text.endswith("=") else text + "="


def non_canonical(data: bytes) -> str:
    """base64url of ``data`` with the unused trailing bits set: same bytes, other spelling."""
    assert len(data) % 3, "every bit of the last character is used"
    text = b64(data)
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(text[-1])
    return text[:-1] + alphabet[last | 1]


def standard_alphabet(length: int) -> str:
    """A value of the right length that uses "+" and "/" (plain base64, not base64url)."""
    data = b"\xfb\xff" * (length // 2) + b"\xfb" * (length % 2)
    text = base64.b64encode(data).decode().rstrip("=")
    assert "+" in text or "/" in text
    return text


def bad_encodings(length: int) -> dict[str, str]:
    """Values that are not base64url-without-padding of ``length`` bytes, by what is wrong."""
    data = os.urandom(length)
    cases = {
        "padding": padded(data),
        "alphabet": standard_alphabet(length),
        "space": " " + b64(data)[1:],
        "too short": b64(data[:-1]),
        "too long": b64(data + b"\0"),
        "empty": "",
        "not a string": 12345,
    }
    if length % 3:
        cases["non-canonical"] = non_canonical(data)
    return cases
