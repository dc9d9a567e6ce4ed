"""The interface every ERP connector implements, and how each one keeps postings exactly-once.

A connector takes plain documents (``apps.connectors.documents``), talks to one ERP, and returns a
``PostResult`` or raises one of the errors in ``apps.core.errors``. It never reads the database.

Exactly-once is shared work. The hub guarantees one posting row per (connection, operation,
document, version) and a single executor per row at a time. The connector guarantees that a
repeated call for the same external reference does not create a second document: through the
ERP's own idempotency mechanism where it has one, or by looking the document up by its external
reference before creating it where it has none (``dedupe_strategy`` says which).
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any, ClassVar, Protocol

from apps.connectors.documents import (
    CreditMemoDocument,
    CustomerDocument,
    DisputeMovementDocument,
    InvoiceDocument,
    OnAccountDocument,
    PaymentDocument,
    PostResult,
    ReferenceItem,
    RefundDocument,
    VoidDocument,
    WriteOffDocument,
)

OPERATION_ENSURE_CUSTOMER = "ensure_customer"
OPERATION_POST_INVOICE = "post_invoice"
OPERATION_APPLY_PAYMENT = "apply_payment"
OPERATION_VOID_INVOICE = "void_invoice"
OPERATION_WRITE_OFF = "write_off"
OPERATION_POST_CREDIT_MEMO = "post_credit_memo"
OPERATION_REFUND_CREDIT_MEMO = "refund_credit_memo"
OPERATION_VOID_CREDIT_MEMO = "void_credit_memo"  # carried out by ``void_invoice`` on the credit note
REFUND_SUFFIX = ":refund"
# External references of the documents that act on an invoice: the invoice's own plus a suffix.
VOID_SUFFIX = ":void"
WRITE_OFF_SUFFIX = ":write-off"
OPERATION_WITHDRAW_DISPUTED_FUNDS = "withdraw_disputed_funds"
OPERATION_REINSTATE_DISPUTED_FUNDS = "reinstate_disputed_funds"
OPERATION_LOSE_DISPUTE = "lose_dispute"
OPERATION_RECEIVE_ON_ACCOUNT = "receive_on_account"
OPERATION_APPLY_CREDIT = "apply_credit"
ON_ACCOUNT_SUFFIX = ":on-account"
# A dispute's movements, each with the suffix of its external reference.
DISPUTE_MOVEMENTS = {
    OPERATION_WITHDRAW_DISPUTED_FUNDS: "withdrawn",
    OPERATION_REINSTATE_DISPUTED_FUNDS: "reinstated",
    OPERATION_LOSE_DISPUTE: "lost",
}

# Refusals of a document's date that a connection's closed-period policy may answer by re-dating it
# (``ERPConnection.closed_period_policy``): the date's period is closed in the ERP, or (Tryton) a
# later customer invoice is already numbered in the sequence, which keeps invoice dates in order.
# Connectors raise them as ``BusinessRuleError`` codes; a refusal may name, in its params under
# ``ACCEPTED_FROM`` (ISO date), the first date the ERP would take.
CLOSED_PERIOD = "closed_period"
INVOICE_DATE_ORDER = "invoice_date_out_of_sequence"
ACCEPTED_FROM = "accepted_from"


# What a reconciliation compares, by the kind of document the ERP holds under a hub reference.
ERP_INVOICE = "invoice"
ERP_CREDIT_MEMO = "credit_memo"
ERP_PAYMENT = "payment"
ERP_REFUND = "refund"
ERP_WRITE_OFF = "write_off"
ERP_OTHER = "other"  # unapplied cash, dispute movements, anything else carrying a hub reference


def journal_entry_kind(external_ref: str) -> str:
    """The kind of a journal entry the hub wrote, from the suffix of its reference: a payment
    application is ``<source>:<payment>:<invoice>``, the others end with their suffix."""
    if external_ref.endswith(REFUND_SUFFIX):
        return ERP_REFUND
    if external_ref.endswith(WRITE_OFF_SUFFIX):
        return ERP_WRITE_OFF
    if external_ref.endswith(ON_ACCOUNT_SUFFIX) or external_ref.rsplit(":", 1)[-1] in DISPUTE_MOVEMENTS.values():
        return ERP_OTHER
    return ERP_PAYMENT if external_ref.count(":") >= 2 else ERP_OTHER


@dataclass(frozen=True)
class ErpDocument:
    """One document the ERP's books hold under a hub reference, as a reconciliation reads it.

    ``amount`` is positive in ``currency`` (the document's own currency, not the company's): an
    invoice's or credit note's total, or what a journal entry moved on the customer's receivable.
    ``status`` is ``open``, ``paid`` or ``void`` for invoices and credit notes, ``posted`` for
    journal entries. Drafts are not listed: they are not in the books."""

    kind: str  # ERP_INVOICE, ERP_CREDIT_MEMO, ERP_PAYMENT, ERP_REFUND, ERP_WRITE_OFF or ERP_OTHER
    external_ref: str
    erp_id: str
    number: str
    currency: str
    amount: Decimal
    status: str
    document_date: date


class TokenStore(Protocol):
    """Credentials an ERP rotates (a refresh token), kept where every worker process reads them:
    the connection's own store in the database, encrypted. Set on the connector by the executor."""

    def load(self, name: str) -> str | None: ...

    def save(self, name: str, value: str) -> None: ...


