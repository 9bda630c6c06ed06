"""The fxchat client library: what a chat application embeds.

A :class:`Client` acts for one device, described by its
:class:`~fxchat.client.profile.Profile`. It talks to the server only over
HTTP (PROTOCOL.md §3) and does all encryption locally with
:mod:`fxchat.crypto`, so the server never sees a plaintext or a private key::

    client = Client.from_profile_file("alice.json")
    client.send(["bob@example.com"], "hello")
    messages = client.fetch()
    for message in messages:
        print(message.sender.user, message.text if message.verified else message.error)
    client.acknowledge(messages)
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from .. import crypto
from ..crypto import DeviceAddress, RecipientEntry
from . import records
from .errors import (
    ClientError,
    DeviceListChanged,
    NoRecipientDevices,
    ProfileError,
    UnusableRecipientKey,
)
from .profile import Profile, RetiredKey, ensure_no_profile, load_profile, save_profile
from .records import AckResult, Device, Page, Receipt, ReceivedMessage, SentMessage
from .transport import Transport, path_segment

MAX_ACKS_PER_REQUEST = 500  # PROTOCOL.md §3.4
# Messages sealed for a key before its rotation stay readable this long: the
# longest TTL a server allows by default (30 days) plus a day of clock slack.
RETIRED_KEY_LIFETIME_MS = 31 * 24 * 3600 * 1000

ProfilePath = str | os.PathLike[str]


class Client:
    """One device's view of an fxchat server.

    ``profile_path``, when given, is where :meth:`rotate_key` saves the
    changed profile and the file :meth:`delete_device` removes when this
    device is deleted. ``server`` talks to another URL than the profile's
    (the profile keeps its own). ``transport_options`` go to
    :class:`~fxchat.client.transport.Transport` (``timeout``, ``retry``,
    ``session``, ``sleep``).
    """

    def __init__(
        self,
        profile: Profile,
        *,
        profile_path: ProfilePath | None = None,
        server: str | None = None,
        **transport_options: Any,
    ) -> None:
        self._profile = profile
        self._profile_path = profile_path
        self._transport_options = transport_options
        self._http = Transport(server or profile.server, token=profile.token, **transport_options)

    @property
    def profile(self) -> Profile:
        """The current profile (it changes when the key is rotated)."""
        return self._profile

    @classmethod
    def from_profile_file(
        cls, path: ProfilePath, *, server: str | None = None, **transport_options: Any
    ) -> Client:
        """A client for the device whose profile is stored at ``path``."""
        return cls(load_profile(path), profile_path=path, server=server, **transport_options)

    @classmethod
    def register(
        cls,
        server: str,
        user: str,
        *,
        name: str | None = None,
        profile_path: ProfilePath | None = None,
        **transport_options: Any,
    ) -> Client:
        """Create the account ``user`` with this machine as its first device.

        With ``profile_path`` the new profile is saved there; an existing
        file is an error, checked before anything is created on the server.
        """
        anonymous = Transport(server, **transport_options)
        return cls._create_device(
            anonymous,
            "/v1/accounts",
            {"user": user},
            name=name,
            profile_path=profile_path,
            transport_options=transport_options,
        )

    def add_device(
        self, *, name: str | None = None, profile_path: ProfilePath | None = None
    ) -> Client:
        """Create another device of this user and return a client for it.

        The new device gets its own key pair and token; with ``profile_path``
        its profile is saved there (never over an existing file).
        """
        return self._create_device(
            self._http,
            "/v1/devices",
            {},
            name=name,
            profile_path=profile_path,
            transport_options=self._transport_options,
        )

    def devices(self, user: str | None = None) -> list[Device]:
        """The current devices of ``user`` (default: this device's user)."""
        user = self._profile.user if user is None else user
        answer = self._http.request("GET", f"/v1/users/{path_segment(user)}/devices")
        return records.parse_devices(answer)

    def send(
        self, users: str | Iterable[str], message: bytes | str, *, ttl: int | None = None
    ) -> SentMessage:
        """Encrypt ``message`` for every current device of ``users`` and send it.

        Text is sent as UTF-8. When writing to one's own user, the message
        goes to this user's other devices. If the device lists change while
        sending (409), they are fetched again and the send is retried once;
        a second change raises :class:`DeviceListChanged`. Network retries
        repeat the same ``Idempotency-Key``, so a message is never stored
        twice.
        """
        users = [users] if isinstance(users, str) else list(dict.fromkeys(users))
        if not users:
            raise ValueError("send needs at least one user")
        body = message.encode("utf-8") if isinstance(message, str) else bytes(message)
        for attempt in range(2):
            recipients = self._recipient_keys(users)
            envelope = _seal(body, recipients)
            request: dict[str, Any] = {
                "suite": crypto.SUITE,
                "encrypted_message": crypto.b64encode(envelope.encrypted_message),
                "recipients": [
                    {"user": address.user, "device_id": address.device_id, **entry.to_wire()}
                    for address, entry in envelope.entries.items()
                ],
            }
            if ttl is not None:
                request["ttl"] = ttl
            # A fresh key per device list: the server ties a key to one exact body.
            headers = {"Idempotency-Key": uuid.uuid4().hex}
            try:
                answer = self._http.request("POST", "/v1/messages", body=request, headers=headers)
            except DeviceListChanged:
                if attempt == 1:
                    raise
                continue
            return records.parse_sent(answer, tuple(envelope.entries))
        raise AssertionError("unreachable: the second attempt returns or raises")

    def fetch_page(self, *, limit: int | None = None, after: str | None = None) -> Page:
        """One page of this device's queue, decrypted and verified.

        Messages that cannot be decrypted or verified are included with
        ``error`` set. Fetching does not acknowledge anything.
        """
        params = {key: value for key, value in (("limit", limit), ("after", after)) if value}
        answer = self._http.request("GET", "/v1/messages", params=params)
        items, cursor = records.parse_page_items(answer)
        return Page([self._open(item) for item in items], cursor)

    def fetch(self, *, page_size: int | None = None) -> list[ReceivedMessage]:
        """Every queued message (all pages, oldest first), decrypted and verified."""
        messages: list[ReceivedMessage] = []
        cursor = None
        while True:
            page = self.fetch_page(limit=page_size, after=cursor)
            messages += page.messages
            # An empty page or a cursor that does not move would loop forever.
            if page.next is None or not page.messages or page.next == cursor:
                return messages
            cursor = page.next

    def acknowledge(
        self, messages: Iterable[ReceivedMessage], *, disclose_mac_keys: bool = True
    ) -> AckResult:
        """Take ``messages`` off this device's queue for good.

        For each verified message the ``mac_key`` is disclosed (a deniable
        acknowledgement, PROTOCOL.md §2) unless ``disclose_mac_keys`` is
        false; refused messages are acknowledged without one.
        """
        acks = []
        for message in messages:
            ack = {"id": message.id}
            if disclose_mac_keys and message.verified and message.mac_key is not None:
                ack["mac_key"] = crypto.b64encode(message.mac_key)
            acks.append(ack)
        result = AckResult(acked=[], unknown=[])
        for start in range(0, len(acks), MAX_ACKS_PER_REQUEST):
            chunk = acks[start : start + MAX_ACKS_PER_REQUEST]
            answer = self._http.request("POST", "/v1/messages/ack", body={"acks": chunk})
            part = records.parse_ack(answer)
            result.acked.extend(part.acked)
            result.unknown.extend(part.unknown)
        return result

    def receipts(self, message_id: str) -> list[Receipt]:
        """What became of each copy of a message this user sent."""
        path = f"/v1/messages/{path_segment(message_id)}/receipts"
        return records.parse_receipts(self._http.request("GET", path))

    def rotate_key(self) -> bytes:
        """Give this device a new key pair; return the new public key.

        The new key is saved (as pending) before the server is told, and the
        old one is kept as retired for :data:`RETIRED_KEY_LIFETIME_MS`, so
        that messages already sealed for it stay readable and a crash at any
        point loses no key. Without ``profile_path`` the caller must persist
        :attr:`profile` itself.
        """
        old = self._profile
        new_key = crypto.generate_private_key()
        self._persist(replace(old, pending_private_key=new_key))

        public_key = crypto.public_key_bytes(new_key)
        self._http.request(
            "PUT",
            f"/v1/devices/{path_segment(old.device_id)}/key",
            body={"public_key": crypto.b64encode(public_key)},
        )

        now = _now_ms()
        newly_retired = [RetiredKey(old.private_key, now)]
        if old.pending_private_key is not None:
            # An earlier rotation may have reached the server before failing.
            newly_retired.append(RetiredKey(old.pending_private_key, now))
        still_useful = [r for r in old.retired_keys if r.retired_at + RETIRED_KEY_LIFETIME_MS > now]
        self._persist(
            replace(
                old,
                private_key=new_key,
                pending_private_key=None,
                retired_keys=tuple(newly_retired + still_useful),
            )
        )
        return public_key

    def delete_device(self, device_id: str | None = None) -> None:
        """Delete a device of this user (default: this one).

        Its token stops working and its queue is dropped. Deleting this
        device also deletes its profile file, if the client has one: its keys
        should not outlive it.
        """
        device_id = self._profile.device_id if device_id is None else device_id
        self._http.request("DELETE", f"/v1/devices/{path_segment(device_id)}")
        if device_id == self._profile.device_id and self._profile_path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._profile_path)

    # -- internals ---------------------------------------------------------

    @classmethod
    def _create_device(
        cls,
        http: Transport,
        path: str,
        fields: dict[str, str],
        *,
        name: str | None,
        profile_path: ProfilePath | None,
        transport_options: dict[str, Any],
    ) -> Client:
        if profile_path is not None:
            ensure_no_profile(profile_path)
        private_key = crypto.generate_private_key()
        body = {**fields, "public_key": crypto.b64encode(crypto.public_key_bytes(private_key))}
        if name is not None:
            body["name"] = name
        # Not repeatable: a lost answer would leave an orphan device behind.
        answer = http.request("POST", path, body=body, repeatable=False)
        user, device_id, token = records.parse_new_device(answer)
        profile = Profile(
            server=http.server,
            user=user,
            device_id=device_id,
            token=token,
            private_key=private_key,
        )
        if profile_path is not None:
            try:
                save_profile(profile, profile_path, overwrite=False)
            except ProfileError as exc:
                raise ProfileError(
                    f"device {device_id} of {user} was created, but its key is lost: {exc}"
                ) from None
        return cls(profile, profile_path=profile_path, **transport_options)

    def _persist(self, profile: Profile) -> None:
        if self._profile_path is not None:
            save_profile(profile, self._profile_path)
        self._profile = profile

    def _recipient_keys(self, users: list[str]) -> dict[DeviceAddress, bytes]:
        own = DeviceAddress(self._profile.user, self._profile.device_id)
        keys = {
            device.address: device.public_key
            for user in users
            for device in self.devices(user)
            if device.address != own
        }
        if not keys:
            raise NoRecipientDevices(f"no device to send to: {', '.join(users)} has none")
        return keys

    def _open(self, item: Any) -> ReceivedMessage:
        header = records.parse_queued_header(item)
        if item.get("suite") != crypto.SUITE:
            return ReceivedMessage(**header, error=f"unsupported suite {item.get('suite')!r}")
        try:
            encrypted_message = crypto.decode_encrypted_message(item.get("encrypted_message"))
            entry = RecipientEntry.from_wire(item)
            opened = self._decrypt(encrypted_message, entry)
        except crypto.InvalidEnvelope as exc:
            return ReceivedMessage(**header, error=str(exc))
        return ReceivedMessage(**header, body=opened.message, mac_key=opened.mac_key)

    def _decrypt(self, encrypted_message: bytes, entry: RecipientEntry) -> crypto.Decrypted:
        """Try the current key, then pending and retired ones (see rotate_key)."""
        first_failure = None
        for private_key in self._profile.decryption_keys():
            try:
                return crypto.decrypt(private_key, encrypted_message, entry)
            except crypto.BadAesKeyTag as exc:
                first_failure = first_failure or exc
        assert first_failure is not None  # the profile always has a current key
        raise first_failure


def _seal(message: bytes, recipients: dict[DeviceAddress, bytes]) -> crypto.Envelope:
    try:
        return crypto.encrypt(message, recipients)
    except crypto.InvalidEnvelope:
        pass
    # Only on failure: find which device's key is unusable, to say so.
    probe = crypto.generate_private_key()
    for address, public_key in recipients.items():
        try:
            crypto.derive_keys(probe, public_key)
        except crypto.InvalidEnvelope as exc:
            raise UnusableRecipientKey(
                f"device {address.user}/{address.device_id} has an unusable public key: {exc}"
            ) from None
    raise ClientError("encryption failed")  # not reached: encrypt only fails on a key


def _now_ms() -> int:
    return int(time.time() * 1000)
