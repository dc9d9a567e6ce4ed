"""The one place where failures are worded for people. Each error code a connector, the planner or
the executor can park a posting with has an entry: its category (business failures go to finance
operations, technical ones to integration engineers), the kind of problem as finance names it,
the sentence shown in the console, and what fixes it.

Templates take the posting's document facts ({document}, {customer}, {amount}, {erp}) and the
error's own params ({value}, {erp_message}, ...). Wording changes are reviewed here, not in code
that raises errors.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from apps.connectors.documents import DIMENSIONS
from apps.core.money import to_decimal
from apps.posting.models import ErrorCategory, Operation, Posting

FINANCE = "Finance operations"
ENGINEERS = "Integration engineers"
AUDITORS = "Auditors"

# The fix a case offers first: a correction form for one mapping kind, or a plain retry.
FIX_MAPPING = "correct_mapping"
FIX_RETRY = "retry"
FIX_IN_BILLING = "fix_in_billing"


@dataclass(frozen=True)
class Entry:
    category: str
    kind: str
    template: str
    fix: str = FIX_RETRY
    mapping_kind: str = ""  # for FIX_MAPPING: revenue_account, tax_code, payment_journal

    @property
    def owner_group(self) -> str:
        return FINANCE if self.category == ErrorCategory.BUSINESS else ENGINEERS


B, T = ErrorCategory.BUSINESS, ErrorCategory.TECHNICAL
MISSING_MAPPING = "Missing mapping"
INVALID_MAPPING = "Mapping not found in the ERP"

CATALOGUE: dict[str, Entry] = {
    "missing_revenue_account_mapping": Entry(
        B,
        MISSING_MAPPING,
        "{document} for {customer} cannot be posted to {erp}: no revenue account is mapped for {item}. "
        "Add a revenue account mapping (for {keys}) and repost.",
        FIX_MAPPING,
        "revenue_account",
    ),
    "missing_tax_code_mapping": Entry(
        B,
        MISSING_MAPPING,
        "{document} for {customer} cannot be posted to {erp}: no tax code is mapped for {item}. "
        "Add a tax code mapping (for {keys}) and repost.",
        FIX_MAPPING,
        "tax_code",
    ),
    "missing_payment_journal_mapping": Entry(
        B,
        MISSING_MAPPING,
        "The payment on {document} for {customer} cannot be posted to {erp}: no payment journal is mapped "
        "for {item}. Add a payment journal mapping (for {keys}) and repost.",
        FIX_MAPPING,
        "payment_journal",
    ),
    "unmapped_revenue_account": Entry(
        B,
        INVALID_MAPPING,
        "{document} for {customer} was not posted: revenue account {value} does not exist in {erp}, is closed, "
        "or is not a revenue account. Correct the revenue account mapping and repost.",
        FIX_MAPPING,
        "revenue_account",
    ),
    "unknown_tax_code": Entry(
        B,
        INVALID_MAPPING,
        "{document} for {customer} was not posted: tax {value} does not exist in {erp}. "
        "Correct the tax code mapping and repost.",
        FIX_MAPPING,
        "tax_code",
    ),
    "unknown_payment_journal": Entry(
        B,
        INVALID_MAPPING,
        "The payment on {document} for {customer} was not posted: payment method {value} does not exist in "
        "{erp}. Correct the payment journal mapping and repost.",
        FIX_MAPPING,
        "payment_journal",
    ),
    "unknown_currency": Entry(
        B,
        "Currency not set up",
        "{document} for {customer} is in {value}, which {erp} does not have. Ask the ERP administrator to add "
        "the currency, then retry.",
    ),
    "amount_mismatch": Entry(
        B,
        "Amount mismatch",
        "{document} for {customer} does not match: billing says {billing_total}, {erp} computes {erp_total}. "
        "Check the tax mapping of its lines or correct the invoice in billing, then repost or skip it.",
        FIX_IN_BILLING,
    ),
    "overpayment": Entry(
        B,
        "Amount mismatch",
        "The payment of {billing_total} on {document} for {customer} is more than the {erp_total} still open in "
        "{erp}. Look for a payment recorded by hand in the ERP; link or skip this one.",
        FIX_IN_BILLING,
    ),
    "overrefund": Entry(
        B,
        "Amount mismatch",
        "The refund of {billing_total} on the credit note for {document} ({customer}) is more than the {erp_total} "
        "{erp} still owes the customer on it. Look for a refund recorded by hand in the ERP; link or skip this one.",
        FIX_IN_BILLING,
    ),
    "void_after_payment": Entry(
        B,
        "Void of a paid invoice",
        "Billing voided {document} for {customer}, but {erp} already holds payments on it ({erp_number}), so it "
        "cannot be cancelled. Refund the payment in billing, or remove the payment in the ERP, then retry.",
        FIX_IN_BILLING,
    ),
    "write_off_amount_mismatch": Entry(
        B,
        "Amount mismatch",
        "Billing writes off {billing_total} of {document} for {customer}, but {erp} has {erp_total} open on it. "
        "Look for a payment or credit recorded by hand in the ERP, then retry or skip.",
        FIX_IN_BILLING,
    ),
    "missing_write_off_method_mapping": Entry(
        B,
        MISSING_MAPPING,
        "{document} for {customer} cannot be written off in {erp}: no write-off method is mapped for {item}. "
        "Add a write-off method mapping (for {keys}) and repost.",
        FIX_MAPPING,
        "write_off_method",
    ),
    "unknown_write_off_method": Entry(
        B,
        INVALID_MAPPING,
        "{document} for {customer} was not written off: write-off method {value} does not exist in {erp}. "
        "Correct the write-off method mapping and repost.",
        FIX_MAPPING,
        "write_off_method",
    ),
    "missing_dispute_account_mapping": Entry(
        B,
        MISSING_MAPPING,
        "{document} cannot be posted to {erp}: no disputed funds account is mapped for {item}. "
        "Add a disputed funds account mapping (for {keys}) and repost.",
        FIX_MAPPING,
        "dispute_account",
    ),
    "missing_dispute_loss_account_mapping": Entry(
        B,
        MISSING_MAPPING,
        "{document} cannot be posted to {erp}: no dispute loss account is mapped for {item}. "
        "Add a dispute loss account mapping (for {keys}) and repost.",
        FIX_MAPPING,
        "dispute_loss_account",
    ),
    "unknown_dispute_account": Entry(
        B,
        INVALID_MAPPING,
        "{document} was not posted: the disputed funds account {value} does not exist in {erp}. "
        "Correct the disputed funds account mapping and repost.",
        FIX_MAPPING,
        "dispute_account",
    ),
    "unknown_dispute_loss_account": Entry(
        B,
        INVALID_MAPPING,
        "{document} was not posted: the dispute loss account {value} does not exist in {erp}. "
        "Correct the dispute loss account mapping and repost.",
        FIX_MAPPING,
        "dispute_loss_account",
    ),
    "dispute_in_foreign_currency": Entry(
        B,
        "Currency not supported",
        "{document} is in {currency}; the hub posts disputes to {erp} only in the company currency. Record it by "
        "hand in the ERP, then skip this posting with a reason.",
        FIX_IN_BILLING,
    ),
    "unapplied_cash_in_foreign_currency": Entry(
        B,
        "Currency not supported",
        "{document} is in {currency}; the hub posts unapplied cash to {erp} only in the company currency. Record "
        "it by hand in the ERP, then skip this posting with a reason.",
        FIX_IN_BILLING,
    ),
    "billing_document_missing": Entry(
        B,
        "Not in billing",
        "{document} is posted in the ERP, but the billing engine ({erp}) no longer has the invoice, so the ERP "
        "status cannot be written back to it. Check the invoice in billing, then skip this writeback with a "
        "reason.",
        FIX_IN_BILLING,
    ),
    "billing_document_voided": Entry(
        B,
        "Not in billing",
        "{document} is posted in the ERP, but the billing engine ({erp}) has voided the invoice, so the ERP "
        "status cannot be written back to it. Nothing is wrong in the ERP: skip this writeback with a reason.",
        FIX_IN_BILLING,
    ),
    "billing_metadata_full": Entry(
        B,
        "Billing record full",
        "{document}: the billing engine ({erp}) holds no more metadata entries on this invoice, so the ERP "
        "status cannot be written back. Remove an entry on the invoice in billing and retry, or skip this "
        "writeback with a reason.",
        FIX_IN_BILLING,
    ),
    "erp_document_missing": Entry(
        B,
        "ERP document missing",
        "{document} cannot be posted to {erp}: the ERP document it acts on ({value}) is no longer there (deleted, "
        "or linked to another record). Check it in the ERP, then link the right document or skip with a reason.",
    ),
    "no_open_period": Entry(
        B,
        "Closed period",
        "{document} is dated {date}, and {erp} has no open accounting period for that day. Ask the ERP "
        "administrator to open the period, then retry.",
    ),
    "amended_after_posting": Entry(
        B,
        "Changed after posting",
        "{document} for {customer} changed in billing after it was posted to {erp}. Correct the ERP document by "
        "hand (or credit and re-invoice in billing), then skip this posting with a reason.",
        FIX_IN_BILLING,
    ),
    "customer_without_address": Entry(
        B,
        "Customer data incomplete",
        "{customer} has no address in {erp}, so {document} cannot be posted. Add the address (in billing or the "
        "ERP), then retry.",
    ),
    "customer_mismatch": Entry(
        B,
        "Customer mismatch",
        "{document} names {customer}, but {erp} holds a different customer under the same reference. "
        "Check the customer in both systems, then link or retry.",
    ),
    "invalid_legal_entity": Entry(
        B,
        "Invalid legal entity",
        "{document} for {customer} belongs to legal entity {value}, which {erp} does not know. Correct the legal "
        "entity or the routing, then repost.",
    ),
    "missing_tax_registration": Entry(
        B,
        "Missing tax registration",
        "{customer} has no tax registration, which {erp} requires for {document}. Add it in billing, then replay.",
        FIX_IN_BILLING,
    ),
    "closed_period": Entry(
        B,
        "Closed period",
        "{erp} refused {document} for {customer} because its accounting period is closed or missing: "
        "{erp_message} Ask the accountant to open the period, then retry; or, where the ERP can name its first "
        "open day, set the connection's closed-period policy to re-date.",
    ),
    "invoice_date_out_of_sequence": Entry(
        B,
        "Invoice date out of sequence",
        "{erp} numbers customer invoices in date order and already holds {erp_number}, dated {accepted_from}, so "
        "{document} for {customer}, dated {date}, cannot be numbered. Re-date it in billing, or set the "
        "connection's closed-period policy to re-date (it then posts on {accepted_from}, billing's date in its "
        "memo), then retry.",
    ),
    "erp_rejected": Entry(
        B, "Refused by the ERP", "{erp} refused {document} for {customer}: {erp_message} Correct it, then retry."
    ),
    "erp_warning": Entry(
        B,
        "ERP asks for confirmation",
        "{erp} asks for a confirmation on {document} for {customer}: {erp_message} Confirm it in the ERP, or "
        "change the document, then retry.",
    ),
    "authentication": Entry(
        T,
        "Authentication",
        "The hub could not sign in to {erp}. An integration engineer must renew the credentials, then retry.",
    ),
    "configuration": Entry(
        T,
        "Connection configuration",
        "The connection to {erp} is not configured correctly, so {document} could not be posted. An integration "
        "engineer must fix the connection, then retry.",
    ),
    "schema_mismatch": Entry(
        T,
        "Schema mismatch",
        "{erp} answered in a shape the hub does not understand for {document}. An integration engineer must "
        "check the ERP's version against the connector.",
    ),
    "timeout": Entry(
        T,
        "Timeout",
        "{erp} did not confirm {document} for {customer} in time, {attempts} times. Nothing was posted twice: "
        "the hub looks the document up before sending again. Check the ERP, then retry.",
    ),
    "erp_unavailable": Entry(
        T,
        "ERP unavailable",
        "{erp} could not be reached for {document} for {customer} after {attempts} attempts. Check that the ERP "
        "is up, then retry.",
    ),
    "cannot_verify": Entry(
        T,
        "Unconfirmed posting",
        "{erp} may or may not hold {document} for {customer}: its last call got no answer and {erp} cannot be "
        "searched by the hub's reference. Check {erp}: link the document if it is there, retry if it is not.",
    ),
    "retries_exhausted": Entry(
        T,
        "Retries exhausted",
        "{document} for {customer} failed {attempts} times on {erp}. An integration engineer must look at the "
        "technical detail, then retry.",
    ),
}

# The mappings an ERP may require beyond accounts (items, currency ids, accounting dimensions):
# one entry each, worded alike.
for _kind, _word in [
    ("item", "item"),
    ("currency", "currency"),
    *[(_name, f"{_name.replace('_', ' ')} dimension") for _name in DIMENSIONS],
]:
    CATALOGUE.setdefault(
        f"missing_{_kind}_mapping",
        Entry(
            B,
            MISSING_MAPPING,
            "{document} for {customer} cannot be posted to {erp}: no "
            + _word
            + " is mapped for {item}. Add a "
            + _word
            + " mapping (for {keys}) and it is posted.",
            FIX_MAPPING,
            _kind,
        ),
    )

_PERIOD_WORDS = ("period", "fiscal year", "fiscalyear")


def catalogue_code(posting: Posting) -> str:
    """The catalogue entry for a posting's error code, refined where one code covers several cases."""
    code = posting.error_code
    params = posting.error_params or {}
    if code == "erp_rejected" and any(word in str(params.get("erp_message", "")).lower() for word in _PERIOD_WORDS):
        return "closed_period"
    if code == "retries_exhausted":
        last = params.get("last_outcome", "")
        if last == "uncertain":
            return "timeout"
        if last == "transient":
            return "erp_unavailable"
    return code if code in CATALOGUE else ""


