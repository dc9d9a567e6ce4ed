"""Log lines for machines (JSON, the default) and for people (the demo's console format).

Both carry the correlation id of the work in hand, and the fields a line was logged with
(``extra={"posting_id": ..., "connection": ..., "outcome": ...}``): as keys in JSON, as
``key=value`` after the message on the console.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

from apps.core.correlation import get_correlation_id

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "correlation_id", "taskName"}


def _extras(record: logging.LogRecord) -> dict[str, object]:
    return {key: value for key, value in vars(record).items() if key not in _STANDARD and not key.startswith("_")}


class CorrelationIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "correlation_id", ""):
            record.correlation_id = get_correlation_id() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line; extra= fields (posting_id, connection, outcome...) become keys."""

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "correlation_id": getattr(record, "correlation_id", "-"),
        }
        payload.update(_extras(record))
        if record.exc_info:
            payload["exc"] = self.formatException(record.exc_info)
        return json.dumps(payload, default=str)


class ConsoleFormatter(logging.Formatter):
    """The human-readable line: ``<time> <level> <logger> [<correlation id>] <message> key=value ...``."""

    def __init__(self, fmt: str | None = None, datefmt: str | None = None) -> None:
        super().__init__(fmt or "%(asctime)s %(levelname)s %(name)s [%(correlation_id)s] %(message)s", datefmt)

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "correlation_id"):
            record.correlation_id = get_correlation_id() or "-"
        line = super().format(record)
        extras = _extras(record)
        if record.name.startswith("celery."):
            extras.pop("data", None)  # Celery's structured copy of what its message already says
        fields = " ".join(f"{key}={value}" for key, value in extras.items())
        if not fields:
            return line
        head, newline, rest = line.partition("\n")  # a traceback stays below the fields
        return f"{head} {fields}{newline}{rest}"
