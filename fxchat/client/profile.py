"""A device's local profile: server, identity, token and private keys.

Stored as JSON in a file only its owner may read (mode 0600), replaced
atomically so that a crash never leaves half a profile. The private keys
never leave this file except to decrypt in memory.

The file::

    {"version": 1, "server": "http://127.0.0.1:6543",
     "user": "alice@example.com", "device_id": "…", "token": "…",
     "private_key": "<base64url, 32 bytes>",
     "pending_private_key": null,
     "retired_keys": [{"private_key": "…", "retired_at": 1714557600000}]}

``pending_private_key`` is a key being rotated in (saved before the server is
told, so a crash cannot lose it); ``retired_keys`` are earlier keys kept to
read messages that were sealed for them before a rotation.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from .. import crypto
from .errors import ProfileError

PROFILE_VERSION = 1
PROFILE_MODE = 0o600
PROFILE_DIR_MODE = 0o700
_MAX_PROFILE_SIZE = 1024 * 1024  # far above any real profile; refuses a wrong file


@dataclass(frozen=True)
class RetiredKey:
    """A device's earlier private key and when it stopped being current (ms)."""

    private_key: X25519PrivateKey = field(repr=False)
    retired_at: int


@dataclass(frozen=True)
class Profile:
    """Everything one device needs to talk to its server; secrets stay out of repr."""

    server: str
    user: str
    device_id: str
    token: str = field(repr=False)
    private_key: X25519PrivateKey = field(repr=False)
    pending_private_key: X25519PrivateKey | None = field(default=None, repr=False)
    retired_keys: tuple[RetiredKey, ...] = field(default=(), repr=False)

    @property
    def public_key(self) -> bytes:
        """The raw public key the server should have for this device."""
        return crypto.public_key_bytes(self.private_key)

    def decryption_keys(self) -> Iterator[X25519PrivateKey]:
        """Every key a message may have been sealed for, most likely first."""
        yield self.private_key
        if self.pending_private_key is not None:
            yield self.pending_private_key
        for retired in self.retired_keys:
            yield retired.private_key

    def to_json(self) -> dict[str, Any]:
        """The file's JSON document."""
        pending = self.pending_private_key
        return {
            "version": PROFILE_VERSION,
            "server": self.server,
            "user": self.user,
            "device_id": self.device_id,
            "token": self.token,
            "private_key": _encode_key(self.private_key),
            "pending_private_key": None if pending is None else _encode_key(pending),
            "retired_keys": [
                {"private_key": _encode_key(r.private_key), "retired_at": r.retired_at}
                for r in self.retired_keys
            ],
        }

    @classmethod
    def from_json(cls, document: Any) -> Profile:
        """Parse a profile document; :class:`ProfileError` names what is wrong."""
        if not isinstance(document, dict):
            raise ProfileError("not a JSON object")
        if document.get("version") != PROFILE_VERSION:
            raise ProfileError(f"unsupported profile version {document.get('version')!r}")
        pending = document.get("pending_private_key")
        retired = document.get("retired_keys", [])
        if not isinstance(retired, list):
            raise ProfileError("retired_keys: not a list")
        return cls(
            server=_string(document, "server"),
            user=_string(document, "user"),
            device_id=_string(document, "device_id"),
            token=_string(document, "token"),
            private_key=_decode_key(document.get("private_key"), "private_key"),
            pending_private_key=(
                None if pending is None else _decode_key(pending, "pending_private_key")
            ),
            retired_keys=tuple(_retired_key(item) for item in retired),
        )


def default_profile_path() -> Path:
    """``$XDG_CONFIG_HOME/fxchat/profile.json``, else ``~/.config/fxchat/profile.json``."""
    config_home = os.environ.get("XDG_CONFIG_HOME", "")
    # The XDG spec says to ignore a relative value.
    base = Path(config_home) if os.path.isabs(config_home) else Path.home() / ".config"
    return base / "fxchat" / "profile.json"


