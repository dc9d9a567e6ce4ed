"""Connector classes by ERP kind, and one live connector per connection per process (a login
per posting would cost more than the posting)."""

from __future__ import annotations

import importlib
import json
import threading
from typing import Any

from apps.connectors.base import ERPConnector
from apps.core.errors import ConfigurationError

CONNECTOR_CLASSES: dict[str, str] = {
    "tryton": "apps.connectors.tryton.TrytonConnector",
    "stripe": "apps.connectors.stripe_writeback.StripeWriteback",
}

_cache: dict[tuple[str, str], ERPConnector] = {}
_lock = threading.Lock()


def connector_class(kind: str) -> type[ERPConnector]:
    try:
        module_name, _, class_name = CONNECTOR_CLASSES[kind].rpartition(".")
    except KeyError:
        raise ConfigurationError(f"no connector for ERP kind {kind!r}") from None
    return getattr(importlib.import_module(module_name), class_name)  # type: ignore[no-any-return]


def get_connector(kind: str, settings: dict[str, Any]) -> ERPConnector:
    cache_key = (kind, json.dumps(settings, sort_keys=True, default=str))
    with _lock:
        connector = _cache.get(cache_key)
        if connector is None:
            connector = connector_class(kind)(settings)
            _cache[cache_key] = connector
        return connector


def forget_connectors() -> None:
    with _lock:
        for connector in _cache.values():
            connector.close()
        _cache.clear()
