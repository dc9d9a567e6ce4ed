#!/usr/bin/env python
"""Benchmark: one reconciliation run over 100,000 documents.

    .venv/bin/python bench/reconciliation.py [--documents 100000] [--database-url URL] [--reload]

The ledger side is PostgreSQL: Django points at its own database (default
``postgres://postgres@127.0.0.1:5432/hub_recon_bench``, created when missing and migrated), loaded
with ``bulk_create``, one posting per document as the pipeline leaves it. The ERP side is the Tryton
contract simulator (``tests/erp_simulator.py``) seeded in bulk in memory and read by the real
``TrytonConnector.ledger_documents`` over HTTP (JSON-RPC ``search_read``); billing is the ledger (a
source without a query API). The run is the real ``services.execute_run`` with auto-heal on, so
the time includes reading the three sides, the comparison, storing totals and differences, and
opening one exception case per difference that needs a person.

Data shape for N documents (N = 100,000): one legal entity, one connection, one currency, one
month (October 2026); 0.55N invoices over N/10 customers, 0.30N payment applications (one payment
each, paying its invoice in full), 0.10N credit notes (a partial credit on an open invoice) and
0.05N write-offs (uncollectible invoices). Seeded differences, every one of which the run must find:
0.5% of invoices missing in the ERP, 0.3% with another amount in the ERP, 0.1% entered twice in the
ERP, 0.2% of N ERP invoices the ledger never received, 0.2% of N payments missing in the ERP (their
invoices open there, reported once, on the payment). Results go to stdout and to
``bench/results/reconciliation-<date>.json``; see bench/RECONCILIATION.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/hub_recon_bench"
PERIOD = (date(2026, 10, 1), date(2026, 10, 31))
SOURCE = "stripe-bench"
CONNECTION = "tryton-bench"


def _ensure_database(url: str) -> None:
    import psycopg2

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    connection = psycopg2.connect(admin)
    connection.autocommit = True
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(f'CREATE DATABASE "{name}"')
    connection.close()


def _setup(url: str) -> None:
    sys.path.insert(0, str(ROOT))
    os.environ["DATABASE_URL"] = url
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "integration_hub.settings")
    os.environ.setdefault("CELERY_BROKER_URL", "memory://")
    os.environ.setdefault("HUB_LOG_FORMAT", "console")
    os.environ.setdefault("TRYTON_BENCH_PASSWORD", "sim-admin")
    import django

    django.setup()
    import logging

    logging.getLogger("apps").setLevel(logging.WARNING)
    from django.core.management import call_command

    call_command("migrate", verbosity=0)


class Plan:
    """Which document gets which seeded difference: decided by its number, so loads are identical."""

    def __init__(self, documents: int) -> None:
        self.invoices = documents * 55 // 100
        self.payments = documents * 30 // 100
        self.credit_notes = documents // 10
        self.write_offs = documents - self.invoices - self.payments - self.credit_notes
        self.customers = max(documents // 10, 1)
        # Invoice numbers: [0, payments) paid, then credited, then written off, then open.
        self.paid = range(0, self.payments)
        self.credited = range(self.payments, self.payments + self.credit_notes)
        self.written_off = range(self.credited.stop, self.credited.stop + self.write_offs)
        self.open = range(self.written_off.stop, self.invoices)
        per_mille = documents // 1000
        self.missing_payments = set(range(0, 2 * per_mille))  # the first paid invoices' payments
        opened = list(self.open)
        self.missing_invoices = set(opened[: 5 * per_mille])
        self.wrong_amounts = set(opened[5 * per_mille : 8 * per_mille])
        self.duplicates = set(opened[8 * per_mille : 9 * per_mille])
        self.erp_only = 2 * per_mille

    def expected(self) -> dict[str, int]:
        return {
            "missing_in_erp": len(self.missing_invoices) + len(self.missing_payments),
            "amount_mismatch": len(self.wrong_amounts),
            "duplicate_in_erp": len(self.duplicates),
            "missing_in_ledger": self.erp_only,
        }


def amount(n: int) -> int:
    return 1000 + (n * 7919) % 90000


def day(n: int) -> date:
    return PERIOD[0] + timedelta(days=n % 31)


def load_ledger(plan: Plan) -> None:
    from django.db import transaction

    from apps.connectors.base import WRITE_OFF_SUFFIX
    from apps.ledger.models import CreditMemo, Customer, Invoice, LegalEntity, Payment, PaymentApplication
    from apps.posting.models import Operation, Posting, PostingState, idempotency_key
    from apps.routing.models import ERPConnection, RoutingRule
    from apps.sources.models import BillingSource

    with transaction.atomic():
        entity = LegalEntity.objects.create(code="BN01", name="Bench Inc.", country="US", base_currency="USD")
        BillingSource.objects.create(name=SOURCE, kind=BillingSource.KIND_STRIPE, legal_entity=entity)
        connection = ERPConnection.objects.create(
            name=CONNECTION,
            kind="tryton",
            settings={
                "url": "env:TRYTON_BENCH_URL",
                "database": "sim",
                "username": "admin",
                "password": "env:TRYTON_BENCH_PASSWORD",
                "timeout": 600,
                "listing_page": 1_000_000,
            },
        )
        RoutingRule.objects.create(name="bench", priority=1, legal_entity=entity, connection=connection)
        customers = Customer.objects.bulk_create(
            [
                Customer(source=SOURCE, source_id=f"cus_{c}", name=f"Customer {c}", legal_entity=entity)
                for c in range(plan.customers)
            ],
            batch_size=5000,
        )
        invoices = []
        for n in range(plan.invoices):
            status = "open"
            if n in plan.paid:
                status = "paid"
            elif n in plan.written_off:
                status = "uncollectible"
            invoices.append(
                Invoice(
                    source=SOURCE,
                    source_id=f"in_{n}",
                    number=f"BN-{n:06d}",
                    customer=customers[n % plan.customers],
                    legal_entity=entity,
                    status=status,
                    status_date=day(n),
                    currency="USD",
                    currency_exponent=2,
                    subtotal_minor=amount(n),
                    total_minor=amount(n),
                    amount_paid_minor=amount(n) if status == "paid" else 0,
                    invoice_date=day(n),
                )
            )
        invoices = Invoice.objects.bulk_create(invoices, batch_size=5000)
        payments = Payment.objects.bulk_create(
            [
                Payment(
                    source=SOURCE,
                    source_id=f"pi_{n}",
                    customer=customers[n % plan.customers],
                    currency="USD",
                    amount_minor=amount(n),
                    settled_at=datetime.combine(day(n), datetime.min.time(), tzinfo=UTC) + timedelta(hours=12),
                )
                for n in plan.paid
            ],
            batch_size=5000,
        )
        applications = PaymentApplication.objects.bulk_create(
            [
                PaymentApplication(
                    payment=payment, invoice=invoices[n], invoice_source_id=f"in_{n}", amount_minor=amount(n)
                )
                for n, payment in zip(plan.paid, payments, strict=True)
            ],
            batch_size=5000,
        )
        memos = CreditMemo.objects.bulk_create(
            [
                CreditMemo(
                    source=SOURCE,
                    source_id=f"cn_{n}",
                    number=f"BN-{n:06d}-CN",
                    customer=customers[n % plan.customers],
                    invoice_source_id=f"in_{n}",
                    invoice=invoices[n],
                    currency="USD",
                    subtotal_minor=amount(n) // 4,
                    total_minor=amount(n) // 4,
                    memo_date=day(n),
                )
                for n in plan.credited
            ],
            batch_size=5000,
        )

        def posting(operation: str, source_id: str, **document: Any) -> Posting:
            return Posting(
                idempotency_key=idempotency_key(CONNECTION, operation, SOURCE, source_id, 1),
                connection=connection,
                operation=operation,
                source=SOURCE,
                source_id=source_id,
                state=PostingState.POSTED,
                erp_id="1",
                **document,
            )

        postings = [posting(Operation.POST_INVOICE, f"in_{n}", invoice=invoice) for n, invoice in enumerate(invoices)]
        postings += [
            posting(Operation.APPLY_PAYMENT, f"pi_{n}:in_{n}", payment_application=application)
            for n, application in zip(plan.paid, applications, strict=True)
        ]
        postings += [
            posting(Operation.POST_CREDIT_MEMO, f"cn_{n}", credit_memo=memo, invoice=invoices[n])
            for n, memo in zip(plan.credited, memos, strict=True)
        ]
        postings += [
            posting(Operation.WRITE_OFF, f"in_{n}{WRITE_OFF_SUFFIX}", invoice=invoices[n]) for n in plan.written_off
        ]
        Posting.objects.bulk_create(postings, batch_size=5000)


def load_erp(plan: Plan) -> Any:
    sys.path.insert(0, str(ROOT))
    from tests.erp_simulator import COMPANY_ID, ErpSimulator

    sim = ErpSimulator(fiscal_years=[2026])
    dollar = sim.ids["currency:USD"]
    receivable = sim.ids["account:1200"]
    cash = sim.ids["account:1150"]
    write_off_journal = sim._insert("account.journal", {"name": "Write-off", "code": "WO", "type": "write-off"})

    def invoice(reference: str, total: Decimal, state: str, on: date, number: str) -> None:
        sim._insert(
            "account.invoice",
            {
                "type": "out",
                "number": number,
                "reference": reference,
                "state": state,
                "company": COMPANY_ID,
                "currency": dollar,
                "invoice_date": on,
                "total_amount": total,
                "journal": sim.ids["journal:revenue"],
            },
        )

    def move(reference: str, receivable_amount: Decimal, on: date, journal: int) -> None:
        move_id = sim._insert(
            "account.move",
            {"description": reference, "date": on, "journal": journal, "state": "posted", "company": COMPANY_ID},
        )
        zero = Decimal(0)
        for account, debit, credit in ((receivable, zero, receivable_amount), (cash, receivable_amount, zero)):
            line = sim._insert(
                "account.move.line",
                {"move": move_id, "account": account, "debit": debit, "credit": credit, "description": reference},
            )
            sim._db["account.move"][move_id]["lines"].append(line)

    def usd(minor: int) -> Decimal:
        return Decimal(minor) / 100

    for n in range(plan.invoices):
        if n in plan.missing_invoices:
            continue
        total = usd(amount(n) - 100 if n in plan.wrong_amounts else amount(n))
        state = "posted"
        if (n in plan.paid and n not in plan.missing_payments) or n in plan.written_off:
            state = "paid"
        for copy in range(2 if n in plan.duplicates else 1):
            invoice(f"{SOURCE}:in_{n}", total, state, day(n), f"INV/2026/{n:06d}{'-B' if copy else ''}")
    for n in plan.credited:
        invoice(f"{SOURCE}:cn_{n}", -usd(amount(n) // 4), "posted", day(n), f"CN/2026/{n:06d}")
    for k in range(plan.erp_only):
        invoice(f"{SOURCE}:in_lost_{k}", usd(5000), "posted", day(k), f"INV/2026/X{k:05d}")
    for n in plan.paid:
        if n not in plan.missing_payments:
            move(f"{SOURCE}:pi_{n}:in_{n}", usd(amount(n)), day(n), sim.ids["journal:cash"])
    for n in plan.written_off:
        move(f"{SOURCE}:in_{n}:write-off", usd(amount(n)), day(n), write_off_journal)
    return sim


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=100_000)
    parser.add_argument("--database-url", default=DEFAULT_URL)
    parser.add_argument("--reload", action="store_true", help="drop and reload the ledger")
    args = parser.parse_args()
    _ensure_database(args.database_url)
    _setup(args.database_url)

    from apps.ledger.models import Invoice
    from apps.reconciliation import services
    from apps.reconciliation.models import Difference, ReconciliationRun, RunTotal, Trigger

    plan = Plan(args.documents)
    loaded = Invoice.objects.filter(source=SOURCE).count()
    if args.reload or loaded != plan.invoices:
        from django.core.management import call_command

        call_command("flush", interactive=False, verbosity=0)
        started = time.perf_counter()
        load_ledger(plan)
        print(f"ledger loaded in {time.perf_counter() - started:.1f} s")
    started = time.perf_counter()
    sim = load_erp(plan)
    print(f"ERP simulator seeded in {time.perf_counter() - started:.1f} s")
    os.environ["TRYTON_BENCH_URL"] = sim.url
    from django.db import connection as db
    from django.db.models import Count

    from apps.console.models import ExceptionCase
    from apps.ledger.models import LegalEntity
    from apps.routing.models import ERPConnection

    with db.cursor() as cursor:
        cursor.execute("ANALYZE")
    ExceptionCase.objects.filter(root_kind=ExceptionCase.ROOT_RECONCILIATION).delete()
    Difference.objects.all().delete()
    RunTotal.objects.all().delete()
    ReconciliationRun.objects.all().delete()

    def reconcile() -> tuple[ReconciliationRun, float]:
        requested = services.request_run(
            connection=ERPConnection.objects.get(name=CONNECTION),
            legal_entity=LegalEntity.objects.get(code="BN01"),
            currency="USD",
            period_start=PERIOD[0],
            period_end=PERIOD[1],
            trigger=Trigger.COMMAND,
            actor="bench",
        )
        started = time.perf_counter()
        done = services.execute_run(requested.pk)
        return done, time.perf_counter() - started

    run, wall = reconcile()
    # The next day's run over the same books: every case exists already and is updated.
    again, again_wall = reconcile()
    sim.stop()

    found = dict(run.differences.values_list("kind").annotate(n=Count("id")).values_list("kind", "n"))
    totals = {f"{t.side}/{t.document_type}": [t.count, t.amount_minor] for t in run.totals.all()}
    result = {
        "documents": args.documents,
        "status": run.status,
        "error": run.error,
        "wall_seconds": round(wall, 2),
        "phases_seconds": run.timings,
        "documents_compared": run.documents_compared,
        "differences": found,
        "expected_differences": plan.expected(),
        "found_exactly_the_seeded_differences": found == plan.expected(),
        "cases_opened": run.case_count,
        "second_run": {
            "wall_seconds": round(again_wall, 2),
            "phases_seconds": again.timings,
            "differences": again.difference_count,
            "cases_open": ExceptionCase.objects.filter(root_kind=ExceptionCase.ROOT_RECONCILIATION).count(),
        },
        "notes": run.notes,
        "totals": totals,
        "machine": {"cpus": os.cpu_count(), "load_average": os.getloadavg()},
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"reconciliation-{date.today():%Y%m%d}.json").write_text(json.dumps(result, indent=2) + "\n")
    if run.status != "completed" or not result["found_exactly_the_seeded_differences"] or max(wall, again_wall) >= 120:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
