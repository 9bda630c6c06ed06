"""WSGI middleware around the whole application, retries included.

It sees each request exactly once: it gives it an id, refuses an oversized
body before anything reads it, adds the headers every response carries
(security, CORS) and writes the one structured access-log line.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import time

logger = logging.getLogger("fxchat.access")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
CORS_METHODS = "GET, POST, PUT, DELETE, OPTIONS"
CORS_HEADERS = "Authorization, Content-Type, Idempotency-Key, X-Request-Id"
CORS_EXPOSED = "Retry-After, X-Request-Id"


def _error(status: str, name: str, description: str, headers=()):
    body = json.dumps(
        {
            "status": "error",
            "errors": [{"location": "body", "name": name, "description": description}],
        }
    ).encode()
    return (
        status,
        [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers],
        body,
    )


class RequestMiddleware:
    def __init__(self, app, *, max_body_bytes: int, cors_origins=()):
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.cors_origins = frozenset(cors_origins)
        # The Pyramid registry, for whoever holds only this WSGI callable.
        self.registry = getattr(app, "registry", None)

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        # CPU of this thread only: what the request itself cost the worker,
        # without its waits (database, locks, fsync) or other requests' turns.
        cpu_started = time.thread_time()
        incoming = environ.get("HTTP_X_REQUEST_ID", "")
        # An id to find the request's log lines by, not a secret: no system
        # call for randomness per request (the random module reseeds after fork).
        request_id = incoming if REQUEST_ID.match(incoming) else f"{random.getrandbits(128):032x}"
        environ["fxchat.request_id"] = request_id
        status_seen = []
        origin = environ.get("HTTP_ORIGIN")

        def start(status, headers, exc_info=None):
            status_seen.append(status)
            headers = [
                (k, v)
                for k, v in headers
                if k.lower() not in ("x-request-id", "x-content-type-options")
            ]
            headers.append(("X-Request-Id", request_id))
            headers.append(("X-Content-Type-Options", "nosniff"))
            headers.append(("Cache-Control", "no-store"))
            if origin in self.cors_origins:
                headers.extend(
                    [
                        ("Access-Control-Allow-Origin", origin),
                        ("Vary", "Origin"),
                        ("Access-Control-Expose-Headers", CORS_EXPOSED),
                    ]
                )
            return start_response(status, headers, exc_info)

        try:
            refusal = self._refuse(environ, origin)
            if refusal is not None:
                status, headers, body = refusal
                start(status, headers)
                return [body]
            return self.app(environ, start)
        finally:
            self._log(environ, status_seen, started, cpu_started, request_id)

    def _refuse(self, environ, origin):
        """An answer given without the application, or None."""
        if environ["REQUEST_METHOD"] == "OPTIONS" and origin in self.cors_origins:
            return (
                "204 No Content",
                [
                    ("Access-Control-Allow-Methods", CORS_METHODS),
                    ("Access-Control-Allow-Headers", CORS_HEADERS),
                    ("Access-Control-Max-Age", "600"),
                ],
                b"",
            )
        length = environ.get("CONTENT_LENGTH") or ""
        if length:
            if not length.isdigit():
                return _error("400 Bad Request", "Content-Length", "not a number")
            if int(length) > self.max_body_bytes:
                return self._too_large()
        elif (
            environ.get("wsgi.input_terminated")
            or "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        ):
            # No length given: read at most one byte past the limit.
            body = environ["wsgi.input"].read(self.max_body_bytes + 1)
            if len(body) > self.max_body_bytes:
                return self._too_large()
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
            environ.pop("wsgi.input_terminated", None)
        return None

    def _too_large(self):
        return _error(
            "413 Request Entity Too Large",
            "body",
            f"the body is larger than {self.max_body_bytes} bytes",
        )

    @staticmethod
    def _log(environ, status_seen, started, cpu_started, request_id) -> None:
        if not logger.isEnabledFor(logging.INFO):
            return
        status = int(status_seen[-1].split()[0]) if status_seen else 500
        # CPU read before wall time, each after its start: cpu_ms <= duration_ms.
        cpu_ms = (time.thread_time() - cpu_started) * 1000
        duration_ms = (time.perf_counter() - started) * 1000
        # The record made and handled directly: Logger.info would first walk
        # the stack for the caller's file and line, which this log never shows.
        record = logger.makeRecord(
            logger.name,
            logging.INFO,
            __file__,
            0,
            "request",
            (),
            None,
            extra={
                "fields": {
                    "request_id": request_id,
                    "method": environ.get("REQUEST_METHOD"),
                    "route": environ.get("fxchat.route") or "",
                    "path": environ.get("PATH_INFO", ""),
                    "status": status,
                    "duration_ms": round(duration_ms, 2),
                    "cpu_ms": round(cpu_ms, 3),
                    "device_id": environ.get("fxchat.device_id"),
                }
            },
        )
        logger.handle(record)
