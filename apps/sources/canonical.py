"""The canonical events API's adapter: versioned JSON Schemas, token or HMAC authentication, and
canonical documents into ledger commands.

A billing engine without an adapter of its own sends ``POST /api/v1/sources/<source>/events/``
with a body ``{"type": "invoice", "schema_version": 1, "data": {...}}`` and an
``Idempotency-Key`` header that names the event. The schemas are published as JSON Schema files
(``schemas/canonical/<type>.v<version>.json``, served at ``/api/v1/schemas/``). A published
version never changes: ``published.lock.json`` holds each file's sha256 and the test suite fails
when a published file differs from it. A change is published as a new version beside the old one.

Authentication, either of:
- ``Authorization: Bearer <secret>``, one of the source's secrets;
- ``X-Hub-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" with the secret>``,
  refused when ``t`` is further than the tolerance from now (a replayed request).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
import time
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from jsonschema import Draft202012Validator, FormatChecker, validators
from jsonschema.exceptions import ValidationError

from apps.core.money import CurrencyError, normalize_currency
from apps.ledger.commands import (
    CreditMemoData,
    CreditMemoLineData,
    CustomerData,
    DisputeData,
    InvoiceData,
    InvoiceLineData,
    LedgerCommand,
    PaymentApplicationData,
    PaymentData,
)
from apps.sources.base import Envelope, InvalidPayload, SignatureError, SourceAdapter

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas" / "canonical"
LOCK_FILE = SCHEMA_DIR / "published.lock.json"
ENVELOPE = "event"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_HEADER = "X-Hub-Signature"
FILE_NAME = re.compile(r"^(?P<name>[a-z_]+)\.v(?P<version>[1-9][0-9]*)\.json$")
_MAX_ERRORS = 10


@functools.cache
def published() -> dict[str, dict[int, dict[str, Any]]]:
    """Every schema file: {document type: {version: schema}}; the envelope is type ``event``."""
    schemas: dict[str, dict[int, dict[str, Any]]] = {}
    for path in sorted(SCHEMA_DIR.glob("*.json")):
        match = FILE_NAME.match(path.name)
        if match:
            schemas.setdefault(match["name"], {})[int(match["version"])] = json.loads(path.read_text())
    return schemas


def schema_digest(path: Path) -> str:
    """sha256 of the schema's content, independent of whitespace and key order."""
    content = json.dumps(json.loads(path.read_text()), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(content.encode("utf-8")).hexdigest()


def publication_problems(directory: Path = SCHEMA_DIR) -> list[str]:
    """Why the schema files do not match what was published: a published version was changed or
    removed, or a new file was never added to the lock. Empty when everything holds."""
    lock_path = directory / LOCK_FILE.name
    lock: dict[str, str] = json.loads(lock_path.read_text()) if lock_path.exists() else {}
    problems = []
    for path in sorted(directory.glob("*.json")):
        match = FILE_NAME.match(path.name)
        if not match:
            continue
        if path.name not in lock:
            problems.append(f"{path.name} is not published: run 'manage.py publish_schemas' to add it to the lock")
        elif lock[path.name] != schema_digest(path):
            next_version = int(match["version"]) + 1
            problems.append(
                f"{path.name} changed after it was published: restore it and publish the change as "
                f"{match['name']}.v{next_version}.json"
            )
    problems.extend(
        f"{name} was published and has been removed: published versions stay"
        for name in sorted(lock)
        if not (directory / name).exists()
    )
    return problems


def document_types() -> list[str]:
    return sorted(name for name in published() if name != ENVELOPE)


# JSON Schema counts 119.0 as an integer; a JSON parser hands it over as a binary float. Amounts
# must arrive as integers written without a fraction.
_StrictValidator = validators.extend(
    Draft202012Validator,
    type_checker=Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    ),
)


@functools.cache
def _validator(name: str, version: int) -> Draft202012Validator:
    return _StrictValidator(published()[name][version], format_checker=FormatChecker())


