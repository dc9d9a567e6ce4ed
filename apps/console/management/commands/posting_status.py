from __future__ import annotations

import time
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count

from apps.connectors.registry import get_connector
from apps.ingest.models import InboxEvent, InboxStatus
from apps.posting.models import EXCEPTION_STATES, Posting, PostingState

UNSETTLED = (PostingState.QUEUED, PostingState.WAITING, PostingState.IN_FLIGHT, PostingState.RETRY_SCHEDULED)


class Command(BaseCommand):
    help = "Print postings by state; with --wait, wait until the pipeline has settled."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--wait", action="store_true", help="wait until nothing is queued or in flight")
        parser.add_argument("--min-posted-invoices", type=int, default=0)
        parser.add_argument("--timeout", type=float, default=300)
        parser.add_argument(
            "--verify-erp", action="store_true", help="look every posted invoice up in its ERP through the connector"
        )

    def _counts(self) -> dict[str, int]:
        return dict(Posting.objects.values_list("state").annotate(n=Count("id")).values_list("state", "n"))

    def _settled(self, minimum: int) -> bool:
        pending_inbox = InboxEvent.objects.filter(status=InboxStatus.RECEIVED).exists()
        unsettled = Posting.objects.filter(state__in=UNSETTLED).exists()
        posted = Posting.objects.filter(operation="post_invoice", state=PostingState.POSTED).count()
        return not pending_inbox and not unsettled and posted >= minimum

    def handle(self, *args: Any, **options: Any) -> None:
        deadline = time.monotonic() + options["timeout"]
        while options["wait"] and not self._settled(options["min_posted_invoices"]):
            if time.monotonic() > deadline:
                raise CommandError(f"not settled after {options['timeout']}s: {self._counts()}")
            time.sleep(1)
        for state, count in sorted(self._counts().items()):
            self.stdout.write(f"{state:<16} {count}")
        for posting in Posting.objects.filter(state__in=EXCEPTION_STATES).order_by("created_at")[:20]:
            self.stdout.write(f"  needs action: #{posting.pk} {posting}: {posting.finance_message}")
        if options["wait"] and Posting.objects.filter(state__in=EXCEPTION_STATES).exists():
            raise CommandError("some postings need action (see above)")
        if options["verify_erp"]:
            self._verify_erp()

    def _verify_erp(self) -> None:
        posted = Posting.objects.filter(operation="post_invoice", state=PostingState.POSTED).select_related(
            "connection"
        )
        for posting in posted:
            connector = get_connector(posting.connection.kind, posting.connection.resolved_settings())
            found = connector.find_document(posting.operation, posting.external_ref)
            if found is None or found.erp_id != posting.erp_id:
                raise CommandError(f"{posting.external_ref} is not in {posting.connection} as posted (found {found})")
            self.stdout.write(
                f"in {posting.connection}: {posting.external_ref} → invoice {found.erp_number} ({found.erp_id})"
            )
