"""The fxchat command line: output, exit codes and one-line errors.

Most tests run ``main()`` in-process against the in-memory relay; the ones
about a dead server run the real command in a subprocess, to see exactly
what a user would see.
"""

import io
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fxchat import crypto
from fxchat.client import Client, Profile, cli, load_profile, save_profile

from .fake_relay import URL

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fxchat(relay, tmp_path, monkeypatch, capsys):
    """fxchat(*argv, profile="alice", stdin=b"") -> (exit code, stdout, stderr)."""
    monkeypatch.setattr("fxchat.client.transport.requests.Session", relay.session)
    monkeypatch.delenv("FXCHAT_SERVER", raising=False)
    monkeypatch.delenv("FXCHAT_PROFILE", raising=False)

    def run(*argv, profile="alice", stdin=b""):
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        code = cli.main(["--server", URL, "--profile", str(tmp_path / f"{profile}.json"), *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def alice_and_bob(fxchat):
    assert fxchat("register", "alice@example.com", profile="alice")[0] == 0
    assert fxchat("register", "bob@example.com", profile="bob")[0] == 0


def closed_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(*argv, env=None):
    return subprocess.run(
        [sys.executable, "-m", "fxchat.client.cli", *argv],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), **(env or {})},
    )


def assert_one_line_error(stderr, *fragments):
    assert stderr.count("\n") == 1 and stderr.startswith("fxchat: "), stderr
    assert "Traceback" not in stderr
    for fragment in fragments:
        assert fragment in stderr


# -- without a server --------------------------------------------------------


@pytest.mark.parametrize("command", [["register", "alice@example.com"], ["devices"]])
def test_dead_server_is_one_line_and_exit_code_3(tmp_path, command):
    profile = tmp_path / "profile.json"
    url = f"http://127.0.0.1:{closed_port()}"
    if command[0] != "register":
        # --server overrides the profile's, so this one must not be used.
        dead_profile = Profile(
            "http://192.0.2.1", "alice", "d1", "t", crypto.generate_private_key()
        )
        save_profile(dead_profile, profile)

    result = run_cli("--server", url, "--profile", str(profile), "--retries", "1", *command)

    assert result.returncode == cli.EXIT_UNREACHABLE == 3
    assert result.stdout == ""
    assert_one_line_error(result.stderr, f"cannot reach {url}", "connection refused")


def test_missing_profile_explains_how_to_make_one(tmp_path):
    result = run_cli("--profile", str(tmp_path / "none.json"), "inbox")

    assert result.returncode == cli.EXIT_PROFILE == 5
    assert_one_line_error(result.stderr, "no profile at", "fxchat register USER")


def test_profile_from_environment(tmp_path):
    result = run_cli("devices", env={"FXCHAT_PROFILE": str(tmp_path / "env.json")})
    assert result.returncode == cli.EXIT_PROFILE
    assert str(tmp_path / "env.json") in result.stderr


def test_default_profile_is_under_xdg_config_home(tmp_path):
    result = run_cli("devices", env={"XDG_CONFIG_HOME": str(tmp_path), "FXCHAT_PROFILE": ""})
    assert result.returncode == cli.EXIT_PROFILE
    assert str(tmp_path / "fxchat" / "profile.json") in result.stderr


@pytest.mark.parametrize(
    "content, file_mode, complaint",
    [
        ("not json", 0o600, "not valid JSON"),
        ('{"version": 1}', 0o600, "server"),
        ("{}", 0o644, "chmod 600"),
    ],
)
def test_bad_profile_is_one_line_and_exit_code_5(fxchat, tmp_path, content, file_mode, complaint):
    path = tmp_path / "alice.json"
    path.write_text(content)
    path.chmod(file_mode)

    code, out, err = fxchat("inbox")

    assert code == cli.EXIT_PROFILE
    assert out == ""
    assert_one_line_error(err, str(path), complaint)


def test_invalid_server_url(tmp_path):
    result = run_cli(
        "--server", "localhost:6543", "--profile", str(tmp_path / "p"), "register", "a"
    )
    assert result.returncode == cli.EXIT_REFUSED
    assert_one_line_error(result.stderr, "http://host:port")


@pytest.mark.parametrize(
    "command", ["register", "add-device", "devices", "send", "inbox", "receipts", "rotate-key"]
)
def test_every_command_has_help(command):
    with pytest.raises(SystemExit) as exited:
        cli.build_parser().parse_args([command, "--help"])
    assert exited.value.code == 0
    assert cli.main([command, "--help"]) == 0


def test_usage_errors_exit_2(capsys):
    assert cli.main(["no-such-command"]) == cli.EXIT_USAGE
    assert cli.main([]) == cli.EXIT_USAGE
    assert "usage:" in capsys.readouterr().err


# -- against the in-memory relay ---------------------------------------------


