"""The fxchat reference client: a library for chat applications and the CLI.

The library talks to the relay only over HTTP (PROTOCOL.md §3) and encrypts
locally with :mod:`fxchat.crypto`. Start with :class:`Client`; see
docs/client.rst.
"""

from .api import Client
from .errors import (
    ClientError,
    DeviceListChanged,
    NoRecipientDevices,
    ProfileError,
    ServerUnreachable,
    Unauthorized,
    UnusableRecipientKey,
)
from .profile import Profile, default_profile_path, load_profile, save_profile
from .records import AckResult, Device, Page, Receipt, ReceivedMessage, SentMessage
from .transport import RetryPolicy

__all__ = [
    "AckResult",
    "Client",
    "ClientError",
    "Device",
    "DeviceListChanged",
    "NoRecipientDevices",
    "Page",
    "Profile",
    "ProfileError",
    "ReceivedMessage",
    "Receipt",
    "RetryPolicy",
    "SentMessage",
    "ServerUnreachable",
    "Unauthorized",
    "UnusableRecipientKey",
    "default_profile_path",
    "load_profile",
    "save_profile",
]
