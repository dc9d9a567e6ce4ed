"""A Recurly API v3 (v2021-02-25) for the tests: the read calls the Recurly adapter makes and the
invoice update the Recurly writeback makes, served over real HTTP from objects the test puts in it,
so ``RecurlyApi`` and ``RecurlyWriteback`` run unchanged against it.

It answers the way Recurly's API is documented to (openapi/api.yaml of Recurly's client libraries):
HTTP Basic with the API key as username and an empty password (anything else: 401
``unauthorized``); an ``Accept`` header naming the API version (anything else: 406
``invalid_api_version``); errors as ``{"error": {"type", "message", "params"}}`` with an
``X-Request-Id`` header; an unknown id: 404 ``not_found``. Every answer carries the rate limit
headers ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (Unix seconds).
Objects are found by id, accounts also by ``code-<code>``, invoices by ``number-<number>``,
transactions and credit payments by ``uuid-<uuid>``. ``GET /invoices/{id}`` embeds at most
``embedded_line_items`` lines (``has_more_line_items`` says when there are more), and
``/invoices/{id}/line_items`` pages them with ``limit`` (at most 200, or ``max_page_size``) and a
``cursor``, answering ``{"object": "list", "has_more", "next", "data"}``.

Writes: ``PUT /invoices/{id}`` takes a JSON ``InvoiceUpdate`` (``po_number`` of at most 50
characters, ``customer_notes``, ``terms_and_conditions``, ``vat_reverse_charge_notes``,
``net_terms`` from 0 to 999, ``address``); ``po_number`` and ``terms_and_conditions`` cannot be
changed on a credit invoice (422 ``validation``), and the answer is the updated invoice with a new
``updated_at``. Recurly API v3 has no idempotency keys, and the simulator accepts none either. Every
write is recorded in ``writes`` with whether it was applied, so a test counts what Recurly holds.

Faults on demand: ``fail_next`` answers the next request, whatever it is, with an error before
doing anything. ``fail_next_write(mode)`` acts on the next write only: ``500`` (refused before
applying), ``500_after_commit`` (applied, then answered 500, as a server that failed after its
commit), ``timeout_after_commit`` (applied, then the answer is held back ``hang_seconds``, past the
client's timeout) and ``429`` (rate limited: ``X-RateLimit-Remaining: 0``, ``X-RateLimit-Reset``
``retry_after`` seconds ahead; ``Retry-After`` too when ``retry_after_header``).

Divergences worth knowing: real cursors are opaque (here: an offset); the real error messages may be
worded differently; an unknown update field is refused here with 400 ``invalid_request`` (Recurly's
exact answer is not documented); there is no length limit on notes here.
"""

from __future__ import annotations

import base64
import binascii
import copy
import json
import threading
import time
import urllib.parse
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from apps.sources import recurly_samples as samples
from apps.sources.recurly import API_VERSION

DEFAULT_API_KEY = "sim-recurly-private-key"
_ACCEPTED = (f"application/vnd.recurly.{API_VERSION}", f"application/vnd.recurly.{API_VERSION}+json")
_UPDATABLE = {"po_number", "customer_notes", "terms_and_conditions", "vat_reverse_charge_notes", "net_terms", "address"}
RATE_LIMIT = 1000  # requests per window, as a production site's default (documented: 1,000 a minute)


@dataclass
class _Fault:
    status: int
    error_type: str
    message: str


@dataclass
class Write:
    """One ``PUT`` as Recurly received it."""

    path: str
    body: dict[str, Any]
    status: int = 0
    applied: bool = False


