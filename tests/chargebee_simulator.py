"""A contract simulator of the part of Chargebee's API v2 the hub writes back to, written from
Chargebee's API reference: ``POST /api/v2/comments`` (form-encoded ``entity_type``, ``entity_id``,
``notes``, ``added_by``), ``GET /api/v2/comments`` filtered by ``entity_type`` and ``entity_id`` and
paged with ``limit`` and ``offset`` (``{"list": [{"comment": ...}], "next_offset": ...}``), and
``GET /api/v2/comments/{id}``.

Authentication is HTTP Basic with the API key as the user name and an empty password. Errors are
Chargebee's body ``{"message", "type", "api_error_code", "param", "http_status_code"}``: 401
``api_authentication_failed``, 404 ``resource_not_found`` (an invoice the site does not hold),
400 ``param_wrong_value``, 422 ``unable_to_process_request`` (an idempotency key reused with
other parameters), 429 ``api_request_limit_exceeded`` with ``Retry-After``, 500
``internal_error``, 503 ``internal_temporary_error``. Idempotent requests: a POST repeating a
``chargebee-idempotency-key`` with the same parameters within the key's window (30 minutes at
Chargebee; ``idempotency_window`` here, so a test can let it pass) answers the first response
again with ``chargebee-idempotency-replayed: true`` and adds nothing.

Faults on demand: ``fail_next(mode)`` makes the next write answer ``500`` or ``503`` before adding
anything, ``429``, or add the comment and then hold the answer back past the client's timeout
(``timeout_after_commit``). Every request is recorded, so a test can count what Chargebee added.
"""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlparse

