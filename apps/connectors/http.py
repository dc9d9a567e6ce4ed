"""What every HTTP connector reads the same way from ``requests``: whether a failed connection
sent nothing at all, and how long the ERP asks us to wait."""

from __future__ import annotations

from collections.abc import Mapping

import requests

# A connection that was never made: nothing reached the ERP, so a retry cannot duplicate anything.
_NOT_CONNECTED = ("NewConnectionError", "Connection refused", "NameResolutionError", "Name or service not known")


def connection_refused(exc: requests.ConnectionError) -> bool:
    text = repr(exc)
    return any(marker in text for marker in _NOT_CONNECTED)


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """``Retry-After`` in seconds, when the answer has a readable one."""
    value = headers.get("Retry-After", "") if headers is not None else ""
    try:
        return float(value) if value else None
    except ValueError:
        return None
