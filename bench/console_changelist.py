#!/usr/bin/env python
"""Benchmark: the finance exception console over a PostgreSQL database holding many postings.

    .venv/bin/python bench/console_changelist.py [--postings 1000000] [--database-url URL] [--reload]

Points Django at its own database (default ``postgres://postgres@127.0.0.1:5432/hub_bench``; created
when missing), migrates it, loads a realistic data set with set-based SQL (``INSERT ... SELECT
generate_series``, one transaction), runs VACUUM (ANALYZE), then times GET requests of the console pages with
``django.test.Client`` logged in as a member of the "Finance operations" group: median and p95 wall
time, the number of SQL queries per page, and EXPLAIN (ANALYZE, BUFFERS) of each page's slowest query.

Loading is skipped when the database already holds the requested number of postings; ``--reload``
forces it. Results go to stdout and to ``bench/out/`` (ignored by git). See bench/REPORT.md.

Data shape, per 10 postings (N = 10 x blocks):
  1 ensure_customer + 5 post_invoice + 4 apply_payment, i.e. N/10 customers with 5 invoices each
  (the 5th unpaid) and N*4/10 payments with one application each; 3 legal entities (US01, GB01,
  DE01) on 2 ERP connections (tryton-us; tryton-eu for GB01 and DE01), created over the last 365 days.
States (from a multiplicative hash of the posting number, so re-loads are identical):
  ~0.5% of customer postings and ~2% of invoice and payment postings parked (1.5%) or dead (0.5%),
  error codes spread over the console catalogue (weighted: missing mappings most often); their
  children WAITING; 0.2% skipped; the newest 0.3% queued / in flight / retry scheduled; the rest
  (~96-97%) posted. One open ExceptionCase per parked or dead posting (~18k), 30% of them assigned,
  and ~10% of all postings with a resolved case in their history (~100k resolved cases).
  One PostingAttempt per attempt (~1.1M rows). Inbox events, invoice lines and audit events are not
  loaded: none of the measured pages reads them.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
DEFAULT_URL = "postgres://postgres@127.0.0.1:5432/hub_bench"

LEGAL_ENTITIES = [
    (1, "US01", "Hub Demo Inc.", "US", "USD"),
    (2, "GB01", "Hub Demo Ltd", "GB", "GBP"),
    (3, "DE01", "Hub Demo GmbH", "DE", "EUR"),
]
CONNECTIONS = [(1, "tryton-us"), (2, "tryton-eu")]  # US01 -> tryton-us; GB01, DE01 -> tryton-eu
SOURCES = [(1, "stripe-us", 1), (2, "stripe-gb", 2), (3, "stripe-de", 3)]
FINANCE_USERS = 10
ENGINEER_USERS = 5
BENCH_USER = "finance.01"  # the measured user; cases are assigned to it like to its colleagues

# Error codes a parked posting carries, per operation: (raw error_code on the posting, catalogue
# code, error params, weight). The catalogue code differs from the raw one where the catalogue
# refines it (erp_rejected about a period -> closed_period; retries_exhausted -> timeout...).
PARKED_CODES: dict[str, list[tuple[str, str, dict[str, str], int]]] = {
    "ensure_customer": [
        ("customer_without_address", "customer_without_address", {}, 3),
        ("customer_mismatch", "customer_mismatch", {}, 2),
        ("missing_tax_registration", "missing_tax_registration", {}, 2),
        ("invalid_legal_entity", "invalid_legal_entity", {"value": "XX01"}, 1),
        ("erp_rejected", "erp_rejected", {"erp_message": 'The value of field "Code" must be unique.'}, 1),
        ("authentication", "authentication", {}, 1),
        ("configuration", "configuration", {}, 1),
    ],
    "post_invoice": [
        ("missing_revenue_account_mapping", "missing_revenue_account_mapping", {}, 5),
        ("missing_tax_code_mapping", "missing_tax_code_mapping", {}, 3),
        ("unmapped_revenue_account", "unmapped_revenue_account", {"value": "4999"}, 2),
        ("unknown_tax_code", "unknown_tax_code", {"value": "VAT21"}, 2),
        ("unknown_currency", "unknown_currency", {"value": "CHF"}, 1),
        ("amount_mismatch", "amount_mismatch", {"billing_total": "120.00", "erp_total": "119.99"}, 2),
        ("amended_after_posting", "amended_after_posting", {}, 1),
        ("customer_without_address", "customer_without_address", {}, 1),
        ("erp_rejected", "closed_period", {"erp_message": "The period of the invoice date is closed."}, 2),
        ("erp_rejected", "erp_rejected", {"erp_message": "The invoice date is before the fiscal year start."}, 1),
        ("erp_warning", "erp_warning", {"erp_message": "The invoice date is in the future."}, 1),
        ("invalid_legal_entity", "invalid_legal_entity", {"value": "XX01"}, 1),
        ("authentication", "authentication", {}, 1),
        ("configuration", "configuration", {}, 1),
        ("schema_mismatch", "schema_mismatch", {}, 1),
    ],
    "apply_payment": [
        ("missing_payment_journal_mapping", "missing_payment_journal_mapping", {}, 4),
        ("unknown_payment_journal", "unknown_payment_journal", {"value": "sepa_debit"}, 2),
        ("overpayment", "overpayment", {"billing_total": "120.00", "erp_total": "60.00"}, 2),
        ("erp_rejected", "closed_period", {"erp_message": "No period is open on the payment date."}, 1),
        ("erp_rejected", "erp_rejected", {"erp_message": "The move line is already reconciled."}, 1),
        ("authentication", "authentication", {}, 1),
        ("configuration", "configuration", {}, 1),
    ],
}
DEAD_CODES = [
    ("retries_exhausted", "timeout", {"last_outcome": "uncertain"}, 2),
    ("retries_exhausted", "erp_unavailable", {"last_outcome": "transient"}, 3),
    ("retries_exhausted", "retries_exhausted", {"last_outcome": "error"}, 1),
]
MAPPING_FACTS = {
    "revenue_account": {
        "item": "price price_1PqUsage (product prod_usage_api_calls)",
        "keys": "price_1PqUsage, default",
    },
    "tax_code": {"item": "tax rate txr_1PqVat", "keys": "txr_1PqVat, default"},
    "payment_journal": {"item": "payment method sepa_debit", "keys": "sepa_debit, default"},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--postings", type=int, default=1_000_000, help="postings to load (rounded up to 10s)")
    parser.add_argument("--database-url", default=os.environ.get("BENCH_DATABASE_URL", DEFAULT_URL))
    parser.add_argument("--reload", action="store_true", help="load the data again even if it is there")
    parser.add_argument("--runs", type=int, default=20, help="timed runs per page (after warm-up)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per page first")
    parser.add_argument("--only", default="", help="comma-separated page names to measure (default: all)")
    parser.add_argument("--no-measure", action="store_true", help="load only")
    args = parser.parse_args(argv)
    args.postings = max(10, math.ceil(args.postings / 10) * 10)
    return args


# -- setup ----------------------------------------------------------------------------------------


def ensure_database(url: str) -> None:
    """CREATE DATABASE when it does not exist (connecting to the server's postgres database)."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin_url = urlunsplit((parts.scheme, parts.netloc, "/postgres", parts.query, ""))
    with psycopg.connect(admin_url, autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{name}"')
            print(f"created database {name}")


def configure_django(url: str) -> None:
    os.environ["DATABASE_URL"] = url
    os.environ["CELERY_BROKER_URL"] = "memory://"  # nothing leaves this process
    os.environ["DJANGO_SETTINGS_MODULE"] = "integration_hub.settings"
    os.environ.setdefault("HUB_VAR_DIR", str(OUT / "var"))
    os.environ.setdefault("LOG_LEVEL", "WARNING")
    os.environ["DEBUG"] = "0"  # as in production: no query log kept in memory
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def migrate() -> None:
    from django.core.management import call_command

    started = time.perf_counter()
    call_command("migrate", interactive=False, verbosity=0)
    print(f"migrate: {time.perf_counter() - started:.1f}s")


def ensure_users() -> Any:
    """The measured user (Finance operations, staff) and the people cases are assigned to."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    from apps.console.catalogue import ENGINEERS, FINANCE

    User = get_user_model()
    groups = {FINANCE: Group.objects.get(name=FINANCE), ENGINEERS: Group.objects.get(name=ENGINEERS)}
    people = [(f"finance.{i:02d}", FINANCE) for i in range(1, FINANCE_USERS + 1)]
    people += [(f"engineer.{i:02d}", ENGINEERS) for i in range(1, ENGINEER_USERS + 1)]
    for username, group in people:
        user, created = User.objects.get_or_create(
            username=username, defaults={"email": f"{username}@example.com", "is_staff": True}
        )
        if created:
            user.set_unusable_password()
            user.save()
        user.groups.add(groups[group])
    return User.objects.get(username=BENCH_USER)


# -- data -----------------------------------------------------------------------------------------


def loaded_postings() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM posting_posting")
        postings = cursor.fetchone()[0]
        cursor.execute("SELECT count(*) FROM console_exceptioncase")
        cases = cursor.fetchone()[0]
    return postings if cases else 0


def _code_rows() -> list[tuple[Any, ...]]:
    """One row per weighted slot: (op, slot, raw code, catalogue code, category, kind, owner group,
    template, params as JSON)."""
    from apps.console.catalogue import CATALOGUE

    rows: list[tuple[Any, ...]] = []
    for op, codes in [*PARKED_CODES.items(), ("*dead*", DEAD_CODES)]:
        slot = 0
        for raw, code, params, weight in codes:
            entry = CATALOGUE[code]
            facts = {**MAPPING_FACTS.get(entry.mapping_kind, {}), **params}
            for _ in range(weight):
                rows.append(
                    (
                        op,
                        slot,
                        raw,
                        code,
                        str(entry.category),
                        entry.kind,
                        entry.owner_group,
                        entry.template,
                        json.dumps(facts),
                    )
                )
                slot += 1
    return rows


def _sql_steps(n: int) -> list[tuple[str, str]]:
    """The load, as (label, SQL) steps run in one transaction. Only integers are formatted in."""
    customers, invoices = n // 10, n // 2
    recent = n - max(1, n * 3 // 1000)  # postings numbered above this are the newest 0.3%
    span = "interval '365 days'"
    t0 = "(now() - interval '365 days')"
    le_values = ", ".join(
        f"({i}, '{code}', '{name}', '{country}', '{cur}')" for i, code, name, country, cur in LEGAL_ENTITIES
    )
    conn_values = ", ".join(
        f'({i}, \'{name}\', \'tryton\', \'{{"url": "env:TRYTON_URL_{i}", "database": "env:TRYTON_DATABASE_{i}", '
        f'"username": "hub", "password": "env:TRYTON_PASSWORD_{i}", "timeout": 60}}\', true)'
        for i, name in CONNECTIONS
    )
    src_values = ", ".join(
        f"({i}, '{name}', 'stripe', '[\"env:STRIPE_SECRET_{i}\"]', true, {le})" for i, name, le in SOURCES
    )
    # h(n): a fixed pseudo-random number 0..9999 per posting number; h2(n) picks the error code.
    h = "(((({x})::bigint * 2654435761) % 4294967296) % 10000)"
    h2 = "(((({x})::bigint * 2246822519) % 4294967296) / 10000)"
    key = "encode(sha256(convert_to(concat_ws(E'\\x1f', {conn}, {op}, {src}, {sid}, '1'), 'UTF8')), 'hex')"
    conn_of = "CASE WHEN {le} = 1 THEN 1 ELSE 2 END"
    return [
        (
            "truncate",
            "TRUNCATE posting_postingattempt, console_exceptioncase, posting_posting, ledger_paymentapplication, "
            "ledger_payment, ledger_invoiceline, ledger_invoice, ledger_customer, routing_mapping, "
            "routing_routingrule, sources_billingsource, routing_erpconnection, ledger_legalentity "
            "RESTART IDENTITY CASCADE",
        ),
        (
            "legal entities",
            f"INSERT INTO ledger_legalentity (id, code, name, country, base_currency) VALUES {le_values}",
        ),
        ("connections", f"INSERT INTO routing_erpconnection (id, name, kind, settings, active) VALUES {conn_values}"),
        (
            "routing",
            "INSERT INTO routing_routingrule (priority, connection_id, legal_entity_id) "
            "VALUES (10, 1, 1), (20, 2, 2), (30, 2, 3)",
        ),
        (
            "sources",
            f"INSERT INTO sources_billingsource (id, name, kind, webhook_secrets, active, legal_entity_id) "
            f"VALUES {src_values}",
        ),
        (
            "mappings",
            "INSERT INTO routing_mapping (connection_id, kind, key, value) "
            "SELECT c, k, key, v FROM (VALUES (1), (2)) cs(c), (VALUES ('revenue_account', 'default', '4000'), "
            "('revenue_account', 'prod_usage_api_calls', '4100'), ('tax_code', 'default', 'VAT20'), "
            "('payment_journal', 'default', 'Card'), ('payment_journal', 'us_bank_account', 'Bank')) m(k, key, v)",
        ),
        (
            "customers",
            f"""
INSERT INTO ledger_customer (id, source, source_id, source_version, revision, correlation_id, created_at,
    updated_at, name, email, currency, tax_id, tax_id_type, payment_terms_days, bill_to, sold_to, authoritative,
    legal_entity_id)
SELECT c, s.name, 'cus_' || upper(substr(md5('c' || c), 1, 14)), extract(epoch FROM x.ts)::bigint, 1,
    md5('corr-c' || c), x.ts, x.ts,
    (ARRAY['Acme', 'Globex', 'Initech', 'Umbrella', 'Stark', 'Wayne', 'Wonka', 'Hooli', 'Vandelay', 'Soylent',
           'Tyrell', 'Cyberdyne'])[1 + c % 12]
      || ' ' || (ARRAY['Labs', 'Holdings', 'Systems', 'Group', 'Partners', 'Industries', 'Software',
                      'Logistics'])[1 + (c / 12) % 8] || ' ' || c,
    'billing@customer' || c || '.example.com', le.base_currency,
    CASE WHEN c % 4 = 0 THEN '' ELSE le.country || lpad((c * 7919 % 1000000000)::text, 9, '0') END,
    CASE WHEN c % 4 = 0 THEN '' WHEN le.id = 1 THEN 'us_ein' ELSE 'eu_vat' END, 30,
    jsonb_build_object('line1', (c % 900 + 1) || ' Market Street', 'city', 'City ' || (c % 97),
                       'postal_code', lpad((c % 99999)::text, 5, '0'), 'country', le.country),
    '{{}}'::jsonb, true, le.id
FROM generate_series(1, {customers}) c
CROSS JOIN LATERAL (SELECT (c - 1) % 3 + 1 AS le_id,
                           {t0} + ((c - 1) * 10 + 1)::float8 / {n} * {span} AS ts) x
JOIN ledger_legalentity le ON le.id = x.le_id
JOIN sources_billingsource s ON s.legal_entity_id = le.id
""",
        ),
        (
            "invoices",
            f"""
INSERT INTO ledger_invoice (id, source, source_id, source_version, revision, correlation_id, created_at,
    updated_at, number, status, currency, currency_exponent, subtotal_minor, tax_minor, total_minor,
    amount_paid_minor, invoice_date, due_date, period_start, period_end, customer_id, legal_entity_id)
SELECT i, cu.source, 'in_' || upper(substr(md5('i' || i), 1, 20)), extract(epoch FROM x.ts)::bigint, 1,
    md5('corr-i' || i), x.ts, x.ts,
    upper(substr(md5('c' || cu.id), 1, 8)) || '-' || lpad(((i - 1) % 5 + 1)::text, 4, '0'),
    CASE WHEN x.paid THEN 'paid' ELSE 'open' END, cu.currency, 2, x.sub, x.sub / 5, x.sub + x.sub / 5,
    CASE WHEN x.paid THEN x.sub + x.sub / 5 ELSE 0 END,
    x.ts::date, x.ts::date + 30, x.ts::date, x.ts::date + 30, cu.id, cu.legal_entity_id
FROM generate_series(1, {invoices}) i
CROSS JOIN LATERAL (SELECT (i - 1) % 5 < 4 AS paid, 1000 + (i::bigint * 7919) % 499000 AS sub,
                           {t0} + (((i - 1) / 5) * 10 + (i - 1) % 5 + 2)::float8 / {n} * {span} AS ts) x
JOIN ledger_customer cu ON cu.id = (i - 1) / 5 + 1
""",
        ),
        (
            "payments",
            f"""
INSERT INTO ledger_payment (id, source, source_id, source_version, revision, correlation_id, created_at,
    updated_at, currency, amount_minor, method, settled_at, customer_id)
SELECT x.p, inv.source, 'pi_' || upper(substr(md5('p' || x.p), 1, 20)), extract(epoch FROM x.ts)::bigint, 1,
    md5('corr-p' || x.p), x.ts, x.ts, inv.currency, inv.total_minor,
    CASE WHEN x.p % 7 = 0 THEN 'us_bank_account' WHEN x.p % 11 = 0 THEN 'sepa_debit' ELSE 'card' END,
    x.ts, inv.customer_id
FROM ledger_invoice inv
CROSS JOIN LATERAL (SELECT ((inv.id - 1) / 5) * 4 + (inv.id - 1) % 5 + 1 AS p) y
CROSS JOIN LATERAL (SELECT y.p, {t0} + (((y.p - 1) / 4) * 10 + (y.p - 1) % 4 + 7)::float8 / {n} * {span} AS ts) x
WHERE (inv.id - 1) % 5 < 4
""",
        ),
        (
            "payment applications",
            """
INSERT INTO ledger_paymentapplication (id, payment_id, invoice_source_id, invoice_id, amount_minor)
SELECT ((inv.id - 1) / 5) * 4 + (inv.id - 1) % 5 + 1, ((inv.id - 1) / 5) * 4 + (inv.id - 1) % 5 + 1,
    inv.source_id, inv.id, inv.total_minor
FROM ledger_invoice inv WHERE (inv.id - 1) % 5 < 4
""",
        ),
        (
            "documents (staging)",
            """
CREATE TEMP TABLE bench_doc ON COMMIT DROP AS
SELECT (c.id - 1) * 10 + 1 AS n, NULL::bigint AS parent_n, NULL::bigint AS grand_n, 'ensure_customer' AS op,
    c.source, c.source_id, c.id AS customer_id, NULL::bigint AS invoice_id, NULL::bigint AS pa_id,
    c.legal_entity_id AS le_id, '' AS parent_op, '' AS parent_source, '' AS parent_source_id,
    'customer' AS root_kind, c.source AS root_source, c.source_id AS root_source_id, NULL::bigint AS root_invoice_id,
    c.id AS root_customer_id, 'Customer ' || c.name AS document, c.name AS customer_name, '' AS amount,
    c.correlation_id
FROM ledger_customer c
UNION ALL
SELECT ((i.id - 1) / 5) * 10 + (i.id - 1) % 5 + 2, ((i.id - 1) / 5) * 10 + 1, NULL, 'post_invoice',
    i.source, i.source_id, NULL, i.id, NULL, i.legal_entity_id, 'ensure_customer', c.source, c.source_id,
    'invoice', i.source, i.source_id, i.id, c.id, 'Invoice ' || i.number, c.name,
    to_char(i.total_minor / 100.0, 'FM999999990.00') || ' ' || i.currency, i.correlation_id
FROM ledger_invoice i JOIN ledger_customer c ON c.id = i.customer_id
UNION ALL
SELECT ((pa.id - 1) / 4) * 10 + (pa.id - 1) % 4 + 7, ((pa.id - 1) / 4) * 10 + (pa.id - 1) % 4 + 2,
    ((pa.id - 1) / 4) * 10 + 1, 'apply_payment', p.source, p.source_id || ':' || pa.invoice_source_id, NULL, NULL,
    pa.id, i.legal_entity_id, 'post_invoice', i.source, i.source_id,
    'invoice', i.source, i.source_id, i.id, c.id, 'Invoice ' || i.number, c.name,
    to_char(pa.amount_minor / 100.0, 'FM999999990.00') || ' ' || p.currency, p.correlation_id
FROM ledger_paymentapplication pa JOIN ledger_payment p ON p.id = pa.payment_id
JOIN ledger_invoice i ON i.id = pa.invoice_id JOIN ledger_customer c ON c.id = i.customer_id
""",
        ),
        (
            "states (staging)",
            f"""
CREATE TEMP TABLE bench_stage ON COMMIT DROP AS
SELECT d.*, {conn_of.format(le="d.le_id")} AS connection_id, {h.format(x="d.n")} AS h,
    {t0} + d.n::float8 / {n} * {span} AS ts,
    CASE
      WHEN (d.parent_n IS NOT NULL AND {h.format(x="d.parent_n")} < CASE WHEN d.parent_op = 'ensure_customer'
                                                                    THEN 50 ELSE 200 END)
        OR (d.grand_n IS NOT NULL AND {h.format(x="d.grand_n")} < 50) THEN 'waiting'
      WHEN {h.format(x="d.n")} < CASE WHEN d.op = 'ensure_customer' THEN 37 ELSE 150 END THEN 'parked'
      WHEN {h.format(x="d.n")} < CASE WHEN d.op = 'ensure_customer' THEN 50 ELSE 200 END THEN 'dead'
      WHEN d.n > {recent} THEN (ARRAY['queued', 'in_flight', 'retry_scheduled'])[1 + d.n % 3]
      WHEN {h.format(x="d.n")} BETWEEN 200 AND 219 THEN 'skipped'
      ELSE 'posted'
    END AS state,
    {h.format(x="d.n")} BETWEEN 300 AND 1299 AS had_case,
    {h2.format(x="d.n")} AS pick
FROM bench_doc d
""",
        ),
        (
            "error codes (staging)",
            """
CREATE TEMP TABLE bench_error ON COMMIT DROP AS
SELECT s.n, bc.raw_code, bc.code, bc.category, bc.kind, bc.owner_group, bc.params,
    regexp_replace(
      replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(replace(bc.template,
        '{document}', s.document), '{customer}', s.customer_name), '{erp}', ec.name),
        '{amount}', s.amount), '{attempts}', CASE WHEN s.state = 'dead' THEN '8' ELSE '1' END),
        '{value}', coalesce(bc.params ->> 'value', '')),
        '{erp_message}', coalesce(bc.params ->> 'erp_message', '')),
        '{billing_total}', coalesce(bc.params ->> 'billing_total', '')),
        '{erp_total}', coalesce(bc.params ->> 'erp_total', '')),
        '{item}', coalesce(bc.params ->> 'item', '')), '{keys}', coalesce(bc.params ->> 'keys', '')),
      '\\{[a-z_]+\\}', '(unknown)', 'g') AS message,
    format(E'%s from %s on %s (posting #%s)\\nTraceback (most recent call last):\\n', bc.raw_code, ec.name, s.op, s.n)
      || repeat(E'  File "apps/connectors/tryton.py", line 412, in _send\\n    raise classify(response)\\n', 6)
      || format('ConnectorError: %s', bc.params::text) AS detail
