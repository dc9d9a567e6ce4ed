from __future__ import annotations

from django.db import models
from django.utils import timezone


class SyntheticResult(models.TextChoices):
    RUNNING = "running", "Running"
    POSTED = "posted", "Posted in the sandbox ERP"
    FAILED = "failed", "Failed"
    TIMED_OUT = "timed_out", "Timed out"


class SyntheticRun(models.Model):
    """One synthetic transaction: a marked test invoice sent through the whole pipeline (ingest,
    normalization, planning, the worker, the connector) to a sandbox ERP connection."""

    started_at = models.DateTimeField(default=timezone.now, db_index=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    source = models.CharField(max_length=64)
    connection = models.CharField(max_length=64, help_text="The sandbox ERP connection it was posted to.")
    document_id = models.CharField(max_length=255, unique=True, help_text="The synthetic invoice's billing id.")
    correlation_id = models.CharField(max_length=100, db_index=True)
    result = models.CharField(
        max_length=16, choices=SyntheticResult.choices, default=SyntheticResult.RUNNING, db_index=True
    )
    latency_seconds = models.FloatField(
        null=True, blank=True, help_text="From the event stored to the sandbox ERP holding the invoice."
    )
    detail = models.TextField(blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        verbose_name = "synthetic transaction"

    def __str__(self) -> str:
        return f"{self.started_at:%Y-%m-%d %H:%M:%S} {self.connection} {self.result}"
