from __future__ import annotations

from django.contrib import admin

from apps.ledger.models import (
    CreditMemo,
    CreditMemoLine,
    Customer,
    Dispute,
    Invoice,
    InvoiceLine,
    LegalEntity,
    Payment,
    PaymentApplication,
    Product,
    Subscription,
    SubscriptionEvent,
)


class ReadOnlyFromBilling(admin.ModelAdmin):
    """Canonical records come from billing; people read them here, they do not type them."""

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False

    def get_readonly_fields(self, request: object, obj: object = None) -> list[str]:
        return [field.name for field in self.model._meta.fields]


@admin.register(LegalEntity)
class LegalEntityAdmin(admin.ModelAdmin):
    list_display = ("code", "name", "country", "base_currency")


@admin.register(Customer)
class CustomerAdmin(ReadOnlyFromBilling):
    list_display = ("name", "source", "source_id", "email", "legal_entity", "currency", "revision", "updated_at")
    list_filter = ("source", "legal_entity")
    search_fields = ("name", "email", "source_id", "tax_id", "correlation_id")


@admin.register(Product)
class ProductAdmin(ReadOnlyFromBilling):
    list_display = ("name", "kind", "source", "source_id", "revenue_category")
    search_fields = ("name", "source_id")


class InvoiceLineInline(admin.TabularInline):
    model = InvoiceLine
    extra = 0
    can_delete = False
    fields = (
        "position",
        "description",
        "product",
        "price_id",
        "quantity",
        "unit_amount_minor",
        "amount_minor",
        "tax_minor",
        "period_start",
        "period_end",
    )
    readonly_fields = fields


@admin.register(Invoice)
class InvoiceAdmin(ReadOnlyFromBilling):
    list_display = ("number", "source_id", "customer", "status", "currency", "total_minor", "invoice_date", "revision")
    list_filter = ("status", "source", "currency", "legal_entity")
    search_fields = ("number", "source_id", "customer__name", "correlation_id")
    list_select_related = ("customer",)
    inlines = [InvoiceLineInline]


class PaymentApplicationInline(admin.TabularInline):
    model = PaymentApplication
    extra = 0
    can_delete = False
    fields = ("invoice_source_id", "invoice", "amount_minor")
    readonly_fields = fields


@admin.register(Payment)
class PaymentAdmin(ReadOnlyFromBilling):
    list_display = ("source_id", "customer", "currency", "amount_minor", "method", "settled_at")
    list_filter = ("source", "method", "currency")
    search_fields = ("source_id", "customer__name", "correlation_id")
    inlines = [PaymentApplicationInline]


class CreditMemoLineInline(admin.TabularInline):
    model = CreditMemoLine
    extra = 0
    can_delete = False
    fields = ("position", "description", "invoice_line_source_id", "quantity", "amount_minor", "tax_minor")
    readonly_fields = fields


@admin.register(CreditMemo)
class CreditMemoAdmin(ReadOnlyFromBilling):
    list_display = ("number", "source_id", "invoice", "customer", "status", "currency", "total_minor", "memo_date")
    list_filter = ("status", "source", "currency")
    search_fields = ("number", "source_id", "invoice_source_id", "customer__name", "correlation_id")
    list_select_related = ("invoice", "customer")
    inlines = [CreditMemoLineInline]


@admin.register(Dispute)
class DisputeAdmin(ReadOnlyFromBilling):
    list_display = ("source_id", "payment_source_id", "status", "currency", "amount_minor", "reason", "opened_on")
    list_filter = ("status", "source", "currency")
    search_fields = ("source_id", "payment_source_id", "correlation_id")
    list_select_related = ("payment",)


class SubscriptionEventInline(admin.TabularInline):
    model = SubscriptionEvent
    extra = 0
    can_delete = False
    fields = ("kind", "status", "price_ids", "period_start", "period_end", "recorded_at")
    readonly_fields = fields


@admin.register(Subscription)
class SubscriptionAdmin(ReadOnlyFromBilling):
    list_display = ("source_id", "customer", "status", "period_start", "period_end", "cancel_at_period_end")
    list_filter = ("status", "source", "cancel_at_period_end")
    search_fields = ("source_id", "customer_source_id", "customer__name")
    list_select_related = ("customer",)
    inlines = [SubscriptionEventInline]
