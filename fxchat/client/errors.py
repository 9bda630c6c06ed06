"""Everything the fxchat client raises: one base class, a few precise kinds."""

# The names say what happened (ServerUnreachable, Unauthorized), like requests'
# Timeout; an "Error" suffix on each would add nothing.
# ruff: noqa: N818

from __future__ import annotations


class ClientError(Exception):
    """A request or local operation failed; ``str()`` is one readable line.

    ``status`` is the HTTP status when the server answered (else ``None``),
    ``description`` the server's (or our) explanation and ``errors`` the
    server's Cornice error list, possibly empty.
    """

    def __init__(
        self,
        description: str,
        *,
        status: int | None = None,
        errors: list[dict] | None = None,
    ) -> None:
        super().__init__(description)
        self.description = description
        self.status = status
        self.errors = errors or []

    def __str__(self) -> str:
        if self.status is None:
            return self.description
        return f"{self.description} (HTTP {self.status})"


class ServerUnreachable(ClientError):
    """No answer from the server (connection refused, timeout, …), retries included."""


class Unauthorized(ClientError):
    """401: the device's token is unknown, e.g. because the device was deleted."""


class DeviceListChanged(ClientError):
    """409 on send: the recipients' devices changed again after a refresh.

    ``missing`` and ``extra`` list the ``(user, device_id)`` pairs the server
    reported.
    """

    def __init__(
        self,
        description: str,
        *,
        status: int | None = None,
        errors: list[dict] | None = None,
        missing: list[tuple[str, str]] | None = None,
        extra: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(description, status=status, errors=errors)
        self.missing = missing or []
        self.extra = extra or []


class NoRecipientDevices(ClientError):
    """Nothing to send to: the named users have no device other than this one."""


class UnusableRecipientKey(ClientError):
    """A recipient device's public key cannot be encrypted to (wrong size, low order)."""


class ProfileError(ClientError):
    """The local profile file is missing, unreadable, malformed or too open."""
