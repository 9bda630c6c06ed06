"""HTTP to the fxchat server: JSON in and out, timeouts, bounded retries.

Every failure leaves here as a :class:`~fxchat.client.errors.ClientError`;
the rest of the client never sees a ``requests`` exception.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit

import requests
from urllib3.exceptions import NewConnectionError

from .errors import ClientError, DeviceListChanged, ServerUnreachable, Unauthorized

USER_AGENT = "fxchat-client/1"
DEFAULT_TIMEOUT = (5.0, 30.0)  # seconds: connecting, then waiting for each read

# The server did not act on these, so any request may be repeated.
_NOT_PROCESSED = {429, 503}
# A proxy's answers: the server may have acted, so only repeatable requests.
_GATEWAY_ERRORS = {502, 504}


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently to try a request again.

    ``retries`` extra attempts after the first; waits start at ``backoff``
    seconds and double, or follow the server's ``Retry-After``; a wait longer
    than ``max_wait`` is not worth it and the error is raised instead.
    """

    retries: int = 3
    backoff: float = 0.5
    max_wait: float = 30.0


def path_segment(value: str) -> str:
    """Quote a user or device id for use as one URL path segment."""
    return quote(value, safe="")


class Transport:
    """A JSON session with one server, optionally authenticated by a token."""

    def __init__(
        self,
        server: str,
        *,
        token: str | None = None,
        timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = None,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.server = normalize_server_url(server)
        self._token = token
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._session = session or requests.Session()
        self._sleep = sleep

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        repeatable: bool = True,
    ) -> Any:
        """Send a request and return the decoded JSON answer (``None`` if empty).

        ``repeatable`` says whether the request may be sent again after the
        server might already have acted on it (a lost answer); when false,
        only failures that prove the server did nothing are retried.
        """
        # Serialized once: an idempotent retry must repeat the body byte for byte.
        data = None if body is None else json.dumps(body, separators=(",", ":")).encode()
        all_headers = {"Accept": "application/json", "User-Agent": USER_AGENT}
        if data is not None:
            all_headers["Content-Type"] = "application/json"
        if self._token is not None:
            all_headers["Authorization"] = f"Bearer {self._token}"
        all_headers.update(headers or {})
        url = self.server + path

        for attempt in range(self._retry.retries + 1):
            is_last = attempt == self._retry.retries
            try:
                response = self._session.request(
                    method,
                    url,
                    data=data,
                    params=params,
                    headers=all_headers,
                    timeout=self._timeout,
                    allow_redirects=False,
                )
            except (requests.ConnectionError, requests.Timeout) as exc:
                if is_last or not (repeatable or _never_reached_server(exc)):
                    raise ServerUnreachable(
                        f"cannot reach {self.server}: {_network_reason(exc)}"
                    ) from None
                self._sleep(self._backoff(attempt))
                continue
            except requests.RequestException as exc:
                raise ClientError(f"request to {self.server} failed: {exc}") from None

            if not is_last and self._may_retry(response.status_code, repeatable):
                wait = _retry_after(response)
                wait = self._backoff(attempt) if wait is None else wait
                if wait <= self._retry.max_wait:
                    response.close()
                    self._sleep(wait)
                    continue
            return _decode_answer(response)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _may_retry(self, status: int, repeatable: bool) -> bool:
        return status in _NOT_PROCESSED or (repeatable and status in _GATEWAY_ERRORS)

    def _backoff(self, attempt: int) -> float:
        # Jitter keeps many clients that failed together from retrying together.
        wait = self._retry.backoff * 2**attempt * random.uniform(0.8, 1.2)
        return min(wait, self._retry.max_wait)


def normalize_server_url(server: str) -> str:
    """Return ``server`` without a trailing slash, or raise if it is not http(s)."""
    parts = urlsplit(server)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ClientError(f"server URL must look like http://host:port, not {server!r}")
    return server.rstrip("/")


def _decode_answer(response: requests.Response) -> Any:
    status = response.status_code
    if 200 <= status < 300:
        if status == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise ClientError("the server's answer is not JSON", status=status) from None
    raise _error_from(response)


def _error_from(response: requests.Response) -> ClientError:
    """The exception for an error answer, described from its JSON body."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        body = {}
    errors = [e for e in body.get("errors") or [] if isinstance(e, dict)]
    description = "; ".join(_describe(e) for e in errors) or (
        f"{response.reason or 'error'}".strip()
    )
    retry_after = _retry_after(response)
    if status == 429 and retry_after is not None:
        description += f"; retry after {retry_after:.0f} s"
    if status == 401:
        return Unauthorized(description, status=status, errors=errors)
    if status == 409 and ("missing_devices" in body or "extra_devices" in body):
        return DeviceListChanged(
            description,
            status=status,
            errors=errors,
            missing=_device_pairs(body.get("missing_devices")),
            extra=_device_pairs(body.get("extra_devices")),
        )
    return ClientError(description, status=status, errors=errors)


def _describe(error: dict) -> str:
    name, description = error.get("name"), error.get("description")
    if name and description:
        return f"{name}: {description}"
    return str(description or name or "error")


def _device_pairs(items: Any) -> list[tuple[str, str]]:
    if not isinstance(items, list):
        return []
    return [
        (item.get("user", ""), item.get("device_id", ""))
        for item in items
        if isinstance(item, dict)
    ]


def _retry_after(response: requests.Response) -> float | None:
    """Seconds the server asks us to wait (delta-seconds or HTTP-date form)."""
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _never_reached_server(exc: requests.RequestException) -> bool:
    """True when the request surely was not received, so repeating it is safe."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def _network_reason(exc: BaseException) -> str:
    """A short human reason such as 'connection refused', from an exception chain."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    seen: set[int] = set()
    pending: list[object] = [exc]
    while pending:
        current = pending.pop(0)
        if not isinstance(current, BaseException) or id(current) in seen:
            continue
        seen.add(id(current))
        strerror = getattr(current, "strerror", None)
        if isinstance(strerror, str) and strerror:
            return strerror[0].lower() + strerror[1:]
        pending += [current.__cause__, current.__context__, getattr(current, "reason", None)]
        pending += list(current.args)
    return "connection failed"
