"""A contract simulator of the part of Lago's REST API the hub writes back to, written from Lago's API
reference and its open-source API server: ``GET /api/v1/invoices/{lago_id}`` and ``PUT
/api/v1/invoices/{lago_id}`` with ``{"invoice": {"metadata": [{"id", "key", "value"}]}}`` (writeback),
and ``GET /api/v1/payments?invoice_id=&page=&per_page=`` (the payment records the source adapter
reads back), paged with Lago's ``meta`` (``current_page``, ``next_page``, ``prev_page``,
``total_pages``, ``total_count``).

What Lago does with metadata, and the simulator with it: the list sent *replaces* the invoice's
metadata. An item with the ``id`` of an existing entry updates it, an item without ``id`` creates an
entry, and every entry not named in the list is deleted. An invoice holds at most 5 entries, a key at
most 20 characters and unique on the invoice, a value at most 140; a voided invoice cannot be updated
(405 ``update_on_voided_invoice``), nor a draft's metadata (405 ``metadata_on_draft_invoice``).

Authentication is ``Authorization: Bearer <api key>``. Errors have Lago's body: ``{"status", "error",
"code"}``, with ``error_details`` for 422 ``validation_errors``. Throttling is Lago Cloud's: 429 with
``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (seconds to wait).

Faults on demand: ``fail_next(mode)`` makes the next update answer ``500`` before applying it,
``429``, or apply it and hold the answer back past the client's timeout (``timeout_after_commit``);
``fail_next_read(mode)`` makes the next read of payments answer ``500`` or ``429``.
Every request is recorded with whether it changed the invoice, so a test counts what Lago applied.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

API_KEY = "lago_test_api_key_writeback"
# The Celery worker process of the e2e tests inherits this process's environment when it starts,
# after the tests (and so this module) are collected.
os.environ.setdefault("LAGO_API_KEY", API_KEY)

METADATA_PER_INVOICE = 5
KEY_MAX_LENGTH = 20
VALUE_MAX_LENGTH = 140


@dataclass
class Recorded:
    method: str
    path: str
    body: dict[str, Any]
    status: int
    applied: bool


@dataclass
class LagoSimulator:
    hang_seconds: float = 2.5
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    _faults: list[str] = field(default_factory=list)
    _read_faults: list[str] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                simulator._handle(self, "GET")

            def do_PUT(self) -> None:
                simulator._handle(self, "PUT")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_invoice(self, invoice: dict[str, Any], *, metadata: dict[str, str] | None = None) -> None:
        """An invoice Lago holds (a webhook's invoice object), with the metadata its users set."""
        held = json.loads(json.dumps(invoice))
        held["metadata"] = [self._entry(key, value) for key, value in (metadata or {}).items()]
        self.invoices[held["lago_id"]] = held

    def add_payment(self, payment: dict[str, Any]) -> None:
        """A payment record Lago holds (manual ones are recorded whether or not a receipt is sent)."""
        self.payments.append(json.loads(json.dumps(payment)))

    def metadata(self, invoice_id: str) -> dict[str, str]:
        return {entry["key"]: entry["value"] for entry in self.invoices[invoice_id]["metadata"]}

    def fail_next(self, *modes: str) -> None:
        """``500``, ``429`` or ``timeout_after_commit``, for the next updates in order."""
        self._faults.extend(modes)

    def fail_next_read(self, *modes: str) -> None:
        """``500`` or ``429`` for the next reads of payments, in order."""
        self._read_faults.extend(modes)

    def applied(self, invoice_id: str) -> list[Recorded]:
        return [r for r in self.requests if r.applied and r.path == f"/api/v1/invoices/{invoice_id}"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the API ----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(handler.path)
        path = url.path
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        record = Recorded(method, path, {}, 0, applied=False)
        with self._lock:
            self.requests.append(record)
        if handler.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self._answer(handler, record, 401, {"status": 401, "error": "Unauthorized"})
        parts = path.strip("/").split("/")
        if method == "GET" and parts == ["api", "v1", "payments"]:
            fault = self._read_faults.pop(0) if self._read_faults else ""
            if fault in ("500", "429"):
                return self._answer(handler, record, int(fault), {"status": int(fault), "error": "Unavailable"})
            return self._answer(handler, record, 200, self._payments(dict(parse_qsl(url.query))))
        if len(parts) != 4 or parts[:3] != ["api", "v1", "invoices"]:
            return self._answer(handler, record, 404, {"status": 404, "error": "Not Found"})
        invoice_id = parts[3]
        if method == "GET":
            invoice = self.invoices.get(invoice_id)
            if invoice is None:
                return self._not_found(handler, record)
            return self._answer(handler, record, 200, {"invoice": invoice})
        try:
            record.body = json.loads(raw or b"{}")
        except json.JSONDecodeError as exc:
            return self._answer(handler, record, 400, {"status": 400, "error": f"BadRequest: {exc}"})
        with self._lock:
            fault = self._faults.pop(0) if self._faults else ""
            if fault == "500":
                return self._answer(handler, record, 500, {"status": 500, "error": "Internal Server Error"})
            if fault == "429":
                return self._answer(
                    handler,
                    record,
                    429,
                    {"status": 429, "error": "Too Many Requests"},
                    {"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": "1"},
                )
            invoice = self.invoices.get(invoice_id)
            if invoice is None:
                return self._not_found(handler, record)
            status, answer = self._update(invoice, record)
        if fault == "timeout_after_commit" and status == 200:
            record.status = 200  # committed; the answer comes after the client stopped waiting
            time.sleep(self.hang_seconds)
        self._answer(handler, record, status, answer)

    def _payments(self, query: dict[str, str]) -> dict[str, Any]:
        """``GET /payments``: newest first, filtered by ``invoice_id``, ``per_page`` (default 20) a page."""
        found = [
            p for p in reversed(self.payments) if not query.get("invoice_id") or query["invoice_id"] in p["invoice_ids"]
        ]
        per_page, page = int(query.get("per_page") or 20), int(query.get("page") or 1)
        pages = max(1, -(-len(found) // per_page))
        return {
            "payments": found[(page - 1) * per_page : page * per_page],
            "meta": {
                "current_page": page,
                "next_page": page + 1 if page < pages else None,
                "prev_page": page - 1 if page > 1 else None,
                "total_pages": pages,
                "total_count": len(found),
            },
        }

    def _update(self, invoice: dict[str, Any], record: Recorded) -> tuple[int, dict[str, Any]]:
        """``PUT /invoices/{id}`` as Lago's Invoices::UpdateService and Metadata::UpdateService do it."""
        params = record.body.get("invoice")
        if not isinstance(params, dict):
            return 400, {"status": 400, "error": "BadRequest: param is missing or the value is empty: invoice"}
        if invoice["status"] == "voided":
            return 405, {"status": 405, "error": "Method Not Allowed", "code": "update_on_voided_invoice"}
        items = params.get("metadata")
        if items is None:
            return 200, {"invoice": invoice}
        if invoice["status"] == "draft":
            return 405, {"status": 405, "error": "Method Not Allowed", "code": "metadata_on_draft_invoice"}
        if not isinstance(items, list) or len(items) > METADATA_PER_INVOICE:
            return 422, self._invalid({"metadata": ["invalid_count"]})
        held = {entry["lago_id"]: entry for entry in invoice["metadata"]}
        kept: list[dict[str, Any]] = []
        for item in items:
            key, value = str(item.get("key") or ""), str(item.get("value") or "")
            if not key or not value:
                return 422, self._invalid({"key" if not key else "value": ["value_is_mandatory"]})
            if len(key) > KEY_MAX_LENGTH:
                return 422, self._invalid({"key": ["value_is_too_long"]})
            if len(value) > VALUE_MAX_LENGTH:
                return 422, self._invalid({"value": ["value_is_too_long"]})
            existing = held.get(str(item.get("id") or ""))
            kept.append({**existing, "key": key, "value": value} if existing else self._entry(key, value))
        keys = [entry["key"] for entry in kept]
        if len(set(keys)) != len(keys):
            return 422, self._invalid({"key": ["value_already_exist"]})
        record.applied = [(e["lago_id"], e["key"], e["value"]) for e in kept] != [
            (e["lago_id"], e["key"], e["value"]) for e in invoice["metadata"]
        ]
        invoice["metadata"] = kept
        if record.applied:
            invoice["updated_at"] = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return 200, {"invoice": invoice}

    @staticmethod
    def _entry(key: str, value: str) -> dict[str, Any]:
        return {
            "lago_id": str(uuid.uuid4()),
            "key": key,
            "value": value,
            "created_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    @staticmethod
    def _invalid(details: dict[str, list[str]]) -> dict[str, Any]:
        return {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors", "error_details": details}

    def _not_found(self, handler: BaseHTTPRequestHandler, record: Recorded) -> None:
        self._answer(handler, record, 404, {"status": 404, "error": "Not Found", "code": "invoice_not_found"})

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        status: int,
        body: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> None:
        record.status = status
        payload = json.dumps(body).encode()
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json; charset=utf-8")
            handler.send_header("Content-Length", str(len(payload)))
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout after commit)
