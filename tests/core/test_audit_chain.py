"""The audit log is append-only and hash-chained; verify_audit_chain finds the first broken entry."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.db import DatabaseError, connection, connections, transaction

from apps.core import audit
from apps.core.models import GENESIS_HASH, AuditEvent

ROOT = Path(__file__).resolve().parents[2]
TRIGGER = "core_auditevent_append_only"


@pytest.fixture
def subject(db: None) -> User:
    return User.objects.create(username="audited-subject")


def _record_many(subject: User, count: int) -> list[AuditEvent]:
    return [audit.record(f"test.step{i}", subject, reason=f"step {i}", after={"i": i}) for i in range(count)]


def _tamper(sql: str, params: list[Any]) -> None:
    """What an operator with table-owner rights can do: switch the trigger off, rewrite, switch it on."""
    with connection.cursor() as cursor:
        cursor.execute(f"ALTER TABLE core_auditevent DISABLE TRIGGER {TRIGGER}")
        cursor.execute(sql, params)
        cursor.execute(f"ALTER TABLE core_auditevent ENABLE TRIGGER {TRIGGER}")


def _verify_command() -> str:
    out = io.StringIO()
    call_command("verify_audit_chain", stdout=out)
    return out.getvalue()


def test_chain_links_every_entry_and_survives_the_jsonb_round_trip(subject: User) -> None:
    before = {
        "total": Decimal("12.30"),
        "due": date(2026, 1, 31),
        "nested": {"zeta": [1, {"b": Decimal("0.10"), "a": datetime(2026, 2, 1, 9, 30, 1, 123456, tzinfo=UTC)}]},
        "none": None,
        "é": "ünïcode",
    }
    after = {"status": "paid", "floats": [0.1, 1e20, -0.0, 3.0], "empty": {}, "list": []}
    first = audit.record("invoice.updated", subject, actor="alice", reason="fix", before=before, after=after)
    second = audit.record("invoice.posted", subject)
    third = audit.record("invoice.noted", subject, before={"z": 1, "a": 2}, correlation_id="corr-1")

    assert first.prev_hash == GENESIS_HASH
    assert second.prev_hash == first.entry_hash
    assert third.prev_hash == second.entry_hash
    assert len({first.entry_hash, second.entry_hash, third.entry_hash}) == 3

    # What is stored is the JSON-normalized value, and it hashes the same after PostgreSQL's jsonb round trip.
    stored = AuditEvent.objects.get(pk=first.pk)
    assert stored.before["total"] == "12.30"
    assert stored.before["due"] == "2026-01-31"
    assert stored.before["nested"]["zeta"][1] == {"a": "2026-02-01T09:30:01.123Z", "b": "0.10"}
    assert stored.at == first.at
    for event in AuditEvent.objects.all():
        assert audit.compute_entry_hash(event) == event.entry_hash

    result = audit.verify_chain()
    assert result.intact
    assert result.verified == 3
    assert result.last_id == third.pk
    assert result.last_hash == third.entry_hash


def test_command_passes_on_a_clean_log(subject: User) -> None:
    _record_many(subject, 5)
    output = _verify_command()
    assert "audit chain intact: 5 entries" in output


def test_command_passes_on_an_empty_log(db: None) -> None:
    assert "audit chain intact: 0 entries" in _verify_command()


def test_altered_reason_is_reported_at_that_entry(subject: User) -> None:
    events = _record_many(subject, 5)
    target = events[2]
    _tamper("UPDATE core_auditevent SET reason = %s WHERE id = %s", ["nothing to see here", target.pk])

    result = audit.verify_chain()
    assert result.broken is not None
    assert result.broken.id == target.pk
    assert result.broken.content_altered
    assert not result.broken.link_broken
    assert result.verified == 2

    with pytest.raises(CommandError) as excinfo:
        _verify_command()
    assert excinfo.value.returncode == 1
    message = str(excinfo.value)
    assert f"id={target.pk} " in message
    assert "content was altered" in message
    assert "test.step2" in message
    for other in events[:2] + events[3:]:
        assert f"id={other.pk} " not in message


def test_altered_json_is_reported_at_that_entry(subject: User) -> None:
    events = _record_many(subject, 4)
    target = events[1]
    _tamper("UPDATE core_auditevent SET after = jsonb_set(after, '{i}', '42') WHERE id = %s", [target.pk])

    result = audit.verify_chain()
    assert result.broken is not None
    assert (result.broken.id, result.broken.content_altered) == (target.pk, True)


def test_rewritten_entry_with_recomputed_hash_breaks_the_next_link(subject: User) -> None:
    events = _record_many(subject, 4)
    target = events[1]
    forged = AuditEvent.objects.get(pk=target.pk)
    forged.reason = "rewritten"
    forged_hash = audit.compute_entry_hash(forged)
    _tamper(
        "UPDATE core_auditevent SET reason = %s, entry_hash = %s WHERE id = %s", ["rewritten", forged_hash, target.pk]
    )

    result = audit.verify_chain()
    assert result.broken is not None
    assert result.broken.id == events[2].pk
    assert result.broken.link_broken
    assert not result.broken.content_altered
    assert result.broken.previous_id == target.pk


def test_deleted_middle_entry_is_reported_as_a_broken_link_after_the_gap(subject: User) -> None:
    events = _record_many(subject, 5)
    _tamper("DELETE FROM core_auditevent WHERE id = %s", [events[2].pk])

    result = audit.verify_chain()
    assert result.broken is not None
    assert result.broken.id == events[3].pk
    assert result.broken.link_broken
    assert not result.broken.content_altered
    assert result.broken.previous_id == events[1].pk

    with pytest.raises(CommandError) as excinfo:
        _verify_command()
    assert f"id={events[3].pk} " in str(excinfo.value)
    assert "link to the previous entry is broken" in str(excinfo.value)


def test_deleted_first_entry_is_reported_at_the_new_first_entry(subject: User) -> None:
    events = _record_many(subject, 3)
    _tamper("DELETE FROM core_auditevent WHERE id = %s", [events[0].pk])

    result = audit.verify_chain()
    assert result.broken is not None
    assert (result.broken.id, result.broken.link_broken, result.broken.previous_id) == (events[1].pk, True, None)


def test_orm_refuses_update_delete_and_unchained_writes(subject: User) -> None:
    event = audit.record("test.kept", subject, after={"a": 1})
    queryset = AuditEvent.objects.filter(pk=event.pk)

    with pytest.raises(PermissionError):
        queryset.update(reason="changed")
    with pytest.raises(PermissionError):
        queryset.delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.all().delete()
    with pytest.raises(PermissionError):
        AuditEvent.objects.bulk_update([event], ["reason"])
    with pytest.raises(PermissionError):
        AuditEvent.objects.bulk_create([AuditEvent(action="x", object_type="x", object_id="1")])
    with pytest.raises(PermissionError):
        AuditEvent.objects.create(action="x", object_type="x", object_id="1", actor="mallory")
    with pytest.raises(PermissionError):
        AuditEvent.objects.update_or_create(pk=event.pk, defaults={"reason": "changed"})

    event.reason = "changed"
    with pytest.raises(PermissionError):
        event.save()
    with pytest.raises(PermissionError):
        event.delete()

    stored = AuditEvent.objects.get(pk=event.pk)
    assert stored.reason == ""
    assert audit.verify_chain().intact


def test_raw_sql_cannot_update_or_delete_while_the_trigger_is_on(subject: User) -> None:
    event = audit.record("test.kept", subject)
    for sql in ("UPDATE core_auditevent SET reason = 'x' WHERE id = %s", "DELETE FROM core_auditevent WHERE id = %s"):
        with pytest.raises(DatabaseError, match="append-only"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(sql, [event.pk])
    assert AuditEvent.objects.get(pk=event.pk).reason == ""


@pytest.mark.django_db(transaction=True)
def test_concurrent_appends_from_several_connections_keep_one_chain() -> None:
    subject = User.objects.create(username="concurrent-subject")
    threads_count, per_thread = 4, 25
    start = threading.Barrier(threads_count)
    errors: list[BaseException] = []

    def append(worker: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                with transaction.atomic():
                    audit.record("test.concurrent", subject, actor=f"worker-{worker}", after={"i": i})
        except Exception as exc:  # noqa: BLE001 - any failure in a thread is reported by the test below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=append, args=(n,)) for n in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not errors, errors
    assert AuditEvent.objects.count() == threads_count * per_thread
    result = audit.verify_chain()
    assert result.intact, result.broken and result.broken.describe()
    assert result.verified == threads_count * per_thread
    assert set(AuditEvent.objects.values_list("actor", flat=True)) == {f"worker-{n}" for n in range(threads_count)}


@pytest.mark.django_db(transaction=True)
def test_manage_py_exits_non_zero_and_names_the_tampered_entry() -> None:
    subject = User.objects.create(username="process-subject")
    events = _record_many(subject, 3)
    _tamper("UPDATE core_auditevent SET reason = %s WHERE id = %s", ["edited", events[1].pk])

    settings_dict = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "integration_hub.settings_test",
        "DATABASE_URL": (
            f"postgres://{settings_dict['USER']}@{settings_dict['HOST']}:{settings_dict['PORT']}/{settings_dict['NAME']}"
        ),
    }
    completed = subprocess.run(
        [sys.executable, "manage.py", "verify_audit_chain"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    assert f"id={events[1].pk} " in completed.stderr
    assert "1 entries verified before the break" in completed.stdout


def test_admin_is_read_only_even_for_a_superuser(admin_client: Any, subject: User) -> None:
    event = audit.record("test.kept", subject, reason="visible")
    change_url = f"/admin/core/auditevent/{event.pk}/change/"

    page = admin_client.get(change_url)
    assert page.status_code == 200
    assert b"visible" in page.content
    assert b'name="_save"' not in page.content
    assert b'name="_continue"' not in page.content

    assert admin_client.post(change_url, {"reason": "changed"}).status_code == 403
    assert admin_client.post(f"/admin/core/auditevent/{event.pk}/delete/", {"post": "yes"}).status_code == 403
    assert admin_client.get("/admin/core/auditevent/add/").status_code == 403
    changelist = admin_client.post(
        "/admin/core/auditevent/", {"action": "delete_selected", "_selected_action": [event.pk], "post": "yes"}
    )
    assert changelist.status_code in (200, 302)

    assert AuditEvent.objects.get(pk=event.pk).reason == "visible"
    assert audit.verify_chain().intact