FROM bench_stage s
JOIN routing_erpconnection ec ON ec.id = s.connection_id
JOIN bench_code_count cc ON cc.op = CASE WHEN s.state = 'dead' THEN '*dead*' ELSE s.op END
JOIN bench_code bc ON bc.op = cc.op AND bc.slot = s.pick % cc.k
WHERE s.state IN ('parked', 'dead') OR (s.had_case AND s.state = 'posted')
""",
        ),
        (
            "postings",
            f"""
INSERT INTO posting_posting (id, idempotency_key, connection_id, operation, source, source_id, revision,
    customer_id, invoice_id, payment_application_id, depends_on_key, state, attempt_count, attempt_budget_start,
    retry_at, enqueued_at, claimed_at, claim_token, verify_before_retry, posted_at, erp_id, erp_number,
    error_category, error_code, finance_message, technical_detail, error_params, correlation_id, created_at,
    updated_at)
SELECT s.n, {key.format(conn="ec.name", op="s.op", src="s.source", sid="s.source_id")}, s.connection_id, s.op,
    s.source, s.source_id, 1, s.customer_id, s.invoice_id, s.pa_id,
    CASE WHEN s.parent_op = '' THEN ''
         ELSE {key.format(conn="ec.name", op="s.parent_op", src="s.parent_source", sid="s.parent_source_id")} END,
    s.state,
    CASE s.state WHEN 'posted' THEN CASE WHEN s.had_case THEN 2 ELSE 1 END WHEN 'parked' THEN 1 WHEN 'dead' THEN 8
                 WHEN 'skipped' THEN 1 WHEN 'in_flight' THEN 1 WHEN 'retry_scheduled' THEN 2 ELSE 0 END,
    CASE WHEN s.state = 'posted' AND s.had_case THEN 1 ELSE 0 END,
    CASE WHEN s.state = 'retry_scheduled' THEN now() + interval '4 minutes' END,
    s.ts, CASE WHEN s.state NOT IN ('waiting', 'queued') THEN s.ts + interval '1 second' END,
    CASE WHEN s.state = 'in_flight' THEN md5('claim' || s.n) ELSE '' END, s.state = 'dead',
    CASE WHEN s.state = 'posted' THEN s.ts + interval '2 seconds' + CASE WHEN s.had_case THEN interval '30 hours'
         ELSE interval '0' END END,
    CASE WHEN s.state = 'posted' THEN (CASE s.op WHEN 'ensure_customer' THEN 'party.party,'
         WHEN 'post_invoice' THEN 'account.invoice,' ELSE 'account.move,' END) || s.n ELSE '' END,
    CASE WHEN s.state = 'posted' AND s.op = 'post_invoice' THEN 'INV/' || s.n ELSE '' END,
    CASE WHEN s.state IN ('parked', 'dead') THEN e.category WHEN s.state = 'retry_scheduled' THEN 'technical'
         ELSE '' END,
    CASE WHEN s.state IN ('parked', 'dead') THEN e.raw_code WHEN s.state = 'retry_scheduled' THEN 'transient'
         ELSE '' END,
    CASE WHEN s.state IN ('parked', 'dead') THEN e.message ELSE '' END,
    CASE WHEN s.state IN ('parked', 'dead') THEN e.detail ELSE '' END,
    CASE WHEN s.state IN ('parked', 'dead') THEN e.params ELSE '{{}}'::jsonb END,
    s.correlation_id, s.ts,
    s.ts + CASE WHEN s.state = 'posted' AND s.had_case THEN interval '30 hours'
                WHEN s.state = 'dead' THEN interval '3 hours' ELSE interval '2 seconds' END
