"""A real fxchat server process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import requests

from .databases import ROOT

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
keys = root

[handlers]
keys = file

[formatters]
keys = json

[logger_root]
level = INFO
handlers = file

[handler_file]
class = FileHandler
args = ({log!r}, "a")
formatter = json

[formatter_json]
class = fxchat.logs.JsonFormatter
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LiveServer:
    """``pserve`` on a generated ini file; ``start``, ``kill``, ``stop``."""

    def __init__(
        self,
        workdir: Path,
        database_url: str,
        *,
        threads: int = 4,
        settings: dict[str, str] | None = None,
    ):
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = workdir / "server.log"
        self.ini = workdir / "server.ini"
        lines = "\n".join(f"{k} = {v}" for k, v in (settings or {}).items())
        self.ini.write_text(
            INI.format(
                url=database_url, settings=lines, port=self.port, threads=threads, log=str(self.log)
            )
        )
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 20) -> None:
        pserve = Path(sys.executable).with_name("pserve")
        # The child keeps its own copy of the file descriptor.
        with open(self.workdir / "server.err", "ab") as stderr:
            self.process = subprocess.Popen(
                [str(pserve), str(self.ini)],
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {(self.workdir / 'server.err').read_text()}")
            try:
                if requests.get(self.url + "/__lbheartbeat__", timeout=1).ok:
                    return
            except requests.ConnectionError:
                time.sleep(0.1)
        raise RuntimeError("server did not start in time")

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
