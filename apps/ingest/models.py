from __future__ import annotations

from django.db import models


class InboxStatus(models.TextChoices):
    RECEIVED = "received", "Received"
    PROCESSED = "processed", "Processed"
    IGNORED = "ignored", "Ignored (type not posted)"
    FAILED = "failed", "Failed (needs action)"


class InboxEvent(models.Model):
    """A billing event exactly as it arrived, stored before the sender gets its 2xx.

    ``(source, event_id)`` is unique: a redelivery finds the stored row and changes nothing.
    The raw body is kept byte for byte so an event can be replayed after a fix.
    """

    source = models.CharField(max_length=64)
    event_id = models.CharField(max_length=255)
    event_type = models.CharField(max_length=128, db_index=True)
    object_id = models.CharField(
        max_length=255, blank=True, db_index=True, help_text="The billing object the event is about (in_..., cus_...)."
    )
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    headers = models.JSONField(default=dict)
    body = models.TextField()
    correlation_id = models.CharField(max_length=100, db_index=True)
    status = models.CharField(max_length=16, choices=InboxStatus.choices, default=InboxStatus.RECEIVED, db_index=True)
    delivery_count = models.PositiveIntegerField(default=1)
    processed_at = models.DateTimeField(null=True, blank=True)
    enqueued_at = models.DateTimeField(null=True, blank=True)
    error = models.TextField(blank=True)
    error_code = models.CharField(max_length=64, blank=True, help_text="Why normalizing failed, as a code.")

    class Meta:
        ordering = ["-received_at", "-id"]
        constraints = [models.UniqueConstraint(fields=["source", "event_id"], name="inbox_event_once")]
        verbose_name = "inbox event"
        permissions = [("view_sensitive_payload", "Can see sensitive fields of raw payloads")]

    def __str__(self) -> str:
        return f"{self.source} {self.event_type} {self.event_id}"