FROM bench_stage s
JOIN routing_erpconnection ec ON ec.id = s.connection_id
LEFT JOIN bench_error e ON e.n = s.n
ORDER BY s.n
""",
        ),
        (
            "attempts",
            """
INSERT INTO posting_postingattempt (posting_id, number, started_at, finished_at, outcome, worker, erp_id,
    error_code, detail, correlation_id)
SELECT p.id, k, p.created_at + (k - 1) * interval '10 minutes',
    CASE WHEN p.state = 'in_flight' AND k = p.attempt_count THEN NULL
         ELSE p.created_at + (k - 1) * interval '10 minutes' + interval '800 milliseconds' END,
    CASE
      WHEN k = p.attempt_count THEN CASE p.state
        WHEN 'posted' THEN 'posted' WHEN 'skipped' THEN 'business' WHEN 'in_flight' THEN 'started'
        WHEN 'retry_scheduled' THEN 'transient'
        WHEN 'parked' THEN CASE WHEN p.error_category = 'business' THEN 'business' ELSE 'configuration' END
        ELSE CASE WHEN p.error_params ->> 'last_outcome' = 'uncertain' THEN 'uncertain' ELSE 'transient' END END
      WHEN p.state = 'posted' THEN 'business'
      ELSE 'transient'
    END,
    'celery@worker-' || (p.id % 4) || ':' || (p.id % 9000 + 1000),
    CASE WHEN p.state = 'posted' AND k = p.attempt_count THEN p.erp_id ELSE '' END,
    CASE WHEN k = p.attempt_count THEN p.error_code WHEN p.state = 'posted' THEN 'missing_revenue_account_mapping'
         ELSE 'transient' END,
    CASE WHEN k = p.attempt_count THEN left(p.technical_detail, 200) ELSE 'connection refused' END,
    p.correlation_id
