"""``SSHCONTROL_LOG_FORMAT=json``: one JSON object per log line, for log shippers.

Loaded by Django's logging configuration before the apps are ready, so it imports nothing
of Django. A record's ``call`` extra (``sshcontrol.calllog``) becomes top-level fields.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        call = getattr(record, "call", None)
        if isinstance(call, dict):
            entry.update(call)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)
