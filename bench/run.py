"""The hub's benchmark, held against this machine's own ceilings measured in the same run.

    bin/bench                                  # every part at full size (about an hour on 2 cores)
    bin/bench --quick                          # every part small: checks the harness in a few minutes
    bin/bench --only ingest,e2e --e2e-events 3000

Parts (``--only``):

- ingest: signed Stripe webhooks per second served by gunicorn, p50/p99 latency, from wrk (a process
  of its own), next to a bare Django view answering 200 and a view that only inserts the same inbox
  row, on the same gunicorn settings, in interleaved rounds.
- e2e: events per second from webhook to POSTED against the zero-latency ERP simulator
  (tests/erp_simulator.py in a process of its own), with event-to-posted p50/p99, next to Celery
  no-op tasks on the same workers and reliability settings.
- tryton: the same against the real Tryton, next to Tryton's own rate for the same connector calls
  made directly, with the same concurrency.
- burst: N invoices at once to an ERP whose request budget is a fixed rate: time to drain against
  the ideal (ERP requests needed ÷ rate), the most requests the ERP saw in any one-second window,
  and the resident size of the web and Celery processes after it.

Writes bench/results/bench-<stamp>.json (raw figures), PNG plots, and bench/BENCHMARKS.md
(``--report``: only render the report again from a results file). Uses its own PostgreSQL databases
(hub_bench_run, hub_bench_template, hub_bench_tryton_*) and its own Redis; logs go to bench/out/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import statistics
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import stack  # noqa: E402

RUN_DB = "hub_bench_run"
TEMPLATE_DB = "hub_bench_template"
SOURCE = "stripe-us"
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres"}


def log(message: str) -> None:
    print(f"[{datetime.now(UTC):%H:%M:%S}] {message}", flush=True)


def percentile(values: list[float], p: float) -> float:
    """Nearest rank."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))]


# --- databases ----------------------------------------------------------------------------------


def admin_sql(*statements: str) -> None:
    import psycopg2

    connection = psycopg2.connect(dbname="postgres", **PG)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            for statement in statements:
                cursor.execute(statement)
    finally:
        connection.close()


def fresh_database() -> None:
    """hub_bench_run again as the template left it: migrated, configured, empty."""
    from django.db import connections

    connections.close_all()
    admin_sql(
        f'DROP DATABASE IF EXISTS "{RUN_DB}" WITH (FORCE)', f'CREATE DATABASE "{RUN_DB}" TEMPLATE "{TEMPLATE_DB}"'
    )


def build_template() -> None:
    from django.core.management import call_command
    from django.db import connections

    admin_sql(f'DROP DATABASE IF EXISTS "{RUN_DB}" WITH (FORCE)', f'CREATE DATABASE "{RUN_DB}"')
    call_command("migrate", verbosity=0)
    from apps.console import hub_config

    hub_config.apply(hub_config.load(ROOT / "config" / "hub.example.yaml"))
    connections.close_all()
    admin_sql(
        f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)', f'CREATE DATABASE "{TEMPLATE_DB}" TEMPLATE "{RUN_DB}"'
    )


def set_budget(**values: Any) -> None:
    from apps.flow import services as flow
    from apps.flow.models import ConnectionFlow
    from apps.routing.models import ERPConnection

    connection = ERPConnection.objects.get(name="tryton-local")
    ConnectionFlow.objects.filter(pk=flow.flow_for(connection).pk).update(**values)


# --- events -------------------------------------------------------------------------------------


def invoice_events(count: int, customers: int, *, prefix: str) -> list[str]:
    """``count`` invoice.finalized events (one invoice each, two lines) spread over ``customers``."""
    from apps.sources import stripe_samples as se

    customer_ids = [f"cus_{prefix}{n:06d}" for n in range(customers)]
    bodies = []
    for n in range(count):
        obj = se.invoice(
            customer_ids[n % customers],
            [
                se.line(4900, description="Pro plan (monthly)"),
                se.line(1250, quantity=5, description="API calls", product="prod_usage_api_calls", price="price_api"),
            ],
            invoice_id=f"in_{prefix}{n:07d}",
            number=f"B{prefix.upper()}-{n:07d}",
            customer_name=f"Customer {n % customers:06d}",
        )
        bodies.append(json.dumps(se.event("invoice.finalized", obj, event_id=f"evt_{prefix}{n:07d}")))
    return bodies


def write_signed(path: Path, bodies: list[str]) -> Path:
    """One "<Stripe-Signature>\\t<body>" line per event, signed now (wrk cannot sign)."""
    from apps.sources import stripe_samples as se

    with path.open("w", encoding="utf-8") as handle:
        for body in bodies:
            handle.write(f"{se.sign(body.encode(), stack.SECRET)}\t{body}\n")
    return path


def write_bodies(path: Path, bodies: list[str]) -> Path:
    path.write_text("".join(body + "\n" for body in bodies), encoding="utf-8")
    return path