FROM posting_posting p CROSS JOIN LATERAL generate_series(1, p.attempt_count) k
ORDER BY p.id, k
""",
        ),
        (
            "open cases",
            """
INSERT INTO console_exceptioncase (connection_id, root_kind, source, source_id, invoice_id, customer_id,
    legal_entity_id, status, category, kind, code, message, technical_detail, owner_group, owner_id,
    failing_posting_id, correlation_id, opened_at, last_failure_at, resolved_at, resolved_by, resolution)
SELECT s.connection_id, s.root_kind, s.root_source, s.root_source_id, s.root_invoice_id, s.root_customer_id,
    s.le_id, 'open', e.category, e.kind, e.code, e.message, e.detail, e.owner_group,
    CASE WHEN s.h % 10 < 3 THEN (
      SELECT u.id FROM auth_user u WHERE u.username = CASE WHEN e.category = 'business'
        THEN 'finance.' || lpad((1 + s.n % 10)::text, 2, '0') ELSE 'engineer.' || lpad((1 + s.n % 5)::text, 2, '0') END)
    END,
    s.n, s.correlation_id, s.ts + interval '1 second',
    s.ts + CASE WHEN s.state = 'dead' THEN interval '3 hours' ELSE interval '1 second' END, NULL, '', ''
FROM bench_stage s JOIN bench_error e ON e.n = s.n
WHERE s.state IN ('parked', 'dead')
ORDER BY s.ts
""",
        ),
        (
            "resolved cases",
            """
