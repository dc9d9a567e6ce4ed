from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "apps.routing"
    label = "routing"
    verbose_name = "ERP connections, routing and mappings"

    def ready(self) -> None:
        from apps.core import config_cache
        from apps.ledger.models import LegalEntity
        from apps.routing.models import ERPConnection, Mapping, RoutingRule

        # Routing rules are cached with their legal entity (its code is part of the rules' version).
        config_cache.watch(ERPConnection, RoutingRule, Mapping, LegalEntity)
