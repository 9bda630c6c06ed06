"""The profile file: private (0600), atomic, and refused clearly when bad."""

import json
import os
import stat

import pytest

from fxchat import crypto
from fxchat.client import Profile, ProfileError, default_profile_path, load_profile, save_profile
from fxchat.client.profile import RetiredKey


def make_profile(**changes):
    fields = {
        "server": "http://127.0.0.1:6543",
        "user": "alice@example.com",
        "device_id": "d1",
        "token": "secret-token",
        "private_key": crypto.generate_private_key(),
    }
    return Profile(**{**fields, **changes})


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def write_document(path, document, file_mode=0o600):
    path.write_text(json.dumps(document))
    path.chmod(file_mode)


@pytest.fixture
def saved(tmp_path):
    """A valid profile document on disk and its path."""
    path = tmp_path / "profile.json"
    save_profile(make_profile(), path)
    return path, json.loads(path.read_text())


@pytest.fixture
def open_umask():
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_saved_profile_is_private_even_with_an_open_umask(tmp_path, open_umask):
    path = tmp_path / "new" / "dir" / "profile.json"

    save_profile(make_profile(), path)

    assert mode(path) == 0o600
    assert mode(path.parent) == 0o700


def test_temporary_file_is_private_before_it_is_renamed(tmp_path, monkeypatch, open_umask):
    seen = []
    real_replace = os.replace

    def spy_replace(source, target):
        seen.append((os.path.dirname(source), mode(source)))
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", spy_replace)
    save_profile(make_profile(), tmp_path / "profile.json")

    assert seen == [(str(tmp_path), 0o600)]


def test_round_trip_keeps_every_key(tmp_path):
    retired = RetiredKey(crypto.generate_private_key(), 1_700_000_000_000)
    profile = make_profile(
        pending_private_key=crypto.generate_private_key(), retired_keys=(retired,)
    )
    path = tmp_path / "profile.json"

    save_profile(profile, path)
    loaded = load_profile(path)

    assert loaded.to_json() == profile.to_json()
    assert [crypto.public_key_bytes(k) for k in loaded.decryption_keys()] == [
        crypto.public_key_bytes(k)
        for k in (profile.private_key, profile.pending_private_key, retired.private_key)
    ]


def test_overwrite_replaces_atomically_and_leaves_no_temporary_file(saved):
    path, _ = saved
    replacement = make_profile(device_id="d2")

    save_profile(replacement, path)

    assert load_profile(path).device_id == "d2"
    assert os.listdir(path.parent) == ["profile.json"]


def test_no_overwrite_refuses_an_existing_file(saved):
    path, document = saved

    with pytest.raises(ProfileError, match="already exists"):
        save_profile(make_profile(device_id="d2"), path, overwrite=False)

    assert json.loads(path.read_text()) == document
    assert os.listdir(path.parent) == ["profile.json"]


def test_secrets_stay_out_of_repr():
    profile = make_profile()
    key = crypto.b64encode(crypto.private_key_bytes(profile.private_key))
    assert "secret-token" not in repr(profile)
    assert key not in repr(profile)


def test_missing_profile(tmp_path):
    with pytest.raises(ProfileError, match="no profile at"):
        load_profile(tmp_path / "absent.json")


def test_directory_instead_of_profile(tmp_path):
    with pytest.raises(ProfileError, match="not a regular file"):
        load_profile(tmp_path)


@pytest.mark.parametrize("file_mode", [0o644, 0o640, 0o604, 0o660])
def test_profile_readable_by_others_is_refused(saved, file_mode):
    path, _ = saved
    path.chmod(file_mode)
    with pytest.raises(ProfileError, match=f"mode {file_mode:04o}.*chmod 600"):
        load_profile(path)


@pytest.mark.parametrize("content", ["", "{", "[]", '"text"', "\xff"])
def test_not_a_json_object(tmp_path, content):
    path = tmp_path / "profile.json"
    path.write_bytes(content.encode("latin-1"))
    path.chmod(0o600)
    with pytest.raises(ProfileError, match=str(path)):
        load_profile(path)


@pytest.mark.parametrize(
    "change, complaint",
    [
        ({"version": 2}, "version"),
        ({"user": None}, "user"),
        ({"token": 42}, "token"),
        ({"device_id": ""}, "device_id"),
        ({"private_key": "AAAA"}, "private_key"),
        ({"private_key": "not base64!"}, "private_key"),
        ({"pending_private_key": "AAAA"}, "pending_private_key"),
        ({"retired_keys": {}}, "retired_keys"),
        ({"retired_keys": [{"private_key": "AAAA", "retired_at": 1}]}, "retired_keys"),
    ],
)
def test_invalid_fields_are_named(saved, change, complaint):
    path, document = saved
    write_document(path, {**document, **change})
    with pytest.raises(ProfileError, match=complaint):
        load_profile(path)


def test_missing_private_key_is_named(saved):
    path, document = saved
    del document["private_key"]
    write_document(path, document)
    with pytest.raises(ProfileError, match="private_key"):
        load_profile(path)


def test_default_path_follows_xdg_config_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert default_profile_path() == tmp_path / "fxchat" / "profile.json"


def test_default_path_ignores_a_relative_xdg_config_home(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_profile_path() == tmp_path / ".config" / "fxchat" / "profile.json"