INSERT INTO console_exceptioncase (connection_id, root_kind, source, source_id, invoice_id, customer_id,
    legal_entity_id, status, category, kind, code, message, technical_detail, owner_group, owner_id,
    failing_posting_id, correlation_id, opened_at, last_failure_at, resolved_at, resolved_by, resolution)
SELECT s.connection_id, s.root_kind, s.root_source, s.root_source_id, s.root_invoice_id, s.root_customer_id,
    s.le_id, 'resolved', e.category, e.kind, e.code, e.message, e.detail, e.owner_group, NULL,
    s.n, s.correlation_id, s.ts + interval '1 second', s.ts + interval '1 second', s.ts + interval '30 hours',
    CASE WHEN e.category = 'business' THEN 'finance.' || lpad((1 + s.n % 10)::text, 2, '0')
         ELSE 'engineer.' || lpad((1 + s.n % 5)::text, 2, '0') END,
    CASE s.op WHEN 'ensure_customer' THEN 'Ensure customer posted' WHEN 'post_invoice' THEN 'Post invoice posted'
         ELSE 'Apply payment posted' END || ' (ERP ' || s.n || ')'
FROM bench_stage s JOIN bench_error e ON e.n = s.n
WHERE s.had_case AND s.state = 'posted'
ORDER BY s.ts
""",
        ),
    ]


RESET_SEQUENCES = [
    "ledger_legalentity",
    "routing_erpconnection",
    "routing_routingrule",
    "sources_billingsource",
    "routing_mapping",
    "ledger_customer",
    "ledger_invoice",
    "ledger_payment",
    "ledger_paymentapplication",
    "posting_posting",
    "posting_postingattempt",
    "console_exceptioncase",
]


def load(n: int) -> None:
    from django.db import connection, transaction

    started = time.perf_counter()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL synchronous_commit TO off")
        cursor.execute("SET LOCAL work_mem TO '256MB'")
        cursor.execute("SET LOCAL maintenance_work_mem TO '512MB'")
        cursor.execute(
            "CREATE TEMP TABLE bench_code (op text, slot int, raw_code text, code text, category text, "
            "kind text, owner_group text, template text, params jsonb) ON COMMIT DROP"
        )
        cursor.executemany("INSERT INTO bench_code VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", _code_rows())
        cursor.execute(
            "CREATE TEMP TABLE bench_code_count ON COMMIT DROP AS "
            "SELECT op, count(*)::int AS k FROM bench_code GROUP BY op"
        )
        for label, sql in _sql_steps(n):
            step = time.perf_counter()
            cursor.execute(sql)
            print(
                f"  {label}: {f'{cursor.rowcount:,} rows, ' if cursor.rowcount >= 0 else ''}"
                f"{time.perf_counter() - step:.1f}s",
                flush=True,
            )
        for table in RESET_SEQUENCES:
            cursor.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"(SELECT coalesce(max(id), 0) + 1 FROM {table}), false)"
            )
    step = time.perf_counter()
    with connection.cursor() as cursor:
        # What autovacuum does to a table after a bulk insert: statistics and the visibility map.
        cursor.execute("VACUUM (ANALYZE)")
    print(f"  vacuum (analyze): {time.perf_counter() - step:.1f}s")
    print(f"load: {time.perf_counter() - started:.1f}s")


def data_shape() -> dict[str, Any]:
    from django.db import connection

    shape: dict[str, Any] = {}
    with connection.cursor() as cursor:
        for table in (
            "ledger_customer",
            "ledger_invoice",
            "ledger_payment",
            "posting_posting",
            "posting_postingattempt",
            "console_exceptioncase",
        ):
            cursor.execute(f"SELECT count(*), pg_size_pretty(pg_total_relation_size('{table}')) FROM {table}")
            shape[table] = dict(zip(("rows", "size"), cursor.fetchone(), strict=True))
        cursor.execute("SELECT state, count(*) FROM posting_posting GROUP BY state ORDER BY 2 DESC")
        shape["postings by state"] = dict(cursor.fetchall())
        cursor.execute("SELECT status, category, count(*) FROM console_exceptioncase GROUP BY 1, 2 ORDER BY 1, 2")
        shape["cases by status and category"] = {f"{s} {c}": k for s, c, k in cursor.fetchall()}
        cursor.execute(
            "SELECT kind, count(*) FROM console_exceptioncase WHERE status = 'open' GROUP BY 1 ORDER BY 2 DESC"
        )
        shape["open cases by kind"] = dict(cursor.fetchall())
        cursor.execute(
            "SELECT count(*) FILTER (WHERE owner_id IS NULL), count(*) FILTER (WHERE opened_at < now() - "
            "interval '3 days') FROM console_exceptioncase WHERE status = 'open'"
        )
        unassigned, older = cursor.fetchone()
        shape["open cases unassigned"], shape["open cases older than 3 days"] = unassigned, older
        cursor.execute("SELECT pg_size_pretty(pg_database_size(current_database()))")
        shape["database size"] = cursor.fetchone()[0]
        for setting in (
            "server_version",
            "shared_buffers",
            "work_mem",
            "effective_cache_size",
            "random_page_cost",
            "max_parallel_workers_per_gather",
        ):
            cursor.execute(f"SHOW {setting}")
            shape.setdefault("postgresql", {})[setting] = cursor.fetchone()[0]
    return shape


# -- measuring ------------------------------------------------------------------------------------


def pages() -> list[tuple[str, str, bool]]:
    """(name, url, part of the goal). Ids and values are read from the loaded data."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT id FROM routing_erpconnection WHERE name = 'tryton-eu'")
        connection_id = cursor.fetchone()[0]
        cursor.execute(
            "SELECT kind FROM console_exceptioncase WHERE status = 'open' GROUP BY kind "
            "ORDER BY count(*) DESC, kind LIMIT 1"
        )
        kind = cursor.fetchone()[0]
        cursor.execute(
            "SELECT i.number, i.source_id FROM console_exceptioncase c JOIN ledger_invoice i ON i.id = c.invoice_id "
            "WHERE c.status = 'open' ORDER BY c.id LIMIT 1 OFFSET 100"
        )
        number, stripe_id = cursor.fetchone()
        # The richest case page: a parked invoice with a payment waiting on it.
        cursor.execute(
            "SELECT c.id FROM console_exceptioncase c JOIN posting_posting p ON p.id = c.failing_posting_id "
            "WHERE c.status = 'open' AND p.operation = 'post_invoice' AND EXISTS (SELECT 1 FROM "
            "posting_posting w WHERE w.depends_on_key = p.idempotency_key) ORDER BY c.id LIMIT 1"
        )
        case_id = cursor.fetchone()[0]
        cursor.execute("SELECT id FROM posting_posting WHERE state = 'dead' ORDER BY id LIMIT 1")
        dead_id = cursor.fetchone()[0]
    cases = "/admin/console/exceptioncase/"
    exceptions = "/admin/console/postingexception/"
    return [
        ("cases (open, default)", cases, True),
        ("cases ?category__exact=business", cases + "?" + urlencode({"category__exact": "business"}), True),
        (f"cases ?kind={kind}", cases + "?" + urlencode({"kind": kind}), True),
        (f"cases ?connection__id__exact={connection_id}", f"{cases}?connection__id__exact={connection_id}", True),
        ("cases ?age=gt3", cases + "?age=gt3", True),
        ("cases ?owner=none", cases + "?owner=none", True),
        (f"cases ?q={number} (search)", cases + "?" + urlencode({"q": number}), True),
        ("cases ?status=resolved&category__exact=business", cases + "?status=resolved&category__exact=business", True),
        ("cases ?status=all&owner=me", cases + "?status=all&owner=me", True),
        ("exception postings (default)", exceptions, True),
        ("exception postings ?error_category__exact=business", exceptions + "?error_category__exact=business", True),
        (f"exception postings ?q={stripe_id} (search)", exceptions + "?" + urlencode({"q": stripe_id}), True),
        ("dead letters (default)", "/admin/console/deadletter/", True),
        ("dead letters ?error_code=retries_exhausted", "/admin/console/deadletter/?error_code=retries_exhausted", True),
        (f"case change page #{case_id}", f"{cases}{case_id}/change/", False),
        (f"exception posting change page #{dead_id}", f"{exceptions}{dead_id}/change/", False),
        ("all postings (default)", "/admin/posting/posting/", False),
        ("all postings ?state__exact=parked", "/admin/posting/posting/?state__exact=parked", False),
    ]


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def measure(client: Any, url: str, runs: int, warmup: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def get() -> Any:
        response = client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} answered {response.status_code}")
        return response

    for _ in range(warmup):
        get()
    with CaptureQueriesContext(connection) as captured:
        response = get()
    queries = sorted(((float(q["time"]), q["sql"]) for q in captured.captured_queries), reverse=True)
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        get()
        timings.append((time.perf_counter() - started) * 1000)
    changelist = (getattr(response, "context_data", None) or {}).get("cl")
    return {
        "url": url,
        "median_ms": statistics.median(timings),
        "p95_ms": _percentile(timings, 0.95),
        "max_ms": max(timings),
        "queries": len(queries),
        "sql_ms": sum(t for t, _ in queries) * 1000,
        "slowest_query_ms": queries[0][0] * 1000 if queries else 0.0,
        "slowest_query": queries[0][1] if queries else "",
        "rows": getattr(changelist, "result_count", None),
        "bytes": len(response.content),
    }


