#!/usr/bin/env python
"""Benchmark: the validation API's latency, answered from its cache while the ERP is down.

    .venv/bin/python bench/validation_api.py [--seconds 30] [--clients 8] [--customers 20000]

Points Django at its own database (default ``postgres://postgres@127.0.0.1:5432/hub_bench_validation``;
created when missing), migrates it and fills the validation cache of one Tryton connection as a
refresh would: ``--customers`` customer accounts (each also known to the ledger), 5,000 accounts,
200 tax codes, and the mappings and routing rule of the example configuration. The connection's
URL points at a closed port: the ERP is down for the whole run, as the acceptance line asks.

The API is served by gunicorn as deployed (2 gthread workers x 4 threads, ``DEBUG=0``, persistent
database connections) on a free port. ``--clients`` threads, each with a kept-alive
``requests.Session`` and a DRF token, send a mix of the three checks (customer 50%, tax code 25%,
dimension value 25%) for ``--seconds`` after a warm-up; every answer must be 200. Latency is wall
time per request at the client. Results go to stdout and to ``bench/results/validation-<date>-clients<n>.json``;
bench/VALIDATION.md is the report.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/hub_bench_validation"
SOURCE = "stripe-us"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--customers", type=int, default=20_000)
    return parser.parse_args(argv)


def ensure_database(url: str) -> None:
    import psycopg

    parts = urlsplit(url)
    admin_url = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        name = parts.path.lstrip("/")
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')


def setup_django(url: str) -> None:
    os.environ.update(
        DATABASE_URL=url,
        CELERY_BROKER_URL="memory://",
        DJANGO_SETTINGS_MODULE="integration_hub.settings",
        DEBUG="0",
        LOG_LEVEL="WARNING",
    )
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", interactive=False, verbosity=0)


def load(customers: int) -> str:
    """The cache as a refresh leaves it, and a token allowed to run checks. Returns the token."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Permission
    from django.db import transaction
    from django.utils import timezone
    from rest_framework.authtoken.models import Token

    from apps.ledger.models import Customer, LegalEntity
    from apps.routing.models import ERPConnection, Mapping, RoutingRule
    from apps.validation.models import ReferenceEntry, ReferenceRefresh

    with transaction.atomic():
        ReferenceEntry.objects.all().delete()
        entity, _ = LegalEntity.objects.get_or_create(
            code="US01", defaults={"name": "Hub Demo Inc.", "country": "US", "base_currency": "USD"}
        )
        connection, _ = ERPConnection.objects.update_or_create(
            name="tryton-down", defaults={"kind": "tryton", "settings": {"url": "http://127.0.0.1:9", "database": "x"}}
        )
        RoutingRule.objects.all().delete()
        RoutingRule.objects.create(legal_entity=entity, connection=connection)
        Mapping.objects.update_or_create(connection=connection, kind="tax_code", key="txr_standard", value="VAT20")
        now = timezone.now()
        entries = [
            ReferenceEntry(connection=connection, kind="customer", code=f"{SOURCE}:cus_{n:06d}", name=f"Customer {n}")
            for n in range(customers)
        ]
        entries += [
            ReferenceEntry(connection=connection, kind="dimension", dimension="account", code=str(4000 + n), name="x")
            for n in range(5000)
        ]
        entries += [ReferenceEntry(connection=connection, kind="tax_code", code=f"VAT{n}") for n in range(200)]
        for entry in entries:
            entry.refreshed_at = now
        ReferenceEntry.objects.bulk_create(entries, batch_size=5000)
        known = set(Customer.objects.filter(source=SOURCE).values_list("source_id", flat=True))
        Customer.objects.bulk_create(
            [
                Customer(
                    source=SOURCE,
                    source_id=f"cus_{n:06d}",
                    name=f"Customer {n}",
                    currency="USD",
                    legal_entity=entity,
                    correlation_id="bench",
                )
                for n in range(customers)
                if f"cus_{n:06d}" not in known
            ],
            batch_size=5000,
        )
        ReferenceRefresh.objects.update_or_create(
            connection=connection,
            defaults={"refreshed_at": now, "attempted_at": now, "entries": len(entries), "error": "ERP down"},
        )
        user, _ = get_user_model().objects.get_or_create(username="bench-billing")
        user.user_permissions.add(Permission.objects.get(codename="view_referenceentry"))
        token, _ = Token.objects.get_or_create(user=user)
    from django.db import connection as db

    with db.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE validation_referenceentry")
        cursor.execute("VACUUM ANALYZE ledger_customer")
    return str(token.key)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve(url: str, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ, DATABASE_URL=url, DATABASE_CONN_MAX_AGE="60", DEBUG="0", CELERY_BROKER_URL="memory://")
    args = [sys.executable, "-m", "gunicorn", "integration_hub.wsgi", "--bind", f"127.0.0.1:{port}"]
    args += ["--workers", "2", "--worker-class", "gthread", "--threads", "4"]
    process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/api/v1/schemas/", timeout=5)
            return process
        except requests.RequestException:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-2000:]}")


