"""Every ``fxchat.*`` setting: its type, its default, in one table.

Settings are read once at start-up into a frozen :class:`Settings`; the rest
of the code reads attributes of that object, never strings from the ini file.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

PREFIX = "fxchat."
DAY = 24 * 60 * 60


def as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def as_list(value: Any) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(value)
    return tuple(item for item in str(value).replace(",", " ").split() if item)


def as_choice(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        if text not in choices:
            raise ValueError(f"{value!r} is not one of {', '.join(choices)}")
        return text

    return parse


def as_optional_positive_float(value: Any) -> float | None:
    text = str(value).strip()
    if not text:
        return None
    number = float(text)
    if not number > 0:
        raise ValueError(f"not a positive number: {value!r}")
    return number


@dataclasses.dataclass(frozen=True)
class Setting:
    name: str
    parse: Callable[[Any], Any]
    default: Any
    doc: str


# The single source of truth: README.rst and docs/operations.rst mirror it,
# and tests/test_settings.py checks that they do.
SETTINGS: tuple[Setting, ...] = (
    Setting("registration", as_choice("open", "closed"), "open",
            "``open``: anyone may create an account; ``closed``: POST /v1/accounts answers 403."),
    Setting("max_body_bytes", int, 512 * 1024,
            "Largest request body; larger bodies get 413 before they are read."),
    Setting("max_message_bytes", int, 256 * 1024,
            "Largest decoded ``encrypted_message``."),
    Setting("max_recipients", int, 1000,
            "Most recipient devices in one message."),
    Setting("max_devices_per_user", int, 100,
            "Most active devices one user may have."),
    Setting("max_queued_per_device", int, 10000,
            "Most pending copies in one device's queue; a send to a full queue gets 409."),
    Setting("max_acks_per_request", int, 500,
            "Most ids in one POST /v1/messages/ack."),
    Setting("default_page_size", int, 100,
            "Messages per page of GET /v1/messages when ``limit`` is not given."),
    Setting("max_page_size", int, 500,
            "Largest ``limit`` of GET /v1/messages."),
    Setting("default_ttl", int, 7 * DAY,
            "Seconds a message stays queued when the sender gives no ``ttl``."),
    Setting("max_ttl", int, 30 * DAY,
            "Largest ``ttl`` a sender may ask for."),
    Setting("receipt_retention", int, 7 * DAY,
            "Seconds receipts are kept after their message expires."),
    Setting("idempotency_window", int, DAY,
            "Seconds an ``Idempotency-Key`` is remembered."),
    Setting("purge_interval", int, 60,
            "Seconds between purges by the server itself; 0 turns them off."),
    Setting("purge_batch_size", int, 5000,
            "Most rows per purge transaction; batches are sized by time below that."),
    Setting("sqlite_synchronous", as_choice("full", "normal"), "full",
            "SQLite: ``full`` survives power loss; ``normal``, faster, only process crashes."),
    Setting("db_timeout", int, 5,
            "Seconds to wait for the database (connect, lock, statement) before answering 503."),
    Setting("pg_random_page_cost", as_optional_positive_float, 1.1,
            "PostgreSQL: ``random_page_cost`` of fxchat's connections (SSD storage);"
            " empty for the server's own."),
    Setting("ratelimit.enabled", as_bool, True,
            "Turns rate limiting on or off."),
    Setting("ratelimit.url", str, "memory://",
            "``limits`` storage: ``memory://`` (one process) or ``redis://host:port/db``"
            " (shared by all processes)."),
    Setting("ratelimit.send", str, "120/minute",
            "Sends per device."),
    Setting("ratelimit.fetch", str, "600/minute",
            "Fetches and acknowledgements per device."),
    Setting("ratelimit.keys", str, "30/minute",
            "Device and key operations (add, rotate, delete, device lists) per device."),
    Setting("ratelimit.register", str, "10/hour",
            "Account creations per client address."),
    Setting("trusted_proxies", as_list, (),
            "Addresses of reverse proxies whose ``X-Forwarded-For`` gives the client address."),
    Setting("cors_origins", as_list, (),
            "Origins allowed to call the API from a browser; empty: CORS off."),
    Setting("version_file", str, "",
            "A ``version.json`` for ``/__version__``; empty: made from the package and git."),
)  # fmt: skip


def _attribute(name: str) -> str:
    return name.replace(".", "_")


Settings = dataclasses.make_dataclass(
    "Settings",
    [(_attribute(s.name), Any, dataclasses.field(default=s.default)) for s in SETTINGS],
    frozen=True,
)
Settings.__doc__ = "The typed, read-once ``fxchat.*`` settings (see :data:`SETTINGS`)."


def load_settings(raw: Mapping[str, Any]) -> Settings:
    """Parse the ``fxchat.*`` keys of an ini section into :class:`Settings`.

    An unknown ``fxchat.*`` key is an error: a typo must not silently fall
    back to a default.
    """
    known = {s.name: s for s in SETTINGS}
    unknown = sorted(
        key for key in raw if key.startswith(PREFIX) and key[len(PREFIX) :] not in known
    )
    if unknown:
        raise ValueError(f"unknown settings: {', '.join(unknown)}")
    values = {}
    for setting in SETTINGS:
        key = PREFIX + setting.name
        if key in raw:
            try:
                values[_attribute(setting.name)] = setting.parse(raw[key])
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
    return Settings(**values)