def clone_invoices(count: int) -> list[int]:
    """``count`` copies of the seed invoices ("in_bs..."), with their lines and a queued post_invoice
    posting each (the real idempotency key formula), as normalization and the planner would leave
    them; returns the posting ids in order. One SQL statement per table: loading 100,000 through
    the webhook would measure normalization, not the drain to a rate-limited ERP."""
    from django.db import connection, transaction

    def columns(table: str) -> list[str]:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_name = %s AND column_name <> 'id' "
                "ORDER BY ordinal_position",
                [table],
            )
            return [row[0] for row in cursor.fetchall()]

    def select(table: str, alias: str, overrides: dict[str, str]) -> tuple[str, str]:
        names = columns(table)
        return ", ".join(f'"{n}"' for n in names), ", ".join(overrides.get(n, f'{alias}."{n}"') for n in names)

    new_id = "'in_b' || lpad(g::text, 7, '0')"
    invoice_cols, invoice_exprs = select(
        "ledger_invoice",
        "i",
        {
            "source_id": new_id,
            "number": "'BURST-' || lpad(g::text, 7, '0')",
            "correlation_id": "'evt_b' || lpad(g::text, 7, '0')",
            "created_at": "now()",
            "updated_at": "now()",
        },
    )
    line_cols, line_exprs = select(
        "ledger_invoiceline", "l", {"invoice_id": "b.new_invoice", "source_line_id": "l.source_line_id || '-' || b.g"}
    )
    key = (
        "encode(sha256(convert_to(concat_ws(chr(31), c.name, p.operation, p.source, b.source_id, p.revision::text),"
        " 'UTF8')), 'hex')"
    )
    posting_cols, posting_exprs = select(
        "posting_posting",
        "p",
        {
            "idempotency_key": key,
            "source_id": "b.source_id",
            "invoice_id": "b.new_invoice",
            "correlation_id": "'evt_b' || lpad(b.g::text, 7, '0')",
            "state": "'queued'",
            "attempt_count": "0",
            "attempt_budget_start": "0",
            "retry_at": "NULL",
            "enqueued_at": "NULL",
            "claimed_at": "NULL",
            "claim_token": "''",
            "slot_lease": "''",
            "verify_before_retry": "false",
            "posted_at": "NULL",
            "erp_id": "''",
            "erp_number": "''",
            "created_at": "now() + b.g * interval '1 microsecond'",
            "updated_at": "now()",
        },
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            "CREATE TEMP TABLE burst_seed ON COMMIT DROP AS SELECT row_number() OVER (ORDER BY i.id) - 1 AS k, "
            "i.id AS invoice_id, p.id AS posting_id FROM ledger_invoice i JOIN posting_posting p "
            "ON p.invoice_id = i.id AND p.operation = 'post_invoice' WHERE i.source_id LIKE 'in_bs%%'"
        )
        cursor.execute("SELECT count(*) FROM burst_seed")
        seeds = cursor.fetchone()[0]
        cursor.execute(
            "CREATE TEMP TABLE burst_map (g int, source_id text, seed_invoice bigint, seed_posting bigint, "
            "new_invoice bigint) ON COMMIT DROP"
        )
        cursor.execute(
            f"WITH made AS (INSERT INTO ledger_invoice ({invoice_cols}) SELECT {invoice_exprs} "
            f"FROM generate_series(0, %s - 1) g JOIN burst_seed s ON s.k = g %% %s JOIN ledger_invoice i "
            f"ON i.id = s.invoice_id ORDER BY g RETURNING id, source_id) "
            f"INSERT INTO burst_map SELECT substr(m.source_id, 5)::int, m.source_id, s.invoice_id, s.posting_id, m.id "
            f"FROM made m JOIN burst_seed s ON s.k = substr(m.source_id, 5)::int %% %s",
            [count, seeds, seeds],
        )
        cursor.execute(
            f"INSERT INTO ledger_invoiceline ({line_cols}) SELECT {line_exprs} FROM burst_map b "
            f"JOIN ledger_invoiceline l ON l.invoice_id = b.seed_invoice"
        )
        cursor.execute(
            f"INSERT INTO posting_posting ({posting_cols}) SELECT {posting_exprs} FROM burst_map b "
            f"JOIN posting_posting p ON p.id = b.seed_posting JOIN routing_erpconnection c ON c.id = p.connection_id "
            f"ORDER BY b.g"
        )
        cursor.execute(
            "SELECT id FROM posting_posting WHERE operation = 'post_invoice' AND source_id LIKE 'in_b0%%' ORDER BY id"
        )
        ids = [row[0] for row in cursor.fetchall()]
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE ledger_invoice")
        cursor.execute("VACUUM ANALYZE ledger_invoiceline")
        cursor.execute("VACUUM ANALYZE posting_posting")
    return ids


def send_all(posting_ids: list[int]) -> None:
    """What the planner does on commit for each posting (apps/posting/dispatch.py), at once for the
    whole burst: one message each, then enqueued_at for all in one statement."""
    from celery import current_app
    from django.db import connection

    from apps.posting.dispatch import EXECUTE_TASK

    with current_app.producer_or_acquire() as producer:
        for posting_id in posting_ids:
            current_app.send_task(EXECUTE_TASK, args=[posting_id], producer=producer)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE posting_posting SET enqueued_at = now() WHERE id = ANY(%s)", [posting_ids])


