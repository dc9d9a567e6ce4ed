"""A Recurly API v3 (v2021-02-25) for the tests: the read calls the Recurly adapter makes, served over
real HTTP from objects the test puts in it, so ``RecurlyApi`` runs unchanged against it.

It answers the way Recurly's API is documented to (openapi/api.yaml of Recurly's client libraries):
HTTP Basic with the API key as username and an empty password (anything else: 401
``unauthorized``); an ``Accept`` header naming the API version (anything else: 406
``invalid_api_version``); errors as ``{"error": {"type", "message", "params"}}`` with an
``X-Request-Id`` header; an unknown id: 404 ``not_found``. Objects are found by id, accounts also by
``code-<code>``, invoices by ``number-<number>``, transactions and credit payments by ``uuid-<uuid>``.
``GET /invoices/{id}`` embeds at most ``embedded_line_items`` lines (``has_more_line_items`` says
when there are more), and ``/invoices/{id}/line_items`` pages them with ``limit`` (at most 200, or
``max_page_size``) and a ``cursor``,
answering ``{"object": "list", "has_more", "next", "data"}``.

Divergences worth knowing: only GET is served; real cursors are opaque (here: an offset); the real
error messages may be worded differently; ``fail_next`` injects one error answer for the next request.
"""

from __future__ import annotations

import base64
import binascii
import copy
import threading
import urllib.parse
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from apps.sources import recurly_samples as samples
from apps.sources.recurly import API_VERSION

DEFAULT_API_KEY = "sim-recurly-private-key"
_ACCEPTED = (f"application/vnd.recurly.{API_VERSION}", f"application/vnd.recurly.{API_VERSION}+json")


@dataclass
class _Fault:
    status: int
    error_type: str
    message: str


@dataclass
class RecurlySimulator:
    api_key: str = DEFAULT_API_KEY
    embedded_line_items: int = 200
    max_page_size: int = 200
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    invoices: dict[str, dict[str, Any]] = field(default_factory=dict)
    transactions: dict[str, dict[str, Any]] = field(default_factory=dict)
    credit_payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    _faults: list[_Fault] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> RecurlySimulator:
        simulator = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, payload = simulator._answer(self.path, self.headers)
                body = samples.api_json(payload)
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Recurly-Version", f"recurly.{API_VERSION}")
                self.send_header("X-Request-Id", uuid.uuid4().hex[:20])
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

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
            self._faults.clear()
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

    # --- answers -----------------------------------------------------------------------------------

    def _answer(self, raw_path: str, headers: Any) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(raw_path)
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
            parts = urllib.parse.urlsplit(raw_path)
            segments = [urllib.parse.unquote(segment) for segment in parts.path.strip("/").split("/")]
            query = dict(urllib.parse.parse_qsl(parts.query))
            return self._route(segments, query)

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