@dataclass
class RecurlySimulator:
    api_key: str = DEFAULT_API_KEY
    embedded_line_items: int = 200
    max_page_size: int = 200
    hang_seconds: float = 2.5
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    credit_payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    _faults: list[_Fault] = field(default_factory=list)
    _write_faults: list[tuple[str, float, bool]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> RecurlySimulator:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                simulator._respond(self, "GET")

            def do_PUT(self) -> None:
                simulator._respond(self, "PUT")

            def do_POST(self) -> None:
                self.send_error(405)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True, name="recurly-simulator").start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> RecurlySimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "start the simulator first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def reset(self) -> None:
        with self._lock:
            for store in (self.accounts, self.invoices, self.transactions, self.credit_payments, self.requests):
                store.clear()
            self.writes.clear()
            self._faults.clear()
            self._write_faults.clear()
            self.embedded_line_items = self.max_page_size = 200

    # --- what the test puts in ---------------------------------------------------------------------

    def put(self, *objects: dict[str, Any]) -> None:
        """Store API objects (accounts, invoices, transactions, credit payments) by their ``object``."""
        stores = {
            "account": self.accounts,
            "invoice": self.invoices,
            "transaction": self.transactions,
            "credit_payment": self.credit_payments,
        }
        with self._lock:
            for obj in objects:
                stores[obj["object"]][obj["id"]] = copy.deepcopy(obj)

    def fail_next(self, status: int, error_type: str, message: str) -> None:
        """Answer the next request with this error, whatever it asks."""
        with self._lock:
            self._faults.append(_Fault(status, error_type, message))

    def fail_next_write(self, mode: str, *, retry_after: float = 2, retry_after_header: bool = False) -> None:
        """``500``, ``500_after_commit``, ``timeout_after_commit`` or ``429``, for the next writes in order."""
        assert mode in ("500", "500_after_commit", "timeout_after_commit", "429"), mode
        with self._lock:
            self._write_faults.append((mode, retry_after, retry_after_header))

    def applied(self, invoice_id: str) -> list[Write]:
        return [write for write in self.writes if write.applied and write.path == f"/invoices/{invoice_id}"]

    # --- answers -----------------------------------------------------------------------------------

    def _respond(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        extra: dict[str, str] = {}
        hang = 0.0
        with self._lock:
            self.requests.append(handler.path)
            write = Write(urllib.parse.urlsplit(handler.path).path, {}) if method == "PUT" else None
            if write is not None:
                self.writes.append(write)
            status, payload = self._check(handler.headers)
            if status == 200 and write is not None:
                status, payload, extra, hang = self._write(write, raw)
            elif status == 200:
                status, payload = self._read(handler.path)
            if write is not None:
                write.status = status
        if hang:
            time.sleep(hang)  # committed; the answer comes after the client stopped waiting
        self._send(handler, status, payload, extra)

    def _check(self, headers: Any) -> tuple[int, dict[str, Any]]:
        if not self._authorized(headers.get("Authorization")):
            return 401, samples.error("unauthorized", "Invalid API key")
        accept = (headers.get("Accept") or "").split(";")[0].strip()
        if accept not in _ACCEPTED:
            return 406, samples.error(
                "invalid_api_version",
                "That accept header isn't in the format we use to specify an API version.",
            )
        if self._faults:
            fault = self._faults.pop(0)
            return fault.status, samples.error(fault.error_type, fault.message)
        return 200, {}

    def _read(self, raw_path: str) -> tuple[int, dict[str, Any]]:
        parts = urllib.parse.urlsplit(raw_path)
        segments = [urllib.parse.unquote(segment) for segment in parts.path.strip("/").split("/")]
        query = dict(urllib.parse.parse_qsl(parts.query))
        return self._route(segments, query)

    def _write(self, write: Write, raw: bytes) -> tuple[int, dict[str, Any], dict[str, str], float]:
        """``PUT /invoices/{id}``; the caller holds the lock."""
        mode, retry_after, header = self._write_faults.pop(0) if self._write_faults else ("", 0.0, False)
        if mode == "429":
            extra = {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(time.time() + retry_after))}
            if header:
                extra["Retry-After"] = str(int(retry_after))
            return 429, samples.error("rate_limited", "You have made too many API requests."), extra, 0.0
        if mode == "500":
            return 500, samples.error("internal_server_error", "An internal server error has occurred."), {}, 0.0
        segments = [urllib.parse.unquote(segment) for segment in write.path.strip("/").split("/")]
        if len(segments) != 2 or segments[0] != "invoices":
            return 404, samples.error("not_found", f"Couldn't find a route for {write.path}"), {}, 0.0
        try:
            body = json.loads(raw or b"{}")
        except (UnicodeDecodeError, json.JSONDecodeError):
            return 400, samples.error("invalid_content_type", "The request body is not valid JSON."), {}, 0.0
        if not isinstance(body, dict):
            return 400, samples.error("invalid_request", "The request body must be a JSON object."), {}, 0.0
        write.body = body
        status, invoice = self._found("Invoice", segments[1], self.invoices, number="number")
        if status != 200:
            return status, invoice, {}, 0.0
        problem = self._invalid_update(invoice, body)
        if problem:
            return 422, problem, {}, 0.0
        stored = self.invoices[invoice["id"]]
        stored.update(body)
        stored["updated_at"] = samples.timestamp(datetime.now(UTC))
        write.applied = True
        if mode == "500_after_commit":
            return 500, samples.error("internal_server_error", "An internal server error has occurred."), {}, 0.0
        return 200, self._embedded(copy.deepcopy(stored)), {}, self.hang_seconds if mode else 0.0

    @staticmethod
    def _invalid_update(invoice: dict[str, Any], body: dict[str, Any]) -> dict[str, Any] | None:
        unknown = sorted(set(body) - _UPDATABLE)
        if unknown:
            return samples.error("invalid_request", f"Unknown parameter: {unknown[0]}", [{"param": unknown[0]}])
        if len(str(body.get("po_number") or "")) > 50:
            return samples.error(
                "validation", "Po number is too long (maximum is 50 characters)", [{"param": "po_number"}]
            )
        if invoice.get("type") == "credit":
            for name in ("po_number", "terms_and_conditions"):
                if name in body:
                    return samples.error(
                        "validation", f"{name} cannot be changed on a credit invoice", [{"param": name}]
                    )
        terms = body.get("net_terms")
        if terms is not None and not (isinstance(terms, int) and 0 <= terms <= 999):
            return samples.error("validation", "Net terms must be between 0 and 999", [{"param": "net_terms"}])
        return None

    def _send(
        self, handler: BaseHTTPRequestHandler, status: int, payload: dict[str, Any], extra: dict[str, str]
    ) -> None:
        body = samples.api_json(payload)
        with self._lock:
            remaining = max(RATE_LIMIT - len(self.requests), 0)
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "Recurly-Version": f"recurly.{API_VERSION}",
            "X-Request-Id": uuid.uuid4().hex[:20],
            "X-RateLimit-Limit": str(RATE_LIMIT),
            "X-RateLimit-Remaining": str(remaining),
            "X-RateLimit-Reset": str(int(time.time()) + 300),
            "Content-Length": str(len(body)),
            **extra,
        }
        try:
            handler.send_response(status)
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout after commit)

    def _authorized(self, authorization: str | None) -> bool:
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            credentials = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return credentials == f"{self.api_key}:"

    def _route(self, segments: list[str], query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        match segments:
            case ["accounts", key]:
                return self._found("Account", key, self.accounts, code="code")
            case ["invoices", key]:
                status, invoice = self._found("Invoice", key, self.invoices, number="number")
                return (status, self._embedded(invoice)) if status == 200 else (status, invoice)
            case ["invoices", key, "line_items"]:
                status, invoice = self._found("Invoice", key, self.invoices, number="number")
                return (status, self._page(invoice, query)) if status == 200 else (status, invoice)
            case ["transactions", key]:
                return self._found("Transaction", key, self.transactions, uuid="uuid")
            case ["credit_payments", key]:
                return self._found("CreditPayment", key, self.credit_payments, uuid="uuid")
        return 404, samples.error("not_found", f"Couldn't find a route for /{'/'.join(segments)}")

    def _found(self, kind: str, key: str, store: dict[str, dict[str, Any]], **prefixes: str) -> tuple[int, Any]:
        prefix, _, value = key.partition("-")
        if value and prefix in prefixes:
            found = next((obj for obj in store.values() if str(obj.get(prefixes[prefix])) == value), None)
        else:
            found = store.get(key)
        if found is None:
            param = f"{kind.lower()}_id" if kind != "CreditPayment" else "credit_payment_id"
            return 404, samples.error("not_found", f"Couldn't find {kind} with id = {key}", [{"param": param}])
        return 200, copy.deepcopy(found)

    def _embedded(self, invoice: dict[str, Any]) -> dict[str, Any]:
        lines = invoice.get("line_items") or []
        invoice["has_more_line_items"] = len(lines) > self.embedded_line_items
        invoice["line_items"] = lines[: self.embedded_line_items]
        return invoice

    def _page(self, invoice: dict[str, Any], query: dict[str, str]) -> dict[str, Any]:
        lines = invoice.get("line_items") or []
        limit = max(1, min(int(query.get("limit", "20")), 200, self.max_page_size))
        start = int(query.get("cursor", "0"))
        page = lines[start : start + limit]
        more = start + limit < len(lines)
        next_page = f"/invoices/{invoice['id']}/line_items?cursor={start + limit}&limit={limit}" if more else None
        return {"object": "list", "has_more": more, "next": next_page, "data": page}
