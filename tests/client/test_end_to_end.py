"""The ``fxchat`` command against a real server process, as a user would run it.

Every step is a subprocess; the only shortcuts are the checks: the test reads
the profiles and the raw queue itself, to verify the disclosed ``mac_key``
values independently of the client that disclosed them.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from fxchat import crypto
from fxchat.client import load_profile
from fxchat.crypto import RecipientEntry

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fxchat(live_server, tmp_path):
    """fxchat(device, *argv, ok=True) -> CompletedProcess, one profile per device."""
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    for name in ("FXCHAT_SERVER", "FXCHAT_PROFILE"):
        environment.pop(name, None)

    def run(device, *argv, ok=True):
        result = subprocess.run(
            [sys.executable, "-m", "fxchat.client.cli", "--server", live_server.url]
            + ["--profile", str(tmp_path / f"{device}.json"), *argv],
            capture_output=True,
            text=True,
            timeout=60,
            env=environment,
        )
        if ok:
            assert result.returncode == 0, result.stderr
            assert result.stderr == ""
        return result

    run.path = lambda device: str(tmp_path / f"{device}.json")
    run.profile = lambda device: load_profile(run.path(device))
    return run


def json_output(result):
    return json.loads(result.stdout)


def expected_mac_key(server_url, profile, message_id):
    """Decrypt the queued copy with the device's own key, without the CLI."""
    answer = requests.get(
        f"{server_url}/v1/messages",
        headers={"Authorization": f"Bearer {profile.token}"},
        timeout=10,
    )
    answer.raise_for_status()
    [item] = [m for m in answer.json()["messages"] if m["id"] == message_id]
    opened = crypto.decrypt(
        profile.private_key,
        crypto.decode_encrypted_message(item["encrypted_message"]),
        RecipientEntry.from_wire(item),
    )
    return opened.mac_key


def test_conversation_between_two_users_and_three_devices(fxchat, live_server):
    fxchat("alice", "register", "alice@example.com")
    fxchat("bob-phone", "register", "bob@example.com", "--name", "phone")
    fxchat("bob-laptop", "add-device", "--from", fxchat.path("bob-phone"))
    phone, laptop = fxchat.profile("bob-phone"), fxchat.profile("bob-laptop")
    assert (phone.user, laptop.user) == ("bob@example.com", "bob@example.com")

    listed = json_output(fxchat("alice", "--json", "devices", "bob@example.com"))
    assert {d["device_id"]: d["public_key"] for d in listed} == {
        phone.device_id: crypto.b64encode(phone.public_key),
        laptop.device_id: crypto.b64encode(laptop.public_key),
    }

    to_bob = json_output(fxchat("alice", "--json", "send", "bob@example.com", "hello bob"))
    to_alice = json_output(fxchat("bob-phone", "--json", "send", "alice@example.com", "hi alice"))
    note = json_output(fxchat("bob-laptop", "--json", "send", "bob@example.com", "note to self"))
    assert {r["device_id"] for r in to_bob["recipients"]} == {phone.device_id, laptop.device_id}
    assert [r["device_id"] for r in note["recipients"]] == [phone.device_id]
    alice_device = fxchat.profile("alice").device_id
    assert [r["device_id"] for r in to_alice["recipients"]] == [alice_device]

    mac_keys = {
        device.device_id: expected_mac_key(live_server.url, device, to_bob["id"])
        for device in (phone, laptop)
    }

    phone_inbox = fxchat("bob-phone", "inbox").stdout.splitlines()
    laptop_inbox = fxchat("bob-laptop", "inbox").stdout.splitlines()
    alice_inbox = fxchat("alice", "inbox").stdout.splitlines()
    assert len(phone_inbox) == 2
    assert phone_inbox[0].endswith(f"alice@example.com ({alice_device}): hello bob")
    assert phone_inbox[1].endswith(f"bob@example.com ({laptop.device_id}): note to self")
    assert len(laptop_inbox) == 1
    assert laptop_inbox[0].endswith(f"alice@example.com ({alice_device}): hello bob")
    assert len(alice_inbox) == 1
    assert alice_inbox[0].endswith(f"bob@example.com ({phone.device_id}): hi alice")

    receipts = json_output(fxchat("alice", "--json", "receipts", to_bob["id"]))["receipts"]
    assert {r["device_id"]: r["status"] for r in receipts} == {
        phone.device_id: "acked",
        laptop.device_id: "acked",
    }
    assert {r["device_id"]: crypto.b64decode(r["mac_key"]) for r in receipts} == mac_keys
    human_receipts = fxchat("alice", "receipts", to_bob["id"]).stdout
    assert crypto.b64encode(mac_keys[phone.device_id]) in human_receipts

    for device in ("alice", "bob-phone", "bob-laptop"):
        assert fxchat(device, "inbox").stdout == ""


def test_rotation_revocation_and_refusals(fxchat, live_server):
    fxchat("alice", "register", "alice@example.com")
    fxchat("bob", "register", "bob@example.com")
    fxchat("bob-laptop", "add-device", "--from", fxchat.path("bob"))
    fxchat("alice", "send", "bob@example.com", "sealed for the old key")

    rotated = json_output(fxchat("bob", "--json", "rotate-key"))
    fxchat("alice", "send", "bob@example.com", "sealed for the new key")

    listed = json_output(fxchat("alice", "--json", "devices", "bob@example.com"))
    bob = fxchat.profile("bob")
    assert rotated["public_key"] == crypto.b64encode(bob.public_key)
    assert rotated["public_key"] in {d["public_key"] for d in listed}
    inbox = fxchat("bob", "inbox").stdout
    assert "sealed for the old key" in inbox and "sealed for the new key" in inbox

    fxchat("bob", "delete-device", fxchat.profile("bob-laptop").device_id)
    revoked = fxchat("bob-laptop", "inbox", ok=False)
    assert revoked.returncode == 4
    assert revoked.stderr.count("\n") == 1 and "Traceback" not in revoked.stderr

    taken = fxchat("carol", "register", "alice@example.com", ok=False)
    assert taken.returncode == 1
    assert taken.stderr.startswith("fxchat: ") and "HTTP 409" in taken.stderr
    assert not os.path.exists(fxchat.path("carol"))

    unknown = fxchat("alice", "send", "nobody@example.com", "hello?", ok=False)
    assert unknown.returncode == 1 and "HTTP 404" in unknown.stderr
