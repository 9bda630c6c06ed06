"""The ``fxchat`` command line: a thin shell over :class:`fxchat.client.Client`.

Every failure becomes one line on stderr and an exit code from the table
below (documented in docs/client.rst); a traceback means a bug, and is only
shown with ``--debug``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .api import Client
from .errors import ClientError, ProfileError, ServerUnreachable, Unauthorized
from .profile import default_profile_path
from .transport import RetryPolicy
from .view import Printer

EXIT_OK = 0
EXIT_REFUSED = 1  # the server refused the request (or another client error)
EXIT_USAGE = 2  # a bad command line; also argparse's own code
EXIT_UNREACHABLE = 3  # no answer from the server, retries included
EXIT_UNAUTHORIZED = 4  # 401: unknown token, e.g. the device was deleted
EXIT_PROFILE = 5  # the profile file is missing, malformed, too open or in the way
EXIT_UNVERIFIED = 6  # inbox: a message failed to decrypt or verify
EXIT_BUG = 70  # EX_SOFTWARE: an unexpected error, i.e. a bug
EXIT_INTERRUPTED = 130

DEFAULT_SERVER = "http://127.0.0.1:6543"


class UsageError(Exception):
    """A command line that parses but makes no sense (exit code 2)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``fxchat`` command line; return the process exit code."""
    parser = build_parser()
    try:
        args, extras = parser.parse_known_args(argv)
        # argparse stops a "+" positional at the first option: `send bob --ttl 60 hi`.
        if extras and args.run is run_send and not any(e.startswith("-") for e in extras):
            args.targets += extras
        elif extras:
            parser.error(f"unrecognized arguments: {' '.join(extras)}")
    except SystemExit as exit_request:  # --help, or a usage error already printed
        return exit_request.code if isinstance(exit_request.code, int) else EXIT_USAGE
    printer = Printer(as_json=args.json)
    try:
        return args.run(args, printer)
    except UsageError as exc:
        return printer.fail(str(exc), EXIT_USAGE)
    except ProfileError as exc:
        return printer.fail(str(exc), EXIT_PROFILE)
    except Unauthorized as exc:
        reason = "the server does not accept this device's token (was it deleted?)"
        return printer.fail(f"{reason}: {exc}", EXIT_UNAUTHORIZED)
    except ServerUnreachable as exc:
        return printer.fail(str(exc), EXIT_UNREACHABLE)
    except ClientError as exc:
        return printer.fail(str(exc), EXIT_REFUSED)
    except KeyboardInterrupt:
        return printer.fail("interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # the last resort of the promise "never a traceback"
        if args.debug:
            raise
        return printer.fail(f"internal error: {type(exc).__name__}: {exc} (see --debug)", EXIT_BUG)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; global options work before or after the command."""
    parser = argparse.ArgumentParser(
        prog="fxchat",
        description="End-to-end-encrypted chat over an fxchat relay.",
        epilog="Exit codes: 0 ok, 1 refused by the server, 2 usage, 3 server "
        "unreachable, 4 device not authorized, 5 profile problem, 6 a received "
        "message failed verification, 70 internal error.",
    )
    _add_global_options(parser, defaults=True)
    # Repeated on each command with SUPPRESS, so they only count when given there.
    common = argparse.ArgumentParser(add_help=False)
    _add_global_options(common, defaults=False)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", required=True)

    def command(name: str, run: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, parents=[common], help=help_text, description=help_text)
        sub.set_defaults(run=run)
        return sub

    register = command("register", run_register, "Create an account; this is its first device.")
    register.add_argument("user", metavar="USER", help="your user id (e-mail or phone)")
    register.add_argument("--name", help="a label for this device")

    add_device = command(
        "add-device",
        run_add_device,
        "Create another device of your user; its profile goes to --profile.",
    )
    add_device.add_argument(
        "--from",
        dest="from_profile",
        metavar="PATH",
        required=True,
        help="profile of an existing device of the user, which authorizes the new one",
    )
    add_device.add_argument("--name", help="a label for the new device")

    devices = command("devices", run_devices, "List a user's devices (default: yours).")
    devices.add_argument("user", metavar="USER", nargs="?")

    send = command(
        "send",
        run_send,
        "Send a message to every device of one or more users. The last "
        "argument is the text when there are two or more; with one argument, "
        "or with TEXT '-', the text is read from stdin.",
    )
    send.usage = "%(prog)s [options] USER [USER ...] [TEXT | -]"
    send.add_argument(
        "targets", metavar="USER... TEXT", nargs="+", help="recipients, then the text"
    )
    send.add_argument("--ttl", type=int, metavar="SECONDS", help="keep it queued this long")

    inbox = command(
        "inbox",
        run_inbox,
        "Fetch, decrypt and verify queued messages, print them and acknowledge them.",
    )
    inbox.add_argument("--keep", action="store_true", help="do not acknowledge anything")
    inbox.add_argument("--page-size", type=int, metavar="N", help="messages per request")

    receipts = command("receipts", run_receipts, "Show what became of a message you sent.")
    receipts.add_argument("message_id", metavar="ID")

    command("rotate-key", run_rotate_key, "Give this device a new key pair.")

    delete = command(
        "delete-device",
        run_delete_device,
        "Delete a device of your user (default: this one, and then its profile too).",
    )
    delete.add_argument("device_id", metavar="DEVICE_ID", nargs="?")
    return parser


