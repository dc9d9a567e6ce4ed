from django.apps import AppConfig


class SourcesConfig(AppConfig):
    name = "apps.sources"
    label = "sources"
    verbose_name = "Billing sources"

    def ready(self) -> None:
        from apps.core import config_cache
        from apps.sources.models import BillingSource

        config_cache.watch(BillingSource)