def test_conversation(fxchat, alice_and_bob):
    code, out, err = fxchat("send", "bob@example.com", "hello bob", profile="alice")
    assert (code, err) == (0, "")
    assert "Sent" in out and "bob@example.com" in out

    code, out, err = fxchat("inbox", profile="bob")
    assert (code, err) == (0, "")
    assert "alice@example.com" in out and out.rstrip().endswith(": hello bob")

    assert fxchat("inbox", profile="bob") == (0, "", "")


def test_send_reads_stdin_with_one_argument_or_dash(fxchat, alice_and_bob):
    assert fxchat("send", "bob@example.com", profile="alice", stdin=b"from stdin\n")[0] == 0
    assert fxchat("send", "bob@example.com", "-", profile="alice", stdin=b"dash\r\n")[0] == 0

    code, out, _ = fxchat("--json", "inbox", profile="bob")

    assert code == 0
    assert [m["text"] for m in json.loads(out)["messages"]] == ["from stdin", "dash"]


def test_send_to_several_users_takes_the_last_argument_as_text(fxchat, alice_and_bob):
    fxchat("register", "carol@example.com", profile="carol")

    code, out, _ = fxchat("--json", "send", "bob@example.com", "carol@example.com", "hi all")

    assert code == 0
    assert {r["user"] for r in json.loads(out)["recipients"]} == {
        "bob@example.com",
        "carol@example.com",
    }
    for profile in ("bob", "carol"):
        assert fxchat("inbox", profile=profile)[1].rstrip().endswith(": hi all")


def test_send_options_may_come_between_users_and_text(fxchat, alice_and_bob, relay):
    code, out, err = fxchat(
        "send", "bob@example.com", "--ttl", "60", "short-lived", profile="alice"
    )

    assert (code, err) == (0, "")
    [post] = relay.requests_to("POST", "/v1/messages")
    assert json.loads(post.body)["ttl"] == 60
    assert fxchat("inbox", profile="bob")[1].rstrip().endswith(": short-lived")


def test_unknown_options_are_usage_errors(fxchat, alice_and_bob):
    assert fxchat("send", "bob@example.com", "--bogus", "hi", profile="alice")[0] == 2
    assert fxchat("inbox", "extra", profile="bob")[0] == 2


def test_empty_message_is_a_usage_error(fxchat, alice_and_bob):
    code, out, err = fxchat("send", "bob@example.com", profile="alice", stdin=b"")
    assert code == cli.EXIT_USAGE
    assert_one_line_error(err, "empty")


def test_inbox_keep_leaves_messages_queued(fxchat, alice_and_bob):
    fxchat("send", "bob@example.com", "keep me", profile="alice")

    kept = fxchat("inbox", "--keep", profile="bob")
    shown = fxchat("inbox", profile="bob")

    assert kept[1] == shown[1] != ""
    assert fxchat("inbox", profile="bob")[1] == ""


def test_inbox_json_and_receipts_json(fxchat, alice_and_bob, tmp_path):
    _, out, _ = fxchat("--json", "send", "bob@example.com", "for the record", profile="alice")
    message_id = json.loads(out)["id"]

    _, out, _ = fxchat("inbox", "--json", profile="bob")
    inbox = json.loads(out)
    _, out, _ = fxchat("receipts", message_id, "--json", profile="alice")
    receipts = json.loads(out)

    [message] = inbox["messages"]
    assert inbox["acknowledged"] == [message_id]
    assert message["text"] == "for the record" and message["verified"] is True
    assert crypto.b64decode(message["body"]) == b"for the record"
    [receipt] = receipts["receipts"]
    assert receipt["status"] == "acked"
    assert receipt["device_id"] == load_profile(tmp_path / "bob.json").device_id
    assert len(crypto.b64decode(receipt["mac_key"])) == 32


def test_refused_message_is_reported_on_stderr_with_exit_code_6(fxchat, alice_and_bob, relay):
    fxchat("send", "bob@example.com", "genuine", profile="alice")
    fxchat("send", "bob@example.com", "tampered", profile="alice")
    [queue] = [d.queue for (user, _), d in relay.devices.items() if user == "bob@example.com"]
    queue[1]["msg_sig"] = crypto.b64encode(bytes(32))
    tampered_id = queue[1]["id"]

    code, out, err = fxchat("inbox", profile="bob")

    assert code == cli.EXIT_UNVERIFIED == 6
    assert out.rstrip().endswith(": genuine") and "tampered" not in out
    assert_one_line_error(err, "refused message", tampered_id, "msg_sig")
    assert fxchat("inbox", profile="bob") == (0, "", "")


def test_inbox_prints_messages_even_when_acknowledging_fails(fxchat, alice_and_bob, relay):
    fxchat("send", "bob@example.com", "read me", profile="alice")
    relay.fail("refused", times=10, applies=lambda method, path: path == "/v1/messages/ack")

    code, out, err = fxchat("--retries", "0", "inbox", profile="bob")

    assert code == cli.EXIT_UNREACHABLE
    assert out.rstrip().endswith(": read me")
    assert_one_line_error(err, "cannot reach")
    assert fxchat("inbox", profile="bob")[1].rstrip().endswith(": read me")


