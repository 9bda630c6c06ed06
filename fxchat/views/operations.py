"""Dockerflow endpoints: heartbeats and version; the OpenAPI document."""

from __future__ import annotations

import json
import logging
import os
import subprocess
from importlib import metadata

from cornice import Service
from sqlalchemy import text

from ..schemas.responses import (
    EmptyBody,
    HeartbeatBody,
    RetryAfter,
    VersionBody,
    response,
)

logger = logging.getLogger(__name__)

heartbeat = Service(
    name="heartbeat",
    path="/__heartbeat__",
    description="Is the server able to serve? Checks the database",
)
lbheartbeat = Service(
    name="lbheartbeat", path="/__lbheartbeat__", description="Is the process up? For load balancers"
)
version = Service(
    name="version", path="/__version__", description="Name, version and commit of the running code"
)


@heartbeat.get(
    response_schemas={
        "200": response(HeartbeatBody, "The database answers"),
        "503": response(HeartbeatBody, "The database does not answer", RetryAfter),
    }
)
def get_heartbeat(request):
    engine = request.registry["db_engine"]
    try:
        # Its own short connection, outside the request's transaction, so a
        # dead database is reported rather than raised.
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        # One line: load balancers poll this during an outage.
        logger.warning("heartbeat: database unreachable: %s", type(error).__name__)
        request.response.status_code = 503
        request.response.headers["Retry-After"] = "5"
        return {"database": "error"}
    return {"database": "ok"}


@lbheartbeat.get(response_schemas={"200": response(EmptyBody, "The process is up")})
def get_lbheartbeat(request):
    return {}


@version.get(response_schemas={"200": response(VersionBody, "What is running")})
def get_version(request):
    return request.registry["fxchat.version"]


def read_version(version_file: str) -> dict:
    """``version.json`` if configured, else the package version and git commit."""
    if version_file:
        with open(version_file) as f:
            return json.load(f)
    here = os.path.dirname(os.path.abspath(__file__))
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    try:
        package_version = metadata.version("fxchat")
    except metadata.PackageNotFoundError:
        package_version = "unknown"
    return {
        "name": "fxchat",
        "version": package_version,
        "commit": commit or "unknown",
        "source": "https://github.com/fxchat/fxchat",
    }
