"""production.ini, as shipped, starts a multi-worker server that serves the API.

Both documented ways are started: the gunicorn command line from the
file's header, and ``pserve`` with its ``[server:main]``. Only the database,
the port, the rate-limit storage (no Redis needed) and the log destination
are changed.
"""

from __future__ import annotations

import configparser
import secrets
import shlex
from pathlib import Path

import pytest
import requests

from ..databases import ROOT
from ..servers import BIN, ServerProcess
from .checks import assert_clean_logs, assert_no_server_errors
from .devices import envelope, register

pytestmark = pytest.mark.slow

PRODUCTION_INI = ROOT / "production.ini"


def read_production_ini() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.optionxform = str  # keep the keys' case
    parser.read(PRODUCTION_INI)
    return parser


def documented_gunicorn_command() -> list[str]:
    """The gunicorn command line given in production.ini's header."""
    for line in PRODUCTION_INI.read_text().splitlines():
        command = line.lstrip("# ")
        if command.startswith(".venv/bin/gunicorn "):
            return shlex.split(command)
    raise AssertionError("production.ini names no gunicorn command")


class ProductionServer(ServerProcess):
    """production.ini with the test's database, port and log file."""

    def __init__(self, workdir: Path, database_url: str, *, runner: str):
        self.configured_workers = int(read_production_ini()["server:main"]["workers"])
        super().__init__(workdir, database_url, runner=runner, workers=self.configured_workers)

    @property
    def has_workers(self) -> bool:
        return True  # pserve, too, runs gunicorn here

    def write_ini(self, log: Path) -> None:
        parser = read_production_ini()
        parser["app:main"]["sqlalchemy.url"] = self.database_url
        parser["app:main"]["fxchat.ratelimit.url"] = "memory://"
        parser["server:main"]["bind"] = f"127.0.0.1:{self.port}"
        parser["handler_console"]["class"] = "FileHandler"
        parser["handler_console"]["args"] = f"({str(log)!r}, 'a')"
        with open(self.ini, "w") as f:
            parser.write(f)

    def command(self) -> list[str]:
        if self.runner == "pserve":
            return [str(BIN / "pserve"), str(self.ini)]
        command = documented_gunicorn_command()
        command[0] = str(BIN / "gunicorn")
        command[command.index("production.ini")] = str(self.ini)
        command[command.index("--bind") + 1] = f"127.0.0.1:{self.port}"
        return command


@pytest.mark.parametrize("runner", ["gunicorn", "pserve"])
def test_production_ini_serves_with_several_workers(
    runner, fresh_postgresql_url, tmp_path, exchanges
):
    server = ProductionServer(tmp_path, fresh_postgresql_url, runner=runner)
    server.start()
    try:
        assert len(server.worker_pids()) == server.configured_workers > 1
        alice = register(server.url, f"alice-{secrets.token_hex(3)}@example.com", exchanges)
        bob = register(server.url, f"bob-{secrets.token_hex(3)}@example.com", exchanges)
        sent = alice.send(envelope({bob.address}))
        assert sent.status_code == 201, sent.text
        [message] = bob.fetch_all()
        assert message["id"] == sent.json()["id"]
        assert bob.ack([message["id"]]).json()["acked"] == [message["id"]]
        assert requests.get(server.url + "/__heartbeat__", timeout=5).status_code == 200
    finally:
        server.stop()
    assert_no_server_errors(exchanges)
    records = server.log_records()
    assert_clean_logs(server, records=records)
    loggers = {r["logger"] for r in records}
    assert {"gunicorn.error", "fxchat.access"} <= loggers, loggers
    # Everything the server says goes through the JSON log, but for pserve's
    # own words: its start, and each gunicorn process's exit passing through it.
    stray = [
        line
        for line in server.stderr_text().splitlines()
        if line.strip() and not line.startswith(("Starting server in PID", "Exiting 0"))
    ]
    assert not stray, stray
