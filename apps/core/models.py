from __future__ import annotations

from typing import Any, NoReturn

from django.db import models

GENESIS_HASH = "0" * 64


def _refuse(*args: Any, **kwargs: Any) -> NoReturn:
    raise PermissionError("audit events are append-only: write them with apps.core.audit.record()")


class AuditEventQuerySet(models.QuerySet):
    """No bulk path can rewrite, remove or bypass the chain: only record() appends."""

    def update(self, **kwargs: Any) -> NoReturn:
        _refuse()

    def delete(self) -> NoReturn:
        _refuse()

    def bulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()

    def bulk_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()

    def update_or_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()

    async def aupdate(self, **kwargs: Any) -> NoReturn:
        _refuse()

    async def adelete(self) -> NoReturn:
        _refuse()

    async def abulk_update(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()

    async def abulk_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()

    async def aupdate_or_create(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()


class AuditEvent(models.Model):
    """Append-only, hash-chained record of every state change, transformation and human action.

    Finance keeps this trail for years: rows are never updated or deleted by the application (the
    manager and the model refuse it, and on PostgreSQL a trigger refuses UPDATE and DELETE). Each
    entry stores the hash of the previous one and its own hash over its content, so a row changed or
    removed behind the application's back is found by ``manage.py verify_audit_chain``.
    """

    # Set by record() in Python, so the hashed value is exactly the stored one.
    at = models.DateTimeField(db_index=True, editable=False)
    actor = models.CharField(max_length=150, help_text="User name, or 'system' for the hub itself.")
    action = models.CharField(max_length=64, db_index=True)
    object_type = models.CharField(max_length=64)
    object_id = models.CharField(max_length=64)
    correlation_id = models.CharField(max_length=100, blank=True, db_index=True)
    reason = models.TextField(blank=True)
    before = models.JSONField(null=True, blank=True)
    after = models.JSONField(null=True, blank=True)
    # sha256 hex of the previous entry (GENESIS_HASH for the first one). Unique: the chain cannot fork.
    prev_hash = models.CharField(max_length=64, unique=True, editable=False)
    # sha256 hex over prev_hash and this entry's content (apps.core.audit.entry_hash).
    entry_hash = models.CharField(max_length=64, unique=True, editable=False)

    objects = AuditEventQuerySet.as_manager()

    class Meta:
        ordering = ["-at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d %H:%M:%S} {self.actor} {self.action} {self.object_type}#{self.object_id}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if self.pk is not None or not self.entry_hash or not self.prev_hash:
            _refuse()
        super().save(*args, **kwargs)

    def delete(self, *args: Any, **kwargs: Any) -> NoReturn:
        _refuse()
