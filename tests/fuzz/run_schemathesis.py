"""Fuzz every endpoint of a real server with schemathesis, from its own OpenAPI document.

    python -m tests.fuzz.run_schemathesis [--examples N] [--database sqlite|postgresql]

Starts a server on a fresh database, registers a device whose token the
fuzzer sends, and runs ``st run`` with every check that compares responses
with the document, except ``positive_data_acceptance``: some rules (a device
listed twice, a cursor this server did not issue) cannot be said in OpenAPI
2.0, so schema-valid requests may rightly get a 400. Exit status: schemathesis'.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

from tests import databases
from tests.servers import ServerProcess

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
        "negative_data_rejection",
        "use_after_free",
        "ensure_resource_availability",
    ]
)
PUBLIC_KEY = "CsiscM4GgzyDAVA1Ogs6rb_qMWMbW2vKw83cpSBmYAA"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200, help="examples per operation")
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="fxchat-fuzz-") as workdir:
        workdir = Path(workdir)
        if args.database == "postgresql":
            url = databases.create_postgresql_database()
        else:
            url = databases.sqlite_url(workdir)
        try:
            databases.migrate(url)
            server = ServerProcess(workdir, url, runner="pserve")
            server.start()
            try:
                return fuzz(server, args)
            finally:
                server.stop()
                for line in server.log.read_text().splitlines():
                    if '"level": "ERROR"' in line:
                        print("server error:", line[:2000], file=sys.stderr)
        finally:
            if args.database == "postgresql":
                databases.drop_postgresql_database(url)


def fuzz(server: ServerProcess, args) -> int:
    device = requests.post(
        f"{server.url}/v1/accounts",
        timeout=10,
        json={"user": "fuzzer@example.com", "public_key": PUBLIC_KEY},
    ).json()
    st = Path(sys.executable).with_name("st")
    command = [
        str(st),
        "--config-file",
        str(Path(__file__).with_name("schemathesis.toml")),
        "run",
        f"{server.url}/v1/__api__",
        "--header",
        f"Authorization: Bearer {device['token']}",
        "--checks",
        CHECKS,
        "--max-examples",
        str(args.examples),
        "--request-timeout",
        "20",
        "--workers",
        "1",
        "--no-color",
    ]
    if args.seed is not None:
        command += ["--seed", str(args.seed)]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": ""}
    return subprocess.run(command, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
