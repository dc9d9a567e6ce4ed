"""Transaction-scoped locks on a business identity (an invoice by its billing id), for work that
must not interleave although it touches different rows: a payment and the invoice it pays, when
billing sends both at once and two workers normalize them side by side."""

from __future__ import annotations

import hashlib

from django.db import connection


def lock_identity(*parts: str) -> None:
    """Hold a lock on this identity until the current transaction ends (PostgreSQL). Other
    databases serialize writers already (SQLite, the demo's) and need none."""
    if connection.vendor != "postgresql":
        return
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    key = int.from_bytes(digest[:8], "big", signed=True)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])
