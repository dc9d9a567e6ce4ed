"""The published canonical JSON Schemas: valid schemas, examples that pass them and build the
ledger commands a Stripe event would, and versions that never change once published."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from apps.ledger.commands import CreditMemoData, InvoiceData, PaymentData
from apps.sources import canonical
from apps.sources.base import InvalidPayload

SCHEMAS = sorted(canonical.SCHEMA_DIR.glob("*.v*.json"))


def test_every_document_type_has_a_published_schema() -> None:
    assert canonical.document_types() == ["credit_memo", "customer", "dispute", "invoice", "payment"]
    assert [path.name for path in SCHEMAS] == sorted(json.loads(canonical.LOCK_FILE.read_text()))


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda path: path.name)
def test_each_schema_is_valid_and_validates_its_examples(path: Path) -> None:
    schema = json.loads(path.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["examples"], f"{path.name} publishes no example"
    for example in schema["examples"]:
        errors = [error.message for error in Draft202012Validator(schema).iter_errors(example)]
        assert errors == [], f"{path.name}: an example fails its own schema: {errors}"


@pytest.mark.parametrize("kind", ["customer", "invoice", "payment", "credit_memo", "dispute"])
def test_each_example_becomes_ledger_commands(kind: str) -> None:
    for example in canonical.published()[kind][1]["examples"]:
        kind_seen, version, data = canonical.validate({"type": kind, "schema_version": 1, "data": example})
        [command] = canonical.commands(kind_seen, data)
        assert command.source_id == example["id"] and version == 1


def test_the_invoice_example_keeps_money_exact() -> None:
    example = canonical.published()["invoice"][1]["examples"][0]
    [invoice] = canonical.commands("invoice", example)
    assert isinstance(invoice, InvoiceData)
    assert (invoice.subtotal_minor, invoice.tax_minor, invoice.total_minor, invoice.currency) == (
        10000,
        1900,
        11900,
        "EUR",
    )
    assert str(invoice.lines[0].quantity) == "1" and invoice.customer.snapshot


def test_the_payment_and_credit_memo_examples_name_what_they_settle() -> None:
    [payment] = canonical.commands("payment", canonical.published()["payment"][1]["examples"][0])
    [memo] = canonical.commands("credit_memo", canonical.published()["credit_memo"][1]["examples"][0])
    assert isinstance(payment, PaymentData) and isinstance(memo, CreditMemoData)
    assert [(a.invoice_source_id, a.amount_minor) for a in payment.applications] == [("in_2001", 11900)]
    assert (memo.invoice_source_id, memo.refunded_minor) == ("in_2001", 2380)


def test_the_published_schemas_match_their_lock() -> None:
    assert canonical.publication_problems() == []


def published_copy(tmp_path: Path) -> Path:
    directory = tmp_path / "canonical"
    shutil.copytree(canonical.SCHEMA_DIR, directory)
    return directory


def test_changing_a_published_schema_without_a_new_version_fails(tmp_path: Path) -> None:
    directory = published_copy(tmp_path)
    path = directory / "invoice.v1.json"
    schema = json.loads(path.read_text())
    schema["required"].append("po_number")  # a breaking change: old senders would be refused
    path.write_text(json.dumps(schema, indent=2))

    assert canonical.publication_problems(directory) == [
        "invoice.v1.json changed after it was published: restore it and publish the change as invoice.v2.json"
    ]


def test_reformatting_a_published_schema_is_not_a_change(tmp_path: Path) -> None:
    directory = published_copy(tmp_path)
    path = directory / "payment.v1.json"
    path.write_text(json.dumps(json.loads(path.read_text()), indent=4, sort_keys=True))
    assert canonical.publication_problems(directory) == []


def test_a_new_version_must_be_published_and_an_old_one_cannot_be_removed(tmp_path: Path) -> None:
    directory = published_copy(tmp_path)
    shutil.copy(directory / "invoice.v1.json", directory / "invoice.v2.json")
    (directory / "customer.v1.json").unlink()

    assert canonical.publication_problems(directory) == [
        "invoice.v2.json is not published: run 'manage.py publish_schemas' to add it to the lock",
        "customer.v1.json was published and has been removed: published versions stay",
    ]


def invoice_event(**changes: object) -> dict[str, object]:
    data = json.loads(json.dumps(canonical.published()["invoice"][1]["examples"][0]))
    data.update(changes)
    return {"type": "invoice", "schema_version": 1, "data": data}


def refusal(payload: object) -> list[str]:
    with pytest.raises(InvalidPayload) as caught:
        kind, _, data = canonical.validate(payload)
        canonical.commands(kind, data)
    return caught.value.problems


def test_a_missing_required_field_is_named_with_its_path() -> None:
    payload = invoice_event()
    del payload["data"]["lines"][0]["amount_minor"]  # type: ignore[index]
    del payload["data"]["currency"]  # type: ignore[attr-defined]
    assert refusal(payload) == [
        "data.currency: this field is required",
        "data.lines[0].amount_minor: this field is required",
    ]


def test_unknown_versions_types_and_fields_are_named() -> None:
    assert refusal({**invoice_event(), "schema_version": 7}) == [
        "schema_version: invoice has no schema version 7; the published versions are 1"
    ]
    assert refusal({**invoice_event(), "type": "quote"})[0].startswith("type: 'quote' is not one of")
    assert refusal(invoice_event(po_number="PO-1")) == ["data.po_number: unknown field"]


def test_money_must_be_integer_minor_units_and_add_up() -> None:
    floats = invoice_event(total_minor=119.0)
    assert refusal(floats) == ["data.total_minor: 119.0 is not of type 'integer'"]
    wrong_total = invoice_event(total_minor=11901)
    assert refusal(wrong_total) == ["data.total_minor: 11901 is not subtotal_minor + tax_minor"]


def test_a_quantity_written_as_a_binary_float_is_refused() -> None:
    payload = invoice_event()
    payload["data"]["lines"][0]["quantity"] = 0.1  # type: ignore[index]
    assert refusal(payload)[0].startswith("data.lines[0].quantity: 0.1 is not valid under any of the given schemas")


def test_the_newer_envelope_still_accepts_what_the_first_one_did() -> None:
    first = canonical.published()["event"][1]["examples"][0]
    assert canonical.validate(first)[0] == "invoice"
    dispute = canonical.published()["dispute"][1]["examples"][1]
    kind, _, data = canonical.validate({"type": "dispute", "schema_version": 1, "data": dispute})
    [command] = canonical.commands(kind, data)
    assert (command.status, str(command.closed_on)) == ("lost", "2026-12-20")  # type: ignore[union-attr]


def test_a_decided_dispute_needs_its_decision_date() -> None:
    data = {**canonical.published()["dispute"][1]["examples"][1]}
    del data["closed_on"]
    assert refusal({"type": "dispute", "schema_version": 1, "data": data}) == [
        "data.closed_on: a lost dispute needs the day it was decided"
    ]
