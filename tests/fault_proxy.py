"""A real HTTP proxy in front of the real Tryton that injects faults a healthy server does not
produce on demand: an answer held back past the client's timeout after Tryton committed the
work, or a throttling status. Everything else is forwarded untouched. Every request is recorded
as the ERP would have received it (``received``: JSON-RPC method, headers, body)."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import requests


@dataclass
class Fault:
    method: str
    times: int
    hold_seconds: float = 0.0  # forward, let the ERP commit, then answer this late
    status: int = 0  # answer this status without forwarding
    retry_after: str = ""
    after: int = 0  # let this many calls of the method through untouched first


@dataclass(frozen=True)
class Received:
    method: str
    headers: dict[str, str]
    body: bytes


def most_in_any_window(arrivals: list[float], seconds: float) -> int:
    """The most of ``arrivals`` (monotonic times) that fall within any window of ``seconds``."""
    times = sorted(arrivals)
    best, start = 0, 0
    for end, arrived in enumerate(times):
        while arrived - times[start] >= seconds:
            start += 1
        best = max(best, end - start + 1)
    return best


class FaultProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()
        self.arrivals: list[float] = []  # monotonic arrival time of every request
        self.received: list[Received] = []  # every request as the ERP would have seen it
        self.in_flight = 0
        self.max_in_flight = 0
        self.down = False  # an outage: every request answered 503 without reaching the ERP
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            _counted = False

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                with proxy._lock:
                    proxy.arrivals.append(time.monotonic())
                    proxy.in_flight += 1
                    proxy.max_in_flight = max(proxy.max_in_flight, proxy.in_flight)
                self._counted = True
                try:
                    self._handle()
                finally:
                    self._answered()

            def _answered(self) -> None:
                # Counted out before the answer is written: once the client has its answer it may
                # send its next request before this thread gets to run again.
                if self._counted:
                    self._counted = False
                    with proxy._lock:
                        proxy.in_flight -= 1

            def send_response(self, code: int, message: str | None = None) -> None:
                self._answered()
                super().send_response(code, message)

            def _handle(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    method = str(json.loads(body).get("method", ""))
                except ValueError:
                    method = ""
                with proxy._lock:
                    proxy.received.append(Received(method, dict(self.headers.items()), body))
                fault = proxy._take_fault(method)
                if proxy.down:
                    fault = Fault(method, 0, status=503)
                if fault is not None and fault.status:
                    self.send_response(fault.status)
                    if fault.retry_after:
                        self.send_header("Retry-After", fault.retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                upstream = requests.post(proxy.upstream + self.path, data=body, headers=headers, timeout=120)
                if fault is not None and fault.hold_seconds:
                    time.sleep(fault.hold_seconds)
                try:
                    self.send_response(upstream.status_code)
                    self.send_header("Content-Type", upstream.headers.get("Content-Type", "application/json"))
                    self.send_header("Content-Length", str(len(upstream.content)))
                    self.end_headers()
                    self.wfile.write(upstream.content)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: that is the fault we wanted

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def _take_fault(self, method: str) -> Fault | None:
        with self._lock:
            self.calls[method] += 1
            for fault in self.faults:
                if fault.method == method and fault.after > 0:
                    fault.after -= 1
                    return None
                if fault.method == method and fault.times > 0:
                    fault.times -= 1
                    self.injected[method] += 1
                    return fault
        return None

    def inject(
        self,
        method: str,
        *,
        times: int = 1,
        hold_seconds: float = 0.0,
        status: int = 0,
        retry_after: str = "",
        after: int = 0,
    ) -> None:
        with self._lock:
            self.faults.append(Fault(method, times, hold_seconds, status, retry_after, after))

    def max_in_any_window(self, seconds: float) -> int:
        """The most requests that arrived within any window of ``seconds``."""
        with self._lock:
            return most_in_any_window(self.arrivals, seconds)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
