from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "apps.observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from apps.observability import receivers  # noqa: F401 - connects the signal receivers
