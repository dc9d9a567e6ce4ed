"""Writeback to Chargebee: once Tryton holds the invoice (or a payment on it), a comment on the
Chargebee invoice names the ERP document and its status, added exactly once through retries:
a 500, a timeout after Chargebee added it, a 429, and a retry after Chargebee forgot the
idempotency key. The contract simulator counts what Chargebee added."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.connectors.chargebee_writeback import ChargebeeWriteback, comment_notes
from apps.connectors.documents import WritebackDocument
from apps.core.errors import AuthenticationError, BusinessRuleError, TransientError, UncertainOutcome
from apps.posting.models import Operation, PostingAttempt, PostingState
from apps.routing.models import ERPConnection
from apps.sources import chargebee_samples as cb
from apps.sources.models import BillingSource
from tests.chargebee_simulator import API_KEY, ChargebeeSimulator
from tests.conftest import wait_for
from tests.e2e.test_lifecycle import posted

SOURCE = "chargebee-us"
CREDENTIALS = os.environ["CHARGEBEE_WEBHOOK_CREDENTIALS"]


@pytest.fixture
def chargebee_api() -> Iterator[ChargebeeSimulator]:
    simulator = ChargebeeSimulator(hang_seconds=2.5)
    yield simulator
    simulator.stop()


@pytest.fixture
def writeback(hub: Any, chargebee_api: ChargebeeSimulator) -> ERPConnection:
    connection = ERPConnection.objects.create(
        name="chargebee-us-writeback",
        kind="chargebee",
        settings={"api_key": "env:CHARGEBEE_API_KEY", "api_base": chargebee_api.url, "timeout": 1},
    )
    BillingSource.objects.filter(name=SOURCE).update(writeback_connection=connection)
    return connection


def send(client: Client, event: dict[str, Any]) -> None:
    response = client.post(
        f"/webhooks/{SOURCE}/",
        data=json.dumps(event).encode(),
        content_type="application/json",
        HTTP_AUTHORIZATION=cb.basic_auth_header(CREDENTIALS),
    )
    assert response.status_code == 200, response.content


def new_invoice() -> tuple[dict[str, Any], dict[str, Any]]:
    customer = cb.customer()
    return customer, cb.invoice(customer["id"], [cb.line_item(4900, description="Pro plan (monthly)")])


def lines(comment: dict[str, Any]) -> dict[str, str]:
    return dict(line.split(": ", 1) for line in comment["notes"].splitlines())


@pytest.mark.e2e
@pytest.mark.usefixtures("worker")
def test_chargebee_learns_the_erp_invoice_once_through_a_500_and_a_timeout_after_commit(
    client: Client, tryton: Any, chargebee_api: ChargebeeSimulator, writeback: ERPConnection
) -> None:
    customer, invoice = new_invoice()
    chargebee_api.add_invoice(invoice["id"])
    chargebee_api.fail_next("500", "timeout_after_commit")
    send(client, cb.invoice_generated(invoice, customer))

    invoice_posting = posted(invoice["id"], Operation.POST_INVOICE)
    written = posted(f"{invoice['id']}:writeback:{invoice_posting.idempotency_key[:16]}", Operation.WRITE_BACK)

    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['id']}")
    [comment] = chargebee_api.comments_on(invoice["id"])
    assert lines(comment) == {
        "tryton-local_erp_status": "posted",
        "tryton-local_erp_id": str(erp_invoice["id"]),
        "tryton-local_erp_number": erp_invoice["number"],
        "hub_writeback": written.external_ref,
    }
    assert invoice_posting.erp_id == str(erp_invoice["id"]) and written.erp_id == comment["id"]
    assert comment["added_by"] == "Integration hub"
    # The 500 and the timeout left Chargebee's answer unknown: each retry first looked for the
    # comment by its reference, and found it after the timeout instead of adding a second one.
    calls = [(r.method, r.status, r.applied) for r in chargebee_api.requests]
    assert calls == [("POST", 500, False), ("GET", 200, False), ("POST", 200, True), ("GET", 200, False)]
    assert {r.idempotency_key for r in chargebee_api.writes()} == {written.idempotency_key}
    outcomes = list(PostingAttempt.objects.filter(posting=written).order_by("id").values_list("outcome", flat=True))
    assert outcomes == [
        PostingAttempt.Outcome.UNCERTAIN,
        PostingAttempt.Outcome.UNCERTAIN,
        PostingAttempt.Outcome.FOUND,
    ]


@pytest.mark.e2e
@pytest.mark.usefixtures("worker")
def test_a_payment_applied_in_the_erp_is_written_back_too_after_a_429(
    client: Client, tryton: Any, chargebee_api: ChargebeeSimulator, writeback: ERPConnection
) -> None:
    customer, invoice = new_invoice()
    chargebee_api.add_invoice(invoice["id"])
    payment = cb.transaction(customer["id"], 4900, [(invoice["id"], 4900)])
    send(client, cb.invoice_generated(invoice, customer))
    invoice_posting = posted(invoice["id"], Operation.POST_INVOICE)
    posted(f"{invoice['id']}:writeback:{invoice_posting.idempotency_key[:16]}", Operation.WRITE_BACK)

    chargebee_api.fail_next("429")
    send(client, cb.payment_succeeded(invoice, payment))
    applied = posted(f"{payment['id']}:{invoice['id']}", Operation.APPLY_PAYMENT)
    posted(f"{invoice['id']}:writeback:{applied.idempotency_key[:16]}", Operation.WRITE_BACK)

    first, second = chargebee_api.comments_on(invoice["id"])
    assert lines(first)["tryton-local_erp_status"] == "posted"
    assert lines(second)["tryton-local_erp_status"] == "payment applied"
    assert lines(second)["tryton-local_erp_payment_id"] == applied.erp_id
    assert [r.status for r in chargebee_api.writes()] == [200, 429, 200]


@pytest.mark.e2e
@pytest.mark.usefixtures("worker")
def test_an_invoice_chargebee_does_not_know_is_parked_for_finance(
    client: Client, tryton: Any, chargebee_api: ChargebeeSimulator, writeback: ERPConnection
) -> None:
    customer, invoice = new_invoice()  # never added to the simulator: Chargebee answers 404
    send(client, cb.invoice_generated(invoice, customer))
    invoice_posting = posted(invoice["id"], Operation.POST_INVOICE)
    parked = wait_for(
        lambda: writeback.postings.filter(
            source_id=f"{invoice['id']}:writeback:{invoice_posting.idempotency_key[:16]}", state=PostingState.PARKED
        ).first(),
        timeout=60,
        what="the writeback to be parked",
    )
    assert parked.error_code == "billing_document_missing"
    assert f"Chargebee invoice {invoice['id']} does not exist in Chargebee" in parked.finance_message
    assert chargebee_api.comments == []


# --- the connector against the simulator, without the pipeline -------------------------------------


def document(invoice_id: str, key: str = "k" * 64) -> WritebackDocument:
    ref = f"{SOURCE}:{invoice_id}:writeback:{key[:16]}"
    return WritebackDocument(
        external_ref=ref,
        billing_id=invoice_id,
        metadata={"tryton-local_erp_status": "posted", "tryton-local_erp_id": "42", "hub_writeback": ref},
        idempotency_key=key,
    )


def connector(simulator: ChargebeeSimulator, api_key: str = API_KEY) -> ChargebeeWriteback:
    return ChargebeeWriteback({"api_key": api_key, "api_base": simulator.url, "timeout": 1})


def test_a_resend_within_the_key_window_is_answered_with_the_first_comment(chargebee_api: ChargebeeSimulator) -> None:
    chargebee_api.add_invoice("INV-1")
    writeback = connector(chargebee_api)
    first = writeback.write_back(document("INV-1"))
    again = writeback.write_back(document("INV-1"))
    assert first.erp_id == again.erp_id
    assert len(chargebee_api.comments_on("INV-1")) == 1
    assert [r.replayed for r in chargebee_api.writes()] == [False, True]


def test_past_the_key_window_the_lookup_finds_what_a_resend_would_duplicate(
    chargebee_api: ChargebeeSimulator,
) -> None:
    chargebee_api.idempotency_window = 0  # Chargebee keeps keys 30 minutes; the hub may retry later
    chargebee_api.add_invoice("INV-2")
    writeback = connector(chargebee_api)
    doc = document("INV-2")
    assert writeback.find_document(Operation.WRITE_BACK, doc.external_ref) is None
    made = writeback.write_back(doc)
    found = writeback.find_document(Operation.WRITE_BACK, doc.external_ref)
    assert found is not None and found.erp_id == made.erp_id
    writeback.write_back(doc)  # what a blind resend would do: the key no longer protects it
    assert len(chargebee_api.comments_on("INV-2")) == 2


def test_the_lookup_reads_every_page_of_comments(chargebee_api: ChargebeeSimulator) -> None:
    chargebee_api.add_invoice("INV-3")
    writeback = connector(chargebee_api)
    target = document("INV-3", "a" * 64)
    writeback.write_back(target)
    for n in range(120):  # newer comments push the hub's onto the second page
        writeback.write_back(document("INV-3", f"{n:064d}"))
    found = writeback.find_document(Operation.WRITE_BACK, target.external_ref)
    assert found is not None and found.erp_id == chargebee_api.comments_on("INV-3")[0]["id"]
    assert [r.params.get("offset") for r in chargebee_api.requests if r.method == "GET"] == [None, "100"]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("500", UncertainOutcome),
        ("503", TransientError),
        ("429", TransientError),
        ("timeout_after_commit", UncertainOutcome),
    ],
)
def test_each_failure_is_classified_by_whether_chargebee_may_have_done_it(
    chargebee_api: ChargebeeSimulator, fault: str, error: type[Exception]
) -> None:
    chargebee_api.add_invoice("INV-4")
    chargebee_api.fail_next(fault)
    with pytest.raises(error) as raised:
        connector(chargebee_api).write_back(document("INV-4"))
    if fault == "429":
        assert raised.value.retry_after == 1  # type: ignore[attr-defined]
    assert len(chargebee_api.comments_on("INV-4")) == (1 if fault == "timeout_after_commit" else 0)


def test_a_wrong_api_key_is_an_authentication_failure(chargebee_api: ChargebeeSimulator) -> None:
    chargebee_api.add_invoice("INV-5")
    with pytest.raises(AuthenticationError, match="api_authentication_failed"):
        connector(chargebee_api, api_key="wrong").write_back(document("INV-5"))


def test_an_unknown_invoice_is_a_business_problem_for_finance(chargebee_api: ChargebeeSimulator) -> None:
    with pytest.raises(BusinessRuleError) as raised:
        connector(chargebee_api).write_back(document("INV-GONE"))
    assert raised.value.code == "billing_document_missing"


def test_the_comment_names_the_reference_last() -> None:
    notes = comment_notes({"hub_writeback": "chargebee-us:INV-9:writeback:abc", "x_erp_status": "posted"})
    assert notes.splitlines() == ["x_erp_status: posted", "hub_writeback: chargebee-us:INV-9:writeback:abc"]