# --- the run ------------------------------------------------------------------------------------


class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path, redis: stack.Redis) -> None:
        self.args = args
        self.workdir = workdir
        self.redis = redis
        self.prom_dir = workdir / "prometheus"

    def env(self, **extra: str) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            DJANGO_SETTINGS_MODULE="integration_hub.settings_bench",
            DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{RUN_DB}",
            CELERY_BROKER_URL=self.redis.url,
            HUB_QUEUE=stack.QUEUE,
            HUB_FLOW_NAMESPACE=stack.QUEUE,
            HUB_VAR_DIR=str(self.workdir / "var"),
            STRIPE_WEBHOOK_SECRET=stack.SECRET,
            SECRET_KEY="bench-secret-key",
            DEBUG="0",
            PYTHONUNBUFFERED="1",
            TRYTON_URL="http://127.0.0.1:9",
            TRYTON_DATABASE="sim",
            TRYTON_PASSWORD="sim-admin",
        )
        env.update(extra)
        # Multi-process metrics as deployed (apps/observability/metrics.py): a fresh directory per hub.
        self.prom_dir.mkdir(parents=True, exist_ok=True)
        for stale in self.prom_dir.glob("*.db"):
            stale.unlink()
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.prom_dir)
        return env

    def hub(self, env: dict[str, str], name: str) -> stack.Hub:
        workdir = self.workdir / name
        workdir.mkdir(parents=True, exist_ok=True)
        return stack.Hub(workdir, env, web_workers=self.args.web_workers, web_threads=self.args.web_threads)

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.redis.url).flushall()

    # --- ingest ---------------------------------------------------------------------------------

    def ingest(self) -> dict[str, Any]:
        from django.db import connection

        args = self.args
        fresh_database()
        self.flush_redis()
        hub = self.hub(self.env(), "ingest")
        targets = {
            "bare 200 view": hub.url("/bench/ok/"),
            "insert-only view": hub.url(f"/bench/insert/{SOURCE}/"),
            "hub webhook": hub.url(f"/webhooks/{SOURCE}/"),
        }
        capacity = int(args.ingest_seconds * args.ingest_max_rate)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        checks: list[dict[str, Any]] = []

        def reset() -> None:
            with connection.cursor() as cursor:
                cursor.execute("TRUNCATE ingest_inboxevent")
            self.flush_redis()

        try:
            # Warm-up: imports, database connections and the first requests of every gunicorn thread.
            for url in targets.values():
                events = write_signed(self.workdir / "ingest-events.txt", invoice_events(3000, 300, prefix="w"))
                stack.wrk(
                    url, events, seconds=3, threads=args.wrk_threads, connections=args.wrk_connections, cycle=True
                )
                reset()
            for round_number in range(args.ingest_rounds):
                for name, url in targets.items():
                    prefix = f"r{round_number}{name[0]}"
                    events = write_signed(
                        self.workdir / "ingest-events.txt",
                        invoice_events(capacity, max(1, capacity // 10), prefix=prefix),
                    )
                    load = stack.load_average()
                    result = stack.wrk(
                        url,
                        events,
                        seconds=args.ingest_seconds,
                        threads=args.wrk_threads,
                        connections=args.wrk_connections,
                        cycle=name == "bare 200 view",  # it stores nothing: repeats cost it nothing
                    )
                    if result["threads_exhausted"]:
                        raise RuntimeError(f"wrk ran out of events for {name}: raise --ingest-max-rate")
                    with connection.cursor() as cursor:
                        cursor.execute("SELECT count(*) FROM ingest_inboxevent")
                        stored = cursor.fetchone()[0]
                    result.update(
                        round=round_number + 1,
                        rate=result["requests"] / (result["duration_us"] / 1e6),
                        load_average=load,
                        rows_stored=stored,
                    )
                    runs[name].append(result)
                    log(
                        f"ingest {name} round {round_number + 1}: {result['rate']:.0f} req/s, "
                        f"p50 {result['latency_us']['p50'] / 1000:.1f} ms, "
                        f"p99 {result['latency_us']['p99'] / 1000:.1f} ms, "
                        f"non-2xx {result['errors']['status']}, rows {stored}"
                    )
                    if name != "bare 200 view":
                        # every answered webhook must be a stored row, or the rate is not the rate of storing
                        checks.append({"target": name, "answered": result["requests"], "rows": stored})
                    reset()
        finally:
            memory = hub.memory()
            hub.stop()
        summary = {}
        for name, results in runs.items():
            rates = [r["rate"] for r in results]
            median_run = sorted(results, key=lambda r: r["rate"])[len(results) // 2]
            summary[name] = {
                "rate_median": round(statistics.median(rates), 1),
                "rates": [round(r, 1) for r in rates],
                "p50_ms": round(median_run["latency_us"]["p50"] / 1000, 2),
                "p99_ms": round(median_run["latency_us"]["p99"] / 1000, 2),
                "non_2xx": sum(r["errors"]["status"] for r in results),
                "socket_errors": sum(r["errors"][k] for r in results for k in ("connect", "read", "write", "timeout")),
            }
        hub_rate = summary["hub webhook"]["rate_median"]
        return {
            "settings": {
                "seconds_per_run": args.ingest_seconds,
                "rounds": args.ingest_rounds,
                "wrk_threads": args.wrk_threads,
                "wrk_connections": args.wrk_connections,
                "gunicorn": f"{args.web_workers} workers × {args.web_threads} threads (gthread)",
            },
            "summary": summary,
            "ratio_to_bare": round(hub_rate / summary["bare 200 view"]["rate_median"], 3),
            "ratio_to_insert": round(hub_rate / summary["insert-only view"]["rate_median"], 3),
            "runs": runs,
            "row_checks": checks,
            "memory_after": memory,
        }

    # --- end to end -----------------------------------------------------------------------------

    def worker_tasks(self, hub: stack.Hub) -> Counter[str]:
        """Tasks the workers ran so far, by name, from their logs (Celery's own "succeeded" lines)."""
        counts: Counter[str] = Counter()
        for proc in hub.workers:
            text = proc.log_path.read_text(errors="replace")
            # Celery logs "Task <name>[<id>] received" and "... succeeded in <s>s": count each run once.
            for name in re.findall(r"Task ([\w.]+)\[[^\]]*\] succeeded in", text):
                counts[name] += 1
        return counts

    def deliver(self, hub: stack.Hub, bodies: list[str], name: str, *, rate: float = 0.0) -> dict[str, Any]:
        events = write_bodies(self.workdir / f"{name}-events.txt", bodies)
        sender = stack.send_events(
            hub.url(f"/webhooks/{SOURCE}/"), events, threads=self.args.sender_threads, rate=rate, env=self.env()
        )
        out, _ = sender.communicate()
        result = json.loads(out.strip().splitlines()[-1])
        if result["not_2xx"]:
            raise RuntimeError(f"{result['not_2xx']} webhooks were not answered 2xx: {result}")
        return result

    def wait_posted(
        self, prefix: str, count: int, timeout: float, progress: list[dict[str, Any]] | None = None
    ) -> None:
        """Until the invoice postings of the ``count`` events named ``<prefix>...`` are all POSTED."""
        from django.db import connection

        started = time.monotonic()
        last_line = 0.0
        while True:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT state, count(*) FROM posting_posting WHERE operation = 'post_invoice' "
                    "AND source_id LIKE %s GROUP BY state",
                    [f"in_{prefix}%"],
                )
                states = dict(cursor.fetchall())
                cursor.execute(
                    "SELECT status, count(*) FROM ingest_inboxevent WHERE event_id LIKE %s GROUP BY status",
                    [f"evt_{prefix}%"],
                )
                inbox = dict(cursor.fetchall())
            posted = states.get("posted", 0)
            now = time.monotonic()
            if progress is not None and now - last_line >= self.args.progress_every:
                last_line = now
                progress.append(
                    {
                        "seconds": round(now - started, 1),
                        "inbox": inbox,
                        "invoice_postings": states,
                        "load": stack.load_average(),
                    }
                )
                log(f"  {now - started:.0f}s: inbox {inbox}, invoice postings {states}")
            if posted >= count:
                return
            if states.get("parked") or states.get("dead") or inbox.get("failed"):
                raise RuntimeError(f"postings failed: {states}, inbox {inbox}")
            if now - started > timeout:
                raise TimeoutError(f"only {posted} of {count} invoices posted after {timeout}s")
            time.sleep(0.5)

    def latencies(self, prefix: str) -> dict[str, Any]:
        """Event-to-posted per event: the inbox row's arrival to its invoice posting's POSTED."""
        from django.db import connection

        with connection.cursor() as cursor:
            cursor.execute(
                """
                SELECT extract(epoch FROM e.received_at), extract(epoch FROM p.posted_at)
                FROM ingest_inboxevent e
                JOIN posting_posting p ON p.source_id = e.object_id AND p.operation = 'post_invoice'
                WHERE e.event_id LIKE %s AND p.state = 'posted'
                """,
                [f"evt_{prefix}%"],
            )
            rows = [(float(a), float(b)) for a, b in cursor.fetchall()]
        received = [a for a, _ in rows]
        posted = [b for _, b in rows]
        seconds = [b - a for a, b in rows]
        span = max(posted) - min(received)
        return {
            "events": len(rows),
            "span_seconds": round(span, 2),
            "events_per_second": round(len(rows) / span, 2),
            "p50_seconds": round(percentile(seconds, 50), 3),
            "p99_seconds": round(percentile(seconds, 99), 3),
            "max_seconds": round(max(seconds), 3),
            "first_received": min(received),
            "latency_seconds": [round(x, 3) for x in seconds],
            "posted_times": sorted(b - min(received) for b in posted),
            "received_times": sorted(a - min(received) for a in received),
        }

    def noop_ceiling(self, hub: stack.Hub, tasks: int) -> dict[str, Any]:
        """``tasks`` no-op tasks queued first, then the same worker command line on that queue: the
        rate from the first message taken to the last one acknowledged."""
        import redis
        from celery import current_app

        client = redis.Redis.from_url(self.redis.url)
        client.delete(stack.NOOP_QUEUE)
        with current_app.producer_or_acquire() as producer:
            for n in range(tasks):
                current_app.send_task("bench.noop", args=[n], queue=stack.NOOP_QUEUE, producer=producer)
        assert client.llen(stack.NOOP_QUEUE) == tasks
        before = self.worker_tasks(hub)["bench.noop"]
        load = stack.load_average()
        workers = hub.start_workers(self.args.worker_processes, self.args.concurrency, queues=stack.NOOP_QUEUE)
        # start_workers returns once they are ready; they may have begun before: find the first take
        first = None
        while True:
            waiting = client.llen(stack.NOOP_QUEUE)
            unacked = client.hlen("unacked")
            now = time.monotonic()
            if first is None and waiting < tasks:
                first = now
            if waiting == 0 and unacked == 0:
                break
            time.sleep(0.005)
        memory = hub.memory()
        done = self.worker_tasks(hub)["bench.noop"] - before
        hub.stop_workers(workers)
        assert first is not None
        seconds = now - first
        return {
            "tasks": tasks,
            "tasks_seen_done": done,
            "seconds": round(seconds, 3),
            "tasks_per_second": round(tasks / seconds, 1),
            "load_average": load,
            "memory": memory,
        }

    def e2e(self) -> dict[str, Any]:
        args = self.args
        fresh_database()
        self.flush_redis()
        set_budget(max_requests=100_000, period_seconds=1, max_concurrency=64)
        sim = stack.ErpSim(self.workdir, "erp-sim-e2e")
        hub = self.hub(self.env(TRYTON_URL=sim.url), "e2e")
        try:
            # The no-op ceiling before and after the hub's runs: the machine is shared, its load moves.
            log("e2e: Celery no-op ceiling (before)")
            noop_before = self.noop_ceiling(hub, args.noop_tasks)
            log(f"e2e: no-op ceiling {noop_before['tasks_per_second']} tasks/s")
            hub.start_workers(args.worker_processes, args.concurrency)
            hub.start_beat()
            log("e2e: warm-up")
            warm = invoice_events(100, 20, prefix="ew")
            self.deliver(hub, warm, "e2e-warm")
            self.wait_posted("ew", 100, timeout=600)
            time.sleep(2)

            results: dict[str, Any] = {}
            for label, count, rate in (
                ("saturated", args.e2e_events, 0.0),
                ("paced", args.e2e_paced_events, -1.0),
            ):
                if count <= 0:
                    continue
                if rate < 0:
                    rate = round(results["saturated"]["events_per_second"] * args.e2e_paced_fraction, 1)
                prefix = "es" if label == "saturated" else "ep"
                bodies = invoice_events(count, max(1, count // args.invoices_per_customer), prefix=prefix)
                tasks_before = self.worker_tasks(hub)
                cpu_before = hub.cpu()
                load = stack.load_average()
                log(f"e2e {label}: {count} events" + (f" at {rate}/s" if rate else " as fast as answered"))
                progress: list[dict[str, Any]] = []
                sending = threading.Thread(
                    target=lambda b=bodies, r=rate, la=label: results.setdefault(
                        f"{la}-delivery", self.deliver(hub, b, f"e2e-{la}", rate=r)
                    )
                )
                sending.start()
                self.wait_posted(prefix, count, timeout=args.timeout, progress=progress)
                sending.join()
                # the last tasks (customer and invoice) are already acknowledged or about to be
                time.sleep(1)
                tasks = self.worker_tasks(hub) - tasks_before
                cpu_after = hub.cpu()
                figures = self.latencies(prefix)
                figures.update(
                    offered_rate=rate or "as fast as answered",
                    load_average_before=load,
                    load_average_after=stack.load_average(),
                    tasks=dict(tasks),
                    tasks_per_event=round((tasks["ingest.normalize_event"] + tasks["posting.execute"]) / count, 3),
                    cpu_seconds={k: round(cpu_after[k] - cpu_before[k], 1) for k in cpu_after},
                    progress=progress,
                    delivery=results.pop(f"{label}-delivery"),
                )
                figures["cpu_ms_per_event"] = round(1000 * sum(figures["cpu_seconds"].values()) / count, 1)
                results[label] = figures
                log(
                    f"e2e {label}: {figures['events_per_second']} events/s, p50 {figures['p50_seconds']} s, "
                    f"p99 {figures['p99_seconds']} s, {figures['tasks_per_event']} tasks/event"
                )
            erp = sim.stats()
            hub_workers = [w for w in hub.workers]
            hub.stop_workers(hub_workers)
            log("e2e: Celery no-op ceiling (after)")
            noop_after = self.noop_ceiling(hub, args.noop_tasks)
            log(f"e2e: no-op ceiling {noop_after['tasks_per_second']} tasks/s")
        finally:
            hub.stop()
            sim.stop()
        saturated = results["saturated"]
        noop = {
            "tasks": args.noop_tasks,
            "tasks_per_second": round((noop_before["tasks_per_second"] + noop_after["tasks_per_second"]) / 2, 1),
            "before": noop_before,
            "after": noop_after,
        }
        per_event_ceiling = noop["tasks_per_second"] / saturated["tasks_per_event"]
        return {
            "settings": {
                "worker_processes": args.worker_processes,
                "concurrency": args.concurrency,
                "invoices_per_customer": args.invoices_per_customer,
                "sender_threads": args.sender_threads,
            },
            "runs": results,
            "noop": noop,
            "noop_ceiling_events_per_second": round(per_event_ceiling, 1),
            "ratio_to_noop_tasks": round(saturated["events_per_second"] / noop["tasks_per_second"], 3),
            "ratio_to_noop_per_event": round(saturated["events_per_second"] / per_event_ceiling, 3),
            "erp": erp,
        }

    # --- real Tryton ----------------------------------------------------------------------------

    def tryton(self) -> dict[str, Any]:
        from apps.connectors import tryton_server as local_tryton
        from tests.tryton_plugin import PASSWORD, PG_URI, _ensure_template

        args = self.args
        workdir = self.workdir / "tryton"
        workdir.mkdir(parents=True, exist_ok=True)
        log("tryton: template (built once, about a minute)")
        template = _ensure_template(workdir)

        def server(database: str) -> local_tryton.TrytonServer:
            admin_sql(
                f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)',
                f'CREATE DATABASE "{database}" TEMPLATE "{template}"',
            )
            port = local_tryton.free_port()
            config = local_tryton.write_config(workdir / database, port=port, postgres_uri=PG_URI)
            return local_tryton.start_server(config, database, PASSWORD, port, log_path=workdir / f"{database}.log")

        fresh_database()
        self.flush_redis()
        set_budget(
            max_requests=100_000, period_seconds=1, max_concurrency=args.tryton_concurrency, failure_threshold=1000
        )
        erp = server("hub_bench_tryton_hub")
        hub = self.hub(self.env(TRYTON_URL=erp.url, TRYTON_DATABASE=erp.database, TRYTON_PASSWORD=PASSWORD), "tryton")
        count = args.tryton_events
        try:
            hub.start_workers(args.worker_processes, args.concurrency)
            hub.start_beat()
            log("tryton: warm-up")
            self.deliver(hub, invoice_events(10, 5, prefix="tw"), "tryton-warm")
            self.wait_posted("tw", 10, timeout=600)
            bodies = invoice_events(count, max(1, count // args.invoices_per_customer), prefix="tt")
            load = stack.load_average()
            log(f"tryton: {count} events through the hub")
            sending = threading.Thread(target=lambda: self.deliver(hub, bodies, "tryton"))
            sending.start()
            progress: list[dict[str, Any]] = []
            self.wait_posted("tt", count, timeout=args.timeout, progress=progress)
            sending.join()
            through_hub = self.latencies("tt")
            through_hub.update(load_average_before=load, load_average_after=stack.load_average(), progress=progress)
            log(f"tryton: hub {through_hub['events_per_second']} events/s")
        finally:
            hub.stop()
            erp.stop()

        # The same calls made directly: the connector, with the documents the hub built, into a
        # fresh copy of the same Tryton, from as many threads as the hub had slots.
        from apps.connectors.registry import connector_class
        from apps.posting.documents import customer_document, invoice_document
        from apps.posting.models import Operation, Posting

        postings = list(
            Posting.objects.filter(source_id__startswith="in_tt", operation=Operation.POST_INVOICE)
            .select_related("connection", "invoice__customer", "invoice__legal_entity")
            .order_by("pk")
        )
        invoices = [invoice_document(p, p.invoice) for p in postings]
        customers = {}
        for p in postings:
            customer = p.invoice.customer
            customers.setdefault(customer.pk, customer_document(customer, p.connection))
        direct_erp = server("hub_bench_tryton_direct")
        settings = {
            "url": direct_erp.url,
            "database": direct_erp.database,
            "username": "admin",
            "password": PASSWORD,
            "timeout": 60,
        }
        local = threading.local()

        def connector() -> Any:
            if not hasattr(local, "connector"):
                local.connector = connector_class("tryton")(settings)
            return local.connector

        from apps.core.errors import TransientError

        retries = Counter[str]()

        def call(method: str, doc: Any) -> Any:
            # Tryton answers 503 when two posts contend for the invoice sequence: a direct client
            # tries again at once (the hub backs off; that is part of what is compared).
            for _ in range(50):
                try:
                    return getattr(connector(), method)(doc)
                except TransientError as exc:
                    retries[method] += 1
                    time.sleep(exc.retry_after or 0.05)
            raise RuntimeError(f"Tryton stayed busy for {method}")

        try:
            load = stack.load_average()
            started = time.monotonic()
            with ThreadPoolExecutor(args.tryton_concurrency) as pool:
                party_ids = dict(
                    zip(
                        customers,
                        pool.map(lambda doc: call("ensure_customer", doc).erp_id, customers.values()),
                        strict=True,
                    )
                )
                by_ref = {customers[pk].external_ref: party_ids[pk] for pk in customers}
                list(
                    pool.map(
                        lambda doc: call("post_invoice", replace(doc, customer_erp_id=by_ref[doc.customer_ref])),
                        invoices,
                    )
                )
            seconds = time.monotonic() - started
        finally:
            direct_erp.stop()
        direct = {
            "invoices": len(invoices),
            "customers": len(customers),
            "seconds": round(seconds, 2),
            "invoices_per_second": round(len(invoices) / seconds, 2),
            "threads": args.tryton_concurrency,
            "retries_after_busy": dict(retries),
            "load_average_before": load,
        }
        log(f"tryton: direct {direct['invoices_per_second']} invoices/s")
        return {
            "settings": {
                "events": count,
                "concurrency": args.tryton_concurrency,
                "worker_processes": args.worker_processes,
                "worker_concurrency": args.concurrency,
            },
            "through_hub": through_hub,
            "direct": direct,
            "ratio_to_direct": round(through_hub["events_per_second"] / direct["invoices_per_second"], 3),
        }

    # --- month-end burst ------------------------------------------------------------------------

    def burst(self) -> dict[str, Any]:
        """Month-end: ``--burst-invoices`` invoices of customers the ERP already knows, normalized and
        planned, all sent for posting at once to a connection whose request budget is
        ``--erp-rate`` requests a second. Drain time against the ideal (the ERP requests the burst
        needed ÷ the rate), the most requests the ERP saw in any one-second window, and memory."""
        from django.db import connection

        args = self.args
        count, rate = args.burst_invoices, args.erp_rate
        fresh_database()
        self.flush_redis()
        set_budget(max_requests=100_000, period_seconds=1, max_concurrency=args.burst_concurrency)
        sim = stack.ErpSim(self.workdir, "erp-sim-burst")
        hub = self.hub(self.env(TRYTON_URL=sim.url), "burst")
        try:
            workers = hub.start_workers(args.worker_processes, args.concurrency)
            customers = max(1, count // args.burst_invoices_per_customer)
            log(f"burst: {customers} customers posted first (one invoice each, through the webhook)")
            self.deliver(hub, invoice_events(customers, customers, prefix="bs"), "burst-seed")
            self.wait_posted("bs", customers, timeout=3600)
            hub.stop_workers(workers)
            log(f"burst: {count} invoices and their postings loaded (copies of the seed rows, by SQL)")
            loaded = time.monotonic()
            posting_ids = clone_invoices(count)
            log(f"burst: loaded in {time.monotonic() - loaded:.0f}s")
            set_budget(max_requests=rate, period_seconds=1, max_concurrency=args.burst_concurrency)
            requests_before = sim.stats()["requests"]
            hub.start_workers(args.worker_processes, args.concurrency)
            hub.start_beat()
            time.sleep(2)
            load = stack.load_average()
            cpu_before = hub.cpu()
            log(f"burst: {count} posting messages sent at once; ERP budget {rate} requests/s")
            started_wall = time.time()
            started = time.monotonic()
            send_all(posting_ids)
            sent_seconds = time.monotonic() - started
            progress: list[dict[str, Any]] = []
            self.wait_posted("b0", count, timeout=args.timeout, progress=progress)
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT extract(epoch FROM max(posted_at)) FROM posting_posting "
                    "WHERE operation = 'post_invoice' AND source_id LIKE 'in_b0%%'"
                )
                last_posted = float(cursor.fetchone()[0])
                cursor.execute(
                    "SELECT count(*), coalesce(sum(attempt_count), 0) FROM posting_posting "
                    "WHERE operation = 'post_invoice' AND source_id LIKE 'in_b0%%'"
                )
                postings, attempts = cursor.fetchone()
            drain = last_posted - started_wall
            cpu_after = hub.cpu()
            time.sleep(3)  # idle: the resident size after the burst, not mid-task
            memory = hub.memory()
            erp = sim.stats()
            arrivals = [t for t in sim.arrivals() if t >= started]
        finally:
            hub.stop()
            sim.stop()
        from tests.fault_proxy import most_in_any_window

        needed = erp["requests"] - requests_before
        ideal = needed / rate
        per_second = Counter(int(t - started) for t in arrivals)
        seconds = max(per_second, default=0) + 1
        return {
            "settings": {
                "invoices": count,
                "customers": customers,
                "erp_requests_per_second": rate,
                "max_concurrency": args.burst_concurrency,
                "worker_processes": args.worker_processes,
                "concurrency": args.concurrency,
            },
            "load_average_before": load,
            "messages_sent_seconds": round(sent_seconds, 2),
            "drain_seconds": round(drain, 1),
            "erp_requests": needed,
            "erp_requests_per_invoice": round(needed / count, 3),
            "ideal_seconds": round(ideal, 1),
            "ratio_to_ideal": round(drain / ideal, 4),
            "peak_requests_in_any_1s_window": most_in_any_window(arrivals, 1.0),
            "peak_requests_in_a_calendar_second": max(per_second.values(), default=0),
            "requests_per_second": [per_second.get(s, 0) for s in range(seconds)],
            "postings": postings,
            "attempts": attempts,
            "duplicate_invoices_in_erp": erp["duplicate_invoices"],
            "erp_invoices": erp["invoices"],
            "cpu_seconds": {k: round(cpu_after[k] - cpu_before[k], 1) for k in cpu_after},
            "memory_after": memory,
            "progress": progress,
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="ingest,e2e,tryton,burst")
    parser.add_argument("--quick", action="store_true", help="every part small, to check the harness")
    parser.add_argument("--report", type=Path, help="only render bench/BENCHMARKS.md from this results file")
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--web-threads", type=int, default=4)
    parser.add_argument("--worker-processes", type=int, default=1, help="celery worker commands")
    parser.add_argument("--concurrency", type=int, default=2, help="prefork pool processes per worker command")
    parser.add_argument("--ingest-seconds", type=int, default=20)
    parser.add_argument("--ingest-rounds", type=int, default=3)
    parser.add_argument("--ingest-max-rate", type=float, default=2500, help="events prepared per second of a run")
    parser.add_argument("--wrk-threads", type=int, default=2)
    parser.add_argument("--wrk-connections", type=int, default=16)
    parser.add_argument("--e2e-events", type=int, default=3000)
    parser.add_argument("--e2e-paced-events", type=int, default=1000)
    parser.add_argument("--e2e-paced-fraction", type=float, default=0.5)
    parser.add_argument("--invoices-per-customer", type=int, default=10)
    parser.add_argument("--sender-threads", type=int, default=8)
    parser.add_argument("--noop-tasks", type=int, default=10000)
    parser.add_argument("--tryton-events", type=int, default=200)
    parser.add_argument("--tryton-concurrency", type=int, default=2)
    parser.add_argument("--burst-invoices", type=int, default=100_000)
    parser.add_argument("--erp-rate", type=int, default=700, help="the ERP's request budget per second (burst)")
    parser.add_argument("--burst-concurrency", type=int, default=8, help="the connection's concurrency cap (burst)")
    parser.add_argument("--burst-invoices-per-customer", type=int, default=100)
    parser.add_argument("--timeout", type=float, default=3 * 3600)
    parser.add_argument("--progress-every", type=float, default=10)
    args = parser.parse_args()
    if args.quick:
        args.ingest_seconds, args.ingest_rounds, args.ingest_max_rate = 5, 1, 2500
        args.e2e_events, args.e2e_paced_events, args.noop_tasks = 300, 100, 2000
        args.tryton_events, args.burst_invoices, args.erp_rate = 20, 2000, 140

    import report

    if args.report:
        report.render(json.loads(args.report.read_text()), args.report)
        return

    # A SIGTERM (or Ctrl-C) still stops every process the run started (the finally blocks below).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    workdir = ROOT / "bench" / "out" / f"bench-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    log(f"logs in {workdir}")
    redis_server = stack.Redis(workdir)
    os.environ.update(
        DJANGO_SETTINGS_MODULE="integration_hub.settings_bench",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{RUN_DB}",
        CELERY_BROKER_URL=redis_server.url,
        HUB_QUEUE=stack.QUEUE,
        HUB_FLOW_NAMESPACE=stack.QUEUE,
        HUB_VAR_DIR=str(workdir / "var"),
        STRIPE_WEBHOOK_SECRET=stack.SECRET,
        TRYTON_URL="http://127.0.0.1:9",
        TRYTON_DATABASE="sim",
        TRYTON_PASSWORD="sim-admin",
        LOG_LEVEL="WARNING",  # the harness's own process; the hub's processes log as deployed
    )
    import django

    django.setup()
    results: dict[str, Any] = {
        "stamp": stamp,
        "command": " ".join(sys.argv),
        "options": vars(args) | {"report": None},
        "machine": stack.machine(),
    }
    bench = Bench(args, workdir, redis_server)
    try:
        log("template database")
        build_template()
        for part in [p.strip() for p in args.only.split(",") if p.strip()]:
            log(f"--- {part}")
            started = time.monotonic()
            results[part] = getattr(bench, part)()
            results[part]["wall_seconds"] = round(time.monotonic() - started, 1)
            results[part]["load_average_after"] = stack.load_average()
    finally:
        redis_server.stop()
        results["machine"]["load_average_at_end"] = stack.load_average()
        out = ROOT / "bench" / "results" / f"bench-{stamp}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1, default=str))
        log(f"raw figures: {out}")
    report.render(results, out)


if __name__ == "__main__":
    main()
