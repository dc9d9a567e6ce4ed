"""Writeback to Lago: once the ERP holds an invoice (or a payment or credit applied to it), the hub
tells Lago, in the invoice's metadata, which ERP document it became and its status.

A writeback is a posting of its own, on a connection of kind ``lago`` (settings: ``api_key``, an
``env:`` reference; ``base_url``, default ``https://api.getlago.com``, ``https://api.eu.getlago.com``
for the EU cluster or a self-hosted Lago's URL; ``timeout``), so it has the same claim, retries,
flow control and exception cases as a posting to an ERP. It calls Lago's REST API with ``requests``
(the official Python client brings pydantic, httpx and its own retries that sleep in the worker;
the hub does the retrying).

Lago's invoice metadata is a list of at most 5 key/value entries (keys up to 20 characters, values
up to 140), and ``PUT /api/v1/invoices/{lago_id}`` replaces the whole list: an entry left out is
deleted. So the hub reads the invoice first and sends every entry back, its own included, and
writes one entry per ERP connection, keyed by the connection's name::

    tryton-local = status=payment applied; id=42; number=INV/0007; payment=311; writeback=5f0c…

Each writeback merges its facts into that entry (a later "posted" never replaces "payment applied")
and records its own reference (``writeback=``, the first 16 characters of the reported posting's
key). Exactly once comes from reading before writing: when the entry already says what this
writeback would write, nothing is sent. A timeout or a 5xx after the update was sent is uncertain;
the executor then calls ``find_document``, which reads the invoice back and finds the reference, so
a retry after Lago committed applies nothing. The connection's flow allows one call at a time, so
two writebacks never interleave their read and write on one invoice.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

import requests

from apps.connectors.base import ERPConnector
from apps.connectors.documents import PostResult, WritebackDocument
from apps.core.errors import (
    AuthenticationError,
    BusinessRuleError,
    ConfigurationError,
    ConnectorError,
    TransientError,
    UncertainOutcome,
)

OPERATION_WRITE_BACK = "write_back"
DEFAULT_BASE_URL = "https://api.getlago.com"
METADATA_PER_INVOICE = 5
KEY_MAX_LENGTH = 20
VALUE_MAX_LENGTH = 140
# The writeback document's metadata keys are "<connection>_erp_<fact>"; Lago's entry names the facts.
_FACTS = {"_erp_status": "status", "_erp_id": "id", "_erp_number": "number", "_erp_payment_id": "payment"}
_FACT_ORDER = ("status", "id", "number", "payment", "writeback")
# A later writeback never moves the status back: an invoice with a payment applied stays so.
_STATUS_RANK = {"posted": 0, "payment applied": 1, "credit applied": 1}
_UNSAFE = re.compile(r"[;=\n\r]")


def marker(external_ref: str) -> str:
    """The part of a writeback's reference that names it: ``<source>:<invoice>:writeback:<this>``."""
    return external_ref.rsplit(":", 1)[-1]


def parse_entry(value: str) -> dict[str, str]:
    facts = {}
    for part in value.split(";"):
        name, sep, fact = part.partition("=")
        if sep:
            facts[name.strip()] = fact.strip()
    return facts


def format_entry(facts: dict[str, str]) -> str:
    ordered = [name for name in _FACT_ORDER if facts.get(name)] + sorted(set(facts) - set(_FACT_ORDER))
    return "; ".join(f"{name}={facts[name]}" for name in ordered if facts.get(name))


def entry_for(doc: WritebackDocument) -> tuple[str, dict[str, str]]:
    """The Lago metadata key (the ERP connection's name) and the facts this writeback reports."""
    key, facts = "", {}
    for name, value in doc.metadata.items():
        for suffix, fact in _FACTS.items():
            if name.endswith(suffix) and (not key or name[: -len(suffix)] == key):
                key = name[: -len(suffix)]
                facts[fact] = _UNSAFE.sub(" ", str(value)).strip()
                break
    if not key:
        raise ConfigurationError(f"writeback {doc.external_ref} carries no ERP facts ({sorted(doc.metadata)})")
    return key[:KEY_MAX_LENGTH], facts


def merged(current: dict[str, str], reported: dict[str, str]) -> dict[str, str]:
    facts = {**current, **{name: value for name, value in reported.items() if value}}
    if _STATUS_RANK.get(current.get("status", ""), -1) > _STATUS_RANK.get(reported.get("status", ""), -1):
        facts["status"] = current["status"]
    return facts


