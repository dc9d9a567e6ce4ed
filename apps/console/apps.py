from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_migrate


def _sync_roles(sender: AppConfig, **kwargs: Any) -> None:
    # Keeps the groups equal to apps.console.roles after every migrate (and after the test
    # runner's flush, which empties the tables the data migration filled).
    from django.apps import apps

    from apps.console.roles import sync_roles

    sync_roles(apps)


class ConsoleConfig(AppConfig):
    name = "apps.console"
    label = "console"
    verbose_name = "Finance exception console"

    def ready(self) -> None:
        from apps.console import receivers  # noqa: F401 - connects the signal receivers

        post_migrate.connect(_sync_roles, sender=self, dispatch_uid="console.sync_roles")
