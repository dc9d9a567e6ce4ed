"""The validation cache: what each ERP connection holds that billing checks before it finalizes an
invoice (customer accounts, tax codes, dimension values), refreshed from the ERP on a schedule so a
check never waits on, or fails with, the ERP."""

from __future__ import annotations

from django.db import models

from apps.routing.models import ERPConnection


class ReferenceEntry(models.Model):
    KIND_CUSTOMER = "customer"
    KIND_TAX_CODE = "tax_code"
    KIND_DIMENSION = "dimension"
    KIND_CHOICES = [(KIND_CUSTOMER, "Customer account"), (KIND_TAX_CODE, "Tax code"), (KIND_DIMENSION, "Dimension")]

    connection = models.ForeignKey(ERPConnection, on_delete=models.CASCADE, related_name="reference_entries")
    kind = models.CharField(max_length=16, choices=KIND_CHOICES)
    dimension = models.CharField(max_length=32, blank=True)
    code = models.CharField(max_length=255)
    name = models.CharField(max_length=255, blank=True)
    active = models.BooleanField(default=True)
    refreshed_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "reference entries"
        ordering = ["connection", "kind", "dimension", "code"]
        constraints = [
            models.UniqueConstraint(fields=["connection", "kind", "dimension", "code"], name="reference_entry_once")
        ]

    def __str__(self) -> str:
        what = self.dimension or self.kind
        return f"{self.connection} {what} {self.code}"


class ReferenceRefresh(models.Model):
    """The last refresh of one connection's cache: when it last succeeded, and the last failure."""

    connection = models.OneToOneField(ERPConnection, on_delete=models.CASCADE, related_name="reference_refresh")
    refreshed_at = models.DateTimeField(null=True, blank=True, help_text="Last successful refresh.")
    attempted_at = models.DateTimeField(null=True, blank=True)
    entries = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the last attempt failed; empty when it succeeded.")

    def __str__(self) -> str:
        return f"{self.connection} refreshed {self.refreshed_at or 'never'}"
