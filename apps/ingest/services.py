"""Receive billing events (verify, store, answer) and normalize them into the ledger."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import timedelta

from celery import current_app
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from apps.core import audit, config_cache, secrets
from apps.core.broker import resend_patience
from apps.core.correlation import TASK_HEADER, correlation_scope, for_event
from apps.ingest import signals
from apps.ingest.models import InboxEvent, InboxStatus
from apps.ledger import services as ledger
from apps.ledger.commands import (
    CreditMemoData,
    CustomerData,
    DisputeData,
    InvoiceData,
    LedgerCommand,
    SubscriptionData,
)
from apps.ledger.models import CreditMemo, Customer, Dispute, Invoice, Payment
from apps.observability import metrics
from apps.posting import planner
from apps.routing.services import NoRoute
from apps.sources.base import Envelope, IgnoredEvent, InvalidPayload, SourceAdapter
from apps.sources.models import BillingSource
from apps.sources.registry import adapter_for

log = logging.getLogger(__name__)

NORMALIZE_TASK = "ingest.normalize_event"


class UnknownSource(LookupError):
    pass


@dataclass(frozen=True)
class Receipt:
    event: InboxEvent
    duplicate: bool


# Every webhook names its source; sources change rarely. Each process reads one at most every
# few seconds (a change made in another process, such as deactivating a source, is seen within
# that time; one made in this process at once: forget_sources runs on every save and delete).
SOURCE_CACHE_SECONDS = 5.0
_sources: dict[str, tuple[float, BillingSource]] = {}


def active_source(name: str) -> BillingSource:
    cached = _sources.get(name)
    now = time.monotonic()
    if cached is not None and now - cached[0] < SOURCE_CACHE_SECONDS:
        return cached[1]
    source = BillingSource.objects.select_related("legal_entity").filter(name=name, active=True).first()
    if source is None:
        _sources.pop(name, None)
        raise UnknownSource(f"No active billing source is named '{name}'.")
    _sources[name] = (now, source)
    return source


def forget_sources(**_: object) -> None:
    _sources.clear()


def verify(source: BillingSource, body: bytes, headers: Mapping[str, str]) -> Envelope:
    """Raises SignatureError or InvalidPayload; returns what the inbox stores the event under."""
    lowered = {key.lower(): value for key, value in headers.items()}
    return adapter_for(source.kind).verify(body, lowered, secrets.resolve_optional(source.webhook_secrets))


def store_event(source: BillingSource, envelope: Envelope, body: bytes, headers: Mapping[str, str]) -> Receipt:
    """Store first, answer later. A database failure propagates (the view answers 5xx).

    One statement on the way in (measured in bench/BENCHMARKS.md): the row is stored already
    marked as sent, its message goes right after the commit, and the mark is taken back only if
    that send fails, so the sweeper sends it once the broker is back."""
    event_id = envelope.event_id
    kept = adapter_for(source.kind).kept_headers
    # A single INSERT commits by itself; inside a caller's transaction a savepoint keeps a
    # duplicate from aborting it.
    own_transaction = transaction.atomic() if transaction.get_connection().in_atomic_block else nullcontext()
    try:
        with own_transaction:
            event = InboxEvent.objects.create(
                source=source.name,
                event_id=event_id,
                event_type=envelope.event_type[:128],
                object_id=envelope.object_id[:255],
                headers={key: value for key, value in headers.items() if key.lower() in kept},
                body=body.decode("utf-8"),
                correlation_id=for_event(event_id),
                enqueued_at=timezone.now(),
            )
            transaction.on_commit(lambda: _send_stored(event))
    except IntegrityError:
        InboxEvent.objects.filter(source=source.name, event_id=event_id).update(delivery_count=F("delivery_count") + 1)
        event = InboxEvent.objects.get(source=source.name, event_id=event_id)
        with correlation_scope(event.correlation_id):
            log.info("redelivered event ignored", extra={"event_id": event_id, "source": source.name})
        metrics.event_received(source.name, metrics.DUPLICATE)
        return Receipt(event, duplicate=True)
    with correlation_scope(event.correlation_id):
        log.info("event stored", extra={"event_id": event_id, "source": source.name, "event_type": event.event_type})
    metrics.event_received(source.name, metrics.STORED)
    return Receipt(event, duplicate=False)


def send_normalize(event_id: int, correlation_id: str, *, mark_sent: bool = True) -> bool:
    try:
        current_app.send_task(NORMALIZE_TASK, args=[event_id], headers={TASK_HEADER: correlation_id})
    except Exception:  # noqa: BLE001 - broker down: the event is stored; the inbox sweeper sends it later
        log.warning("broker unavailable; event stays in the inbox for the sweeper", extra={"inbox_event_id": event_id})
        return False
    if mark_sent:
        InboxEvent.objects.filter(pk=event_id).update(enqueued_at=timezone.now())
    return True


def _send_stored(event: InboxEvent) -> None:
    """The message of an event stored as sent; unmarked when the broker refuses it."""
    if not send_normalize(event.pk, event.correlation_id, mark_sent=False):
        InboxEvent.objects.filter(pk=event.pk).update(enqueued_at=None)


def _apply(source: BillingSource, command: LedgerCommand, correlation_id: str) -> None:
    if isinstance(command, CustomerData):
        result = ledger.upsert_customer(
            source.name, command, legal_entity=source.legal_entity, correlation_id=correlation_id
        )
        assert isinstance(result.record, Customer)
        if result.changed and not result.created:
            planner.replan_customer_update(result.record)
        _plan_waiting_credit(result.record)
    elif isinstance(command, InvoiceData):
        result = ledger.upsert_invoice(
            source.name, command, legal_entity=source.legal_entity, correlation_id=correlation_id
        )
        assert isinstance(result.record, Invoice)
        planner.plan_invoice(result.record)
        _plan_waiting_credit(result.record.customer)
    elif isinstance(command, SubscriptionData):
        ledger.upsert_subscription(source.name, command, correlation_id=correlation_id)  # status events only
    elif isinstance(command, DisputeData):
        result = ledger.upsert_dispute(
            source.name, command, legal_entity=source.legal_entity, correlation_id=correlation_id
        )
        assert isinstance(result.record, Dispute)
        planner.plan_dispute(result.record)
    elif isinstance(command, CreditMemoData):
        result = ledger.upsert_credit_memo(source.name, command, correlation_id=correlation_id)
        assert isinstance(result.record, CreditMemo)
        planner.plan_credit_memo(result.record)
    else:
        result = ledger.upsert_payment(source.name, command, correlation_id=correlation_id)
        assert isinstance(result.record, Payment)
        planner.plan_payment(result.record)


def _plan_waiting_credit(customer: Customer) -> None:
    """A payment normalized before its customer (another event of the same customer, in another
    worker process at the same moment) is linked now, and its unapplied cash planned."""
    for payment in ledger.link_waiting_payments(customer):
        planner.plan_payment(payment)


def normalize_event(inbox_event_id: int) -> str:
    """Turn one stored event into ledger changes and planned postings, all in one transaction.
    Running it twice changes nothing the second time (ledger upserts and posting keys are
    idempotent), so at-least-once delivery of the task is safe."""
    with config_cache.pinned():
        return _normalize_event(inbox_event_id)


def _normalize_event(inbox_event_id: int) -> str:
    with transaction.atomic():
        event = InboxEvent.objects.select_for_update().filter(pk=inbox_event_id).first()
        if event is None:
            return "missing"
        if event.status in (InboxStatus.PROCESSED, InboxStatus.IGNORED):
            log.info("event already normalized", extra={"inbox_event_id": event.pk})
            return str(event.status)
        with correlation_scope(event.correlation_id):
            source = config_cache.cached(
                ("source", event.source),
                lambda: BillingSource.objects.select_related("legal_entity").filter(name=event.source).first(),
            )
            try:
                if source is None:
                    raise InvalidPayload(f"The billing source '{event.source}' no longer exists.")
                commands = _bound_adapter(source).parse(event.body.encode("utf-8"))
                with transaction.atomic():
                    for command in commands:
                        _apply(source, command, event.correlation_id)
            except IgnoredEvent as exc:
                return _finish(event, InboxStatus.IGNORED, str(exc))
            except NoRoute as exc:
                log.warning("no route for the event", extra={"inbox_event_id": event.pk, "reason": str(exc)})
                return _finish(event, InboxStatus.FAILED, str(exc), code=NoRoute.code)
            except (InvalidPayload, ledger.UnsupportedChange) as exc:
                log.warning("event could not be normalized", extra={"inbox_event_id": event.pk, "reason": str(exc)})
                return _finish(event, InboxStatus.FAILED, str(exc))
            return _finish(event, InboxStatus.PROCESSED, "")


def _bound_adapter(source: BillingSource) -> SourceAdapter:
    try:
        api_settings = secrets.resolve(source.api_settings or {})
    except secrets.MissingSecret as exc:
        raise InvalidPayload(f"The API settings of source '{source.name}' cannot be read: {exc}.") from exc
    return adapter_for(source.kind).bind(api_settings)


def _finish(event: InboxEvent, status: str, error: str, *, code: str = "") -> str:
    event.status = status
    event.error = error
    event.error_code = code or ("invalid" if status == InboxStatus.FAILED else "")
    event.processed_at = timezone.now()
    event.save(update_fields=["status", "error", "error_code", "processed_at"])
    metrics.event_normalized(event.source, status, event.received_at, event.processed_at)
    if status == InboxStatus.FAILED:
        audit.record("inbox.failed", event, reason=error)
        signals.event_failed.send(sender=InboxEvent, event=event, code=event.error_code, message=error)
    elif status == InboxStatus.PROCESSED:
        signals.event_processed.send(sender=InboxEvent, event=event)
    return status


def replay_event(inbox_event_id: int, *, actor: str, reason: str) -> InboxEvent:
    """Normalize a stored event again (after a configuration fix). Idempotent downstream."""
    with transaction.atomic():
        event = InboxEvent.objects.select_for_update().get(pk=inbox_event_id)
        before = {"status": event.status, "error": event.error}
        event.status = InboxStatus.RECEIVED
        event.error = ""
        event.save(update_fields=["status", "error"])
        audit.record("inbox.replayed", event, actor=actor, reason=reason, before=before, after={"status": event.status})
        transaction.on_commit(lambda: send_normalize(event.pk, event.correlation_id))
    return event


def sweep_inbox(now: timezone.datetime | None = None) -> int:
    """Re-enqueue events stored but never normalized (the broker was down, a message was lost)."""
    now = now or timezone.now()
    stale = now - timedelta(seconds=resend_patience(settings.HUB["INBOX_STALE_SECONDS"]))
    pending = (
        InboxEvent.objects.filter(status=InboxStatus.RECEIVED, received_at__lt=now - timedelta(seconds=5))
        .exclude(enqueued_at__gte=stale)
        .order_by("pk")
        .values_list("pk", "correlation_id")[:1000]
    )
    sent = sum(1 for pk, correlation_id in pending if send_normalize(pk, correlation_id))
    if sent:
        log.info("inbox sweep re-enqueued events", extra={"count": sent})
    return sent
