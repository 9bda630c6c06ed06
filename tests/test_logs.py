"""The JSON log lines."""

import json
import logging
import sys

from fxchat.logs import JsonFormatter


def record(message="request", fields=None, exc_info=None, created=1_800_000_000.25):
    made = logging.LogRecord("fxchat.access", logging.INFO, __file__, 1, message, (), exc_info)
    made.created, made.msecs = created, (created % 1) * 1000
    if fields is not None:
        made.fields = fields
    return made


def test_a_line_is_one_json_object_with_the_fields():
    line = JsonFormatter().format(record(fields={"status": 201, "route": "/v1/messages"}))
    assert "\n" not in line
    assert json.loads(line) == {
        "time": "2027-01-15T08:00:00.250Z",
        "level": "INFO",
        "logger": "fxchat.access",
        "message": "request",
        "status": 201,
        "route": "/v1/messages",
    }


def test_each_line_has_its_own_time():
    formatter = JsonFormatter()
    times = [
        json.loads(formatter.format(record(created=t)))["time"]
        for t in (1_800_000_000.5, 1_800_000_001.0, 1_800_000_000.999)
    ]
    assert times == [
        "2027-01-15T08:00:00.500Z",
        "2027-01-15T08:00:01.000Z",
        "2027-01-15T08:00:00.999Z",
    ]


def test_values_json_cannot_hold_are_written_as_text():
    fields = {"huge": 2**70, "object": object, 7: "non-string key"}
    line = json.loads(JsonFormatter().format(record(fields=fields)))
    assert line["huge"] == 2**70
    assert line["object"] == str(object)
    assert line["7"] == "non-string key"


def test_an_exception_is_in_the_line():
    try:
        raise ValueError("broken")
    except ValueError:
        line = json.loads(JsonFormatter().format(record(exc_info=sys.exc_info())))
    assert "ValueError: broken" in line["exception"]
