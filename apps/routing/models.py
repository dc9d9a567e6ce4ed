from __future__ import annotations

from typing import Any

from django.db import models

from apps.connectors.documents import DIMENSIONS
from apps.core import secrets
from apps.ledger.models import LegalEntity


class ERPConnection(models.Model):
    KIND_TRYTON = "tryton"
    KIND_NETSUITE = "netsuite"
    KIND_DYNAMICS365 = "dynamics365"
    KIND_SAP_S4HANA = "sap_s4hana"
    KIND_QUICKBOOKS = "quickbooks"
    KIND_XERO = "xero"
    KIND_STRIPE = "stripe"
    KIND_CHARGEBEE = "chargebee"
    KIND_LAGO = "lago"
    KIND_RECURLY = "recurly"
    KIND_CHOICES = [
        (KIND_TRYTON, "Tryton"),
        (KIND_NETSUITE, "NetSuite (SuiteTalk REST)"),
        (KIND_DYNAMICS365, "Dynamics 365 Finance (OData)"),
        (KIND_SAP_S4HANA, "SAP S/4HANA Cloud"),
        (KIND_QUICKBOOKS, "QuickBooks Online"),
        (KIND_XERO, "Xero"),
        (KIND_STRIPE, "Stripe (writeback to billing)"),
        (KIND_CHARGEBEE, "Chargebee (writeback to billing)"),
        (KIND_LAGO, "Lago (writeback to billing)"),
        (KIND_RECURLY, "Recurly (writeback to billing)"),
    ]

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=KIND_CHOICES)
    settings = models.JSONField(default=dict, help_text="Connector settings; secrets as env:VAR references.")
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "ERP connection"

    def __str__(self) -> str:
        return self.name

    def resolved_settings(self) -> dict[str, Any]:
        return secrets.resolve(self.settings)


class RoutingRule(models.Model):
    """Which ERP connection receives a legal entity's documents. A rule without a legal entity is
    the default. Lower priority numbers are evaluated first."""

    priority = models.PositiveIntegerField(default=100)
    legal_entity = models.ForeignKey(LegalEntity, null=True, blank=True, on_delete=models.CASCADE)
    connection = models.ForeignKey(ERPConnection, on_delete=models.PROTECT)

    class Meta:
        ordering = ["priority", "id"]
        constraints = [models.UniqueConstraint(fields=["legal_entity", "connection"], name="routing_rule_once")]

    def __str__(self) -> str:
        who = self.legal_entity.code if self.legal_entity else "any legal entity"
        return f"{who} → {self.connection}"


class Mapping(models.Model):
    """Hub values to ERP identifiers, per connection. ``key`` is the most specific hub value
    (price id, product id, revenue category, payment method) or ``default``."""

    KIND_REVENUE_ACCOUNT = "revenue_account"
    KIND_TAX_CODE = "tax_code"
    KIND_PAYMENT_JOURNAL = "payment_journal"
    KIND_WRITE_OFF_METHOD = "write_off_method"
    KIND_DISPUTE_ACCOUNT = "dispute_account"
    KIND_DISPUTE_LOSS_ACCOUNT = "dispute_loss_account"
    KIND_ITEM = "item"
    KIND_CURRENCY = "currency"
    KIND_CHOICES = [
        (KIND_REVENUE_ACCOUNT, "Revenue account"),
        (KIND_TAX_CODE, "Tax code"),
        (KIND_PAYMENT_JOURNAL, "Payment journal"),
        (KIND_WRITE_OFF_METHOD, "Write-off method (bad debt account)"),
        (KIND_DISPUTE_ACCOUNT, "Disputed funds account"),
        (KIND_DISPUTE_LOSS_ACCOUNT, "Dispute loss account"),
        (KIND_ITEM, "Item (ERP product), keyed like revenue accounts"),
        (KIND_CURRENCY, "Currency (ERP identifier), keyed by ISO code"),
        # Accounting dimensions, keyed by legal entity code, then region (country), then default.
        *[(name, f"Dimension: {name.replace('_', ' ')}") for name in DIMENSIONS],
    ]
    DEFAULT_KEY = "default"

    connection = models.ForeignKey(ERPConnection, on_delete=models.CASCADE, related_name="mappings")
    kind = models.CharField(max_length=32, choices=KIND_CHOICES)
    key = models.CharField(max_length=255)
    value = models.CharField(max_length=255, blank=True)

    class Meta:
        ordering = ["connection", "kind", "key"]
        constraints = [models.UniqueConstraint(fields=["connection", "kind", "key"], name="mapping_once")]

    def __str__(self) -> str:
        return f"{self.connection} {self.kind} {self.key} → {self.value or '(none)'}"
