"""The zero-latency ERP of the benchmark: tests/erp_simulator.py (an in-memory Tryton that speaks
JSON-RPC) in a process of its own, so its CPU is not the harness's, with a control port that
reports what it received.

    python bench/erp_sim_server.py <ready-file>

writes {"url": ..., "control": ...} to <ready-file> once serving. ``GET <control>/stats`` answers
the counts; ``GET <control>/arrivals`` the arrival time of every request (CLOCK_MONOTONIC, which
every process on the host shares)."""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.erp_simulator import ErpSimulator  # noqa: E402


def stats(sim: ErpSimulator) -> dict[str, object]:
    with sim._lock:
        arrivals = list(sim.arrivals)
        invoices = list(sim.invoices.values())
        parties = len(sim.parties)
        requests = dict(sim.requests)
        responses = {str(k): v for k, v in sim.responses.items()}
    per_second = Counter(int(t) for t in arrivals)
    return {
        "requests": len(arrivals),
        "requests_by_method": requests,
        "responses": responses,
        "parties": parties,
        "invoices": len(invoices),
        "posted_invoices": sum(1 for i in invoices if i.get("state") in ("posted", "paid") and not i.get("deleted")),
        "duplicate_invoices": len(sim.duplicate_invoices(posted_only=True)),
        "max_in_any_1s_window": sim.max_in_any_window(1.0),
        "busiest_calendar_second": max(per_second.values(), default=0),
        "first_arrival": min(arrivals, default=0.0),
        "last_arrival": max(arrivals, default=0.0),
        "max_in_flight": sim.max_in_flight,
    }


def main() -> None:
    ready = Path(sys.argv[1])
    sim = ErpSimulator(seed=1)

    class Control(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/arrivals":
                with sim._lock:
                    payload = list(sim.arrivals)
            else:
                payload = stats(sim)
            body = json.dumps(payload).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    control = ThreadingHTTPServer(("127.0.0.1", 0), Control)
    threading.Thread(target=control.serve_forever, daemon=True).start()
    ready.write_text(json.dumps({"url": sim.url, "control": f"http://127.0.0.1:{control.server_address[1]}"}))
    threading.Event().wait()


if __name__ == "__main__":
    main()
