"""Writeback to Lago: once Tryton holds the invoice (or a payment on it), the Lago invoice's metadata
names the ERP document and its status, written exactly once through retries, a timeout after Lago
committed included (the contract simulator counts what Lago applied), without touching the
metadata Lago's users set. The first tests drive the connector against the simulator alone; the
last ones run the whole stream into the real Tryton and back."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from django.test import Client

from apps.connectors.documents import WritebackDocument
from apps.connectors.lago_writeback import LagoWriteback
from apps.core.errors import AuthenticationError, BusinessRuleError, TransientError, UncertainOutcome
from apps.posting.models import Operation, PostingAttempt, PostingState
from apps.routing.models import ERPConnection
from apps.sources import lago_samples as lg
from apps.sources.models import BillingSource
from tests.conftest import wait_for
from tests.e2e.test_lago_stream import SOURCE, customer_ref, new_invoice, send, updated
from tests.e2e.test_lifecycle import posted
from tests.lago_simulator import API_KEY, LagoSimulator

pytestmark = [pytest.mark.e2e]


@pytest.fixture
def lago_api() -> Iterator[LagoSimulator]:
    simulator = LagoSimulator(hang_seconds=2.5)
    yield simulator
    simulator.stop()


def connector(lago_api: LagoSimulator, api_key: str = API_KEY) -> LagoWriteback:
    return LagoWriteback({"api_key": api_key, "base_url": lago_api.url, "timeout": 1})


def document(invoice_id: str, parent: str = "0123456789abcdef", **facts: str) -> WritebackDocument:
    ref = f"{SOURCE}:{invoice_id}:writeback:{parent}"
    metadata = {f"tryton-local_erp_{name}": value for name, value in facts.items()}
    return WritebackDocument(ref, invoice_id, {**metadata, "hub_writeback": ref}, idempotency_key="k" * 64)


# --- the connector against Lago's contract ---------------------------------------------------------


def test_the_erp_entry_is_added_beside_the_users_own_metadata(lago_api: LagoSimulator) -> None:
    invoice = new_invoice()
    lago_api.add_invoice(invoice, metadata={"purchase_order": "PO-1234"})
    result = connector(lago_api).write_back(document(invoice["lago_id"], status="posted", id="42", number="INV/7"))
    assert lago_api.metadata(invoice["lago_id"]) == {
        "purchase_order": "PO-1234",
        "tryton-local": "status=posted; id=42; number=INV/7; writeback=0123456789abcdef",
    }
    assert (result.erp_id, result.erp_number) == (invoice["lago_id"], invoice["number"])
    again = connector(lago_api).write_back(document(invoice["lago_id"], status="posted", id="42", number="INV/7"))
    assert again.detail["action"] == "already written"
    assert len(lago_api.applied(invoice["lago_id"])) == 1  # the second call read, found it, and sent nothing


def test_a_payment_writeback_adds_to_the_entry_and_a_late_posted_never_moves_the_status_back(
    lago_api: LagoSimulator,
) -> None:
    invoice = new_invoice()
    lago_api.add_invoice(invoice)
    lago = connector(lago_api)
    lago.write_back(document(invoice["lago_id"], "aaaa", status="posted", id="42", number="INV/7"))
    lago.write_back(document(invoice["lago_id"], "bbbb", status="payment applied", payment_id="311"))
    written = "status=payment applied; id=42; number=INV/7; payment=311; writeback=bbbb"
    assert lago_api.metadata(invoice["lago_id"]) == {"tryton-local": written}
    lago.write_back(document(invoice["lago_id"], "aaaa", status="posted", id="42", number="INV/7"))  # a late retry
    assert lago_api.metadata(invoice["lago_id"]) == {"tryton-local": written}
    assert len(lago_api.applied(invoice["lago_id"])) == 2


def test_a_timeout_after_lago_committed_is_uncertain_and_the_lookup_finds_it(lago_api: LagoSimulator) -> None:
    invoice = new_invoice()
    lago_api.add_invoice(invoice)
    doc = document(invoice["lago_id"], status="posted", id="42", number="INV/7")
    lago = connector(lago_api)
    assert lago.find_document(Operation.WRITE_BACK, doc.external_ref) is None
    lago_api.fail_next("timeout_after_commit")
    with pytest.raises(UncertainOutcome, match=r"no answer in 1\.0s"):
        lago.write_back(doc)
    found = lago.find_document(Operation.WRITE_BACK, doc.external_ref)
    assert found is not None and found.erp_id == invoice["lago_id"]
    assert len(lago_api.applied(invoice["lago_id"])) == 1


def test_a_500_on_the_update_is_uncertain_and_a_429_waits_for_lagos_reset(lago_api: LagoSimulator) -> None:
    invoice = new_invoice()
    lago_api.add_invoice(invoice)
    lago = connector(lago_api)
    lago_api.fail_next("500", "429")
    with pytest.raises(UncertainOutcome, match="answered 500: Internal Server Error"):
        lago.write_back(document(invoice["lago_id"], status="posted", id="42"))
    with pytest.raises(TransientError, match="answered 429") as throttled:
        lago.write_back(document(invoice["lago_id"], status="posted", id="42"))
    assert throttled.value.retry_after == 1.0 and throttled.value.status == 429
    assert lago_api.applied(invoice["lago_id"]) == []


def test_lago_refusals_are_worded_for_the_person_who_can_act(lago_api: LagoSimulator) -> None:
    full, voided = new_invoice(), new_invoice(status="voided")
    lago_api.add_invoice(full, metadata={f"key{n}": "x" for n in range(5)})
    lago_api.add_invoice(voided)
    lago = connector(lago_api)
    with pytest.raises(BusinessRuleError, match=r"already has 5 metadata entries, Lago's maximum") as crowded:
        lago.write_back(document(full["lago_id"], status="posted", id="1"))
    with pytest.raises(BusinessRuleError, match="is voided in Lago") as refused:
        lago.write_back(document(voided["lago_id"], status="posted", id="1"))
    with pytest.raises(BusinessRuleError, match="answered 404: Not Found invoice_not_found") as missing:
        lago.write_back(document("00000000-0000-0000-0000-000000000000", status="posted", id="1"))
    assert "does not exist" in missing.value.finance_message
    assert (crowded.value.code, refused.value.code, missing.value.code) == (
        "billing_metadata_full",
        "billing_document_voided",
        "billing_document_missing",
    )
    with pytest.raises(AuthenticationError, match="answered 401: Unauthorized"):
        connector(lago_api, api_key="revoked").write_back(document(full["lago_id"], status="posted", id="1"))
    assert all(not request.applied for request in lago_api.requests)


def test_a_long_erp_number_is_cut_to_lagos_140_characters_keeping_the_reference(lago_api: LagoSimulator) -> None:
    invoice = new_invoice()
    lago_api.add_invoice(invoice)
    doc = document(invoice["lago_id"], status="payment applied", id="42", number="N" * 150, payment_id="311")
    connector(lago_api).write_back(doc)
    value = lago_api.metadata(invoice["lago_id"])["tryton-local"]
    assert len(value) <= 140 and value.endswith("writeback=0123456789abcdef")


# --- the whole stream: Lago → hub → Tryton → Lago ---------------------------------------------------


@pytest.fixture
def writeback(hub: Any, lago_api: LagoSimulator) -> ERPConnection:
    connection = ERPConnection.objects.create(
        name="lago-us-writeback",
        kind="lago",
        settings={"api_key": "env:LAGO_API_KEY", "base_url": lago_api.url, "timeout": 1},
    )
    BillingSource.objects.filter(name=SOURCE).update(writeback_connection=connection)
    return connection


@pytest.mark.usefixtures("worker")
def test_lago_learns_the_erp_invoice_once_through_a_500_and_a_timeout_after_commit(
    client: Client, tryton: Any, lago_api: LagoSimulator, writeback: ERPConnection
) -> None:
    invoice = new_invoice()
    lago_api.add_invoice(invoice, metadata={"purchase_order": "PO-1234"})
    lago_api.fail_next("500", "timeout_after_commit")
    send(client, lg.webhook("invoice.created", invoice))

    invoice_posting = posted(invoice["lago_id"], Operation.POST_INVOICE)
    written = posted(f"{invoice['lago_id']}:writeback:{invoice_posting.idempotency_key[:16]}", Operation.WRITE_BACK)

    [erp_invoice] = tryton.invoices(f"{SOURCE}:{invoice['lago_id']}")
    assert lago_api.metadata(invoice["lago_id"]) == {
        "purchase_order": "PO-1234",
        "tryton-local": f"status=posted; id={erp_invoice['id']}; number={erp_invoice['number']}; "
        f"writeback={invoice_posting.idempotency_key[:16]}",
    }
    assert invoice_posting.erp_id == str(erp_invoice["id"])
    updates = [r for r in lago_api.requests if r.method == "PUT"]
    assert [(r.status, r.applied) for r in updates] == [(500, False), (200, True)]  # the lookup found the second
    assert len(lago_api.applied(invoice["lago_id"])) == 1
    outcomes = list(PostingAttempt.objects.filter(posting=written).order_by("id").values_list("outcome", flat=True))
    assert outcomes == [
        PostingAttempt.Outcome.UNCERTAIN,
        PostingAttempt.Outcome.UNCERTAIN,
        PostingAttempt.Outcome.FOUND,
    ]


@pytest.mark.usefixtures("worker")
def test_a_payment_applied_in_the_erp_is_written_back_too(
    client: Client, tryton: Any, lago_api: LagoSimulator, writeback: ERPConnection
) -> None:
    invoice = new_invoice()
    lago_api.add_invoice(invoice)
    lago_api.fail_next("429")
    charge = lg.payment(invoice, 7380)
    send(client, lg.webhook("invoice.created", invoice))
    send(client, lg.webhook("payment.succeeded", charge))
    send(client, lg.webhook("invoice.payment_status_updated", updated(invoice, 5, payment_status="succeeded")))
    payment = posted(f"{charge['lago_id']}:{invoice['lago_id']}", Operation.APPLY_PAYMENT)
    posted(f"{invoice['lago_id']}:writeback:{payment.idempotency_key[:16]}", Operation.WRITE_BACK)
    invoice_posting = posted(invoice["lago_id"], Operation.POST_INVOICE)
    posted(f"{invoice['lago_id']}:writeback:{invoice_posting.idempotency_key[:16]}", Operation.WRITE_BACK)

    facts = dict(part.split("=", 1) for part in lago_api.metadata(invoice["lago_id"])["tryton-local"].split("; "))
    assert (facts["status"], facts["payment"], facts["id"]) == (
        "payment applied",
        payment.erp_id,
        invoice_posting.erp_id,
    )
    assert len(lago_api.applied(invoice["lago_id"])) == 2  # one update per writeback, in either order
    assert tryton.receivable(customer_ref(invoice)) == Decimal("0")


@pytest.mark.usefixtures("worker")
def test_an_invoice_lago_does_not_know_is_parked_for_finance(
    client: Client, tryton: Any, lago_api: LagoSimulator, writeback: ERPConnection
) -> None:
    invoice = new_invoice()  # never added to the simulator: Lago answers 404
    send(client, lg.webhook("invoice.created", invoice))
    invoice_posting = posted(invoice["lago_id"], Operation.POST_INVOICE)
    parked = wait_for(
        lambda: writeback.postings.filter(
            source_id=f"{invoice['lago_id']}:writeback:{invoice_posting.idempotency_key[:16]}",
            state=PostingState.PARKED,
        ).first(),
        timeout=60,
        what="the writeback to be parked",
    )
    assert parked.error_code == "billing_document_missing"
    assert f"Lago invoice {invoice['lago_id']} does not exist" in parked.finance_message
