"""The three roles of the console, as Django groups. The data migration creates them; this module
is the one list of what each may do, and the tests check it screen by screen."""

from __future__ import annotations

from apps.console.catalogue import AUDITORS, ENGINEERS, FINANCE

ROLE_NAMES = (FINANCE, ENGINEERS, AUDITORS)

# Every model of the hub (and the scheduler's): auditors see all of it, read-only.
VIEWABLE = [
    "console.exceptioncase",
    "console.postingexception",
    "console.deadletter",
    "console.controltower",
    "console.connectionsla",
    "posting.posting",
    "posting.postingattempt",
    "posting.redatedposting",
    "ledger.legalentity",
    "ledger.customer",
    "ledger.product",
    "ledger.invoice",
    "ledger.invoiceline",
    "ledger.payment",
    "ledger.paymentapplication",
    "ledger.creditmemo",
    "ledger.creditmemoline",
    "ledger.dispute",
    "ledger.subscription",
    "ledger.subscriptionevent",
    "ingest.inboxevent",
    "routing.erpconnection",
    "routing.routingrule",
    "routing.mapping",
    "routing.routingversion",
    "validation.referenceentry",
    "validation.referencerefresh",
    "sources.billingsource",
    "core.auditevent",
    "flow.connectionflow",
    "flow.maintenancewindow",
    "reconciliation.reconciliationrun",
    "reconciliation.difference",
]
CASE_ACTIONS = [
    "console.retry_case",
    "console.replay_case",
    "console.correct_case",
    "console.link_case",
    "console.skip_case",
    "console.assign_case",
]


def _view(labels: list[str]) -> list[str]:
    return [f"{label.split('.')[0]}.view_{label.split('.')[1]}" for label in labels]


ROLE_PERMISSIONS: dict[str, list[str]] = {
    # Business exceptions: see, correct mappings, retry, replay, link, skip, assign; set the SLA a
    # connection is held to. Raw payloads only with sensitive fields masked; no connection or routing changes.
    FINANCE: [
        *_view(VIEWABLE),
        "console.change_exceptioncase",
        *CASE_ACTIONS,
        "routing.add_mapping",
        "routing.change_mapping",
        "console.add_connectionsla",
        "console.change_connectionsla",
        "reconciliation.run_reconciliation",
    ],
    # Everything technical on top: raw events in full, replay, postings, configuration.
    ENGINEERS: [
        *_view(VIEWABLE),
        "console.change_exceptioncase",
        *CASE_ACTIONS,
        "ingest.view_sensitive_payload",
        "ingest.change_inboxevent",
        "posting.change_posting",
        "console.change_postingexception",
        "console.change_deadletter",
        "routing.add_mapping",
        "routing.change_mapping",
        "routing.delete_mapping",
        "routing.add_routingrule",
        "routing.change_routingrule",
        "routing.delete_routingrule",
        "routing.add_erpconnection",
        "routing.change_erpconnection",
        "sources.add_billingsource",
        "sources.change_billingsource",
        "django_celery_beat.view_periodictask",
        "django_celery_beat.change_periodictask",
        "flow.change_connectionflow",
        "flow.add_maintenancewindow",
        "flow.change_maintenancewindow",
        "flow.delete_maintenancewindow",
        "console.add_connectionsla",
        "console.change_connectionsla",
        "console.delete_connectionsla",
        "reconciliation.run_reconciliation",
    ],
    # Read-only everywhere, including the audit log.
    AUDITORS: [*_view(VIEWABLE), "django_celery_beat.view_periodictask", "auth.view_user", "auth.view_group"],
}


def sync_roles(apps: object, schema_editor: object = None, *, strict: bool = True) -> None:
    """Create or update the groups. Usable from a migration (historical ``apps``, where models of
    later migrations do not exist yet: ``strict=False`` skips them, post_migrate completes) or at
    run time."""
    from django.contrib.auth.management import create_permissions

    get_model = apps.get_model  # type: ignore[attr-defined]
    # Permissions are normally created after all migrations; the groups need them now.
    for app_config in apps.get_app_configs():  # type: ignore[attr-defined]
        original = getattr(app_config, "models_module", None)
        app_config.models_module = original or True
        try:
            create_permissions(app_config, apps=apps, verbosity=0)
        finally:
            app_config.models_module = original
    Group = get_model("auth", "Group")
    Permission = get_model("auth", "Permission")
    for role, names in ROLE_PERMISSIONS.items():
        group, _ = Group.objects.get_or_create(name=role)
        permissions = []
        for name in names:
            app_label, codename = name.split(".")
            permission = Permission.objects.filter(content_type__app_label=app_label, codename=codename).first()
            if permission is None:
                if strict:
                    raise LookupError(f"permission {name} does not exist")
                continue
            permissions.append(permission)
        group.permissions.set(permissions)
