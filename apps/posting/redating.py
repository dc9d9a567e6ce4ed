"""The closed-period policy of a connection: what the hub does when the ERP refuses a document for
its date (``ERPConnection.closed_period_policy``).

``park`` (the default) parks it as a case for finance, as any business refusal. ``redate`` sends it
again on the first day the ERP takes, asked of the connector (``first_open_date``), with billing's
date in the document's memo (``original_date``, written by the connector). The refusals that qualify
are the date's period being closed, and Tryton's customer invoice sequence, which numbers invoices
in date order: a document dated before the last one numbered cannot carry its date either (the
backfill case). A connector that cannot name its first open day parks whatever the policy.

Every re-dated posting has one ``RedatedPosting``, written before the re-dated document is sent
(so a re-dated document whose answer was lost is still known as re-dated when the lookup finds
it), with an audit event. A later attempt sends the same date again (the ERP may hold a draft on
it) and moves it only when the ERP refuses that date too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import date
from typing import Any

from django.db import transaction

from apps.connectors.base import ACCEPTED_FROM, CLOSED_PERIOD, INVOICE_DATE_ORDER, ERPConnector
from apps.connectors.documents import PostResult
from apps.core import audit
from apps.core.errors import BusinessRuleError
from apps.posting.models import Operation, Posting, RedatedPosting, RedateReason
from apps.routing.models import ERPConnection

log = logging.getLogger(__name__)

# The date field of each operation's document: the one the ERP files the document under.
DATE_FIELDS: dict[str, str] = {
    Operation.POST_INVOICE: "invoice_date",
    Operation.POST_CREDIT_MEMO: "invoice_date",
    Operation.APPLY_PAYMENT: "paid_on",
    Operation.APPLY_CREDIT: "paid_on",
    Operation.REFUND_CREDIT_MEMO: "refunded_on",
    Operation.VOID_INVOICE: "voided_on",
    Operation.VOID_CREDIT_MEMO: "voided_on",
    Operation.WRITE_OFF: "written_off_on",
    Operation.RECEIVE_ON_ACCOUNT: "received_on",
    Operation.WITHDRAW_DISPUTED_FUNDS: "moved_on",
    Operation.REINSTATE_DISPUTED_FUNDS: "moved_on",
    Operation.LOSE_DISPUTE: "moved_on",
}
REASONS = {CLOSED_PERIOD: RedateReason.CLOSED_PERIOD, INVOICE_DATE_ORDER: RedateReason.INVOICE_DATE_ORDER}
# A closed period, then a later invoice already numbered in the next open one: two re-dates are the
# most one document needs; the cap only stops an ERP that keeps refusing from looping.
MAX_REDATES = 3


def send(connector: ERPConnector, posting: Posting, document: Any, call: Callable[[Any], PostResult]) -> PostResult:
    """``call(document)``, under the connection's closed-period policy."""
    field = DATE_FIELDS.get(posting.operation)
    if field is None:
        return call(document)
    decided = RedatedPosting.objects.filter(posting=posting).first()
    if decided is not None:
        if posting.connection.closed_period_policy == ERPConnection.CLOSED_PERIOD_REDATE:
            document = replace(document, **{field: decided.posted_date, "original_date": decided.original_date})
        else:
            # The policy changed to park since: send billing's date (the lookup before this call
            # found no re-dated document in the ERP; the connector rewrites a draft's date).
            decided = _withdraw(decided)
    for redates in range(MAX_REDATES + 1):
        try:
            result = call(document)
            break
        except BusinessRuleError as refused:
            target = _first_accepted_date(connector, posting, document, field, refused)
            if target is None or redates == MAX_REDATES:
                raise
            decided = _decide(posting, decided, document, field, target, refused)
            document = replace(document, **{field: target, "original_date": decided.original_date})
    if decided is None:
        return result
    return replace(result, detail={**result.detail, "redated": f"{decided.original_date} → {decided.posted_date}"})


def _first_accepted_date(
    connector: ERPConnector, posting: Posting, document: Any, field: str, refused: BusinessRuleError
) -> date | None:
    """The date to send the document on again, or None to park it as refused."""
    if refused.code not in REASONS or posting.connection.closed_period_policy != ERPConnection.CLOSED_PERIOD_REDATE:
        return None
    refused_on: date = getattr(document, field)
    start = refused_on
    accepted = refused.params.get(ACCEPTED_FROM)
    if accepted:
        start = max(start, date.fromisoformat(accepted))
    try:
        target = connector.first_open_date(start, document.dimensions.get("company", ""))
    except NotImplementedError:
        return None  # this ERP cannot name its first open day: finance decides
    if target is None or target <= refused_on:
        # No open period follows, or the ERP calls the refused date open: nothing to re-date to.
        log.info(
            "no date to re-date to",
            extra={"posting_id": posting.pk, "refused_on": refused_on.isoformat(), "first_open": str(target)},
        )
        return None
    return target


def _decide(
    posting: Posting,
    decided: RedatedPosting | None,
    document: Any,
    field: str,
    target: date,
    refused: BusinessRuleError,
) -> RedatedPosting:
    refused_on: date = getattr(document, field)
    original = document.original_date or refused_on
    reason = REASONS[refused.code]
    erp_message = str(refused.params.get("erp_message") or refused.finance_message)
    with transaction.atomic():
        if decided is None:
            decided = RedatedPosting.objects.create(
                posting=posting, original_date=original, posted_date=target, reason=reason, erp_message=erp_message
            )
        else:
            decided.posted_date = target
            decided.save(update_fields=["posted_date", "updated_at"])
        audit.record(
            "posting.redated",
            posting,
            reason=(
                f"{posting.connection.name} refused the date {refused_on} ({reason.label.lower()}: {erp_message}). "
                f"By the connection's closed-period policy it is sent dated {target}, its first open day, with "
                f"billing's date {original} in the ERP document's memo."
            ),
            before={"date": refused_on.isoformat()},
            after={"date": target.isoformat(), "original_date": original.isoformat(), "reason": str(reason)},
        )
    log.info(
        "re-dated",
        extra={"posting_id": posting.pk, "original_date": original.isoformat(), "posted_date": target.isoformat()},
    )
    return decided


def _withdraw(decided: RedatedPosting) -> None:
    posting = decided.posting
    with transaction.atomic():
        audit.record(
            "posting.redate_withdrawn",
            posting,
            reason=f"The closed-period policy of {posting.connection.name} is now park: sent on billing's date again.",
            before={"date": decided.posted_date.isoformat(), "original_date": decided.original_date.isoformat()},
            after={"date": decided.original_date.isoformat()},
        )
        decided.delete()
    return None