def _path(prefix: str, error: ValidationError) -> str:
    path = prefix
    for part in error.absolute_path:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _describe(prefix: str, error: ValidationError) -> list[str]:
    """Each problem as '<field path>: <what is wrong>', naming the field even when it is missing."""
    where = _path(prefix, error)
    instance = error.instance if isinstance(error.instance, dict) else {}
    if error.validator == "required":
        return [
            f"{where + '.' if where else ''}{name}: this field is required"
            for name in error.validator_value
            if name not in instance
        ]
    if error.validator == "additionalProperties":
        allowed = set(error.schema.get("properties", {}))
        return [f"{where + '.' if where else ''}{name}: unknown field" for name in instance if name not in allowed]
    return [f"{where or '(body)'}: {error.message}"]


def _check(name: str, version: int, instance: Any, prefix: str) -> None:
    problems: list[str] = []
    for error in sorted(_validator(name, version).iter_errors(instance), key=lambda e: list(e.absolute_path)):
        problems.extend(_describe(prefix, error))
    if problems:
        shown = problems[:_MAX_ERRORS]
        more = f" (and {len(problems) - len(shown)} more)" if len(problems) > len(shown) else ""
        raise InvalidPayload("; ".join(shown) + more, problems)


def validate(payload: Any) -> tuple[str, int, dict[str, Any]]:
    """The document type, schema version and document, or InvalidPayload naming every bad field."""
    _check(ENVELOPE, max(published()[ENVELOPE]), payload, "")  # each envelope version accepts the older ones
    kind, version, data = payload["type"], payload["schema_version"], payload["data"]
    versions = published().get(kind, {})
    if version not in versions:
        known = ", ".join(str(v) for v in sorted(versions))
        raise InvalidPayload(
            f"schema_version: {kind} has no schema version {version}; the published versions are {known}"
        )
    _check(kind, version, data, "data")
    return kind, version, data


