"""The synthetic transaction: on a schedule, a marked test invoice goes through the whole hub
(verified and stored in the inbox, normalized by a worker, routed, planned, posted by the executor
through the connector) to a sandbox ERP connection, and its latency is recorded.

Configuration: ``HUB_SYNTHETIC_SOURCE`` names a billing source of kind ``canonical`` (the event is
signed with its own secret, as a billing engine would) with a legal entity of its own, and
``HUB_SYNTHETIC_CONNECTION`` the sandbox connection a routing rule sends that legal entity's
invoices to. Before each run the routing rules are evaluated for the test invoice: if they would
send it anywhere but the sandbox, nothing is sent and the run is recorded as failed.

A run is a ``SyntheticRun`` row: ``running`` when the event is stored, then ``posted`` with its
latency (event stored → ERP holds the invoice) the moment the executor posts the invoice
(``receivers.py``), ``failed`` if the posting is parked or dead, ``timed_out`` when neither
happened within ``HUB_SYNTHETIC_TIMEOUT_SECONDS``. A new run starts only when none is running.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from apps.core import secrets
from apps.core.correlation import correlation_scope
from apps.ingest import services as ingest
from apps.observability import metrics
from apps.observability.models import SyntheticResult, SyntheticRun
from apps.posting.models import Operation, Posting, PostingState
from apps.routing.models import ERPConnection, RoutingRule
from apps.routing.services import NoRoute, RouteFacts, routes
from apps.sources import canonical
from apps.sources.models import BillingSource

log = logging.getLogger(__name__)

CUSTOMER_ID = "hub-synthetic-check"
CUSTOMER_NAME = "Hub synthetic check (monitoring, not a customer)"
LINE_DESCRIPTION = "Synthetic transaction: hub monitoring test, not a sale"
PRODUCT_ID = "hub_synthetic_check"
AMOUNT_MINOR = 100


class NotConfigured(Exception):
    """The synthetic transaction is configured in a way that cannot run safely."""


def configured() -> tuple[BillingSource, ERPConnection] | None:
    """The synthetic source and sandbox connection, None when the run is switched off; raises
    ``NotConfigured`` when they are named but unusable or the test invoice would reach another ERP."""
    source_name, connection_name = settings.HUB["SYNTHETIC_SOURCE"], settings.HUB["SYNTHETIC_CONNECTION"]
    if not source_name or not connection_name:
        return None
    source = BillingSource.objects.select_related("legal_entity").filter(name=source_name, active=True).first()
    if source is None or source.kind != BillingSource.KIND_CANONICAL:
        raise NotConfigured(f"HUB_SYNTHETIC_SOURCE '{source_name}' is not an active source of kind canonical.")
    connection = ERPConnection.objects.filter(name=connection_name, active=True).first()
    if connection is None:
        raise NotConfigured(f"HUB_SYNTHETIC_CONNECTION '{connection_name}' is not an active ERP connection.")
    if not secrets.resolve_optional(source.webhook_secrets):
        raise NotConfigured(f"The synthetic source '{source_name}' has no secret set to sign its event with.")
    legal_entity = source.legal_entity
    facts = RouteFacts(
        transaction_type=RoutingRule.TYPE_INVOICE,
        legal_entity=legal_entity,
        region=(legal_entity.country if legal_entity else "").upper(),
        currency=_currency(source),
        document="the synthetic test invoice",
    )
    try:
        route = routes(facts)
    except NoRoute as exc:
        raise NotConfigured(str(exc)) from exc
    targets = sorted(target.name for target in route.connections)
    if targets != [connection.name]:
        raise NotConfigured(
            f"The routing rules would send the synthetic invoice to {', '.join(targets)}, not only to the sandbox "
            f"connection {connection.name}: nothing was sent."
        )
    return source, connection


def _currency(source: BillingSource) -> str:
    return ((source.legal_entity.base_currency if source.legal_entity else "") or "USD").upper()


def invoice_event(source: BillingSource, document_id: str, now: datetime) -> dict[str, object]:
    """The canonical ``invoice`` event of a marked test invoice: one line of 1.00, no tax."""
    currency = _currency(source)
    day = now.date().isoformat()
    return {
        "type": "invoice",
        "schema_version": 1,
        "data": {
            "id": document_id,
            "revision": 1,
            "number": f"SYNTHETIC-{document_id[-12:].upper()}",
            "customer": {"id": CUSTOMER_ID, "name": CUSTOMER_NAME, "currency": currency},
            "status": "open",
            "currency": currency,
            "subtotal_minor": AMOUNT_MINOR,
            "tax_minor": 0,
            "total_minor": AMOUNT_MINOR,
            "amount_paid_minor": 0,
            "invoice_date": day,
            "due_date": day,
            "lines": [
                {
                    "id": f"{document_id}-line",
                    "description": LINE_DESCRIPTION,
                    "quantity": "1",
                    "unit_amount_minor": AMOUNT_MINOR,
                    "amount_minor": AMOUNT_MINOR,
                    "tax_minor": 0,
                    "product_id": PRODUCT_ID,
                }
            ],
        },
    }


def start_run(now: datetime | None = None) -> SyntheticRun | None:
    """Send one synthetic invoice; None when switched off or one is still running."""
    now = now or timezone.now()
    try:
        setup = configured()
    except NotConfigured as exc:
        log.warning("synthetic transaction not sent", extra={"reason": str(exc)})
        run = SyntheticRun.objects.create(
            started_at=now,
            finished_at=now,
            source=settings.HUB["SYNTHETIC_SOURCE"],
            connection=settings.HUB["SYNTHETIC_CONNECTION"],
            document_id=f"not-sent-{uuid.uuid4().hex}",
            correlation_id="",
            result=SyntheticResult.FAILED,
            detail=str(exc),
        )
        metrics.synthetic_finished(run.connection, run.result, None)
        return run
    if setup is None:
        return None
    source, connection = setup
    if SyntheticRun.objects.filter(result=SyntheticResult.RUNNING).exists():
        log.info("a synthetic transaction is still running; none sent")
        return None
    document_id = f"synthetic-{uuid.uuid4().hex}"
    body = json.dumps(invoice_event(source, document_id, now)).encode()
    secret = secrets.resolve_optional(source.webhook_secrets)[0]
    headers = {
        "Content-Type": "application/json",
        canonical.IDEMPOTENCY_HEADER: document_id,
        canonical.SIGNATURE_HEADER: canonical.sign(body, secret),
    }
    with correlation_scope(document_id), transaction.atomic():
        run = SyntheticRun.objects.create(
            started_at=now,
            source=source.name,
            connection=connection.name,
            document_id=document_id,
            correlation_id=document_id,
        )
        envelope = ingest.verify(source, body, headers)
        ingest.store_event(source, envelope, body, headers)
        log.info("synthetic transaction sent", extra={"source": source.name, "connection": connection.name})
    return run


def finish_for(posting: Posting) -> None:
    """Called when a posting settles or needs attention: closes the synthetic run it belongs to."""
    if posting.operation != Operation.POST_INVOICE or posting.source != settings.HUB["SYNTHETIC_SOURCE"]:
        return
    run = (
        SyntheticRun.objects.select_for_update()
        .filter(document_id=posting.source_id, result=SyntheticResult.RUNNING)
        .first()
    )
    if run is None:
        return
    if posting.state == PostingState.POSTED and posting.posted_at is not None:
        run.result = SyntheticResult.POSTED
        run.finished_at = posting.posted_at
        run.latency_seconds = max((posting.posted_at - run.started_at).total_seconds(), 0.0)
        run.detail = f"Posted to {posting.connection.name} as {posting.erp_number or posting.erp_id}."
    elif posting.state in (PostingState.PARKED, PostingState.DEAD):
        run.result = SyntheticResult.FAILED
        run.finished_at = timezone.now()
        run.detail = f"The posting is {posting.state}: {posting.error_code} {posting.finance_message}".strip()
    else:
        return
    run.save(update_fields=["result", "finished_at", "latency_seconds", "detail"])
    metrics.synthetic_finished(run.connection, run.result, run.latency_seconds)
    log.info(
        "synthetic transaction finished",
        extra={"connection": run.connection, "outcome": run.result, "latency_seconds": run.latency_seconds},
    )


def expire_runs(now: datetime | None = None) -> int:
    """Runs that neither posted nor failed within the timeout are timed out."""
    now = now or timezone.now()
    limit = now - timedelta(seconds=settings.HUB["SYNTHETIC_TIMEOUT_SECONDS"])
    expired = 0
    for run in SyntheticRun.objects.filter(result=SyntheticResult.RUNNING, started_at__lt=limit):
        moved = SyntheticRun.objects.filter(pk=run.pk, result=SyntheticResult.RUNNING).update(
            result=SyntheticResult.TIMED_OUT,
            finished_at=now,
            detail=f"Not posted within {settings.HUB['SYNTHETIC_TIMEOUT_SECONDS']} s.",
        )
        if moved:
            expired += 1
            metrics.synthetic_finished(run.connection, SyntheticResult.TIMED_OUT, None)
            log.warning("synthetic transaction timed out", extra={"connection": run.connection})
    return expired


def run_scheduled(now: datetime | None = None) -> str:
    """The beat task's work: time out what is overdue, then send the next run."""
    now = now or timezone.now()
    expire_runs(now)
    run = start_run(now)
    return run.result if run is not None else "not_sent"
