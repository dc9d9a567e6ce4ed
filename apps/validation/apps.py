from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class ValidationConfig(AppConfig):
    name = "apps.validation"
    verbose_name = "Validation (pre-finalization checks)"

    def ready(self) -> None:
        from apps.ledger.models import LegalEntity
        from apps.routing.models import ERPConnection, RoutingRule
        from apps.validation import services

        def forget(**kwargs: Any) -> None:
            services.forget_routes()

        # This process's memo of routes follows its own changes at once (others within seconds).
        for model in (RoutingRule, ERPConnection, LegalEntity):
            post_save.connect(forget, sender=model, weak=False, dispatch_uid=f"validation.forget.{model.__name__}.save")
            post_delete.connect(
                forget, sender=model, weak=False, dispatch_uid=f"validation.forget.{model.__name__}.delete"
            )
