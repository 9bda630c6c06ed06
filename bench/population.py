"""Users, devices and request bodies for the load runs, made through the real API.

Every device gets a real X25519 key pair and every prepared send body is a
real ``fxchat-1`` envelope (:func:`fxchat.crypto.encrypt`) of a 1 KiB
message, so requests have exactly the sizes real clients send. The rows
are written as tab-separated files that the wrk scripts read.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import requests

from fxchat import crypto

MESSAGE_BYTES = 1024


@dataclass
class Device:
    user: str
    device_id: str
    token: str
    public_key: bytes = field(repr=False)

    @property
    def address(self) -> crypto.DeviceAddress:
        return crypto.DeviceAddress(self.user, self.device_id)


class Population:
    """Creates accounts and devices on a running server over HTTP."""

    def __init__(self, url: str, prefix: str | None = None):
        self.url = url
        self.http = requests.Session()
        self.prefix = prefix or secrets.token_hex(3)
        self.count = 0

    def _post(self, path: str, body: dict, token: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        response = self.http.post(self.url + path, json=body, headers=headers, timeout=30)
        if response.status_code != 201:
            raise RuntimeError(f"POST {path}: {response.status_code} {response.text[:300]}")
        return response.json()

    def user(self, kind: str, devices: int = 1) -> list[Device]:
        """A new user with ``devices`` devices; returns them, first device first."""
        self.count += 1
        user_id = f"{kind}-{self.prefix}-{self.count}@bench.example"
        public_key = crypto.public_key_bytes(crypto.generate_private_key())
        created = self._post(
            "/v1/accounts", {"user": user_id, "public_key": crypto.b64encode(public_key)}
        )
        first = Device(created["user"], created["device_id"], created["token"], public_key)
        made = [first]
        for _ in range(devices - 1):
            public_key = crypto.public_key_bytes(crypto.generate_private_key())
            created = self._post(
                "/v1/devices", {"public_key": crypto.b64encode(public_key)}, token=first.token
            )
            made.append(Device(created["user"], created["device_id"], created["token"], public_key))
        return made

    def close(self) -> None:
        self.http.close()


def send_body(recipients: list[Device], message_bytes: int = MESSAGE_BYTES) -> str:
    """The JSON body of POST /v1/messages: a real envelope for ``recipients``."""
    envelope = crypto.encrypt(
        os.urandom(message_bytes), {device.address: device.public_key for device in recipients}
    )
    return json.dumps(
        {
            "suite": crypto.SUITE,
            "encrypted_message": crypto.b64encode(envelope.encrypted_message),
            "recipients": [
                {"user": address.user, "device_id": address.device_id, **entry.to_wire()}
                for address, entry in envelope.entries.items()
            ],
        }
    )


def write_rows(path: Path, rows: list[tuple[str, ...]]) -> Path:
    """Tab-separated rows for bench/wrk/common.lua's read_rows."""
    with open(path, "w") as f:
        for row in rows:
            assert all("\t" not in value and "\n" not in value for value in row)
            f.write("\t".join(row) + "\n")
    return path
