"""Real fxchat server processes for end-to-end and system tests, and their fresh databases.

A :class:`ServerProcess` writes an ini file for its database, starts the
server in its own process group (so that one signal reaches the arbiter and
all its workers), waits until it answers, and can be killed with SIGKILL and
started again on the same database and port. Each start logs JSON lines to
its own file; :func:`unexpected_log_records` reads them back for the tests.

The server runs the code of the tree the tests come from (``PYTHONPATH``),
whatever the virtualenv's editable install points at.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import requests

from . import databases
from .databases import ROOT

BIN = Path(sys.executable).parent

# Rate limits and the purger thread would make the tests depend on timing;
# each has its own tests.
SYSTEM_TEST_SETTINGS = {
    "fxchat.ratelimit.enabled": "false",
    "fxchat.purge_interval": "0",
}

INI = """\
[app:main]
use = egg:fxchat
sqlalchemy.url = {url}
{settings}

[server:main]
use = egg:waitress#main
listen = 127.0.0.1:{port}
threads = {threads}

[loggers]
keys = root, sqlalchemy, gunicorn_error

[handlers]
keys = file

[formatters]
keys = json

[logger_root]
level = INFO
handlers = file

[logger_sqlalchemy]
level = WARN
handlers =
qualname = sqlalchemy.engine

[logger_gunicorn_error]
level = INFO
handlers = file
propagate = 0
qualname = gunicorn.error

[handler_file]
class = FileHandler
args = ({log!r}, "a")
formatter = json

[formatter_json]
class = fxchat.logs.JsonFormatter
"""


@contextlib.contextmanager
def postgresql_database(config: pytest.Config) -> Iterator[str]:
    """A new, migrated PostgreSQL database, dropped afterwards; skips where there is none."""
    if config.getoption("--sqlite-only"):
        pytest.skip("--sqlite-only")
    try:
        url = databases.create_postgresql_database()
    except databases.PostgreSQLUnavailable as error:
        if databases.REQUIRE_POSTGRESQL:
            pytest.fail(f"PostgreSQL is required (FXCHAT_REQUIRE_POSTGRESQL=1): {error}")
        pytest.skip(f"PostgreSQL tests skipped: {error}")
    try:
        databases.migrate(url)
        yield url
    finally:
        databases.drop_postgresql_database(url)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_pids(pid: int) -> set[int]:
    """The direct children of a process (gunicorn's workers, for its arbiter)."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return set()
    return {int(p) for p in text.split()}


class ServerProcess:
    """One fxchat server on a loopback port: ``start``, ``kill``, ``stop``.

    ``runner="gunicorn"`` runs ``gunicorn --paste`` with ``workers`` processes
    of ``threads`` threads each; ``runner="pserve"`` runs one waitress process.
    """

    def __init__(
        self,
        workdir: Path,
        database_url: str,
        *,
        runner: str = "gunicorn",
        workers: int = 3,
        threads: int = 4,
        settings: dict[str, str] | None = None,
    ):
        assert runner in ("gunicorn", "pserve")
        self.workdir = workdir
        self.runner = runner
        self.workers = workers
        self.threads = threads
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ini = workdir / "server.ini"
        self.stderr = workdir / "server.err"
        self.database_url = database_url
        self.settings = {**SYSTEM_TEST_SETTINGS, **(settings or {})}
        self.process: subprocess.Popen | None = None
        self.logs: list[Path] = []

    @property
    def log(self) -> Path:
        """The log file of the current (or last) start."""
        return self.logs[-1]

    def command(self) -> list[str]:
        if self.runner == "pserve":
            return [str(BIN / "pserve"), str(self.ini)]
        return [
            str(BIN / "gunicorn"),
            "--paste",
            str(self.ini),
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--worker-class",
            "gthread",
            "--threads",
            str(self.threads),
            "--timeout",
            "30",
            "--graceful-timeout",
            "5",
            # Its default path is per account: parallel test servers would share it.
            "--no-control-socket",
        ]

    def write_ini(self, log: Path) -> None:
        lines = "\n".join(f"{k} = {v}" for k, v in self.settings.items())
        self.ini.write_text(
            INI.format(
                url=self.database_url,
                settings=lines,
                port=self.port,
                threads=self.threads,
                log=str(log),
            )
        )

    def start(self, timeout: float = 30) -> None:
        program = Path(self.command()[0])
        if not program.exists():
            pytest.fail(f"{program.name} is not installed in {BIN} (pip install {program.name})")
        log = self.workdir / f"server-{len(self.logs) + 1}.log"
        self.logs.append(log)
        self.write_ini(log)
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        with open(self.stderr, "ab") as stderr:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        self._wait_until_serving(timeout)

    def _wait_until_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.stderr.read_text()[-3000:]}")
            try:
                answered = requests.get(self.url + "/__lbheartbeat__", timeout=2).ok
            except requests.RequestException:
                answered = False
            if answered and (not self.has_workers or len(self.worker_pids()) == self.workers):
                return
            time.sleep(0.1)
        self.kill()
        raise RuntimeError(
            f"server did not start in {timeout} s:\n{self.stderr.read_text()[-3000:]}"
        )

    @property
    def has_workers(self) -> bool:
        """Whether the started process is a master that forks workers (gunicorn)."""
        return self.runner == "gunicorn"

    def worker_pids(self) -> set[int]:
        """The processes that serve requests: gunicorn's workers, or waitress itself."""
        if self.process is None or self.process.poll() is not None:
            return set()
        if not self.has_workers:
            return {self.process.pid}
        return child_pids(self.process.pid)

    def kill(self) -> None:
        """SIGKILL to the whole process group: no worker gets to clean up."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill()

    def log_records(self, logs: Iterable[Path] | None = None) -> list[dict]:
        return [record for log in (self.logs if logs is None else logs) for record in read_log(log)]

    def stderr_text(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""


def read_log(path: Path, offset: int = 0) -> list[dict]:
    """The JSON records of a log file from ``offset``; other lines as ``RAW`` records.

    A last line without its newline (a process killed mid-write) is skipped.
    """
    if not path.exists():
        return []
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    records = []
    for line in data.split(b"\n")[:-1]:
        text = line.decode("utf-8", errors="replace")
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            record = {"level": "RAW", "logger": "", "message": text}
        records.append(record)
    return records


def unexpected_log_records(
    records: Iterable[dict], *, allowed_tracebacks: Iterable[str] = ()
) -> list[dict]:
    """Records that show a bug or a crash: errors, non-JSON lines, unexpected tracebacks.

    ``allowed_tracebacks`` names loggers whose warnings may carry a traceback
    in the test at hand (the heartbeat's, while the database is cut).
    """
    allowed = set(allowed_tracebacks)
    return [
        r
        for r in records
        if r.get("level") in ("ERROR", "CRITICAL", "RAW")
        or ("exception" in r and r.get("logger") not in allowed)
    ]


def describe(records: list[dict], limit: int = 5) -> str:
    return "\n".join(json.dumps(r)[:3000] for r in records[:limit])
