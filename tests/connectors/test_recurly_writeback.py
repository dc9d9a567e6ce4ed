"""The Recurly writeback connector against the contract simulator of Recurly's API v3: what the
invoice's notes end up holding, and how each answer Recurly can give is classified."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from apps.connectors.documents import WritebackDocument
from apps.connectors.recurly_writeback import RecurlyWriteback, note_line
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    TransientError,
    UncertainOutcome,
)
from apps.sources import recurly_samples as samples
from tests.recurly_simulator import RecurlySimulator

WRITE_BACK = "write_back"


@pytest.fixture(scope="module")
def simulator() -> Iterator[RecurlySimulator]:
    with RecurlySimulator(hang_seconds=1.5) as running:
        yield running


@pytest.fixture
def sim(simulator: RecurlySimulator) -> RecurlySimulator:
    simulator.reset()
    return simulator


@pytest.fixture
def connector(sim: RecurlySimulator) -> RecurlyWriteback:
    return RecurlyWriteback({"api_key": sim.api_key, "base_url": sim.url, "timeout": 1})


def invoice(sim: RecurlySimulator, notes: str | None = "Thank you for your business.") -> dict[str, Any]:
    obj = {**samples.charge_invoice(samples.account(), [samples.line_item("49.00")]), "customer_notes": notes}
    sim.put(obj)
    return obj


def document(invoice_id: str, parent: str = "0123456789abcdef", **metadata: str) -> WritebackDocument:
    reference = f"recurly-us:{invoice_id}:writeback:{parent}"
    values = metadata or {
        "tryton-local_erp_status": "posted",
        "tryton-local_erp_id": "42",
        "tryton-local_erp_number": "INV/2025/0001",
    }
    return WritebackDocument(
        external_ref=reference,
        billing_id=invoice_id,
        metadata={**values, "hub_writeback": reference},
        idempotency_key="k" * 64,
    )


def notes(sim: RecurlySimulator, invoice_id: str) -> list[str]:
    return str(sim.invoices[invoice_id]["customer_notes"]).splitlines()


def test_each_writeback_adds_one_line_to_the_notes_and_keeps_what_was_there(
    sim: RecurlySimulator, connector: RecurlyWriteback
) -> None:
    obj = invoice(sim)
    posted = document(obj["id"])
    result = connector.write_back(posted)
    assert (result.erp_id, result.erp_number) == (obj["id"], obj["number"])
    paid = document(
        obj["id"],
        "fedcba9876543210",
        **{"tryton-local_erp_status": "payment applied", "tryton-local_erp_payment_id": "77"},
    )
    connector.write_back(paid)
    assert notes(sim, obj["id"]) == [
        "Thank you for your business.",
        f"tryton-local: posted, ERP id 42, number INV/2025/0001 [recurly-us:{obj['id']}:writeback:0123456789abcdef]",
        f"tryton-local: payment applied, ERP payment 77 [recurly-us:{obj['id']}:writeback:fedcba9876543210]",
    ]
    assert sim.writes[0].body == {"customer_notes": "\n".join(notes(sim, obj["id"])[:2])}


def test_a_writeback_already_on_the_invoice_is_not_written_again(
    sim: RecurlySimulator, connector: RecurlyWriteback
) -> None:
    obj = invoice(sim, notes=None)
    doc = document(obj["id"])
    assert connector.find_document(WRITE_BACK, doc.external_ref) is None
    connector.write_back(doc)
    connector.write_back(doc)
    assert len(sim.applied(obj["id"])) == 1
    assert notes(sim, obj["id"]) == [note_line(doc.metadata)]
    found = connector.find_document(WRITE_BACK, doc.external_ref)
    assert found is not None and found.erp_id == obj["id"]


def test_a_5xx_to_the_update_is_uncertain_and_the_lookup_tells_whether_it_was_saved(
    sim: RecurlySimulator, connector: RecurlyWriteback
) -> None:
    obj = invoice(sim)
    doc = document(obj["id"])
    sim.fail_next_write("500")  # refused before saving
    with pytest.raises(UncertainOutcome, match="answered 500 internal_server_error"):
        connector.write_back(doc)
    assert connector.find_document(WRITE_BACK, doc.external_ref) is None

    sim.fail_next_write("500_after_commit")  # saved, then the error
    with pytest.raises(UncertainOutcome):
        connector.write_back(doc)
    assert connector.find_document(WRITE_BACK, doc.external_ref) is not None
    assert [(write.status, write.applied) for write in sim.writes] == [(500, False), (500, True)]


def test_no_answer_to_the_update_is_uncertain(sim: RecurlySimulator, connector: RecurlyWriteback) -> None:
    obj = invoice(sim)
    doc = document(obj["id"])
    sim.fail_next_write("timeout_after_commit")
    with pytest.raises(UncertainOutcome, match="Recurly may have saved it"):
        connector.write_back(doc)
    assert connector.find_document(WRITE_BACK, doc.external_ref) is not None
    assert len(sim.applied(obj["id"])) == 1


def test_rate_limited_is_transient_and_waits_for_the_window(sim: RecurlySimulator, connector: RecurlyWriteback) -> None:
    obj = invoice(sim)
    sim.fail_next_write("429", retry_after=30)
    with pytest.raises(TransientError, match="429 rate_limited") as limited:
        connector.write_back(document(obj["id"]))
    assert limited.value.retry_after is not None and 25 <= limited.value.retry_after <= 31  # X-RateLimit-Reset
    sim.fail_next_write("429", retry_after=7, retry_after_header=True)
    with pytest.raises(TransientError) as limited:
        connector.write_back(document(obj["id"]))
    assert limited.value.retry_after == 7
    assert not sim.applied(obj["id"])


def test_a_failed_read_is_transient_not_uncertain(sim: RecurlySimulator, connector: RecurlyWriteback) -> None:
    obj = invoice(sim)
    sim.fail_next(503, "service_unavailable", "Try again later")
    with pytest.raises(TransientError, match="503 service_unavailable: Try again later") as failed:
        connector.write_back(document(obj["id"]))
    assert not isinstance(failed.value, UncertainOutcome)
    assert not sim.writes


def test_refusals_are_parked_with_recurlys_reason(sim: RecurlySimulator, connector: RecurlyWriteback) -> None:
    with pytest.raises(BusinessRuleError) as missing:
        connector.write_back(document("rnotthere001"))
    assert missing.value.code == "billing_document_missing"
    assert "Recurly invoice rnotthere001 does not exist" in missing.value.finance_message

    obj = invoice(sim)
    sim.put({**obj, "customer_notes": ""})
    sim.fail_next(422, "validation", "Customer notes is too long")
    with pytest.raises(BusinessRuleError) as refused:
        connector.write_back(document(obj["id"]))
    assert (refused.value.code, refused.value.params) == ("erp_rejected", {"erp_message": "Customer notes is too long"})

    wrong_key = RecurlyWriteback({"api_key": "revoked", "base_url": sim.url})
    with pytest.raises(AuthenticationError, match="401 unauthorized: Invalid API key"):
        wrong_key.write_back(document(obj["id"]))
    with pytest.raises(ConfigurationError, match="lack api_key"):
        RecurlyWriteback({"base_url": sim.url})


def test_an_unreachable_recurly_is_transient() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    connector = RecurlyWriteback({"api_key": "key", "base_url": f"http://127.0.0.1:{port}", "timeout": 1})
    started = time.monotonic()
    with pytest.raises(TransientError) as failed:
        connector.write_back(document("rabc"))
    assert not isinstance(failed.value, UncertainOutcome) and time.monotonic() - started < 5