def _add_global_options(parser: argparse.ArgumentParser, *, defaults: bool) -> None:
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    parser.add_argument(
        "--server",
        metavar="URL",
        default=default(None),
        help="server URL; for register, default $FXCHAT_SERVER or "
        f"{DEFAULT_SERVER}; otherwise the profile's server unless given here",
    )
    parser.add_argument(
        "--profile",
        metavar="PATH",
        default=default(None),
        help="this device's profile; default $FXCHAT_PROFILE or "
        "$XDG_CONFIG_HOME/fxchat/profile.json",
    )
    parser.add_argument(
        "--json", action="store_true", default=default(False), help="print JSON for scripts"
    )
    parser.add_argument(
        "--retries",
        type=int,
        metavar="N",
        default=default(RetryPolicy.retries),
        help=f"extra attempts after a network error, 429 or 503 (default {RetryPolicy.retries})",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        metavar="SECONDS",
        default=default(None),
        help="network timeout per attempt (default 5 to connect, 30 to read)",
    )
    parser.add_argument(
        "--debug", action="store_true", default=default(False), help="show tracebacks"
    )


# -- commands ----------------------------------------------------------------


def run_register(args: argparse.Namespace, printer: Printer) -> int:
    server = args.server or os.environ.get("FXCHAT_SERVER") or DEFAULT_SERVER
    path = _profile_path(args)
    client = Client.register(
        server, args.user, name=args.name, profile_path=path, **_transport_options(args)
    )
    printer.new_device("Registered", client.profile, path)
    return EXIT_OK


def run_add_device(args: argparse.Namespace, printer: Printer) -> int:
    source_path = Path(args.from_profile).expanduser()
    path = _profile_path(args)
    if path.resolve() == source_path.resolve():
        raise UsageError(
            "add-device writes the new device's profile to --profile, which must "
            f"differ from --from ({path})"
        )
    source = Client.from_profile_file(source_path, server=args.server, **_transport_options(args))
    new = source.add_device(name=args.name, profile_path=path)
    printer.new_device("Added", new.profile, path)
    return EXIT_OK


def run_devices(args: argparse.Namespace, printer: Printer) -> int:
    client = _client(args)
    printer.devices(client.devices(args.user), this=client.profile)
    return EXIT_OK


def run_send(args: argparse.Namespace, printer: Printer) -> int:
    users, text = _split_send_targets(args.targets)
    message = _read_stdin() if text is None else text.encode("utf-8", "surrogateescape")
    if not message:
        raise UsageError("nothing to send: the message is empty")
    if args.ttl is not None and args.ttl <= 0:
        raise UsageError("--ttl must be a positive number of seconds")
    sent = _client(args).send(users, message, ttl=args.ttl)
    printer.sent(sent)
    return EXIT_OK


def run_inbox(args: argparse.Namespace, printer: Printer) -> int:
    if args.page_size is not None and args.page_size <= 0:
        raise UsageError("--page-size must be positive")
    client = _client(args)
    messages = client.fetch(page_size=args.page_size)
    acked: list[str] = []
    failed_ack = None
    if messages and not args.keep:
        # Refused messages are acknowledged too (without a mac_key), so each is
        # reported once rather than at every run until it expires.
        try:
            acked = client.acknowledge(messages).acked
        except ClientError as exc:
            failed_ack = exc  # still print: shown twice beats lost
    printer.inbox(messages, acked)
    if failed_ack is not None:
        raise failed_ack
    return EXIT_OK if all(m.verified for m in messages) else EXIT_UNVERIFIED


def run_receipts(args: argparse.Namespace, printer: Printer) -> int:
    printer.receipts(args.message_id, _client(args).receipts(args.message_id))
    return EXIT_OK


def run_rotate_key(args: argparse.Namespace, printer: Printer) -> int:
    client = _client(args)
    public_key = client.rotate_key()
    printer.rotated(client.profile.device_id, public_key)
    return EXIT_OK


def run_delete_device(args: argparse.Namespace, printer: Printer) -> int:
    client = _client(args)
    device_id = args.device_id or client.profile.device_id
    client.delete_device(device_id)
    printer.deleted(device_id, profile_removed=device_id == client.profile.device_id)
    return EXIT_OK


# -- helpers -----------------------------------------------------------------


def _profile_path(args: argparse.Namespace) -> Path:
    explicit = args.profile or os.environ.get("FXCHAT_PROFILE")
    return Path(explicit).expanduser() if explicit else default_profile_path()


def _transport_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.retries < 0:
        raise UsageError("--retries cannot be negative")
    options: dict[str, Any] = {"retry": RetryPolicy(retries=args.retries)}
    if args.timeout is not None:
        if args.timeout <= 0:
            raise UsageError("--timeout must be positive")
        options["timeout"] = args.timeout
    return options


def _client(args: argparse.Namespace) -> Client:
    path = _profile_path(args)
    try:
        return Client.from_profile_file(path, server=args.server, **_transport_options(args))
    except ProfileError as exc:
        if not path.exists():
            raise ProfileError(
                f"{exc}; create one with `fxchat register USER` or choose one with --profile"
            ) from None
        raise


def _split_send_targets(targets: list[str]) -> tuple[list[str], str | None]:
    """``(users, text)``; text ``None`` means stdin (see the send command's help)."""
    if len(targets) == 1:
        return targets, None
    users, text = targets[:-1], targets[-1]
    return users, None if text == "-" else text


def _read_stdin() -> bytes:
    if sys.stdin.isatty():
        print("Type the message, then Ctrl-D on a line of its own.", file=sys.stderr)
    data = sys.stdin.buffer.read()
    # Like a shell's $(...): `echo hi | fxchat send bob` sends "hi", not "hi\n".
    if data.endswith(b"\r\n"):
        return data[:-2]
    return data[:-1] if data.endswith(b"\n") else data


if __name__ == "__main__":
    sys.exit(main())