class ERPConnector(abc.ABC):
    kind: ClassVar[str]
    dedupe_strategy: ClassVar[str]
    # Mapping kinds beyond the accounts every connector needs that this ERP cannot post without
    # (``item``, ``currency``, a dimension such as ``subsidiary``): the hub parks a document as a
    # missing-mapping case before calling the connector when one of them does not resolve.
    required_mappings: ClassVar[frozenset[str]] = frozenset()
    # Mapping kinds every connector is given but this ERP does not use (NetSuite and QuickBooks book
    # revenue on the item's income account): left out when unmapped instead of parking the document.
    unused_mappings: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: dict[str, Any]) -> None:
        """``settings`` is the connection's resolved configuration (secrets already read)."""
        self.settings = settings
        # Set by the executor: called before every request to the ERP, it waits for (or refuses)
        # a slot in the connection's request budget. Connectors call ``self.pace()``.
        self.pacer: Callable[[], None] | None = None
        # Set by the executor: where rotated credentials are kept for every process (see TokenStore).
        self.token_store: TokenStore | None = None

    def pace(self) -> None:
        if self.pacer is not None:
            self.pacer()

    @abc.abstractmethod
    def ensure_customer(self, doc: CustomerDocument) -> PostResult:
        """Create the customer, or update and return the one already holding ``doc.external_ref``."""

    @abc.abstractmethod
    def post_invoice(self, doc: InvoiceDocument) -> PostResult:
        """Create and post (validate) the invoice; idempotent on ``doc.external_ref``."""

    @abc.abstractmethod
    def apply_payment(self, doc: PaymentDocument) -> PostResult:
        """Record the payment against the invoice; idempotent on ``doc.external_ref``."""

    @abc.abstractmethod
    def post_credit_memo(self, doc: CreditMemoDocument) -> PostResult:
        """Create and post the credit note against the invoice; idempotent on ``doc.external_ref``."""

    @abc.abstractmethod
    def refund_credit_memo(self, doc: RefundDocument) -> PostResult:
        """Pay the credited amount back to the customer against the posted credit note; idempotent
        on ``doc.external_ref``. Refuses a refund larger than what the credit note leaves owed."""

    @abc.abstractmethod
    def void_invoice(self, doc: VoidDocument) -> PostResult:
        """Cancel the posted invoice as the ERP's rules allow; idempotent (a cancelled invoice is
        returned as it is). Refuses, as a business error, an invoice that has payments."""

    @abc.abstractmethod
    def write_off(self, doc: WriteOffDocument) -> PostResult:
        """Write off what is left of the invoice to the bad-debt account; idempotent on
        ``doc.external_ref``. Refuses when the ERP's open amount is not billing's."""

    @abc.abstractmethod
    def receive_on_account(self, doc: OnAccountDocument) -> PostResult:
        """Record cash that is not applied to an invoice as the customer's credit; idempotent on
        ``doc.external_ref``."""

    @abc.abstractmethod
    def apply_credit(self, doc: PaymentDocument) -> PostResult:
        """Settle ``doc.amount_minor`` of the invoice from the customer's credit (no new cash);
        idempotent on ``doc.external_ref``."""

    @abc.abstractmethod
    def move_disputed_funds(self, doc: DisputeMovementDocument) -> PostResult:
        """Record one movement of a chargeback's money as a journal entry; idempotent on
        ``doc.external_ref``."""

    @abc.abstractmethod
    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        """Look up what an earlier call of ``operation`` for ``external_ref`` left in the ERP.

        Returns the result only when the work is complete (for an invoice: posted). Used after an
        ``UncertainOutcome`` before anything is sent again.
        """

    def reference_data(self) -> list[ReferenceItem]:
        """Customers, tax codes and dimension values the ERP holds, for the validation API's
        cache. Optional: a connector without it answers validations from the hub's own data only."""
        raise NotImplementedError

    def ledger_documents(self, start: date, end: date, company: str = "") -> list[ErpDocument]:
        """Every posted (or cancelled) customer invoice, credit note and receivable journal entry
        dated in [start, end] that carries a reference, in ``company`` (the ERP's own id of the
        legal entity, from the ``company`` dimension mapping; "" for the connection's default).
        Optional: without it a reconciliation run says the ERP side could not be read."""
        raise NotImplementedError

    def first_open_date(self, on_or_after: date, company: str = "") -> date | None:
        """The first day on or after ``on_or_after`` that falls in a period the ERP takes postings
        in, for ``company`` (the ERP's own id of the legal entity, from the ``company`` dimension
        mapping; "" for the connection's default): ``on_or_after`` itself when its period is open,
        else the first day of the next open period; None when no open period follows. Optional:
        without it a document refused for a closed period is parked whatever the policy."""
        raise NotImplementedError

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions or sockets."""
