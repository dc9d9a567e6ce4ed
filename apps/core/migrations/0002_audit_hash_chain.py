"""Chain the audit log by hash and make it append-only in the database too.

Existing entries are chained in id order (their hashes are computed from what is stored). On
PostgreSQL a trigger then refuses UPDATE and DELETE of core_auditevent for every role; TRUNCATE is
not refused (the test runner flushes tables with it). A table owner can still disable the trigger:
that is what the hash chain and ``manage.py verify_audit_chain`` are for.
"""

from django.db import migrations, models

TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION core_auditevent_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'core_auditevent is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Audit entries are never changed or removed; write new ones with apps.core.audit.record().';
END;
$$;
CREATE TRIGGER core_auditevent_append_only
    BEFORE UPDATE OR DELETE ON core_auditevent
    FOR EACH ROW EXECUTE FUNCTION core_auditevent_append_only();
"""

DROP_TRIGGER_SQL = """
DROP TRIGGER IF EXISTS core_auditevent_append_only ON core_auditevent;
DROP FUNCTION IF EXISTS core_auditevent_append_only();
"""


def chain_existing_entries(apps, schema_editor):
    from apps.core.audit import compute_entry_hash

    AuditEvent = apps.get_model("core", "AuditEvent")
    db = schema_editor.connection.alias
    prev_hash = "0" * 64
    for event in AuditEvent.objects.using(db).order_by("id").iterator(chunk_size=2000):
        event.prev_hash = prev_hash
        event.entry_hash = compute_entry_hash(event)
        AuditEvent.objects.using(db).filter(pk=event.pk).update(prev_hash=event.prev_hash, entry_hash=event.entry_hash)
        prev_hash = event.entry_hash


def create_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(TRIGGER_SQL, None)


def drop_trigger(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(DROP_TRIGGER_SQL, None)


class Migration(migrations.Migration):

    dependencies = [
        ("core", "0001_initial"),
    ]

    operations = [
        migrations.AlterField(
            model_name="auditevent",
            name="at",
            field=models.DateTimeField(db_index=True, editable=False),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.AddField(
            model_name="auditevent",
            name="entry_hash",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.RunPython(chain_existing_entries, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="auditevent",
            name="prev_hash",
            field=models.CharField(editable=False, max_length=64, unique=True),
        ),
        migrations.AlterField(
            model_name="auditevent",
            name="entry_hash",
            field=models.CharField(editable=False, max_length=64, unique=True),
        ),
        migrations.RunPython(create_trigger, drop_trigger),
    ]
