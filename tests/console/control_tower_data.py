"""Rows for the control tower's tests, written with the timestamps a test chooses (``created_at``,
``updated_at`` and ``received_at`` are set by Django on save, so they are put back afterwards with a
bulk update, which does not touch them)."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from apps.console.models import CaseStatus, ConnectionSLA, ExceptionCase
from apps.ingest.models import InboxEvent, InboxStatus
from apps.posting.models import ErrorCategory, Operation, Posting, PostingState, idempotency_key
from apps.routing.models import ERPConnection

_serial = itertools.count(1)


@dataclass
class Seed:
    """Collects rows, then writes them in a few statements."""

    postings: list[Posting] = field(default_factory=list)
    events: list[InboxEvent] = field(default_factory=list)
    cases: list[ExceptionCase] = field(default_factory=list)

    def event(self, correlation_id: str, received_at: datetime, processed_at: datetime) -> InboxEvent:
        n = next(_serial)
        event = InboxEvent(
            source="stripe-us",
            event_id=f"evt_tower_{n}",
            event_type="invoice.finalized",
            object_id=f"in_tower_{n}",
            body="{}",
            correlation_id=correlation_id,
            status=InboxStatus.PROCESSED,
            processed_at=processed_at,
        )
        event.received_at = received_at
        self.events.append(event)
        return event

    def posting(
        self,
        connection: ERPConnection,
        state: str,
        *,
        created_at: datetime,
        posted_at: datetime | None = None,
        updated_at: datetime | None = None,
        correlation_id: str = "",
    ) -> Posting:
        n = next(_serial)
        source_id = f"in_tower_doc_{n}"
        posting = Posting(
            idempotency_key=idempotency_key(connection.name, Operation.POST_INVOICE, "stripe-us", source_id, 1),
            connection=connection,
            operation=Operation.POST_INVOICE,
            source="stripe-us",
            source_id=source_id,
            state=state,
            posted_at=posted_at,
            correlation_id=correlation_id,
        )
        posting.created_at = created_at
        posting.updated_at = updated_at or posted_at or created_at
        self.postings.append(posting)
        return posting

    def posted(
        self,
        connection: ERPConnection,
        *,
        latency: float,
        posted_at: datetime,
        via_event: bool = True,
        correlation_id: str = "",
    ) -> Posting:
        """A posting whose billing event arrived ``latency`` seconds before the ERP took it (with
        ``via_event=False``, planned ``latency`` seconds before, by no event: the fallback)."""
        arrived = posted_at - timedelta(seconds=latency)
        if via_event:
            correlation_id = correlation_id or f"cid-tower-{next(_serial)}"
            self.event(correlation_id, arrived, arrived + timedelta(seconds=min(1.0, latency / 2)))
            created = arrived + timedelta(seconds=min(0.5, latency / 4))
        else:
            created = arrived
        return self.posting(
            connection,
            PostingState.POSTED,
            created_at=created,
            posted_at=posted_at,
            correlation_id=correlation_id,
        )

    def case(
        self, connection: ERPConnection | None, *, opened_at: datetime, resolved_at: datetime | None = None
    ) -> ExceptionCase:
        n = next(_serial)
        case = ExceptionCase(
            connection=connection,
            root_kind=ExceptionCase.ROOT_INVOICE,
            source="stripe-us",
            source_id=f"in_tower_case_{n}",
            status=CaseStatus.RESOLVED if resolved_at else CaseStatus.OPEN,
            category=ErrorCategory.BUSINESS,
            kind="Amount mismatch",
            code="amount_mismatch",
            message="The invoice's total is not its lines plus tax.",
            owner_group="Finance operations",
            opened_at=opened_at,
            last_failure_at=opened_at,
            resolved_at=resolved_at,
        )
        self.cases.append(case)
        return case

    def save(self) -> None:
        received = {e.event_id: e.received_at for e in self.events}
        stamps = {p.idempotency_key: (p.created_at, p.updated_at) for p in self.postings}
        InboxEvent.objects.bulk_create(self.events, batch_size=500)
        Posting.objects.bulk_create(self.postings, batch_size=500)
        ExceptionCase.objects.bulk_create(self.cases, batch_size=500)
        # bulk_create stamped "now" over the chosen times; bulk_update writes them back.
        events = list(InboxEvent.objects.filter(event_id__in=list(received)))
        for event in events:
            event.received_at = received[event.event_id]
        InboxEvent.objects.bulk_update(events, ["received_at"], batch_size=500)
        postings = list(Posting.objects.filter(idempotency_key__in=list(stamps)))
        for posting in postings:
            posting.created_at, posting.updated_at = stamps[posting.idempotency_key]
        Posting.objects.bulk_update(postings, ["created_at", "updated_at"], batch_size=500)
        self.events, self.postings, self.cases = [], [], []


def connection(name: str) -> ERPConnection:
    return ERPConnection.objects.create(name=name, kind=ERPConnection.KIND_TRYTON, settings={})


def sla(
    conn: ERPConnection,
    *,
    min_success: str = "95",
    max_p95: int = 300,
    max_backlog: int = 1000,
    max_case_hours: int = 24,
) -> ConnectionSLA:
    return ConnectionSLA.objects.create(
        connection=conn,
        min_success_rate_percent=Decimal(min_success),
        max_p95_latency_seconds=max_p95,
        max_backlog=max_backlog,
        max_open_case_age_hours=max_case_hours,
    )
