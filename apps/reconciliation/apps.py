from django.apps import AppConfig


class ReconciliationConfig(AppConfig):
    name = "apps.reconciliation"
    label = "reconciliation"
    verbose_name = "Reconciliation (billing, ledger, ERP)"