def explain(sql: str) -> str:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (ANALYZE, BUFFERS) " + sql)
        return "\n".join(row[0] for row in cursor.fetchall())


def run(args: argparse.Namespace) -> int:
    ensure_database(args.database_url)
    configure_django(args.database_url)
    migrate()
    user = ensure_users()
    have = loaded_postings()
    if args.reload or have != args.postings:
        print(f"loading {args.postings:,} postings (database holds {have:,})", flush=True)
        load(args.postings)
    else:
        print(f"database already holds {have:,} postings: not reloading (--reload forces it)")
    shape = data_shape()
    print(json.dumps(shape, indent=2))
    if args.no_measure:
        return 0

    from django.test import Client

    client = Client()
    client.force_login(user)
    wanted = [name.strip() for name in args.only.split(",") if name.strip()]
    results = []
    for name, url, goal in pages():
        if wanted and not any(w in name for w in wanted):
            continue
        result = {"page": name, "goal": goal, **measure(client, url, args.runs, args.warmup)}
        result["explain"] = explain(result["slowest_query"]) if result["slowest_query"] else ""
        results.append(result)
        print(
            f"{name}: median {result['median_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms, "
            f"{result['queries']} queries ({result['sql_ms']:.0f} ms SQL, slowest {result['slowest_query_ms']:.0f} ms)",
            flush=True,
        )

    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report = {"postings": args.postings, "runs": args.runs, "warmup": args.warmup, "shape": shape, "results": results}
    (OUT / f"results-{args.postings}-{stamp}.json").write_text(json.dumps(report, indent=2, default=str))
    with open(OUT / f"explain-{args.postings}-{stamp}.txt", "w") as out:
        for result in results:
            out.write(f"== {result['page']}  ({result['slowest_query_ms']:.1f} ms)\n{result['slowest_query']}\n\n")
            out.write(result["explain"] + "\n\n")

    print(f"\n{args.postings:,} postings; {args.warmup} warm-up + {args.runs} timed runs per page\n")
    print("| page | median ms | p95 ms | queries | SQL ms | rows | < 1 s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in results:
        verdict = ("yes" if r["p95_ms"] < 1000 else "**NO**") + ("" if r["goal"] else " (not in the goal)")
        print(
            f"| {r['page']} | {r['median_ms']:.0f} | {r['p95_ms']:.0f} | {r['queries']} | {r['sql_ms']:.0f} | "
            f"{r['rows'] if r['rows'] is not None else ''} | {verdict} |"
        )
    if results:
        slowest = max(results, key=lambda r: r["slowest_query_ms"])
        print(
            f"\nslowest query ({slowest['page']}, {slowest['slowest_query_ms']:.1f} ms):\n{slowest['slowest_query']}\n"
        )
        print(slowest["explain"])
    print(f"\nwritten: {OUT}/results-{args.postings}-{stamp}.json and explain-{args.postings}-{stamp}.txt")
    return 0 if all(r["p95_ms"] < 1000 for r in results if r["goal"]) else 1


if __name__ == "__main__":
    sys.exit(run(parse_args()))
