"""Deliver pre-signed webhooks from a process of its own, as a billing engine's senders would:
threads with kept-alive HTTP connections, each event once, optionally paced.

    python bench/send_events.py <url> <events file> [--threads 8] [--rate R]

The events file has one body per line, signed when sent with $STRIPE_WEBHOOK_SECRET (a line
"<Stripe-Signature>\\t<body>" is sent with the signature it has). Prints one JSON line:
answers by status, seconds, and the events not answered 2xx (resent up to 5 times, as Stripe does)."""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import threading
import time
from collections import Counter

import requests


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("events")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rate", type=float, default=0.0, help="events per second in all; 0: as fast as answered")
    args = parser.parse_args()
    with open(args.events, encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle]
    secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "").encode()

    def signed(line: str) -> tuple[str, str]:
        if "\t" in line:
            signature, body = line.split("\t", 1)
            return signature, body
        timestamp = int(time.time())
        digest = hmac.new(secret, f"{timestamp}.{line}".encode(), hashlib.sha256).hexdigest()
        return f"t={timestamp},v1={digest}", line

    statuses: Counter[int] = Counter()
    failed: list[int] = []
    lock = threading.Lock()
    started = time.monotonic()

    def sender(offset: int) -> None:
        session = requests.Session()
        for n in range(offset, len(lines), args.threads):
            if args.rate:
                delay = started + n / args.rate - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
            signature, body = signed(lines[n])
            status = 0
            for attempt in range(6):
                try:
                    status = session.post(
                        args.url,
                        data=body.encode(),
                        timeout=60,
                        headers={"Content-Type": "application/json", "Stripe-Signature": signature},
                    ).status_code
                except requests.RequestException:
                    status = 0
                if 200 <= status < 500:
                    break
                time.sleep(0.5 * (attempt + 1))
            with lock:
                statuses[status] += 1
                if not 200 <= status < 300:
                    failed.append(n)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(
        json.dumps(
            {
                "events": len(lines),
                "seconds": round(time.monotonic() - started, 3),
                "statuses": {str(k): v for k, v in statuses.items()},
                "not_2xx": len(failed),
            }
        )
    )


if __name__ == "__main__":
    main()