def test_deleted_device_gets_exit_code_4(fxchat, alice_and_bob, tmp_path):
    fxchat("add-device", "--from", str(tmp_path / "bob.json"), profile="bob-laptop")
    laptop_id = load_profile(tmp_path / "bob-laptop.json").device_id
    assert fxchat("delete-device", laptop_id, profile="bob")[0] == 0

    code, out, err = fxchat("inbox", profile="bob-laptop")

    assert code == cli.EXIT_UNAUTHORIZED == 4
    assert_one_line_error(err, "token", "HTTP 401")


def test_deleting_this_device_removes_its_profile(fxchat, alice_and_bob, tmp_path):
    code, out, _ = fxchat("delete-device", profile="bob")
    assert code == 0 and "profile was removed" in out
    assert not (tmp_path / "bob.json").exists()


def test_ids_with_a_leading_dash_are_given_after_double_dash(
    fxchat, alice_and_bob, tmp_path, monkeypatch
):
    # fxchat servers never make such ids (tokens.new_id); the protocol allows them.
    monkeypatch.setattr(
        "tests.client.fake_relay.new_id", lambda: "-" + crypto.b64encode(os.urandom(15))
    )
    fxchat("add-device", "--from", str(tmp_path / "bob.json"), profile="bob-laptop")
    laptop_id = load_profile(tmp_path / "bob-laptop.json").device_id
    _, out, _ = fxchat("--json", "send", "bob@example.com", "dashing", profile="alice")
    message_id = json.loads(out)["id"]
    assert message_id.startswith("-") and laptop_id.startswith("-")

    code, _, err = fxchat("receipts", message_id, profile="alice")
    assert code == cli.EXIT_USAGE and "usage:" in err

    code, out, _ = fxchat("receipts", "--json", "--", message_id, profile="alice")
    assert code == 0 and json.loads(out)["id"] == message_id
    code, out, _ = fxchat("delete-device", "--", laptop_id, profile="bob")
    assert code == 0 and laptop_id in out
    assert fxchat("devices", profile="bob-laptop")[0] == cli.EXIT_UNAUTHORIZED


def test_add_device_refuses_to_overwrite_its_source(fxchat, alice_and_bob, tmp_path):
    code, _, err = fxchat("add-device", "--from", str(tmp_path / "bob.json"), profile="bob")
    assert code == cli.EXIT_USAGE
    assert_one_line_error(err, "--profile", "--from")


def test_register_refuses_an_existing_profile(fxchat, alice_and_bob, relay):
    devices_before = dict(relay.devices)
    code, _, err = fxchat("register", "someone@example.com", profile="alice")
    assert code == cli.EXIT_PROFILE
    assert_one_line_error(err, "already exists")
    assert relay.devices == devices_before


def test_devices_marks_this_device_and_options_work_after_the_command(fxchat, alice_and_bob):
    code, out, _ = fxchat("devices", "--json", profile="bob")
    [device] = json.loads(out)
    assert code == 0 and device["this_device"] is True and device["user"] == "bob@example.com"

    _, out, _ = fxchat("devices", "bob@example.com", profile="alice")
    assert "(this device)" not in out and "bob@example.com" in out


def test_rotate_key_changes_the_published_key(fxchat, alice_and_bob, tmp_path):
    before = load_profile(tmp_path / "bob.json").public_key

    code, out, _ = fxchat("--json", "rotate-key", profile="bob")

    after = load_profile(tmp_path / "bob.json").public_key
    assert code == 0 and before != after
    assert json.loads(out)["public_key"] == crypto.b64encode(after)
    _, out, _ = fxchat("--json", "devices", "bob@example.com", profile="alice")
    assert json.loads(out)[0]["public_key"] == crypto.b64encode(after)


def test_control_characters_from_senders_are_escaped(fxchat, alice_and_bob):
    fxchat("send", "bob@example.com", "\x1b[31mred\u202e", profile="alice")

    _, out, _ = fxchat("inbox", profile="bob")

    assert "\x1b" not in out and "\u202e" not in out
    assert "\\x1b[31mred\\u202e" in out


def test_server_errors_are_one_line_with_status(fxchat, alice_and_bob):
    code, _, err = fxchat("send", "nobody@example.com", "hi", profile="alice")
    assert code == cli.EXIT_REFUSED
    assert_one_line_error(err, "unknown user nobody@example.com", "HTTP 404")


def test_unexpected_errors_are_one_line_unless_debugging(fxchat, alice_and_bob, monkeypatch):
    def broken(self, **kwargs):
        raise RuntimeError("boom\nsecond line")

    monkeypatch.setattr(Client, "fetch", broken)

    code, _, err = fxchat("inbox", profile="bob")
    assert code == cli.EXIT_BUG
    assert_one_line_error(err, "RuntimeError: boom second line", "--debug")
    with pytest.raises(RuntimeError):
        fxchat("--debug", "inbox", profile="bob")
