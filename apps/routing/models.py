from __future__ import annotations

from typing import Any

from django.db import models

from apps.connectors.documents import DIMENSIONS
from apps.core import secrets
from apps.core.config_cache import ConfigQuerySet
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

    # What the hub does with a document the ERP refuses because its date falls in a closed period
    # (or, in Tryton, before the last customer invoice already numbered in its sequence).
    CLOSED_PERIOD_PARK = "park"
    CLOSED_PERIOD_REDATE = "redate"
    CLOSED_PERIOD_POLICIES = [
        (CLOSED_PERIOD_PARK, "Park for finance"),
        (CLOSED_PERIOD_REDATE, "Re-date into the first open period (billing's date kept in the memo)"),
    ]

    name = models.SlugField(max_length=64, unique=True)
    kind = models.CharField(max_length=32, choices=KIND_CHOICES)
    settings = models.JSONField(default=dict, help_text="Connector settings; secrets as env:VAR references.")
    active = models.BooleanField(default=True)
    closed_period_policy = models.CharField(
        max_length=16,
        choices=CLOSED_PERIOD_POLICIES,
        default=CLOSED_PERIOD_PARK,
        help_text="A document dated in a period the ERP has closed: park it as a case for finance, or post it "
        "dated the first day the ERP accepts, with billing's date in its memo (connectors that can name that "
        "day: Tryton; the others park).",
    )

    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "ERP connection"

    def __str__(self) -> str:
        return self.name

    def resolved_settings(self) -> dict[str, Any]:
        return secrets.resolve(self.settings)


class ConnectionToken(models.Model):
    """A credential the ERP rotates (a QuickBooks refresh token), kept for every worker process,
    encrypted with a key derived from the hub's SECRET_KEY (``apps/routing/tokens.py``). The
    connection's settings hold the first one; this holds the newest."""

    connection = models.ForeignKey(ERPConnection, on_delete=models.CASCADE, related_name="tokens")
    name = models.CharField(max_length=64)
    encrypted = models.TextField()
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["connection", "name"], name="connection_token_once")]

    def __str__(self) -> str:
        return f"{self.connection} {self.name}"


class RoutingRule(models.Model):
    """Which ERP connection receives a document. Rules are evaluated by priority (lower first); a
    rule matches when every condition it sets holds (an empty condition matches anything), so a
    rule without conditions is the default. The first match routes the document; a matching rule
    marked ``also`` adds its connection and lets evaluation go on, so one document can be posted
    to several ERPs (a statutory ledger beside the group ledger)."""

    TYPE_INVOICE = "invoice"
    TYPE_PAYMENT = "payment"
    TYPE_DISPUTE = "dispute"
    TRANSACTION_TYPES = [
        (TYPE_INVOICE, "Invoice (with its payments, credit notes, refunds, write-off and void)"),
        (TYPE_PAYMENT, "Unapplied payment (customer credit)"),
        (TYPE_DISPUTE, "Dispute (chargeback)"),
    ]

    name = models.CharField(max_length=100, blank=True, help_text="What the rule is for, for people.")
    priority = models.PositiveIntegerField(default=100)
    legal_entity = models.ForeignKey(LegalEntity, null=True, blank=True, on_delete=models.CASCADE)
    region = models.CharField(
        max_length=200,
        blank=True,
        help_text="Countries (ISO 3166 alpha-2, comma separated) of the customer's bill-to address.",
    )
    product_line = models.CharField(max_length=64, blank=True, help_text="The product line of the invoice.")
    transaction_type = models.CharField(max_length=16, blank=True, choices=TRANSACTION_TYPES)
    currency = models.CharField(max_length=3, blank=True, help_text="ISO 4217 code of the document.")
    connection = models.ForeignKey(ERPConnection, on_delete=models.PROTECT)
    also = models.BooleanField(
        default=False,
        help_text="Post to this connection too and keep evaluating the rules below (fan-out).",
    )
    active = models.BooleanField(default=True)

    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["priority", "id"]

    def __str__(self) -> str:
        conditions = self.conditions() or {"any document": ""}
        words = ", ".join(f"{key} {value}".strip() for key, value in conditions.items())
        return f"{words} → {self.connection}{' (also)' if self.also else ''}"

    def regions(self) -> set[str]:
        return {code.strip().upper() for code in self.region.split(",") if code.strip()}

    def conditions(self) -> dict[str, str]:
        found = {
            "legal entity": self.legal_entity.code if self.legal_entity_id and self.legal_entity else "",
            "region": ",".join(sorted(self.regions())),
            "product line": self.product_line,
            "transaction type": self.transaction_type,
            "currency": self.currency.upper(),
        }
        return {key: value for key, value in found.items() if value}


class RoutingVersion(models.Model):
    """One version of the active rule set, numbered in the order it was first used. Every posting
    records the version that routed it, so an auditor can see which rules sent it where."""

    digest = models.CharField(max_length=64, unique=True)
    rules = models.JSONField(help_text="The active rules as they were, in evaluation order.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"routing v{self.pk}"


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

    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["connection", "kind", "key"]
        constraints = [models.UniqueConstraint(fields=["connection", "kind", "key"], name="mapping_once")]

    def __str__(self) -> str:
        return f"{self.connection} {self.kind} {self.key} → {self.value or '(none)'}"
