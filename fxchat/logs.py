"""JSON log lines: one object per line, for log shippers.

Records may carry structured data in ``extra={"fields": {...}}``. Nothing
here ever sees a request body or a token: callers pass only what they chose.
"""

from __future__ import annotations

import json
import logging
import time

import orjson


class JsonFormatter(logging.Formatter):
    # Every request writes a line: orjson takes a third of the standard
    # library's time, and the timestamp's seconds are formatted once a second.
    _last_second: tuple[int, str] = (-1, "")

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": f"{self._utc_second(int(record.created))}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if fields:
            line.update(fields)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        try:
            return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
        except orjson.JSONEncodeError:
            # What orjson refuses and the standard library writes (integers
            # beyond 64 bits): a log line is never lost to its encoding.
            return json.dumps(line, default=str)

    def _utc_second(self, second: int) -> str:
        # One tuple, replaced whole: threads never see one second's text for another.
        last, text = self._last_second
        if second != last:
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._last_second = (second, text)
        return text
