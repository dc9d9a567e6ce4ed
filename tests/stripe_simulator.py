"""A contract simulator of the part of Stripe's API the hub reads and writes back to, written from
Stripe's API reference: ``GET /v1/invoices`` and ``GET /v1/credit_notes`` (lists, newest first,
``created[gte|lte]`` and cursor paging), ``GET``/``POST /v1/invoices/{id}`` with form-encoded
``metadata[...]`` parameters, Bearer API-key authentication, Stripe's error body (``{"error":
{"type", "code", "message", "param"}}``), and idempotent requests: a repeated ``Idempotency-Key``
with the same parameters answers the first response again (``Idempotent-Replayed: true``) without
applying anything; with other parameters it is refused with an ``idempotency_error``.

Faults on demand: ``fail_next(mode)`` makes the next write answer 500 before applying it, 429,
or apply it and then hold the answer back past the client's timeout (``timeout_after_commit``).
Every request is recorded, so a test can count what Stripe actually applied.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

API_KEY = "sk_test_hub_writeback"


@dataclass
class Recorded:
    method: str
    path: str
    idempotency_key: str
    params: dict[str, str]
    status: int
    applied: bool
    replayed: bool = False


@dataclass
class StripeSimulator:
    hang_seconds: float = 2.5
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    credit_notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    _faults: list[str] = field(default_factory=list)
    _idempotent: dict[str, tuple[dict[str, str], int, bytes]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                simulator._handle(self, "GET")

            def do_POST(self) -> None:
                simulator._handle(self, "POST")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_invoice(self, invoice: str | dict[str, Any]) -> None:
        """An invoice Stripe holds: a whole invoice object, or only its id."""
        if isinstance(invoice, str):
            invoice = {"id": invoice, "object": "invoice", "metadata": {}, "livemode": False}
        self.invoices[invoice["id"]] = {"metadata": {}, **json.loads(json.dumps(invoice))}

    def add_credit_note(self, credit_note: dict[str, Any]) -> None:
        self.credit_notes[credit_note["id"]] = json.loads(json.dumps(credit_note))

    def fail_next(self, *modes: str) -> None:
        """``500``, ``429`` or ``timeout_after_commit``, for the next writes in order."""
        self._faults.extend(modes)

    def applied(self, invoice_id: str) -> list[Recorded]:
        return [r for r in self.requests if r.applied and r.path == f"/v1/invoices/{invoice_id}"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the API ----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = urlparse(handler.path).path
        length = int(handler.headers.get("Content-Length") or 0)
        params = dict(parse_qsl(handler.rfile.read(length).decode())) if length else {}
        key = handler.headers.get("Idempotency-Key", "")
        record = Recorded(method, path, key, params, 0, applied=False)
        with self._lock:
            self.requests.append(record)
        if handler.headers.get("Authorization") != f"Bearer {API_KEY}":
            return self._error(handler, record, 401, "invalid_request_error", None, "Invalid API Key provided.")
        parts = path.strip("/").split("/")
        if method == "GET" and parts in (["v1", "invoices"], ["v1", "credit_notes"]):
            objects = self.invoices if parts[1] == "invoices" else self.credit_notes
            query = dict(parse_qsl(urlparse(handler.path).query))
            return self._answer(handler, record, 200, self._list(objects, query, path))
        if len(parts) != 3 or parts[:2] != ["v1", "invoices"]:
            return self._error(
                handler, record, 404, "invalid_request_error", None, f"Unrecognized request URL ({path})."
            )
        invoice_id = parts[2]
        if method == "GET":
            invoice = self.invoices.get(invoice_id)
            if invoice is None:
                return self._missing(handler, record, invoice_id)
            return self._answer(handler, record, 200, json.dumps(invoice).encode())
        with self._lock:
            if key and key in self._idempotent:
                first_params, status, body = self._idempotent[key]
                if first_params != params:
                    return self._error(
                        handler,
                        record,
                        400,
                        "idempotency_error",
                        None,
                        "Keys for idempotent requests can only be used with the same parameters they were first "
                        "used with.",
                    )
                record.replayed = True
                return self._answer(handler, record, status, body, replayed=True)
            fault = self._faults.pop(0) if self._faults else ""
            if fault == "500":
                return self._error(handler, record, 500, "api_error", None, "An unknown error occurred.")
            if fault == "429":
                return self._error(handler, record, 429, "rate_limit_error", "rate_limit", "Too many requests.")
            invoice = self.invoices.get(invoice_id)
            if invoice is None:
                return self._missing(handler, record, invoice_id)
            for name, value in params.items():
                if name.startswith("metadata[") and name.endswith("]"):
                    invoice["metadata"][name[len("metadata[") : -1]] = value
            record.applied = True
            body = json.dumps(invoice).encode()
            if key:
                self._idempotent[key] = (params, 200, body)
        if fault == "timeout_after_commit":
            record.status = 200  # committed; the answer comes after the client stopped waiting
            time.sleep(self.hang_seconds)
        self._answer(handler, record, 200, body)

    def _list(self, objects: dict[str, dict[str, Any]], query: dict[str, str], path: str) -> bytes:
        """``GET /v1/invoices`` or ``/v1/credit_notes``: newest first, filtered by ``status`` (invoices)
        and ``created[gte|lte]``, paged with ``limit`` and ``starting_after`` as Stripe does."""
        found = sorted(objects.values(), key=lambda invoice: (-int(invoice.get("created") or 0), invoice["id"]))
        if "status" in query:
            found = [invoice for invoice in found if invoice.get("status") == query["status"]]
        if "created[gte]" in query:
            found = [invoice for invoice in found if int(invoice.get("created") or 0) >= int(query["created[gte]"])]
        if "created[lte]" in query:
            found = [invoice for invoice in found if int(invoice.get("created") or 0) <= int(query["created[lte]"])]
        if "starting_after" in query:
            ids = [invoice["id"] for invoice in found]
            found = found[ids.index(query["starting_after"]) + 1 :] if query["starting_after"] in ids else []
        limit = int(query.get("limit") or 10)
        page = {"object": "list", "url": path, "has_more": len(found) > limit, "data": found[:limit]}
        return json.dumps(page).encode()

    def _missing(self, handler: BaseHTTPRequestHandler, record: Recorded, invoice_id: str) -> None:
        self._error(
            handler, record, 404, "invalid_request_error", "resource_missing", f"No such invoice: '{invoice_id}'"
        )

    def _error(
        self, handler: BaseHTTPRequestHandler, record: Recorded, status: int, kind: str, code: str | None, message: str
    ) -> None:
        error: dict[str, Any] = {"type": kind, "message": message}
        if code:
            error["code"] = code
        if code == "resource_missing":
            error["param"] = "id"
        self._answer(handler, record, status, json.dumps({"error": error}).encode())

    def _answer(
        self, handler: BaseHTTPRequestHandler, record: Recorded, status: int, body: bytes, *, replayed: bool = False
    ) -> None:
        record.status = status
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Request-Id", f"req_{time.monotonic_ns()}")
            if replayed:
                handler.send_header("Idempotent-Replayed", "true")
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout after commit)
