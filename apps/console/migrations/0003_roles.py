from django.db import migrations


def create_roles(apps, schema_editor):
    from apps.console.roles import sync_roles

    sync_roles(apps, schema_editor, strict=False)


class Migration(migrations.Migration):
    dependencies = [
        ("console", "0002_exception_cases"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("ingest", "0002_object_id_and_sensitive_permission"),
        ("posting", "0002_error_params"),
        ("ledger", "0001_initial"),
        ("routing", "0001_initial"),
        ("sources", "0001_initial"),
        ("core", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(create_roles, migrations.RunPython.noop)]