def entry_for(posting: Posting) -> Entry:
    code = catalogue_code(posting)
    if code:
        return CATALOGUE[code]
    category = posting.error_category or ErrorCategory.TECHNICAL
    return Entry(category, "Other", "{finance_message}")


class _Facts(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "(unknown)"


def document_facts(posting: Posting) -> dict[str, Any]:
    """What a person recognises a posting by: the document, the customer, the amount, the ERP."""
    facts: dict[str, Any] = {"erp": posting.connection.name, "attempts": posting.attempt_count}
    invoice = posting.invoice or (posting.payment_application.invoice if posting.payment_application else None)
    if invoice is not None:
        facts["document"] = f"Invoice {invoice.number or invoice.source_id}"
        facts["customer"] = invoice.customer.name or invoice.customer.source_id
        facts["amount"] = f"{to_decimal(invoice.total_minor, invoice.currency)} {invoice.currency}"
    elif posting.customer is not None:
        facts["document"] = f"Customer {posting.customer.name or posting.customer.source_id}"
        facts["customer"] = posting.customer.name or posting.customer.source_id
    else:
        facts["document"] = posting.source_id
        facts["customer"] = "(unknown customer)"
    if posting.operation == Operation.APPLY_PAYMENT and posting.payment_application is not None:
        payment = posting.payment_application.payment
        facts["payment"] = payment.source_id
    memo = posting.credit_memo
    if memo is not None:
        on = f" on {facts['document']}" if invoice is not None else ""
        prefix = {
            Operation.REFUND_CREDIT_MEMO: "Refund of credit note",
            Operation.VOID_CREDIT_MEMO: "Void of credit note",
        }.get(posting.operation, "Credit note")
        facts["document"] = f"{prefix} {memo.number or memo.source_id}{on}"
        amount = memo.refunded_minor if posting.operation == Operation.REFUND_CREDIT_MEMO else memo.total_minor
        facts["amount"] = f"{to_decimal(amount, memo.currency)} {memo.currency}"
    elif posting.operation == Operation.RECEIVE_ON_ACCOUNT and posting.payment is not None:
        payment = posting.payment
        facts["document"] = f"Unapplied cash from payment {payment.source_id}"
        if payment.customer is not None:
            facts["customer"] = payment.customer.name or payment.customer.source_id
        facts["amount"] = f"{to_decimal(payment.on_account_minor, payment.currency)} {payment.currency}"
    elif posting.dispute is not None:
        dispute = posting.dispute
        movement = {
            Operation.WITHDRAW_DISPUTED_FUNDS: "Funds withdrawn by dispute",
            Operation.REINSTATE_DISPUTED_FUNDS: "Funds reinstated by dispute",
            Operation.LOSE_DISPUTE: "Loss on dispute",
        }.get(posting.operation, "Dispute")
        facts["document"] = f"{movement} {dispute.source_id} on payment {dispute.payment_source_id}"
        if dispute.payment is not None and dispute.payment.customer is not None:
            facts["customer"] = dispute.payment.customer.name or dispute.payment.customer.source_id
        facts["amount"] = f"{to_decimal(dispute.amount_minor, dispute.currency)} {dispute.currency}"
    elif posting.operation in _ACTS_ON_INVOICE and invoice is not None:
        facts["document"] = f"{_ACTS_ON_INVOICE[posting.operation]} {facts['document']}"
    return facts


# Postings that act on an invoice already in the ERP: named after what they do to it.
_ACTS_ON_INVOICE = {
    Operation.VOID_INVOICE: "Void of",
    Operation.WRITE_OFF: "Write-off of",
    Operation.APPLY_CREDIT: "Customer credit applied to",
    Operation.WRITE_BACK: "Writeback to billing of",
}


def finance_message(posting: Posting) -> str:
    entry = entry_for(posting)
    facts = _Facts(document_facts(posting))
    facts.update({key: value for key, value in (posting.error_params or {}).items() if value not in (None, "")})
    facts["finance_message"] = posting.finance_message
    try:
        return string.Formatter().vformat(entry.template, (), facts)
    except (ValueError, IndexError):
        return posting.finance_message
