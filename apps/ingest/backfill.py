"""Backfill and cutover: bring a billing engine's open invoices (and what was paid on them) into
the hub when it is switched on mid-period, without posting again what an earlier integration
already posted.

Each open invoice read from the engine's API is stored in the inbox as an event of its own and
normalized the usual way, so it is traceable and idempotent (a second run stores nothing new).
Before that, the ERP is asked whether it already holds the invoice under the reference the earlier
integration used (``erp_reference``, a template over the invoice's ``id`` and ``number`` and the
``source``). When it does, the invoice's posting is adopted: recorded as posted with the ERP's id,
not sent; the payments billing recorded on it are assumed to be in the ERP too and are skipped,
with the reason, for finance to check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import transaction

from apps.connectors.base import OPERATION_POST_INVOICE, ERPConnector
from apps.connectors.registry import get_connector
from apps.core import secrets
from apps.core.correlation import correlation_scope, new_correlation_id
from apps.core.money import to_decimal
from apps.ingest import services
from apps.ingest.models import InboxEvent
from apps.posting import services as posting_services
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import RoutingRule
from apps.routing.services import RouteFacts, routes
from apps.sources.base import BackfillItem
from apps.sources.models import BillingSource
from apps.sources.registry import adapter_for

log = logging.getLogger(__name__)

ACTOR = "backfill"
POST, IN_ERP, IMPORTED = "post", "already in the ERP", "already imported"


@dataclass(frozen=True)
class BackfillLine:
    invoice_id: str
    number: str
    customer: str
    amount: str
    paid: str
    action: str  # POST, IN_ERP or IMPORTED
    erp_id: str = ""


def backfill(
    source: BillingSource,
    since: datetime,
    until: datetime,
    *,
    dry_run: bool,
    erp_reference: str = "{source}:{id}",
    progress: Callable[[Iterable[BackfillItem], int], Iterable[BackfillItem]] = lambda items, _: items,
) -> list[BackfillLine]:
    adapter = adapter_for(source.kind).bind(secrets.resolve(source.api_settings or {}))
    items = list(adapter.open_invoices(since, until))
    # The ERP an invoice of this source goes to by the rules (the first, where rules fan out): the
    # one an earlier integration would have posted it to.
    entity = source.legal_entity
    facts = RouteFacts(RoutingRule.TYPE_INVOICE, entity, entity.country if entity else "", document="backfill")
    connection = routes(facts).connections[0]
    connector = get_connector(connection.kind, connection.resolved_settings())
    lines = []
    for item in progress(items, len(items)):
        lines.append(_one(source, item, connector, dry_run=dry_run, erp_reference=erp_reference))
    return lines


def _one(
    source: BillingSource, item: BackfillItem, connector: ERPConnector, *, dry_run: bool, erp_reference: str
) -> BackfillLine:
    reference = erp_reference.format(source=source.name, **item.erp_keys)
    found = None
    imported = InboxEvent.objects.filter(source=source.name, event_id=item.envelope.event_id).exists()
    if not imported:
        found = connector.find_document(OPERATION_POST_INVOICE, reference)
    line = BackfillLine(
        invoice_id=item.envelope.object_id,
        number=item.number,
        customer=item.customer,
        amount=f"{to_decimal(item.total_minor, item.currency)} {item.currency}",
        paid=f"{to_decimal(item.paid_minor, item.currency)} {item.currency}",
        action=IMPORTED if imported else (IN_ERP if found else POST),
        erp_id=found.erp_id if found else "",
    )
    if dry_run or imported:
        return line
    with correlation_scope(new_correlation_id()), transaction.atomic():
        receipt = services.store_event(source, item.envelope, item.body, {})
        if receipt.duplicate:
            return BackfillLine(**{**line.__dict__, "action": IMPORTED})
        services.normalize_event(receipt.event.pk)
        if found is not None:
            _adopt(source, item, found.erp_id, found.erp_number, reference)
    log.info("backfilled", extra={"source": source.name, "invoice": item.envelope.object_id, "action": line.action})
    return line


def _adopt(source: BillingSource, item: BackfillItem, erp_id: str, erp_number: str, reference: str) -> None:
    invoice_postings = Posting.objects.filter(
        source=source.name, invoice__source_id=item.envelope.object_id, operation=Operation.POST_INVOICE
    )
    payment_postings = Posting.objects.filter(
        source=source.name,
        payment_application__invoice__source_id=item.envelope.object_id,
        state__in=(PostingState.QUEUED, PostingState.WAITING),
    )
    for payment in payment_postings:
        posting_services.skip_not_started(
            payment.pk,
            actor=ACTOR,
            reason=f"Backfill: the invoice was already in the ERP under '{reference}'; what billing recorded as "
            "paid on it is taken to be recorded there too. Check the ERP invoice's open amount.",
        )
    for posting in invoice_postings.filter(state__in=(PostingState.QUEUED, PostingState.WAITING)):
        posting_services.adopt_existing(
            posting.pk,
            erp_id=erp_id,
            erp_number=erp_number,
            actor=ACTOR,
            reason=f"Backfill: the ERP already holds this invoice under '{reference}' (posted by the earlier "
            "integration); recorded, not posted again.",
        )