API_KEY = "test_hub_chargebee_writeback"
ENTITY_TYPES = {"customer", "subscription", "invoice", "quote", "credit_note", "transaction", "order"}
IDEMPOTENCY_WINDOW_SECONDS = 30 * 60


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
class ChargebeeSimulator:
    hang_seconds: float = 2.5
    idempotency_window: float = IDEMPOTENCY_WINDOW_SECONDS
    invoices: set[str] = field(default_factory=set)
    comments: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    _faults: list[str] = field(default_factory=list)
    _idempotent: dict[str, tuple[float, dict[str, str], int, bytes]] = field(default_factory=dict)
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
        """The API base, as a connection's ``api_base``."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/v2"

    def add_invoice(self, invoice_id: str) -> None:
        self.invoices.add(invoice_id)

    def fail_next(self, *modes: str) -> None:
        """``500``, ``503``, ``429`` or ``timeout_after_commit``, for the next writes in order."""
        self._faults.extend(modes)

    def comments_on(self, invoice_id: str) -> list[dict[str, Any]]:
        return [c for c in self.comments if c["entity_type"] == "invoice" and c["entity_id"] == invoice_id]

    def writes(self) -> list[Recorded]:
        return [r for r in self.requests if r.method == "POST"]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # -- the API ----------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        url = urlparse(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        params = dict(parse_qsl(handler.rfile.read(length).decode())) if length else {}
        query = dict(parse_qsl(url.query))
        key = handler.headers.get("chargebee-idempotency-key", "")
        record = Recorded(method, url.path, key, params if method == "POST" else query, 0, applied=False)
        with self._lock:
            self.requests.append(record)
        if not self._authenticated(handler.headers.get("Authorization", "")):
            return self._error(
                handler,
                record,
                401,
                "untyped",
                "api_authentication_failed",
                "Sorry, authentication failed. Invalid api key",
            )
        parts = url.path.strip("/").split("/")
        if parts[:3] != ["api", "v2", "comments"] or len(parts) > 4:
            return self._error(handler, record, 404, "invalid_request", "resource_not_found", "Sorry, not found")
        if method == "GET" and len(parts) == 4:
            found = next((c for c in self.comments if c["id"] == parts[3]), None)
            if found is None:
                return self._missing(handler, record, "comment", parts[3])
            return self._answer(handler, record, 200, json.dumps({"comment": found}).encode())
        if method == "GET":
            return self._answer(handler, record, 200, self._list(query))
        if len(parts) != 3:
            return self._error(handler, record, 405, "invalid_request", "http_method_not_supported", "Not allowed")
        self._create(handler, record, params, key)

    def _authenticated(self, header: str) -> bool:
        scheme, _, encoded = header.partition(" ")
        if scheme != "Basic":
            return False
        try:
            user, _, _password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return user == API_KEY

    def _create(self, handler: BaseHTTPRequestHandler, record: Recorded, params: dict[str, str], key: str) -> None:
        with self._lock:
            now = time.monotonic()
            if key and key in self._idempotent and now - self._idempotent[key][0] < self.idempotency_window:
                _, first_params, status, body = self._idempotent[key]
                if first_params != params:
                    return self._error(
                        handler,
                        record,
                        422,
                        "invalid_request",
                        "unable_to_process_request",
                        "The idempotency key was already used with a different request payload.",
                    )
                record.replayed = True
                return self._answer(handler, record, status, body, replayed=True)
            fault = self._faults.pop(0) if self._faults else ""
            if fault == "500":
                return self._error(
                    handler, record, 500, "operation_failed", "internal_error", "Sorry, something went wrong."
                )
            if fault == "503":
                return self._error(
                    handler,
                    record,
                    503,
                    "operation_failed",
                    "internal_temporary_error",
                    "Sorry, a temporary error occurred. Please retry.",
                )
            if fault == "429":
                return self._error(
                    handler,
                    record,
                    429,
                    "operation_failed",
                    "api_request_limit_exceeded",
                    "Sorry, access has been blocked temporarily due to request count exceeding acceptable limits.",
                    retry_after=1,
                )
            for name in ("entity_type", "entity_id", "notes"):
                if not params.get(name):
                    return self._error(
                        handler, record, 400, "invalid_request", "param_wrong_value", f"{name} : cannot be blank", name
                    )
            if params["entity_type"] not in ENTITY_TYPES:
                return self._error(
                    handler,
                    record,
                    400,
                    "invalid_request",
                    "param_wrong_value",
                    f"entity_type : invalid value {params['entity_type']}",
                    "entity_type",
                )
            if len(params["notes"]) > 1000:
                return self._error(
                    handler, record, 400, "invalid_request", "param_wrong_value", "notes : too long", "notes"
                )
            if params["entity_type"] == "invoice" and params["entity_id"] not in self.invoices:
                return self._missing(handler, record, "invoice", params["entity_id"], param="entity_id")
            comment = {
                "id": f"cmt_{time.monotonic_ns():x}",
                "entity_type": params["entity_type"],
                "entity_id": params["entity_id"],
                "notes": params["notes"],
                "added_by": params.get("added_by") or "API key",
                "created_at": int(time.time()),
                "type": "user",
                "object": "comment",
            }
            self.comments.append(comment)
            record.applied = True
            body = json.dumps({"comment": comment}).encode()
            if key:
                self._idempotent[key] = (now, params, 200, body)
        if fault == "timeout_after_commit":
            record.status = 200  # added; the answer comes after the client stopped waiting
            time.sleep(self.hang_seconds)
        self._answer(handler, record, 200, body)

    def _list(self, query: dict[str, str]) -> bytes:
        """Newest first, filtered by ``entity_type`` and ``entity_id``, ``limit`` (1 to 100, default
        10) per page, the next page named by an opaque ``next_offset``."""
        found = [c for c in reversed(self.comments)]
        for name in ("entity_type", "entity_id"):
            if query.get(name):
                found = [c for c in found if c[name] == query[name]]
        start = int(query.get("offset") or 0)
        limit = min(max(int(query.get("limit") or 10), 1), 100)
        page: dict[str, Any] = {"list": [{"comment": c} for c in found[start : start + limit]]}
        if start + limit < len(found):
            page["next_offset"] = str(start + limit)
        return json.dumps(page).encode()

    def _missing(
        self, handler: BaseHTTPRequestHandler, record: Recorded, what: str, ident: str, param: str = ""
    ) -> None:
        self._error(
            handler,
            record,
            404,
            "invalid_request",
            "resource_not_found",
            f"Sorry, we couldn't find that resource: {what} {ident}",
            param,
        )

    def _error(
        self,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        status: int,
        kind: str,
        code: str,
        message: str,
        param: str = "",
        *,
        retry_after: int | None = None,
    ) -> None:
        error: dict[str, Any] = {"message": message, "type": kind, "api_error_code": code, "http_status_code": status}
        if param:
            error["param"] = param
        headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}
        self._answer(handler, record, status, json.dumps(error).encode(), headers=headers)

    def _answer(
        self,
        handler: BaseHTTPRequestHandler,
        record: Recorded,
        status: int,
        body: bytes,
        *,
        replayed: bool = False,
        headers: dict[str, str] | None = None,
    ) -> None:
        record.status = status
        try:
            handler.send_response(status)
            handler.send_header("Content-Type", "application/json;charset=utf-8")
            handler.send_header("Content-Length", str(len(body)))
            if replayed:
                handler.send_header("chargebee-idempotency-replayed", "true")
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up waiting (a timeout after commit)
