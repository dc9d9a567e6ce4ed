"""Readiness checks: can this process do its work right now?

``database``: a query answers. ``broker``: a connection to the Celery broker opens. ``connections``:
each active ERP connection's circuit breaker is not open (an open circuit means the hub has
stopped calling that ERP; postings for it wait). A paused connection is a person's decision, not a
failure: it is reported, not counted against readiness.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from celery import current_app
from django.db import DatabaseError, connection

from apps.flow.models import CircuitState
from apps.observability import services

log = logging.getLogger(__name__)

CHECKS = ("database", "broker", "connections")
BROKER_TIMEOUT_SECONDS = 2.0


@dataclass
class Readiness:
    checks: dict[str, Any] = field(default_factory=dict)
    not_ready: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.not_ready


def check_database() -> dict[str, Any]:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            cursor.fetchone()
    except DatabaseError as exc:
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


def check_broker() -> dict[str, Any]:
    try:
        with current_app.connection_for_write() as conn:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=0, timeout=BROKER_TIMEOUT_SECONDS)
    except Exception as exc:  # noqa: BLE001 - any transport error means not ready
        return {"ok": False, "error": type(exc).__name__}
    return {"ok": True}


def check_connections() -> dict[str, dict[str, Any]]:
    return {
        name: {
            "ok": entry["state"] != CircuitState.OPEN,
            "circuit": entry["state"],
            "paused": entry["paused"],
            "next_probe_at": entry["next_probe_at"].isoformat() if entry["next_probe_at"] else None,
        }
        for name, entry in services.circuit_states().items()
    }


def readiness(checks: tuple[str, ...] = CHECKS) -> Readiness:
    result = Readiness()
    if "database" in checks:
        result.checks["database"] = check_database()
        if not result.checks["database"]["ok"]:
            result.not_ready.append("database")
    if "broker" in checks:
        result.checks["broker"] = check_broker()
        if not result.checks["broker"]["ok"]:
            result.not_ready.append("broker")
    if "connections" in checks:
        if result.checks.get("database", {"ok": True})["ok"]:
            try:
                result.checks["connections"] = check_connections()
            except DatabaseError as exc:
                result.checks["connections"] = {"error": type(exc).__name__}
                result.not_ready.append("connections")
            else:
                result.not_ready.extend(
                    f"connection {name} (circuit {entry['circuit']})"
                    for name, entry in result.checks["connections"].items()
                    if not entry["ok"]
                )
        else:
            result.checks["connections"] = {"error": "database unavailable"}
    if result.not_ready:
        log.warning("not ready", extra={"not_ready": result.not_ready})
    return result
