"""``manage.py reconcile``: reconcile billing, the canonical ledger and an ERP now, in this process.

    manage.py reconcile --connection tryton-local --legal-entity US01 --currency USD --period 2026-11
    manage.py reconcile --connection tryton-local --legal-entity US01 --currency USD --from 2026-11-01 --to 2026-11-15
    manage.py reconcile --scheduled            # every scope the daily schedule covers (this month and last)

Prints each side's totals and every difference; ``--no-heal`` only reports. Exits 1 when the run
found differences, 2 when it failed.
"""

from __future__ import annotations

import argparse
from datetime import date
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from apps.ledger.models import LegalEntity
from apps.reconciliation import services
from apps.reconciliation.compare import money
from apps.reconciliation.models import DocumentType, ReconciliationRun, RunStatus, Side, Trigger
from apps.routing.models import ERPConnection


def _month(value: str) -> tuple[date, date]:
    try:
        year, month = (int(part) for part in value.split("-"))
        return services.month_of(date(year, month, 1))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{value!r} is not a month (YYYY-MM)") from exc


class Command(BaseCommand):
    help = "Reconcile billing, the canonical ledger and an ERP for one scope (or every scheduled scope) now."

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--connection", help="ERP connection name")
        parser.add_argument("--legal-entity", help="legal entity code")
        parser.add_argument("--currency", help="ISO 4217 code")
        parser.add_argument("--period", type=_month, help="a month, YYYY-MM (default: this month)")
        parser.add_argument("--from", dest="start", type=date.fromisoformat, help="first day, YYYY-MM-DD")
        parser.add_argument("--to", dest="end", type=date.fromisoformat, help="last day (included), YYYY-MM-DD")
        parser.add_argument("--no-heal", action="store_true", help="report only: plan nothing, open no case")
        parser.add_argument("--scheduled", action="store_true", help="every scope the daily schedule covers")
        parser.add_argument("--actor", default="manage.py reconcile", help="who asked, for the audit log")

    def handle(self, *args: Any, **options: Any) -> None:
        scopes = services.scheduled_scopes(date.today()) if options["scheduled"] else [self._scope(options)]
        if not scopes:
            self.stdout.write("Nothing to reconcile: no invoice was planned to an active connection lately.")
            return
        worst = 0
        for scope in scopes:
            try:
                run = services.request_run(
                    **scope, trigger=Trigger.COMMAND, actor=options["actor"], heal=not options["no_heal"]
                )
            except services.RunRefused as exc:
                raise CommandError(str(exc)) from exc
            run = services.execute_run(run.pk)
            self._report(run)
            worst = max(worst, 2 if run.status == RunStatus.FAILED else 1 if run.difference_count else 0)
        if worst:
            raise SystemExit(worst)

    def _scope(self, options: dict[str, Any]) -> dict[str, object]:
        missing = [name for name in ("connection", "legal_entity", "currency") if not options[name]]
        if missing:
            raise CommandError(f"give --{', --'.join(m.replace('_', '-') for m in missing)} (or --scheduled)")
        try:
            connection = ERPConnection.objects.get(name=options["connection"])
            legal_entity = LegalEntity.objects.get(code=options["legal_entity"])
        except (ERPConnection.DoesNotExist, LegalEntity.DoesNotExist) as exc:
            raise CommandError(str(exc)) from exc
        start, end = options["period"] or services.month_of(date.today())
        start, end = options["start"] or start, options["end"] or end
        return {
            "connection": connection,
            "legal_entity": legal_entity,
            "currency": options["currency"].upper(),
            "period_start": start,
            "period_end": end,
        }

    def _report(self, run: ReconciliationRun) -> None:
        write = self.stdout.write
        write(f"Reconciliation run {run.pk}: {run.scope_label} — {run.get_status_display().lower()}")
        if run.status == RunStatus.FAILED:
            write(f"  failed: {run.error}")
            return
        for note in run.notes.splitlines():
            write(f"  {note}")
        totals = {(t.side, t.document_type): t for t in run.totals.all()}
        write(f"  {'':14}" + "".join(f"{Side(side).label:>28}" for side in Side.values))
        for document_type in DocumentType.values:
            cells = []
            for side in Side.values:
                total = totals.get((side, document_type))
                count, amount = (total.count, total.amount_minor) if total else (0, 0)
                cells.append(f"{count:>6} / {money(amount, run.currency):>18}")
            write(f"  {DocumentType(document_type).label:14}" + "".join(f"{cell:>28}" for cell in cells))
        write(f"  {run.documents_compared} documents compared, {run.difference_count} difference(s)")
        for difference in run.differences.all():
            action = f" [{difference.get_heal_action_display()}]" if difference.heal_action else ""
            write(f"  - {difference.get_kind_display()}: {difference.description}{action}")
