from __future__ import annotations

from django.db import models

from apps.core.config_cache import ConfigQuerySet
from apps.ledger.models import LegalEntity


class BillingSource(models.Model):
    """One billing engine account (for Stripe: one account, i.e. one subsidiary) sending webhooks."""

    KIND_STRIPE = "stripe"
    KIND_CHARGEBEE = "chargebee"
    KIND_LAGO = "lago"
    KIND_RECURLY = "recurly"
    KIND_CANONICAL = "canonical"
    # One per adapter in apps/sources/registry.py.
    KIND_CHOICES = [
        (KIND_STRIPE, "Stripe"),
        (KIND_CHARGEBEE, "Chargebee"),
        (KIND_LAGO, "Lago"),
        (KIND_RECURLY, "Recurly"),
        (KIND_CANONICAL, "Canonical events API"),
    ]

    name = models.SlugField(
        max_length=64,
        unique=True,
        help_text="Appears in the URL events are sent to: /webhooks/<name>/, or "
        "/api/v1/sources/<name>/events/ for the canonical events API.",
    )
    kind = models.CharField(max_length=32, choices=KIND_CHOICES)
    legal_entity = models.ForeignKey(
        LegalEntity, on_delete=models.PROTECT, help_text="The legal entity this billing account invoices for."
    )
    webhook_secrets = models.JSONField(
        default=list,
        help_text="env:VAR references; every one that is set is accepted, so a secret can be rotated.",
    )
    active = models.BooleanField(default=True)
    api_settings = models.JSONField(
        default=dict,
        blank=True,
        help_text="API access for engines whose webhooks only name the object (Recurly): api_key as an "
        "env:VAR reference, base_url.",
    )
    writeback_connection = models.ForeignKey(
        "routing.ERPConnection",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="written_back_sources",
        help_text="Where the ERP's answers are written back to this billing account (e.g. Stripe invoice "
        "metadata); empty: no writeback.",
    )

    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name
