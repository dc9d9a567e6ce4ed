"""Pre-finalization checks answered from the validation cache, and the refresh that fills it.

A check never calls the ERP: it reads the cache a scheduled task refreshes from each connection
(``refresh_all``), so billing can ask before every invoice without loading the ERP, and gets an
answer (with the time the cache was last refreshed) while the ERP is down. Which connection a
legal entity's checks go to is decided by the routing rules, as for its invoices."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.connectors.registry import get_connector
from apps.core.errors import ConnectorError
from apps.core.secrets import MissingSecret
from apps.ledger.models import Customer, LegalEntity
from apps.routing.models import ERPConnection, Mapping, RoutingRule
from apps.routing.services import NoRoute, RouteFacts, routes
from apps.validation.models import ReferenceEntry, ReferenceRefresh

log = logging.getLogger(__name__)

# Connections that hold a ledger (not writeback targets in a billing engine).
WRITEBACK_KINDS = {
    ERPConnection.KIND_STRIPE,
    ERPConnection.KIND_CHARGEBEE,
    ERPConnection.KIND_LAGO,
    ERPConnection.KIND_RECURLY,
}


class CannotValidate(LookupError):
    """The check cannot be answered: unknown legal entity, no route, or a cache never filled."""

    def __init__(self, message: str, *, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Verdict:
    valid: bool
    connection: str
    as_of: datetime | None
    stale: bool
    reasons: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "valid": self.valid,
            "reasons": self.reasons,
            "erp_connection": self.connection,
            "cache_refreshed_at": self.as_of.isoformat() if self.as_of else None,
            "cache_stale": self.stale,
            **self.details,
        }


# --- refresh -----------------------------------------------------------------------------------


def refresh(connection: ERPConnection) -> ReferenceRefresh:
    """Replace the connection's cached entries with what the ERP holds now. A failure keeps the
    entries the last refresh read, and is recorded so answers can say the cache is stale."""
    state, _ = ReferenceRefresh.objects.get_or_create(connection=connection)
    state.attempted_at = timezone.now()
    try:
        items = get_connector(connection.kind, connection.resolved_settings()).reference_data()
    except NotImplementedError:
        state.error = f"The {connection.get_kind_display()} connector cannot list reference data."
        state.save()
        return state
    except (ConnectorError, MissingSecret, OSError) as exc:
        log.warning("validation cache refresh failed", extra={"connection": connection.name, "error": str(exc)})
        state.error = f"{type(exc).__name__}: {exc}"
        state.save()
        return state
    now = timezone.now()
    wanted = {(item.kind, item.dimension, item.code): item for item in items}
    with transaction.atomic():
        held = {(e.kind, e.dimension, e.code): e for e in ReferenceEntry.objects.filter(connection=connection)}
        ReferenceEntry.objects.filter(pk__in=[e.pk for key, e in held.items() if key not in wanted]).delete()
        changed = []
        for key, item in wanted.items():
            entry = held.get(key)
            if entry is None:
                continue
            entry.name, entry.active, entry.refreshed_at = item.name[:255], item.active, now
            changed.append(entry)
        ReferenceEntry.objects.bulk_update(changed, ["name", "active", "refreshed_at"], batch_size=1000)
        ReferenceEntry.objects.bulk_create(
            [
                ReferenceEntry(
                    connection=connection,
                    kind=item.kind,
                    dimension=item.dimension,
                    code=item.code[:255],
                    name=item.name[:255],
                    active=item.active,
                    refreshed_at=now,
                )
                for key, item in wanted.items()
                if key not in held
            ],
            batch_size=1000,
        )
        state.refreshed_at, state.entries, state.error = now, len(wanted), ""
        state.save()
    return state


def refresh_all() -> dict[str, str]:
    outcome = {}
    for connection in ERPConnection.objects.filter(active=True).exclude(kind__in=WRITEBACK_KINDS):
        state = refresh(connection)
        outcome[connection.name] = state.error or f"{state.entries} entries"
    return outcome


# --- checks ------------------------------------------------------------------------------------


# Where a legal entity's checks go, kept for a few seconds per process: a check answers in a few
# milliseconds, and evaluating the routing rules for each one would cost more than the check. A rule
# change reaches the answers within ``ROUTE_MEMO_SECONDS``; the cache's own state is read every time.
ROUTE_MEMO_SECONDS = 10.0
_memo: dict[str, tuple[float, LegalEntity, ERPConnection]] = {}


def _route(legal_entity_code: str) -> tuple[LegalEntity, ERPConnection]:
    now = time.monotonic()
    held = _memo.get(legal_entity_code)
    if held is not None and now - held[0] < ROUTE_MEMO_SECONDS:
        return held[1], held[2]
    entity = LegalEntity.objects.filter(code=legal_entity_code).first()
    if entity is None:
        raise CannotValidate(f"No legal entity has the code '{legal_entity_code}'.", status=404)
    facts = RouteFacts(RoutingRule.TYPE_INVOICE, entity, entity.country, currency=entity.base_currency)
    try:
        connection = routes(facts).connections[0]
    except NoRoute as exc:
        raise CannotValidate(str(exc)) from exc
    _memo[legal_entity_code] = (now, entity, connection)
    return entity, connection


def forget_routes() -> None:
    _memo.clear()


def _connection(legal_entity_code: str) -> tuple[LegalEntity, ERPConnection, ReferenceRefresh]:
    entity, connection = _route(legal_entity_code)
    state = ReferenceRefresh.objects.filter(connection=connection, refreshed_at__isnull=False).first()
    if state is None:
        raise CannotValidate(
            f"The validation cache of ERP connection '{connection.name}' has not been filled yet; "
            "it is refreshed on a schedule. Retry in a few minutes.",
            status=503,
        )
    return entity, connection, state


def _verdict(connection: ERPConnection, state: ReferenceRefresh, reasons: list[str], **details: Any) -> Verdict:
    return Verdict(
        valid=not reasons,
        connection=connection.name,
        as_of=state.refreshed_at,
        stale=bool(state.error),
        reasons=reasons,
        details=details,
    )


def validate_customer(legal_entity_code: str, source: str, customer_id: str) -> Verdict:
    """Can an invoice for this customer be posted for this legal entity? The hub must know the
    customer from billing, under the same legal entity, with a name and a currency; the ERP holds
    the account already or gets it with the first invoice (``in_erp`` says which)."""
    entity, connection, state = _connection(legal_entity_code)
    reasons = []
    customer = Customer.objects.select_related("legal_entity").filter(source=source, source_id=customer_id).first()
    external_ref = f"{source}:{customer_id}"
    in_erp = ReferenceEntry.objects.filter(
        connection=connection, kind=ReferenceEntry.KIND_CUSTOMER, code=external_ref, active=True
    ).first()
    if customer is None:
        if in_erp is None:
            reasons.append(
                f"Customer {customer_id} of {source} is unknown: billing has not sent it to the hub and "
                f"{connection.name} has no account for it."
            )
    else:
        if customer.legal_entity_id and customer.legal_entity_id != entity.pk:
            reasons.append(
                f"Customer {customer_id} belongs to legal entity {customer.legal_entity.code}, not {entity.code}."  # type: ignore[union-attr]
            )
        if not customer.name.strip():
            reasons.append(f"Customer {customer_id} has no name; the ERP needs one for its account.")
        if not customer.currency:
            reasons.append(f"Customer {customer_id} has no currency.")
    return _verdict(
        connection,
        state,
        reasons,
        customer={
            "source": source,
            "id": customer_id,
            "known_to_hub": customer is not None,
            "in_erp": in_erp is not None,
            "erp_name": in_erp.name if in_erp else "",
            "legal_entity": entity.code,
        },
    )


def lookup_dimension(legal_entity_code: str, dimension: str, value: str = "") -> Verdict:
    """The values of one dimension the ERP holds; with ``value``, whether it is one of them."""
    _, connection, state = _connection(legal_entity_code)
    entries = ReferenceEntry.objects.filter(
        connection=connection, kind=ReferenceEntry.KIND_DIMENSION, dimension=dimension, active=True
    )
    if value:
        entry = entries.filter(code=value).first()
        reasons = [] if entry else [f"'{value}' is not an active {dimension} in {connection.name}."]
        return _verdict(connection, state, reasons, dimension=dimension, value=value, name=entry.name if entry else "")
    values = [{"code": code, "name": name} for code, name in entries.values_list("code", "name")[:1000]]
    reasons = [] if values else [f"{connection.name} has no {dimension} values."]
    return _verdict(connection, state, reasons, dimension=dimension, values=values)


def verify_tax_code(legal_entity_code: str, code: str) -> Verdict:
    """``code`` is billing's tax code (a mapping key) or the ERP's own; either must lead to an
    active tax in the ERP."""
    _, connection, state = _connection(legal_entity_code)
    mapped = (
        Mapping.objects.filter(connection=connection, kind=Mapping.KIND_TAX_CODE, key=code)
        .values_list("value", flat=True)
        .first()
    )
    erp_code = mapped or code
    taxes = ReferenceEntry.objects.filter(connection=connection, kind=ReferenceEntry.KIND_TAX_CODE)
    entry = taxes.filter(code=erp_code).first()
    reasons = []
    if entry is None:
        reasons.append(f"Tax code '{erp_code}' does not exist in {connection.name}.")
    elif not entry.active:
        reasons.append(f"Tax code '{erp_code}' is inactive in {connection.name}.")
    return _verdict(
        connection,
        state,
        reasons,
        tax_code=code,
        erp_tax_code=erp_code,
        mapped=mapped is not None,
        name=entry.name if entry else "",
    )
