"""Operations (PROTOCOL.md §3.8): Dockerflow endpoints and the OpenAPI document."""

from __future__ import annotations

import json
import re
from importlib import metadata

import webtest

from fxchat import main

from ..conftest import TEST_SETTINGS
from .checks import assert_json_error

API_OPERATIONS = {
    ("/v1/accounts", "post"),
    ("/v1/devices", "post"),
    ("/v1/users/{user}/devices", "get"),
    ("/v1/devices/{device_id}/key", "put"),
    ("/v1/devices/{device_id}", "delete"),
    ("/v1/messages", "post"),
    ("/v1/messages", "get"),
    ("/v1/messages/ack", "post"),
    ("/v1/messages/{id}/receipts", "get"),
}
OPERATIONS = {
    ("/__heartbeat__", "get"),
    ("/__lbheartbeat__", "get"),
    ("/__version__", "get"),
    ("/v1/__api__", "get"),
}
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch"}


def test_heartbeat(app):
    response = app.get("/__heartbeat__", status=200)
    assert response.json == {"database": "ok"}
    assert response.content_type == "application/json"


def app_without_database(tmp_path) -> webtest.TestApp:
    url = f"sqlite:///{tmp_path / 'no-such-directory' / 'fxchat.sqlite'}"
    return webtest.TestApp(main({}, **{"sqlalchemy.url": url, **TEST_SETTINGS}))


def test_heartbeat_is_503_when_the_database_does_not_answer(tmp_path):
    app = app_without_database(tmp_path)
    response = app.get("/__heartbeat__", status=503)
    assert response.json == {"database": "error"}
    assert int(response.headers["Retry-After"]) >= 1
    # The process itself is up, and says so.
    assert app.get("/__lbheartbeat__", status=200).json == {}
    app.app.registry["db_engine"].dispose()


def test_api_answers_503_when_the_database_does_not_answer(tmp_path):
    app = app_without_database(tmp_path)
    refused = app.post_json(
        "/v1/accounts", {"user": "alice@example.com", "public_key": "A" * 43}, status="*"
    )
    app.app.registry["db_engine"].dispose()
    assert_json_error(refused, 503)
    assert int(refused.headers["Retry-After"]) >= 1


def test_lbheartbeat(shared_app):
    response = shared_app.get("/__lbheartbeat__", status=200)
    assert response.json == {}


def test_version(shared_app):
    version = shared_app.get("/__version__", status=200).json
    assert {"name", "version", "commit"} <= set(version)
    assert version["name"] == "fxchat"
    assert version["version"] == metadata.version("fxchat")
    assert isinstance(version["commit"], str) and version["commit"]


def test_version_from_a_version_file(make_app, tmp_path):
    served = {"name": "fxchat", "version": "1.2.3", "commit": "0" * 40, "build": "ci-7"}
    path = tmp_path / "version.json"
    path.write_text(json.dumps(served))
    app = make_app(version_file=str(path))
    assert app.get("/__version__", status=200).json == served


def test_operations_need_no_token(shared_app):
    for path, _ in OPERATIONS:
        shared_app.get(path, status=200)


def openapi(app) -> dict:
    response = app.get("/v1/__api__", status=200)
    assert response.content_type == "application/json"
    return response.json


def operations(document) -> set[tuple[str, str]]:
    return {
        (path, method)
        for path, item in document["paths"].items()
        for method in item
        if method in HTTP_METHODS
    }


def test_openapi_document_lists_every_path_and_method(shared_app):
    document = openapi(shared_app)
    assert document.get("swagger") == "2.0" or str(document.get("openapi", "")).startswith("3.")
    assert document["info"]["title"]
    assert operations(document) == API_OPERATIONS | OPERATIONS


def test_openapi_document_marks_authenticated_operations(shared_app):
    document = openapi(shared_app)
    secured = {
        (path, method)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in HTTP_METHODS and operation.get("security")
    }
    assert secured == API_OPERATIONS - {("/v1/accounts", "post")}


def test_openapi_document_declares_every_path_parameter(shared_app):
    document = openapi(shared_app)
    for path, item in document["paths"].items():
        in_path = set(re.findall(r"\{(\w+)\}", path))
        for method, operation in item.items():
            if method not in HTTP_METHODS:
                continue
            parameters = item.get("parameters", []) + operation.get("parameters", [])
            declared = {p["name"] for p in parameters if p.get("in") == "path"}
            assert declared == in_path, (path, method)


def test_openapi_document_states_the_configured_limits(make_app):
    document = openapi(make_app(max_page_size=7))
    [limit] = [
        p for p in document["paths"]["/v1/messages"]["get"]["parameters"] if p["name"] == "limit"
    ]
    assert limit.get("maximum") == 7
