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
    "netsuite": "apps.connectors.netsuite.NetSuiteConnector",
    "dynamics365": "apps.connectors.dynamics365.Dynamics365Connector",
    "sap_s4hana": "apps.connectors.sap_s4hana.S4HanaConnector",
    "quickbooks": "apps.connectors.quickbooks.QuickBooksConnector",
    "xero": "apps.connectors.xero.XeroConnector",
    # Writeback to the billing engines: connections a source names as its writeback_connection.
    "stripe": "apps.connectors.stripe_writeback.StripeWriteback",
    "chargebee": "apps.connectors.chargebee_writeback.ChargebeeWriteback",
    "lago": "apps.connectors.lago_writeback.LagoWriteback",
    "recurly": "apps.connectors.recurly_writeback.RecurlyWriteback",
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
