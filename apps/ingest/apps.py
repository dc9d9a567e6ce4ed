from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class IngestConfig(AppConfig):
    name = "apps.ingest"
    label = "ingest"
    verbose_name = "Inbox (received billing events)"

    def ready(self) -> None:
        from apps.ingest.services import forget_sources
        from apps.ledger.models import LegalEntity
        from apps.sources.models import BillingSource

        for model in (BillingSource, LegalEntity):  # the cached source carries its legal entity
            post_save.connect(forget_sources, sender=model, weak=False, dispatch_uid=f"ingest.forget.{model.__name__}")
            post_delete.connect(
                forget_sources, sender=model, weak=False, dispatch_uid=f"ingest.forget.{model.__name__}.delete"
            )