def load_profile(path: str | os.PathLike[str]) -> Profile:
    """Read the profile at ``path``.

    Raises :class:`ProfileError` if it is missing, not a regular file,
    readable by other users (like ssh, a private key must be private),
    not valid JSON or not a valid profile.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise ProfileError(f"profile {path} is not a regular file")
            if os.name == "posix" and info.st_mode & 0o077:
                raise ProfileError(
                    f"profile {path} is accessible by other users "
                    f"(mode {stat.S_IMODE(info.st_mode):04o}); run: chmod 600 {path}"
                )
            raw = f.read(_MAX_PROFILE_SIZE + 1)
    except FileNotFoundError:
        raise ProfileError(f"no profile at {path}") from None
    except IsADirectoryError:
        raise ProfileError(f"profile {path} is not a regular file") from None
    except OSError as exc:
        raise ProfileError(f"cannot read profile {path}: {exc.strerror or exc}") from None
    if len(raw) > _MAX_PROFILE_SIZE:
        raise ProfileError(f"profile {path} is too large to be a profile")
    try:
        document = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise ProfileError(f"profile {path} is not valid JSON") from None
    try:
        return Profile.from_json(document)
    except ProfileError as exc:
        raise ProfileError(f"profile {path} is invalid: {exc.description}") from None


def save_profile(profile: Profile, path: str | os.PathLike[str], *, overwrite: bool = True) -> None:
    """Write ``profile`` to ``path`` atomically, readable only by its owner.

    The JSON goes to a 0600 temporary file in the same directory, is synced,
    then renamed over ``path``. With ``overwrite=False`` an existing file is
    never replaced (:class:`ProfileError`), even if it appears meanwhile.
    Missing parent directories are created with mode 0700.
    """
    path = Path(path)
    data = json.dumps(profile.to_json(), indent=2).encode() + b"\n"
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    try:
        path.parent.mkdir(mode=PROFILE_DIR_MODE, parents=True, exist_ok=True)
        try:
            _write_private_file(temporary, data)
            if overwrite:
                os.replace(temporary, path)
            else:
                # link() refuses an existing target, where rename() would replace it.
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
        _sync_directory(path.parent)
    except FileExistsError:
        if not overwrite and os.path.lexists(path):
            raise ProfileError(f"a profile already exists at {path}; not overwriting it") from None
        raise ProfileError(f"cannot write profile {path}: a file is in the way") from None
    except OSError as exc:
        raise ProfileError(f"cannot write profile {path}: {exc.strerror or exc}") from None


def ensure_no_profile(path: str | os.PathLike[str]) -> None:
    """Raise :class:`ProfileError` if something already exists at ``path``.

    Checked before creating a device, so that its key is not lost for want
    of a place to save it.
    """
    if os.path.lexists(path):
        raise ProfileError(f"a profile already exists at {path}; not overwriting it")


def _write_private_file(path: Path, data: bytes) -> None:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    descriptor = os.open(path, flags, PROFILE_MODE)
    try:
        # The umask can only remove bits; this makes sure none were added.
        os.fchmod(descriptor, PROFILE_MODE)
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _sync_directory(directory: Path) -> None:
    # Makes the rename itself durable; not possible everywhere, hence best effort.
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def _string(document: dict, name: str) -> str:
    value = document.get(name)
    if not isinstance(value, str) or not value:
        raise ProfileError(f"{name}: missing or not a string")
    return value


def _encode_key(key: X25519PrivateKey) -> str:
    return crypto.b64encode(crypto.private_key_bytes(key))


def _decode_key(value: Any, name: str) -> X25519PrivateKey:
    try:
        return crypto.load_private_key(
            crypto.b64decode(value, length=crypto.KEY_LENGTH, field=name)
        )
    except crypto.InvalidEnvelope as exc:
        raise ProfileError(str(exc)) from None


def _retired_key(item: Any) -> RetiredKey:
    if not isinstance(item, dict):
        raise ProfileError("retired_keys: each item must be an object")
    retired_at = item.get("retired_at")
    if isinstance(retired_at, bool) or not isinstance(retired_at, int):
        raise ProfileError("retired_keys: retired_at must be an integer")
    return RetiredKey(_decode_key(item.get("private_key"), "retired_keys"), retired_at)
