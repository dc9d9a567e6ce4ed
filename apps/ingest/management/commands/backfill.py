"""Import a billing source's open invoices (and what was paid on them) for a date range, so the
hub can be switched on mid-period. ``--dry-run`` prints what would be posted and changes nothing."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, date, datetime, time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from apps.ingest.backfill import IN_ERP, POST, backfill
from apps.sources.base import BackfillItem
from apps.sources.models import BillingSource


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise CommandError(f"'{value}' is not a date (YYYY-MM-DD)") from exc


class Command(BaseCommand):
    help = "Backfill a billing source's open invoices created between two dates (cutover from another integration)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("source", help="the billing source's name, e.g. stripe-us")
        parser.add_argument("--since", required=True, help="first invoice date, YYYY-MM-DD")
        parser.add_argument("--until", default=date.today().isoformat(), help="last invoice date (default today)")
        parser.add_argument("--dry-run", action="store_true", help="print what would be posted; change nothing")
        parser.add_argument(
            "--erp-reference",
            default="{source}:{id}",
            help="how the earlier integration referenced invoices in the ERP, from {id}, {number} and {source}; "
            "an invoice the ERP holds under it is recorded, not posted again (default: the hub's own)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        source = BillingSource.objects.filter(name=options["source"], active=True).first()
        if source is None:
            raise CommandError(f"No active billing source is named '{options['source']}'.")
        since = datetime.combine(_day(options["since"]), time.min, UTC)
        until = datetime.combine(_day(options["until"]), time.max, UTC)
        if since > until:
            raise CommandError("--since is after --until")

        def progress(items: Iterable[BackfillItem], total: int) -> Iterable[BackfillItem]:
            return tqdm(items, total=total, desc=f"{source.name} open invoices", unit="invoice", file=self.stderr)

        try:
            lines = backfill(
                source,
                since,
                until,
                dry_run=options["dry_run"],
                erp_reference=options["erp_reference"],
                progress=progress,
            )
        except (NotImplementedError, ValueError, LookupError) as exc:
            raise CommandError(str(exc)) from exc
        verb = {POST: "would post" if options["dry_run"] else "posting", IN_ERP: "already in the ERP"}
        for line in lines:
            action = verb.get(line.action, line.action)
            if line.erp_id:
                action += f" (ERP id {line.erp_id})"
            self.stdout.write(
                f"{line.invoice_id}  {line.number or '-':<14} {line.customer[:30]:<30} {line.amount:>14}  "
                f"paid {line.paid:>14}  {action}"
            )
        counts = {action: sum(1 for line in lines if line.action == action) for action in {x.action for x in lines}}
        summary = ", ".join(f"{count} {verb.get(action, action)}" for action, count in sorted(counts.items()))
        prefix = "dry run, nothing changed: " if options["dry_run"] else ""
        self.stdout.write(f"{prefix}{len(lines)} open invoices: {summary or 'none'}")
