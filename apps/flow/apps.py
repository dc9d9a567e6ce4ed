from django.apps import AppConfig


class FlowConfig(AppConfig):
    name = "apps.flow"
    label = "flow"
    verbose_name = "ERP flow control"

    def ready(self) -> None:
        from apps.core import config_cache
        from apps.flow.models import MaintenanceWindow

        config_cache.watch(MaintenanceWindow)