def _without_marker(facts: dict[str, str]) -> dict[str, str]:
    return {name: value for name, value in facts.items() if name != "writeback"}


class LagoWriteback(ERPConnector):
    kind: ClassVar[str] = "lago"
    dedupe_strategy: ClassVar[str] = "read_before_write"

    def __init__(self, settings: dict[str, Any]) -> None:
        super().__init__(settings)
        if not settings.get("api_key"):
            raise ConfigurationError("Lago writeback settings lack api_key")
        self.base_url = str(settings.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = float(settings.get("timeout", 20))
        self.session = requests.Session()
        self.session.headers.update(
            {
                "Authorization": f"Bearer {settings['api_key']}",
                "Content-Type": "application/json",
                "Accept": "application/json",
                "User-Agent": "integration-hub-writeback",
            }
        )

    def close(self) -> None:
        self.session.close()

    # -- the writeback ------------------------------------------------------------------------

    def write_back(self, doc: WritebackDocument) -> PostResult:
        invoice = self._get_invoice(doc.billing_id)
        key, reported = entry_for(doc)
        entries = [entry for entry in invoice.get("metadata") or [] if isinstance(entry, dict)]
        mine = next((entry for entry in entries if entry.get("key") == key), None)
        current = parse_entry(str(mine.get("value") or "")) if mine else {}
        facts = merged(current, reported)
        if mine is not None and _without_marker(facts) == _without_marker(current):
            return self._result(invoice, key, str(mine.get("value")), "already written")  # nothing to send
        what = f"Lago invoice {invoice.get('number') or doc.billing_id}"
        if invoice.get("status") == "voided":
            raise _voided(what)
        if mine is None and len(entries) >= METADATA_PER_INVOICE:
            raise BusinessRuleError(
                "billing_metadata_full",
                f"{what} already has {len(entries)} metadata entries, Lago's maximum, so the ERP status cannot be "
                f"written back under '{key}'. Remove an entry in Lago and retry, or skip this writeback with a reason.",
                params={"key": key},
            )
        facts["writeback"] = marker(doc.external_ref)
        value = self._fit(format_entry(facts))
        items = [
            {"id": entry["lago_id"], "key": entry["key"], "value": value if entry is mine else entry["value"]}
            for entry in entries
        ]
        if mine is None:
            items.append({"key": key, "value": value})
        answer = self._request("PUT", doc.billing_id, json={"invoice": {"metadata": items}})
        written = answer.get("invoice") if isinstance(answer.get("invoice"), dict) else {}
        held = {entry.get("key"): entry.get("value") for entry in written.get("metadata") or []}
        if held.get(key) != value:
            raise UncertainOutcome(f"{what}: Lago answered the update without the '{key}' entry it was sent")
        return self._result(written, key, value, "written")

    def find_document(self, operation: str, external_ref: str) -> PostResult | None:
        """``external_ref`` is ``<source>:<invoice id>:writeback:<parent>``: the writeback is done
        when one of the invoice's entries carries its reference."""
        if operation != OPERATION_WRITE_BACK:
            raise ConfigurationError(f"Lago writeback does not know the operation {operation!r}")
        parts = external_ref.split(":")
        if len(parts) < 4:
            raise ConfigurationError(f"{external_ref!r} is not a writeback reference")
        invoice = self._get_invoice(parts[1])
        wanted = marker(external_ref)
        for entry in invoice.get("metadata") or []:
            value = str(entry.get("value") or "")
            if parse_entry(value).get("writeback") == wanted:
                return self._result(invoice, str(entry.get("key")), value, "found")
        return None

    # -- Lago's API ---------------------------------------------------------------------------

    def _get_invoice(self, invoice_id: str) -> dict[str, Any]:
        answer = self._request("GET", invoice_id)
        invoice = answer.get("invoice")
        if not isinstance(invoice, dict):
            raise TransientError(f"Lago answered GET invoice {invoice_id} without an invoice object")
        return invoice

    def _request(self, method: str, invoice_id: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.base_url}/api/v1/invoices/{invoice_id}"
        writes = method != "GET"
        self.pace()
        try:
            response = self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.ConnectionError as exc:
            if writes and not isinstance(exc, requests.ConnectTimeout) and "refused" not in str(exc).lower():
                raise UncertainOutcome(f"Lago {method} invoice {invoice_id}: connection lost: {exc}") from exc
            raise TransientError(f"Lago {method} invoice {invoice_id}: cannot connect: {exc}") from exc
        except requests.Timeout as exc:
            if writes:
                raise UncertainOutcome(f"Lago {method} invoice {invoice_id}: no answer in {self.timeout}s") from exc
            raise TransientError(f"Lago {method} invoice {invoice_id}: no answer in {self.timeout}s") from exc
        except requests.RequestException as exc:
            raise TransientError(f"Lago {method} invoice {invoice_id}: {exc}") from exc
        if response.status_code == 200:
            try:
                body = response.json()
            except ValueError as exc:
                raise TransientError(f"Lago {method} invoice {invoice_id} answered 200 without JSON") from exc
            return body if isinstance(body, dict) else {}
        raise _classify(method, invoice_id, response)

    def _result(self, invoice: dict[str, Any], key: str, value: str, action: str) -> PostResult:
        return PostResult(
            str(invoice.get("lago_id") or ""),
            str(invoice.get("number") or ""),
            {"metadata": f"{key}={value}", "action": action},
        )

    @staticmethod
    def _fit(value: str) -> str:
        """Lago keeps at most 140 characters: a long ERP number is cut, the reference never."""
        if len(value) <= VALUE_MAX_LENGTH:
            return value
        facts = parse_entry(value)
        excess = len(value) - VALUE_MAX_LENGTH
        facts["number"] = facts.get("number", "")[: max(0, len(facts.get("number", "")) - excess - 1)] + "…"
        return format_entry(facts)[:VALUE_MAX_LENGTH]

    # An ERP's documents are not this connection's business: routing never sends them here.
    def _not_an_erp(self, *_: object) -> PostResult:
        raise ConfigurationError("a Lago writeback connection posts no ERP documents; check the routing rules")

    ensure_customer = post_invoice = apply_payment = post_credit_memo = _not_an_erp  # type: ignore[assignment]
    refund_credit_memo = void_invoice = write_off = move_disputed_funds = _not_an_erp  # type: ignore[assignment]
    receive_on_account = apply_credit = _not_an_erp  # type: ignore[assignment]


def _voided(what: str) -> BusinessRuleError:
    return BusinessRuleError(
        "billing_document_voided",
        f"{what} is voided in Lago, which refuses any change to a voided invoice, so the ERP status cannot be "
        "written back to it. Skip this writeback with a reason.",
    )


def _classify(method: str, invoice_id: str, response: requests.Response) -> ConnectorError:
    """Lago's error body is ``{"status", "error", "code"}`` (``error_details`` for 422)."""
    status = response.status_code
    try:
        body = response.json()
    except ValueError:
        body = {}
    body = body if isinstance(body, dict) else {}
    code = str(body.get("code") or "")
    said = " ".join(part for part in (str(body.get("error") or ""), code, str(body.get("error_details") or "")) if part)
    detail = f"Lago {method} invoice {invoice_id} answered {status}: {said or response.reason}"
    kwargs: dict[str, Any] = {"status": status, "body_excerpt": response.text[:500]}
    what = f"Lago invoice {invoice_id}"
    if status == 401:
        return AuthenticationError(detail, **kwargs)
    if status == 403:
        return ConfigurationError(
            detail,
            finance_message="The Lago API key may not change invoices; an integration engineer must give it write "
            "access to invoices.",
            **kwargs,
        )
    if status == 404 and method == "GET":
        return BusinessRuleError(
            "billing_document_missing",
            f"{what} does not exist (deleted, or another Lago organization): the ERP status cannot be written back "
            "to it. Skip this writeback with a reason.",
            detail,
            **kwargs,
        )
    if status == 405 and code == "update_on_voided_invoice":
        return _voided(what)
    if status == 422 and "invalid_count" in said:
        return BusinessRuleError(
            "billing_metadata_full",
            f"{what} already has Lago's maximum of {METADATA_PER_INVOICE} metadata entries, so the ERP status cannot "
            "be written back. Remove an entry in Lago and retry, or skip this writeback with a reason.",
            detail,
            **kwargs,
        )
    if status == 429:
        return TransientError(detail, retry_after=_retry_after(response), **kwargs)
    if status in (502, 503, 504) or (status >= 500 and method == "GET"):
        return TransientError(detail, retry_after=_retry_after(response), **kwargs)
    if status >= 500:
        # Lago may have committed the update before failing: read the invoice back before sending again.
        return UncertainOutcome(detail, **kwargs)
    return ConfigurationError(detail, **kwargs)


def _retry_after(response: requests.Response) -> float | None:
    for header in ("Retry-After", "X-RateLimit-Reset"):
        try:
            value = float(response.headers.get(header) or "")
        except ValueError:
            continue
        if value >= 0:
            return value
    return None
