"""What the ``fxchat`` command prints: human lines by default, JSON on request.

Anything that came from another person or from the server is passed through
:func:`printable` before reaching a terminal, so that a message cannot hide
or forge output with control characters.
"""

from __future__ import annotations

import contextlib
import json
import sys
import unicodedata
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

from .. import crypto
from ..crypto import DeviceAddress
from .profile import Profile
from .records import Device, Receipt, ReceivedMessage, SentMessage


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """Escape control and formatting characters (ANSI escapes, bidi overrides)."""
    out = []
    for char in text:
        if keep_newlines and char in "\n\t":
            out.append(char)
        elif unicodedata.category(char) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp"):
            out.append(char.encode("unicode_escape", "backslashreplace").decode("ascii"))
        else:
            out.append(char)
    return "".join(out)


def format_time(milliseconds: int) -> str:
    """Local time, to the second, for human output."""
    moment = datetime.fromtimestamp(milliseconds / 1000, tz=timezone.utc).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S %Z")


class Printer:
    """Prints each command's result, and errors, in the chosen format."""

    def __init__(
        self, *, as_json: bool, stdout: TextIO | None = None, stderr: TextIO | None = None
    ) -> None:
        self.as_json = as_json
        self._stdout = stdout or sys.stdout
        self._stderr = stderr or sys.stderr

    def warn(self, message: str) -> None:
        """One line on stderr, whatever the message contained."""
        line = printable(" ".join(message.split()))
        print(f"fxchat: {line}", file=self._stderr)

    def fail(self, message: str, exit_code: int) -> int:
        """:meth:`warn`, then return ``exit_code`` for the caller to exit with."""
        self.warn(message)
        return exit_code

    def new_device(self, verb: str, profile: Profile, path: Path) -> None:
        if self.as_json:
            self._json(
                {
                    "user": profile.user,
                    "device_id": profile.device_id,
                    "server": profile.server,
                    "public_key": crypto.b64encode(profile.public_key),
                    "profile": str(path),
                }
            )
            return
        self._line(
            f"{verb} device {printable(profile.device_id)} of {printable(profile.user)} "
            f"on {profile.server}"
        )
        self._line(f"Profile saved to {path}")

    def devices(self, devices: list[Device], *, this: Profile) -> None:
        own = DeviceAddress(this.user, this.device_id)
        if self.as_json:
            self._json(
                [
                    {
                        "user": d.user,
                        "device_id": d.device_id,
                        "public_key": crypto.b64encode(d.public_key),
                        "created_at": d.created_at,
                        "this_device": d.address == own,
                    }
                    for d in devices
                ]
            )
            return
        for d in devices:
            marker = "  (this device)" if d.address == own else ""
            self._line(
                f"{printable(d.user)}  {printable(d.device_id)}  "
                f"created {format_time(d.created_at)}  "
                f"key {crypto.b64encode(d.public_key)}{marker}"
            )

    def sent(self, sent: SentMessage) -> None:
        if self.as_json:
            self._json(
                {
                    "id": sent.id,
                    "sent_at": sent.sent_at,
                    "expires_at": sent.expires_at,
                    "recipients": [_address(a) for a in sent.recipients],
                }
            )
            return
        users = ", ".join(printable(u) for u in dict.fromkeys(a.user for a in sent.recipients))
        count = len(sent.recipients)
        self._line(
            f"Sent {printable(sent.id)} to {count} device{'s' if count != 1 else ''} "
            f"of {users}; expires {format_time(sent.expires_at)}"
        )

    def inbox(self, messages: list[ReceivedMessage], acked: list[str]) -> None:
        """Verified messages on stdout; each refused one as an error line on stderr."""
        for message in messages:
            if not message.verified:
                self.warn(
                    f"refused message {message.id} from {_who(message.sender)}: {message.error}"
                )
        if self.as_json:
            self._json({"messages": [_received(m) for m in messages], "acknowledged": acked})
            return
        for message in messages:
            if message.verified:
                text = printable(message.text or "", keep_newlines=True)
                self._line(
                    f"{format_time(message.sent_at)}  {_who(message.sender)}: "
                    + text.replace("\n", "\n    ")
                )

    def receipts(self, message_id: str, receipts: list[Receipt]) -> None:
        if self.as_json:
            self._json({"id": message_id, "receipts": [_receipt(r) for r in receipts]})
            return
        for r in receipts:
            parts = [printable(r.user), printable(r.device_id), printable(r.status)]
            if r.acked_at is not None:
                parts.append(format_time(r.acked_at))
            if r.mac_key is not None:
                parts.append(f"mac_key {crypto.b64encode(r.mac_key)}")
            self._line("  ".join(parts))

    def rotated(self, device_id: str, public_key: bytes) -> None:
        encoded = crypto.b64encode(public_key)
        if self.as_json:
            self._json({"device_id": device_id, "public_key": encoded})
            return
        self._line(f"New key for device {printable(device_id)}: {encoded}")

    def deleted(self, device_id: str, *, profile_removed: bool) -> None:
        if self.as_json:
            self._json({"deleted": device_id, "profile_removed": profile_removed})
            return
        suffix = "; its profile was removed" if profile_removed else ""
        self._line(f"Deleted device {printable(device_id)}{suffix}")

    def _line(self, text: str) -> None:
        print(text, file=self._stdout)

    def _json(self, document: Any) -> None:
        print(json.dumps(document, indent=2, ensure_ascii=False), file=self._stdout)


def _who(sender: DeviceAddress) -> str:
    return f"{printable(sender.user)} ({printable(sender.device_id)})"


def _address(address: DeviceAddress) -> dict[str, str]:
    return {"user": address.user, "device_id": address.device_id}


def _received(message: ReceivedMessage) -> dict[str, Any]:
    document = {
        "id": message.id,
        "sender": _address(message.sender),
        "sent_at": message.sent_at,
        "expires_at": message.expires_at,
        "verified": message.verified,
        "error": message.error,
        "text": None,
        "body": None,
    }
    if message.body is not None:
        document["body"] = crypto.b64encode(message.body)
        # Binary bodies keep "text" null; "body" carries them.
        with contextlib.suppress(UnicodeDecodeError):
            document["text"] = message.body.decode("utf-8")
    return document


def _receipt(receipt: Receipt) -> dict[str, Any]:
    document: dict[str, Any] = {
        "user": receipt.user,
        "device_id": receipt.device_id,
        "status": receipt.status,
    }
    if receipt.acked_at is not None:
        document["acked_at"] = receipt.acked_at
    if receipt.mac_key is not None:
        document["mac_key"] = crypto.b64encode(receipt.mac_key)
    return document