def request_mix(rng: random.Random, customers: int) -> tuple[str, dict[str, str]]:
    draw = rng.random()
    if draw < 0.5:
        customer = f"cus_{rng.randrange(customers):06d}" if rng.random() < 0.95 else "cus_unknown"
        return "customers", {"legal_entity": "US01", "source": SOURCE, "customer_id": customer}
    if draw < 0.75:
        code = rng.choice(["txr_standard", f"VAT{rng.randrange(200)}", "VAT999"])
        return "tax-codes", {"legal_entity": "US01", "code": code}
    return "dimensions", {"legal_entity": "US01", "dimension": "account", "value": str(4000 + rng.randrange(6000))}


def run_clients(base: str, token: str, args: argparse.Namespace) -> dict[str, Any]:
    latencies: list[float] = []
    by_check: dict[str, list[float]] = {"customers": [], "tax-codes": [], "dimensions": []}
    failures: list[str] = []
    lock = threading.Lock()
    start_measuring = time.monotonic() + args.warmup
    stop = start_measuring + args.seconds

    def client(n: int) -> None:
        rng = random.Random(n)
        session = requests.Session()
        session.headers["Authorization"] = f"Token {token}"
        while (now := time.monotonic()) < stop:
            check, params = request_mix(rng, args.customers)
            began = time.perf_counter()
            response = session.get(f"{base}/api/v1/validation/{check}/", params=params, timeout=10)
            elapsed = time.perf_counter() - began
            if response.status_code != 200:
                with lock:
                    failures.append(f"{response.status_code} {response.text[:200]}")
            elif now >= start_measuring:
                with lock:
                    latencies.append(elapsed)
                    by_check[check].append(elapsed)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(args.clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    def summary(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        cuts = statistics.quantiles(ordered, n=100, method="inclusive")
        return {
            "requests": len(ordered),
            "p50_ms": round(cuts[49] * 1000, 2),
            "p95_ms": round(cuts[94] * 1000, 2),
            "p99_ms": round(cuts[98] * 1000, 2),
            "max_ms": round(ordered[-1] * 1000, 2),
        }

    return {
        "overall": {**summary(latencies), "requests_per_second": round(len(latencies) / args.seconds, 1)},
        "by_check": {check: summary(values) for check, values in by_check.items() if len(values) > 1},
        "failures": len(failures),
        "failure_samples": failures[:5],
    }


def main(argv: list[str]) -> int:
    args = parse(argv)
    ensure_database(args.database_url)
    setup_django(args.database_url)
    token = load(args.customers)
    RESULTS.mkdir(parents=True, exist_ok=True)
    port = free_port()
    web = serve(args.database_url, port, RESULTS / "validation-gunicorn.log")
    try:
        figures = run_clients(f"http://127.0.0.1:{port}", token, args)
    finally:
        web.terminate()
        web.wait(timeout=20)
        (RESULTS / "validation-gunicorn.log").unlink(missing_ok=True)
    result = {
        "benchmark": "validation_api",
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_average_at_end": os.getloadavg(),
        },
        "settings": {
            "clients": args.clients,
            "seconds": args.seconds,
            "warmup_seconds": args.warmup,
            "customers_cached": args.customers,
            "server": "gunicorn 2 gthread workers x 4 threads, DEBUG=0, DATABASE_CONN_MAX_AGE=60",
            "erp": "down (connection refused) for the whole run",
        },
        **figures,
    }
    out = RESULTS / f"validation-{datetime.now(UTC):%Y%m%d}-clients{args.clients}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0 if not figures["failures"] else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