def read_body(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidPayload(f"(body): not valid JSON: {exc}") from exc


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The X-Hub-Signature value for ``body`` (for senders, the demo and the tests)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def authenticate(body: bytes, headers: Mapping[str, str], secrets: list[str], tolerance: int) -> None:
    if not secrets:
        raise SignatureError("No secret is configured for this source; the event was not accepted.")
    authorization = headers.get("authorization", "")
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise SignatureError("The Authorization header must be 'Bearer <token>'.")
        if any(hmac.compare_digest(token.strip().encode(), secret.encode()) for secret in secrets):
            return
        raise SignatureError("The bearer token is not one of this source's secrets.")
    header = headers.get(SIGNATURE_HEADER.lower(), "")
    if not header:
        raise SignatureError(f"Send 'Authorization: Bearer <token>' or an {SIGNATURE_HEADER} header.")
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    if not parts.get("t", "").isdigit() or not parts.get("v1"):
        raise SignatureError(f"{SIGNATURE_HEADER} must be 't=<unix seconds>,v1=<hex HMAC-SHA256>'.")
    timestamp = int(parts["t"])
    if abs(time.time() - timestamp) > tolerance:
        raise SignatureError(
            f"Stale request: the signature timestamp is more than {tolerance} seconds from now (or in the future)."
        )
    for secret in secrets:
        if hmac.compare_digest(sign(body, secret, timestamp).split("v1=", 1)[1], parts["v1"]):
            return
    raise SignatureError("The signature does not match the body with any of this source's secrets.")


# --- canonical documents into ledger commands ------------------------------------------------------


def _date(value: str | None, field: str) -> date | None:
    if not value:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError as exc:
        raise InvalidPayload(f"{field}: '{value}' is not a calendar date") from exc


def _datetime(value: str, field: str) -> datetime:
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise InvalidPayload(f"{field}: '{value}' is not a date and time") from exc


def _currency(value: str, field: str) -> str:
    try:
        return normalize_currency(value)
    except CurrencyError as exc:
        raise InvalidPayload(f"{field}: {exc}") from exc


def _address(value: dict[str, str] | None) -> dict[str, str]:
    value = value or {}
    return {key: str(value.get(key) or "") for key in ("line1", "line2", "city", "postal_code", "state", "country")}


def _customer(data: dict[str, Any], version: int, *, snapshot: bool, field: str) -> CustomerData:
    currency = data.get("currency") or ""
    return CustomerData(
        source_id=data["id"],
        source_version=version,
        name=data.get("name") or data["id"],
        email=data.get("email", ""),
        currency=_currency(currency, f"{field}.currency") if currency else "",
        tax_id=data.get("tax_id", ""),
        tax_id_type=data.get("tax_id_type", ""),
        payment_terms_days=data.get("payment_terms_days"),
        bill_to=_address(data.get("bill_to")),
        sold_to=_address(data.get("sold_to")),
        snapshot=snapshot,
    )


def _totals(data: dict[str, Any], field: str) -> None:
    """The lines add up to the subtotal and tax, and those to the total: refused here, before the
    event is stored, rather than parked later for finance."""
    lines = data["lines"]
    problems = []
    if sum(line["amount_minor"] for line in lines) != data["subtotal_minor"]:
        problems.append(f"{field}.subtotal_minor: {data['subtotal_minor']} is not the sum of the lines' amount_minor")
    if sum(line.get("tax_minor", 0) for line in lines) != data["tax_minor"]:
        problems.append(f"{field}.tax_minor: {data['tax_minor']} is not the sum of the lines' tax_minor")
    if data["subtotal_minor"] + data["tax_minor"] != data["total_minor"]:
        problems.append(f"{field}.total_minor: {data['total_minor']} is not subtotal_minor + tax_minor")
    if problems:
        raise InvalidPayload("; ".join(problems), problems)


def invoice_command(data: dict[str, Any]) -> InvoiceData:
    _totals(data, "data")
    version = data["revision"]
    return InvoiceData(
        source_id=data["id"],
        source_version=version,
        number=data["number"],
        customer=_customer(data["customer"], version, snapshot=True, field="data.customer"),
        status=data["status"],
        currency=_currency(data["currency"], "data.currency"),
        subtotal_minor=data["subtotal_minor"],
        tax_minor=data["tax_minor"],
        total_minor=data["total_minor"],
        amount_paid_minor=data["amount_paid_minor"],
        invoice_date=_date(data["invoice_date"], "data.invoice_date"),  # type: ignore[arg-type]
        due_date=_date(data.get("due_date"), "data.due_date"),
        status_date=_date(data.get("status_date"), "data.status_date"),
        period_start=_date(data.get("period_start"), "data.period_start"),
        period_end=_date(data.get("period_end"), "data.period_end"),
        lines=tuple(
            InvoiceLineData(
                description=line["description"],
                quantity=Decimal(str(line["quantity"])),
                unit_amount_minor=line["unit_amount_minor"],
                amount_minor=line["amount_minor"],
                tax_minor=line.get("tax_minor", 0),
                source_line_id=line.get("id", ""),
                product_source_id=line.get("product_id", ""),
                product_name=line.get("product_name", ""),
                price_id=line.get("price_id", ""),
                period_start=_date(line.get("period_start"), f"data.lines[{i}].period_start"),
                period_end=_date(line.get("period_end"), f"data.lines[{i}].period_end"),
            )
            for i, line in enumerate(data["lines"])
        ),
    )


def payment_command(data: dict[str, Any]) -> PaymentData:
    applications = data.get("applications", [])
    if sum(item["amount_minor"] for item in applications) > data["amount_minor"]:
        raise InvalidPayload("data.applications: together they apply more than the payment's amount_minor")
    return PaymentData(
        source_id=data["id"],
        source_version=data["revision"],
        customer_source_id=data["customer_id"],
        currency=_currency(data["currency"], "data.currency"),
        amount_minor=data["amount_minor"],
        method=data["method"],
        settled_at=_datetime(data["settled_at"], "data.settled_at"),
        applications=tuple(PaymentApplicationData(item["invoice_id"], item["amount_minor"]) for item in applications),
    )


def credit_memo_command(data: dict[str, Any]) -> CreditMemoData:
    _totals(data, "data")
    if data.get("refunded_minor", 0) > data["total_minor"]:
        raise InvalidPayload("data.refunded_minor: more than the credit memo's total_minor")
    return CreditMemoData(
        source_id=data["id"],
        source_version=data["revision"],
        number=data["number"],
        customer_source_id=data["customer_id"],
        invoice_source_id=data["invoice_id"],
        status=data["status"],
        currency=_currency(data["currency"], "data.currency"),
        subtotal_minor=data["subtotal_minor"],
        tax_minor=data["tax_minor"],
        total_minor=data["total_minor"],
        memo_date=_date(data["memo_date"], "data.memo_date"),  # type: ignore[arg-type]
        reason=data.get("reason", ""),
        refunded_minor=data.get("refunded_minor", 0),
        status_date=_date(data.get("status_date"), "data.status_date"),
        lines=tuple(
            CreditMemoLineData(
                description=line["description"],
                quantity=Decimal(str(line["quantity"])),
                unit_amount_minor=line["unit_amount_minor"],
                amount_minor=line["amount_minor"],
                tax_minor=line.get("tax_minor", 0),
                source_line_id=line.get("id", ""),
                invoice_line_source_id=line.get("invoice_line_id", ""),
            )
            for line in data["lines"]
        ),
    )


def dispute_command(data: dict[str, Any]) -> DisputeData:
    closed_on = _date(data.get("closed_on"), "data.closed_on")
    if data["status"] in ("won", "lost") and closed_on is None:
        raise InvalidPayload(f"data.closed_on: a {data['status']} dispute needs the day it was decided")
    return DisputeData(
        source_id=data["id"],
        source_version=data["revision"],
        payment_source_id=data["payment_id"],
        currency=_currency(data["currency"], "data.currency"),
        amount_minor=data["amount_minor"],
        status=data["status"],
        opened_on=_date(data["opened_on"], "data.opened_on"),  # type: ignore[arg-type]
        reason=data.get("reason", ""),
        closed_on=closed_on,
    )


def commands(kind: str, data: dict[str, Any]) -> list[LedgerCommand]:
    if kind == "dispute":
        return [dispute_command(data)]
    if kind == "customer":
        return [_customer(data, data["revision"], snapshot=False, field="data")]
    if kind == "invoice":
        return [invoice_command(data)]
    if kind == "payment":
        return [payment_command(data)]
    return [credit_memo_command(data)]


class CanonicalAdapter(SourceAdapter):
    kind = "canonical"
    label = "Canonical events API"
    kept_headers = ("content-type", "user-agent", "idempotency-key", "x-hub-signature", "x-correlation-id")

    def verify(self, body: bytes, headers: Mapping[str, str], secrets: list[str]) -> Envelope:
        authenticate(body, headers, secrets, settings.HUB["SIGNATURE_TOLERANCE_SECONDS"])
        key = headers.get(IDEMPOTENCY_HEADER.lower(), "").strip()
        if not key:
            raise InvalidPayload(f"{IDEMPOTENCY_HEADER}: this header is required; it names the event.")
        if len(key) > 255:
            raise InvalidPayload(f"{IDEMPOTENCY_HEADER}: at most 255 characters.")
        kind, version, data = validate(read_body(body))
        commands(kind, data)  # refuse now what normalization would refuse later
        return Envelope(event_id=key, event_type=f"{kind}.v{version}", object_id=data["id"])

    def parse(self, body: bytes) -> list[LedgerCommand]:
        kind, _version, data = validate(read_body(body))
        return commands(kind, data)
