from django.apps import AppConfig


class ConsoleConfig(AppConfig):
    name = "apps.console"
    label = "console"
    verbose_name = "Finance exception console"

    def ready(self) -> None:
        from apps.console import receivers  # noqa: F401 - connects the signal receivers
