"""One function to write an audit event; callers name the action in the finance domain.

The log is a hash chain: each entry stores the previous entry's hash (``prev_hash``) and a sha256
over that hash and its own content (``entry_hash``). Changing, inserting or removing a row anywhere
but at the very end breaks the chain, and ``verify_chain()`` (``manage.py verify_audit_chain``)
names the first entry where it breaks.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.db import connections, models, router, transaction
from django.utils import timezone

from apps.core.correlation import get_correlation_id
from apps.core.models import GENESIS_HASH, AuditEvent

SYSTEM = "system"

# Key of the PostgreSQL transaction-level advisory lock that serializes appends to the chain
# (ASCII "AUDITCHN"); any constant works as long as nothing else uses it.
CHAIN_LOCK_ID = 0x4155444954434E


def normalize_json(value: Any) -> Any:
    """What a JSONField reads back: Decimals, dates and UUIDs become strings, tuples lists, keys strings."""
    if value is None:
        return None
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder))


def _canonical_numbers(value: Any) -> Any:
    # PostgreSQL jsonb keeps numbers as numeric: 1e16 comes back as the int 10000000000000000 and -0.0
    # as 0.0. Hashing integral floats as ints makes the written and the read-back value hash alike.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {key: _canonical_numbers(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical_numbers(item) for item in value]
    return value


def _iso_utc(at: datetime) -> str:
    if timezone.is_naive(at):
        at = at.replace(tzinfo=UTC)
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def compute_entry_hash(event: AuditEvent) -> str:
    """sha256 hex over the entry's prev_hash and content (not its id), serialized canonically."""
    content = {
        "prev_hash": event.prev_hash,
        "at": _iso_utc(event.at),
        "actor": event.actor,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "correlation_id": event.correlation_id,
        "reason": event.reason,
        "before": _canonical_numbers(event.before),
        "after": _canonical_numbers(event.after),
    }
    serialized = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(serialized.encode("utf-8")).hexdigest()


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def record(
    action: str,
    obj: models.Model,
    *,
    actor: str = SYSTEM,
    reason: str = "",
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
    correlation_id: str = "",
) -> AuditEvent:
    """Append one entry to the chain.

    On PostgreSQL a transaction-level advisory lock serializes appends: it is held until the caller's
    transaction ends, so two workers never chain onto the same entry. On SQLite the database already
    serializes writers (``transaction_mode = IMMEDIATE``). The unique ``prev_hash`` refuses a fork either way.
    """
    event = AuditEvent(
        actor=_text(actor),
        action=_text(action),
        object_type=obj._meta.label_lower,
        object_id=_text(obj.pk),
        correlation_id=_text(correlation_id or getattr(obj, "correlation_id", "") or get_correlation_id()),
        reason=_text(reason),
        before=normalize_json(before),
        after=normalize_json(after),
    )
    using = router.db_for_write(AuditEvent)
    with transaction.atomic(using=using, savepoint=False):
        connection = connections[using]
        if connection.vendor == "postgresql":
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_xact_lock(%s)", [CHAIN_LOCK_ID])
        last = AuditEvent.objects.using(using).order_by("-id").values_list("entry_hash", flat=True).first()
        event.prev_hash = last or GENESIS_HASH
        event.at = timezone.now()
        event.entry_hash = compute_entry_hash(event)
        event.save(force_insert=True, using=using)
    return event


@dataclass(frozen=True)
class ChainBreak:
    """The first entry at which the chain does not hold."""

    id: int
    at: datetime
    action: str
    object_type: str
    object_id: str
    content_altered: bool  # its stored entry_hash does not match its content
    link_broken: bool  # its prev_hash is not the hash of the entry before it
    previous_id: int | None  # the last entry that verified, None at the start of the log

    def describe(self) -> str:
        problems = []
        if self.content_altered:
            problems.append("its content was altered (the stored entry_hash does not match it)")
        if self.link_broken:
            before = f"entry {self.previous_id}" if self.previous_id is not None else "the start of the log"
            problems.append(
                f"its link to the previous entry is broken (prev_hash is not the hash of {before}: an entry "
                "between them was deleted or inserted, or the previous entry was rewritten together with its hash)"
            )
        return (
            f"entry id={self.id} at {_iso_utc(self.at)} action={self.action} "
            f"object={self.object_type}#{self.object_id}: " + "; ".join(problems)
        )


@dataclass(frozen=True)
class ChainVerification:
    verified: int  # entries verified before the first break, or all of them
    last_id: int | None  # the last verified entry
    last_hash: str  # its entry_hash (GENESIS_HASH for an empty log)
    broken: ChainBreak | None

    @property
    def intact(self) -> bool:
        return self.broken is None


def verify_chain(using: str | None = None, chunk_size: int = 2000) -> ChainVerification:
    """Walk the log in id order, recompute every hash and check every link; stop at the first break.

    Appends are serialized, so id order is chain order. The chain alone cannot show that entries were
    removed from the very end: compare ``last_hash`` with a copy kept elsewhere for that.
    """
    using = using or router.db_for_read(AuditEvent)
    expected_prev = GENESIS_HASH
    verified = 0
    last_id: int | None = None
    for event in AuditEvent.objects.using(using).order_by("id").iterator(chunk_size=chunk_size):
        content_altered = compute_entry_hash(event) != event.entry_hash
        link_broken = event.prev_hash != expected_prev
        if content_altered or link_broken:
            broken = ChainBreak(
                id=event.pk,
                at=event.at,
                action=event.action,
                object_type=event.object_type,
                object_id=event.object_id,
                content_altered=content_altered,
                link_broken=link_broken,
                previous_id=last_id,
            )
            return ChainVerification(verified=verified, last_id=last_id, last_hash=expected_prev, broken=broken)
        expected_prev = event.entry_hash
        last_id = event.pk
        verified += 1
    return ChainVerification(verified=verified, last_id=last_id, last_hash=expected_prev, broken=None)
